"""The tamper-evident ledger: append, read, verify, checkpoint, erase and purge.

Every event the gateway must be able to prove (a model call, an admin action,
an erasure) is appended as one record of a hash chain (see
:mod:`intramuros.ledger.chain`), and, when a ledger key is loaded, with a MAC
of its hash under that key: a database writer without the key can neither
append nor rewrite records unnoticed. A record's optional content (prompt,
answer) is stored apart, encrypted with AES-256-GCM, and only its keyed
digest enters the chain: erasing the content for a data subject or for
retention leaves a chain that still verifies, plus a tombstone record saying
who erased what.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.errors import InvalidRequest, NotFound
from intramuros.ledger.append import (
    MAX_NAME,
    Appending,
    check_name,
    insert_records,
    next_record,
    prepare,
    refuse_keyless,
    require_keys,
    to_json,
)
from intramuros.ledger.chain import (
    GENESIS_HASH,
    Checkpoint,
    VerifyReport,
    canonical_json,
    walk_chain,
)
from intramuros.ledger.crypto import LedgerKeys, content_aad
from intramuros.ledger.errors import LedgerIntegrityError
from intramuros.ledger.export import export_ledger
from intramuros.ledger.rows import DbSource, LedgerEntry, entry_from_row, head_row
from intramuros.ledger.signing import PublicKeys, checkpoint_message, checkpoint_problem
from intramuros.ledger.storage import locked, locked_on, scrub
from intramuros.ledger.tables import ledger_content, ledger_records
from intramuros.ledger.verifier import ChainVerifier
from intramuros.store.db import Database

# Content rows deleted per transaction (and named per tombstone) by erasure and
# retention: bounds how long appends wait on the lock, how big one tombstone
# grows, and stays under SQLite's bound-parameter limit.
SHRED_BATCH = 500


class Ledger:
    """The ledger of one installation, over its database.

    Args:
        db: the database holding ``ledger_records`` and ``ledger_content``.
        keys: the ledger keys. Without them records carry no MAC (so nothing
            proves who wrote them), content can be neither stored nor read,
            and once the chain holds MAC'd records, appends are refused.
        pg_vacuum_full: on PostgreSQL, scrub erased content with ``VACUUM
            FULL`` (really gone from the table file, but locks the content
            table during the rewrite) rather than plain ``VACUUM`` (no lock,
            but erased bytes may stay in free space). See :meth:`_scrub`.
    """

    def __init__(
        self, db: Database, keys: LedgerKeys | None = None, *, pg_vacuum_full: bool = True
    ) -> None:
        self.db = db
        self.keys = keys
        self.pg_vacuum_full = pg_vacuum_full
        self._sqlite = db.engine.dialect.name == "sqlite"

    # -- writing -------------------------------------------------------------

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
        """Append one record; encrypt ``content`` (and chain its digest) when given.

        ``data`` is kept in clear and covered by the hash: route, model,
        weights hash, decisions, token counts, status. Anything personal or
        confidential (prompts, answers) belongs in ``content``.

        Raises:
            InvalidRequest: a field is not a short string, or data/content is
                not JSON-serialisable.
            LedgerKeyMissing: content was given but no key is configured.
            LedgerKeyRequired: no key is loaded, and the chain is keyed.
        """
        prepared = prepare(self.keys, kind, tenant, key_id, subject, data, content)
        with locked(self.db) as conn:
            return self._append_locked(conn, *prepared)

    @contextmanager
    def appending(self, conn: Connection | None = None) -> Iterator[Appending]:
        """One write transaction for several appends, and the caller's own writes.

        Group commit: the appends (and whatever the caller writes on
        ``Appending.conn``) hold the append lock together and commit together,
        or not at all (an exception rolls everything back). Used by the call
        recorder, which writes a burst of calls' records at once, on a
        connection of its own (``conn``, from :func:`writer_connection`);
        without one, a connection of the pool's.
        """
        with locked(self.db) if conn is None else locked_on(conn) as held:
            tx = Appending(self.keys, held)
            yield tx
            tx.flush()

    def erase_subject(self, tenant: str, subject: str, *, actor: str) -> int:
        """Delete every stored content of ``subject`` in ``tenant`` (right to erasure).

        Appends an ``erasure`` tombstone (actor, count, seqs affected) in the
        same transaction, even when nothing was stored, so the request itself
        is on record. The records and their digests stay: the chain still
        verifies. Then scrubs the database file (see :meth:`_scrub`).
        Returns the number of content rows deleted.
        """
        check_name(tenant, "tenant", nullable=False, limit=MAX_NAME)
        check_name(subject, "subject", nullable=False, limit=MAX_NAME)
        where = sa.and_(ledger_records.c.tenant == tenant, ledger_records.c.subject == subject)
        return self._shred("erasure", tenant, subject, where, actor, {})

    def purge(self, tenant: str, older_than_ts: float, *, actor: str) -> int:
        """Delete the stored content of ``tenant``'s records older than ``older_than_ts``.

        Retention's counterpart of :meth:`erase_subject`, with a ``purge``
        tombstone naming the cut-off. Returns the number of content rows deleted.
        """
        check_name(tenant, "tenant", nullable=False, limit=MAX_NAME)
        cutoff = float(older_than_ts)
        where = sa.and_(ledger_records.c.tenant == tenant, ledger_records.c.ts < cutoff)
        return self._shred("purge", tenant, None, where, actor, {"older_than": cutoff})

    def shred_tenant(self, tenant: str, *, actor: str) -> int:
        """Delete the stored content of every record of ``tenant`` (the tenant is deleted).

        The records and their digests stay, so the chain still verifies and
        the tenant's history can still be audited; ``tenant_erasure``
        tombstones name every content row deleted. Returns their number.
        """
        check_name(tenant, "tenant", nullable=False, limit=MAX_NAME)
        where = ledger_records.c.tenant == tenant
        return self._shred("tenant_erasure", tenant, None, where, actor, {})

    def require_appendable(self) -> None:
        """Refuse now what an append would refuse: a keyed chain and no key loaded.

        One indexed read. Call it before an action that must be on record, so
        that the action is refused instead of being done and left unrecorded.

        Raises:
            LedgerKeyRequired: the chain holds MAC'd records and no key is loaded.
        """
        if self.keys is None:
            with self.db.begin() as conn:
                refuse_keyless(head_row(conn))

    # -- reading -------------------------------------------------------------

    def read_content(self, seq: int) -> dict[str, Any] | None:
        """The decrypted content of record ``seq``; ``None`` if it has none (or it was erased).

        Raises:
            NotFound: there is no record ``seq``.
            LedgerKeyMissing: no key is configured.
            LedgerKeyError: the key version is not loaded, the key is wrong, or
                the ciphertext was altered.
            LedgerIntegrityError: the content is not the one the record was written with.
        """
        query = (
            sa.select(
                ledger_records.c.tenant,
                ledger_records.c.content_digest,
                ledger_content.c.key_version,
                ledger_content.c.nonce,
                ledger_content.c.ciphertext,
            )
            .select_from(ledger_records.outerjoin(ledger_content))
            .where(ledger_records.c.seq == seq)
        )
        with self.db.begin() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"Ledger record {seq} does not exist.")
        if row.key_version is None:
            return None
        keys = require_keys(self.keys, "read ledger content")
        plaintext = keys.decrypt(
            row.key_version, bytes(row.nonce), bytes(row.ciphertext), content_aad(seq, row.tenant)
        )
        digest = keys.digest(plaintext, row.key_version)
        if row.content_digest is None or not hmac.compare_digest(digest, row.content_digest):
            raise LedgerIntegrityError(
                f"The content stored for ledger record {seq} does not match the digest in "
                "the chain."
            )
        value = json.loads(plaintext)
        assert isinstance(value, dict)
        return value

    def content_matches(self, seq: int, content: Mapping[str, Any]) -> bool:
        """Whether ``content`` is what record ``seq`` was written with.

        Works after erasure too (only the digest is needed): a way to prove
        what was said without the ledger keeping it.
        """
        with self.db.begin() as conn:
            digest = conn.execute(
                sa.select(ledger_records.c.content_digest).where(ledger_records.c.seq == seq)
            ).first()
        if digest is None:
            raise NotFound(f"Ledger record {seq} does not exist.")
        if digest[0] is None:
            return False
        keys = require_keys(self.keys, "check ledger content")
        return keys.digest_matches(to_json(content, "content").encode("utf-8"), digest[0])

    def records(
        self,
        tenant: str | None = None,
        *,
        subject: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[LedgerEntry]:
        """Records in seq order, filtered; ``since`` inclusive, ``until`` exclusive.

        Page with ``after_seq`` (the last seq of the previous page).
        """
        if not 1 <= limit <= 100_000:
            raise InvalidRequest("limit must be between 1 and 100000.", param="limit")
        r = ledger_records.c
        query = (
            sa.select(ledger_records, ledger_content.c.seq.is_not(None).label("has_content"))
            .select_from(ledger_records.outerjoin(ledger_content))
            .where(r.seq > after_seq)
        )
        for column, value in ((r.tenant, tenant), (r.subject, subject), (r.kind, kind)):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(r.ts >= since)
        if until is not None:
            query = query.where(r.ts < until)
        with self.db.begin() as conn:
            rows = conn.execute(query.order_by(r.seq).limit(limit)).all()
        return [entry_from_row(row) for row in rows]

    def checkpoint(self) -> Checkpoint:
        """The current head (seq and hash), signed when a key is loaded.

        Print it and keep it outside the database (or hand it to a third
        party with :meth:`public_keys`). With a key, the head record's MAC
        must verify first: a tail forged in the database is never signed
        (:class:`LedgerIntegrityError`). A head without a MAC (records from
        before the ledger had a key) is sealed first: a ``seal`` record is
        appended with the key (its MAC authenticates every record before it)
        and the checkpoint is of that record. Without a key, the checkpoint is
        unsigned, as before signing existed.
        """
        with self.db.begin() as conn:
            head = head_row(conn)
        if self.keys is None:
            seq, hash_ = (int(head.seq), str(head.hash)) if head else (0, GENESIS_HASH)
            return Checkpoint(seq=seq, hash=hash_, ts=time.time())
        keys = self.keys
        if head is not None and head.mac_version is None:
            head = self._seal(int(head.seq))
        elif head is not None:
            problem = _head_problem(keys, head)
            if problem is not None:
                raise LedgerIntegrityError(
                    f"Refusing to sign a checkpoint: record {head.seq} (the head) {problem} "
                    "Run `intramuros ledger verify`."
                )
        seq, hash_ = (int(head.seq), str(head.hash)) if head else (0, GENESIS_HASH)
        unsigned = Checkpoint(seq=seq, hash=hash_, ts=time.time(), key_version=keys.current)
        version, signature = keys.sign(checkpoint_message(unsigned))
        return replace(unsigned, key_version=version, signature=signature)

    def public_keys(self) -> PublicKeys:
        """The public keys that check this ledger's checkpoints and exports (every version).

        Raises:
            LedgerKeyMissing: no key is configured.
        """
        return require_keys(self.keys, "derive the ledger's public keys").public_keys()

    # -- verifying and exporting ---------------------------------------------

    def verify(self, checkpoint: Checkpoint | None = None) -> VerifyReport:
        """Walk the whole chain, every MAC and every stored content; name the first bad record.

        With a key, ``authenticated`` in the report says the chain up to its
        head is the one the key's holder wrote. Without one, only linkage is
        checked (``authenticated`` is false). A truncated tail is only visible
        against a ``checkpoint`` taken earlier and kept elsewhere; a signed
        checkpoint whose signature fails is refused (``bad_signature``), an
        unsigned one is used with a warning. Records appended while the walk
        runs are not included (unless content went missing meanwhile: then
        the walk goes on to the head, where the erasure's tombstone is).
        """
        signed: bool | None = None
        warnings: list[str] = []
        if checkpoint is not None:
            signed = False
            if not checkpoint.signed:
                warnings.append(
                    "the checkpoint is unsigned: it proves the head only to whoever kept it "
                    "out of reach of the database's writers."
                )
            elif self.keys is None:
                warnings.append("the checkpoint's signature was not checked: no ledger key.")
            else:
                problem = checkpoint_problem(checkpoint, self.keys.public_keys())
                if problem is not None:
                    return VerifyReport(
                        ok=False,
                        checked=0,
                        reason=problem[0],
                        detail=problem[1],
                        checkpoint_signed=False,
                    )
                signed = True
        with self.db.begin() as conn:
            head = head_row(conn)
        verifier = ChainVerifier(self.db, self.keys)
        source = DbSource(
            self.db, int(head.seq) if head else 0, extend=lambda: bool(verifier.pending)
        )
        report = walk_chain(
            source,
            checkpoint=checkpoint,
            checks=(verifier.check_mac, verifier.check_content),
            final_check=verifier.final_check,
        )
        report = replace(report, checkpoint_signed=signed, warnings=tuple(warnings))
        return verifier.finish(report)

    def export(
        self,
        out_dir: Path | str,
        *,
        tenant: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Path:
        """Write ``records.jsonl`` and ``manifest.json`` into ``out_dir``; return it.

        With a key, the manifest is signed and carries a signed head; see
        :func:`intramuros.ledger.export.export_ledger`.
        """
        return export_ledger(
            self.db, Path(out_dir), tenant=tenant, since=since, until=until, keys=self.keys
        )

    # -- internals -----------------------------------------------------------

    def _append_locked(
        self,
        conn: Connection,
        kind: str,
        tenant: str | None,
        key_id: str | None,
        subject: str | None,
        data_json: str,
        plaintext: bytes | None,
    ) -> LedgerEntry:
        entry, record, content = next_record(self.keys, head_row(conn), kind, tenant, key_id,
                                             subject, data_json, plaintext)  # fmt: skip
        insert_records(conn, [record], [] if content is None else [content])
        return entry

    def _shred(
        self,
        kind: str,
        tenant: str,
        subject: str | None,
        where: sa.ColumnElement[bool],
        actor: str,
        extra: dict[str, Any],
    ) -> int:
        """Delete matching content rows in batches, one tombstone per batch; then scrub."""
        check_name(actor, "actor", nullable=False, limit=MAX_NAME)
        select_seqs = (
            sa.select(ledger_content.c.seq)
            .join(ledger_records, ledger_records.c.seq == ledger_content.c.seq)
            .where(where)
            .order_by(ledger_content.c.seq)
            .limit(SHRED_BATCH)
        )
        total, first = 0, True
        while True:
            with locked(self.db, secure_delete=True) as conn:
                seqs = [int(s) for s in conn.execute(select_seqs).scalars()]
                # The first batch always leaves a tombstone, even an empty one:
                # the request itself is what an auditor asks about.
                if seqs or first:
                    conn.execute(ledger_content.delete().where(ledger_content.c.seq.in_(seqs)))
                    tomb = {"actor": actor, "count": len(seqs), "seqs": seqs, **extra}
                    self._append_locked(
                        conn,
                        kind,
                        tenant=tenant,
                        key_id=None,
                        subject=subject,
                        data_json=canonical_json(tomb),
                        plaintext=None,
                    )
            total += len(seqs)
            first = False
            if len(seqs) < SHRED_BATCH:
                break
        if total:
            scrub(self.db, total, pg_vacuum_full=self.pg_vacuum_full)
        return total

    def _seal(self, legacy_head: int) -> Any:
        """Append a ``seal`` record with the key after records written without one.

        Refused when MAC'd records exist already: then the head without a MAC
        was written by someone without the key, and sealing would vouch for it.
        """
        with locked(self.db) as conn:
            keyed = conn.execute(
                sa.select(ledger_records.c.seq)
                .where(ledger_records.c.mac_version.is_not(None))
                .order_by(ledger_records.c.seq)
                .limit(1)
            ).first()
            if keyed is not None:
                raise LedgerIntegrityError(
                    f"Refusing to sign a checkpoint: record {legacy_head} (the head) carries no "
                    f"MAC although record {keyed.seq} before it does: it was written without "
                    "the ledger key. Run `intramuros ledger verify`."
                )
            self._append_locked(
                conn,
                "seal",
                tenant=None,
                key_id=None,
                subject=None,
                data_json=canonical_json({"sealed_through": legacy_head}),
                plaintext=None,
            )
            return head_row(conn)


def _head_problem(keys: LedgerKeys, head: Any) -> str | None:
    if not keys.has(head.mac_version):
        return f"has a MAC under key version {head.mac_version!r}, which is not loaded."
    if not isinstance(head.mac, str) or not keys.record_mac_matches(
        head.mac_version, str(head.hash), head.mac
    ):
        return "has a MAC that does not verify: it was written without the ledger key."
    return None
