"""Ledger exports an auditor can verify without the database or the ledger key.

An export is a directory with two files:

``records.jsonl``
    One record per line, as stored (``data`` is the stored JSON text; content
    is never exported), for every seq from the first to the last record that
    matches the filters. Records in that range that do not match (another
    tenant's, say) are *redacted*: only ``seq``, ``body_hash``, ``prev_hash``
    and ``hash`` are written, which is enough to re-link the chain across them
    without revealing them.

``manifest.json``
    The filters, the counts, the first seq and its ``prev_hash``, the last
    seq and its ``hash``, and the sha256 of ``records.jsonl``. Written with a
    ledger key, it also carries ``signed_head`` (a signed checkpoint of the
    last exported record, usable as a checkpoint anywhere) and ``signature``
    (Ed25519 over every other field of the manifest, hence over every line of
    ``records.jsonl`` through its sha256). Before signing, the exporter
    checks that the exported records link and that the last one's MAC (or, for
    a record from before the ledger had a key, the MAC of the first keyed
    record after it) verifies: the key's holder never signs a forged chain.

:func:`intramuros.ledger.export_verify.verify_export` re-checks every hash and
link of the slice, the manifest, and, given the public keys, the signatures.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from intramuros.errors import InvalidRequest
from intramuros.ledger.chain import HASHED_FIELDS, ChainRow, Checkpoint, canonical_json
from intramuros.ledger.crypto import LedgerKeys
from intramuros.ledger.errors import LedgerIntegrityError
from intramuros.ledger.signing import checkpoint_message, manifest_message
from intramuros.ledger.tables import ledger_records
from intramuros.store.db import Database

EXPORT_FORMAT = "intramuros-ledger-export/1"
RECORDS_FILE = "records.jsonl"
MANIFEST_FILE = "manifest.json"
HASH_SCHEME = (
    "hash = sha256_hex(prev_hash + body_hash); body_hash = sha256_hex(utf8(canonical JSON of "
    "{seq, ts, kind, tenant, key_id, subject, data, content_digest})); canonical JSON = sorted "
    "keys, separators ',' and ':', non-ASCII kept as UTF-8, floats in shortest round-trip form; "
    "the first record's prev_hash is 64 zeros; redacted lines give body_hash directly"
)
SIGNATURE_SCHEME = (
    "Ed25519 over utf8('intramuros-ledger-export-manifest/1\\n') + canonical JSON of the manifest "
    "without 'signature'; signed_head: Ed25519 over "
    "utf8('intramuros-ledger-checkpoint/1\\n') + canonical JSON of {seq, hash, ts, key_version}; "
    "public keys from `intramuros ledger public-key`"
)
_PAGE = 1000


def export_ledger(
    db: Database,
    out_dir: Path,
    *,
    tenant: str | None = None,
    since: float | None = None,
    until: float | None = None,
    keys: LedgerKeys | None = None,
) -> Path:
    """Write an export of the records matching the filters into ``out_dir``; return it.

    ``since`` is inclusive and ``until`` exclusive (unix times). Refuses a
    directory that already holds an export. With ``keys``, the manifest is
    signed (see the module's description).

    Raises:
        InvalidRequest: ``out_dir`` already holds an export.
        LedgerIntegrityError: with ``keys``, the records to export do not
            link, or their last MAC does not verify (nothing is written).
    """
    records_path, manifest_path = out_dir / RECORDS_FILE, out_dir / MANIFEST_FILE
    if records_path.exists() or manifest_path.exists():
        raise InvalidRequest(f"{out_dir} already holds a ledger export.", param="out_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    r = ledger_records.c
    conditions: list[sa.ColumnElement[bool]] = []
    if tenant is not None:
        conditions.append(r.tenant == tenant)
    if since is not None:
        conditions.append(r.ts >= since)
    if until is not None:
        conditions.append(r.ts < until)

    def matches(row: Any) -> bool:
        return (
            (tenant is None or row.tenant == tenant)
            and (since is None or row.ts >= since)
            and (until is None or row.ts < until)
        )

    with db.begin() as conn:
        lo, hi = conn.execute(
            sa.select(sa.func.min(r.seq), sa.func.max(r.seq)).where(*conditions)
        ).one()
    digest = hashlib.sha256()
    count = matched = 0
    first_prev: str | None = None
    last: Any = None
    check = _LinkCheck() if keys is not None else None
    tmp = records_path.with_name(RECORDS_FILE + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as fh:
            rows = _rows(db, int(lo) - 1, int(hi)) if lo is not None else iter(())
            for row in rows:
                chain_row = ChainRow.from_fields(
                    {name: getattr(row, name) for name in HASHED_FIELDS}, row.prev_hash, row.hash
                )
                if check is not None:
                    check(chain_row)
                if matches(row):
                    line = {
                        **(chain_row.fields or {}),
                        "prev_hash": row.prev_hash,
                        "hash": row.hash,
                    }
                    matched += 1
                else:
                    line = {
                        "seq": chain_row.seq,
                        "redacted": True,
                        "body_hash": chain_row.body_hash,
                        "prev_hash": row.prev_hash,
                        "hash": row.hash,
                    }
                text = canonical_json(line) + "\n"
                fh.write(text)
                digest.update(text.encode("utf-8"))
                count += 1
                if first_prev is None:
                    first_prev = row.prev_hash
                last = row
            fh.flush()
            os.fsync(fh.fileno())
        vouched = keys is not None and last is not None and _authenticate(db, keys, last)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, records_path)
    manifest: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "hash_scheme": HASH_SCHEME,
        "filters": {"tenant": tenant, "since": since, "until": until},
        "count": count,
        "matched": matched,
        "redacted": count - matched,
        "first_seq": int(lo) if lo is not None else None,
        "last_seq": int(hi) if hi is not None else None,
        "first_prev_hash": first_prev,
        "last_hash": last.hash if last is not None else None,
        "records_sha256": digest.hexdigest(),
        "generated_at": time.time(),
        "signed_head": None,
    }
    if keys is not None and vouched:
        head = Checkpoint(
            seq=int(last.seq), hash=str(last.hash), ts=manifest["generated_at"],
            key_version=keys.current,
        )  # fmt: skip
        version, signature = keys.sign(checkpoint_message(head))
        signed_head = replace(head, key_version=version, signature=signature)
        manifest["signed_head"] = json.loads(signed_head.to_json())
        manifest["signature_scheme"] = SIGNATURE_SCHEME
        version, signature = keys.sign(manifest_message(manifest))
        manifest["signature"] = {"key_version": version, "value": signature}
    manifest_path.write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return out_dir


def _rows(db: Database, after: int, upto: int | None) -> Iterator[Any]:
    """``ledger_records`` rows with seq in ``(after, upto]`` (no bound: to the end), by page."""
    r = ledger_records.c
    last = after
    while True:
        query = sa.select(ledger_records).where(r.seq > last).order_by(r.seq).limit(_PAGE)
        if upto is not None:
            query = query.where(r.seq <= upto)
        with db.begin() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return
        yield from rows
        last = int(rows[-1].seq)


class _LinkCheck:
    """Raises :class:`LedgerIntegrityError` at the first row that breaks the chain."""

    def __init__(self) -> None:
        self.prev: ChainRow | None = None

    def __call__(self, row: ChainRow) -> None:
        broken = not row.consistent() or (
            self.prev is not None
            and (row.seq != self.prev.seq + 1 or row.prev_hash != self.prev.hash)
        )
        if broken:
            raise LedgerIntegrityError(
                f"Refusing to sign an export: the chain breaks at record {row.seq}. Run "
                "`intramuros ledger verify`."
            )
        self.prev = row


def _authenticate(db: Database, keys: LedgerKeys, last: Any) -> bool:
    """Whether ``last`` is vouched for by a MAC: its own, or the next keyed record's.

    ``False`` when the ledger holds no MAC'd record at all (it was written
    without a key so far): the export is then left unsigned.
    """
    check = _LinkCheck()
    for row in _rows(db, int(last.seq) - 1, None):
        check(ChainRow.from_fields({n: getattr(row, n) for n in HASHED_FIELDS}, row.prev_hash,
                                   row.hash))  # fmt: skip
        if row.mac_version is None:
            continue
        if not keys.has(row.mac_version) or not isinstance(row.mac, str):
            problem = f"has a MAC under key version {row.mac_version!r}, which is not loaded"
        elif not keys.record_mac_matches(row.mac_version, str(row.hash), row.mac):
            problem = "has a MAC that does not verify"
        else:
            return True
        raise LedgerIntegrityError(
            f"Refusing to sign an export: record {row.seq} {problem}. Run "
            "`intramuros ledger verify`."
        )
    r = ledger_records.c
    with db.begin() as conn:
        keyed = conn.execute(
            sa.select(r.seq).where(r.mac_version.is_not(None)).order_by(r.seq).limit(1)
        ).first()
    if keyed is not None:
        raise LedgerIntegrityError(
            f"Refusing to sign an export: the records from {last.seq} on carry no MAC although "
            f"record {keyed.seq} does: they were written without the ledger key. Run "
            "`intramuros ledger verify`."
        )
    return False
