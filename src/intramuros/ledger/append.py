"""Making ledger records: checking an append's fields, chaining, MAC and encryption.

Shared by :class:`~intramuros.ledger.ledger.Ledger` (one append, or its
maintenance records) and :class:`Appending` (many appends in one transaction,
the call recorder's): the record after a given head is computed here, in
memory; writing it is one insert of the rows made.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from intramuros.errors import InvalidRequest
from intramuros.ledger.chain import GENESIS_HASH, body_hash, canonical_json, record_hash
from intramuros.ledger.crypto import LedgerKeyMissing, LedgerKeys, content_aad
from intramuros.ledger.errors import LedgerKeyRequired
from intramuros.ledger.rows import LedgerEntry, head_row
from intramuros.ledger.tables import ledger_content, ledger_records
from intramuros.store.driver import DriverStatement

MAX_NAME = 200
# Compiled once per dialect, run on the driver's cursor (store/driver.py): every model call.
_INSERT_RECORD = DriverStatement(ledger_records.insert())
_INSERT_CONTENT = DriverStatement(ledger_content.insert())
# What prepare() makes of an append's fields: (kind, tenant, key id, subject, data JSON,
# content plaintext).
Prepared = tuple[str, str | None, str | None, str | None, str, bytes | None]


def prepare(
keys: LedgerKeys | None,
    kind: str,
    tenant: str | None,
    key_id: str | None,
    subject: str | None,
    data: Mapping[str, Any],
    content: Mapping[str, Any] | None,
) -> Prepared:
    """Check and serialise one append's fields, before the lock is taken."""
    check_name(kind, "kind", nullable=False, limit=50)
    for name, value in (("tenant", tenant), ("key_id", key_id), ("subject", subject)):
        check_name(value, name, nullable=True, limit=MAX_NAME)
    data_json = to_json(data, "data")
    plaintext: bytes | None = None
    if content is not None:
        require_keys(keys, "store ledger content")  # fail before taking the lock
        plaintext = to_json(content, "content").encode("utf-8")
    return kind, tenant, key_id, subject, data_json, plaintext



def next_record(
keys: LedgerKeys | None,
    head: Any,
    kind: str,
    tenant: str | None,
    key_id: str | None,
    subject: str | None,
    data_json: str,
    plaintext: bytes | None,
) -> tuple[LedgerEntry, dict[str, Any], dict[str, Any] | None]:
    """The record after ``head`` (None: the first): the entry, and the parameters of
    its record and content rows."""
    if keys is None:
        refuse_keyless(head)
    seq = int(head.seq) + 1 if head else 1
    prev = str(head.hash) if head else GENESIS_HASH
    encrypted: tuple[str, bytes, bytes] | None = None
    digest: str | None = None
    if plaintext is not None:
        keys = require_keys(keys, "store ledger content")
        encrypted = keys.encrypt(plaintext, content_aad(seq, tenant))
        digest = keys.digest(plaintext, encrypted[0])
    # Taken under the lock, so ts follows seq unless the clock steps back.
    ts = time.time()
    fields = {
        "seq": seq,
        "ts": ts,
        "kind": kind,
        "tenant": tenant,
        "key_id": key_id,
        "subject": subject,
        "data": data_json,
        "content_digest": digest,
    }
    hash_ = record_hash(prev, body_hash(fields))
    mac_version, mac = keys.record_mac(hash_) if keys is not None else (None, None)
    record = {**fields, "prev_hash": prev, "hash": hash_, "mac_version": mac_version,
              "mac": mac}  # fmt: skip
    content = None
    if encrypted is not None:
        version, nonce, ciphertext = encrypted
        content = {"seq": seq, "key_version": version, "nonce": nonce,
                   "ciphertext": ciphertext}  # fmt: skip
    entry = LedgerEntry(
        seq=seq,
        ts=ts,
        kind=kind,
        tenant=tenant,
        key_id=key_id,
        subject=subject,
        data_json=data_json,
        content_digest=digest,
        prev_hash=prev,
        hash=hash_,
        has_content=encrypted is not None,
        mac_version=mac_version,
        mac=mac,
    )
    return entry, record, content



def insert_records(conn: Connection, records: list[dict[str, Any]],
                   contents: list[dict[str, Any]]) -> None:  # fmt: skip
    """Insert records made by :func:`next_record` (records first: contents refer to them)."""
    if records:
        _INSERT_RECORD.execute(conn, records)
    if contents:
        _INSERT_CONTENT.execute(conn, contents)


def require_keys(keys: LedgerKeys | None, action: str) -> LedgerKeys:
    """The ledger's keys; ``LedgerKeyMissing`` naming ``action`` when none is configured."""
    if keys is None:
        raise LedgerKeyMissing(
            f"Cannot {action}: no ledger key is configured. Create a key file with "
            "`intramuros ledger keygen` and pass it with --ledger-key-file (setting "
            "ledger_key_file), or set INTRAMUROS_LEDGER_KEY (base64 of 32 bytes)."
        )
    return keys



def check_name(value: Any, param: str, *, nullable: bool, limit: int) -> None:
    """``InvalidRequest`` unless ``value`` is a short non-empty string (or None if nullable)."""
    if value is None and nullable:
        return
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidRequest(
            f"{param} must be a non-empty string of at most {limit} characters.", param=param
        )


def to_json(value: Any, param: str) -> str:
    """``value`` (a mapping) as canonical JSON; ``InvalidRequest`` if it is not one."""
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{param} must be a JSON object.", param=param)
    try:
        text = canonical_json(dict(value))
        text.encode("utf-8")  # unpaired surrogates would fail later, mid-transaction
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{param} is not JSON-serialisable: {exc}", param=param) from None
    return text


def refuse_keyless(head: Any) -> None:
    """``LedgerKeyRequired`` when the chain is keyed (its head has a MAC) and no key is."""
    if head is not None and head.mac_version is not None:
        raise LedgerKeyRequired(
            f"The ledger's records are authenticated with the ledger key (record {head.seq}, "
            f"key version {head.mac_version!r}), and no key is loaded: new records would not "
            "be. Configure the key with --ledger-key-file (setting ledger_key_file, env "
            "INTRAMUROS_LEDGER_KEY_FILE) or INTRAMUROS_LEDGER_KEY."
        )


class Appending:
    """Appends inside one transaction of the ledger (:meth:`Ledger.appending`).

    The chain's head is read once, at the first append; the records are
    inserted together (one statement) when the transaction ends, before it
    commits. They are not visible in the table until then.
    """

    def __init__(self, keys: LedgerKeys | None, conn: Connection) -> None:
        self.keys = keys
        # The transaction's connection: the caller's own writes on it commit with the appends.
        self.conn = conn
        self._head: Any = None
        self._read = False
        self._records: list[dict[str, Any]] = []
        self._contents: list[dict[str, Any]] = []

    def append(
        self,
        kind: str,
        *,
        tenant: str | None = None,
        key_id: str | None = None,
        subject: str | None = None,
        data: Mapping[str, Any],
        content: Mapping[str, Any] | None = None,
    ) -> LedgerEntry:
        """As :meth:`Ledger.append`, in this transaction (chained to the previous append)."""
        prepared = prepare(self.keys, kind, tenant, key_id, subject, data, content)
        if not self._read:
            self._head, self._read = head_row(self.conn), True
        entry, record, stored = next_record(self.keys, self._head, *prepared)
        self._head = entry
        self._records.append(record)
        if stored is not None:
            self._contents.append(stored)
        return entry

    def flush(self) -> None:
        """Insert the records appended so far (records first: contents refer to them)."""
        records, contents = self._records, self._contents
        self._records, self._contents = [], []
        insert_records(self.conn, records, contents)
