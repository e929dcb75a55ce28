"""The tamper-evident ledger: append, read, verify, erase and purge.

Every event the gateway must be able to prove (a model call, an admin action,
an erasure) is appended as one record of a hash chain (see
:mod:`intramuros.ledger.chain`). A record's optional content (prompt, answer)
is stored apart, encrypted with AES-256-GCM, and only its keyed digest enters
the chain: erasing the content for a data subject or for retention leaves a
chain that still verifies, plus a tombstone record saying who erased what.
"""

from __future__ import annotations

import contextlib
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
from sqlalchemy.exc import SQLAlchemyError

from intramuros.errors import InvalidRequest, NotFound, ServerError
from intramuros.ledger.chain import (
    GENESIS_HASH,
    ChainRow,
    Checkpoint,
    VerifyReport,
    body_hash,
    canonical_json,
    record_hash,
    walk_chain,
)
from intramuros.ledger.crypto import LedgerKeyError, LedgerKeyMissing, LedgerKeys, content_aad
from intramuros.ledger.export import export_ledger
from intramuros.ledger.rows import DbSource, LedgerEntry, entry_from_row, head_row
from intramuros.ledger.tables import ledger_content, ledger_records
from intramuros.store.db import Database

# Content rows deleted per transaction (and named per tombstone) by erasure and
# retention: bounds how long appends wait on the lock, how big one tombstone
# grows, and stays under SQLite's bound-parameter limit.
SHRED_BATCH = 500
_MAX_NAME = 200


class LedgerIntegrityError(ServerError):
    """Stored content decrypts but is not the content its record was written with."""

    code = "ledger_integrity_error"


class LedgerScrubError(ServerError):
    """Content was erased and the erasure recorded, but the database file was not scrubbed.

    Until a later ``VACUUM`` succeeds, the erased ciphertext may linger in free
    pages (or SQLite's write-ahead log). ``erased`` is the number of content
    rows the erasure deleted.
    """

    code = "ledger_scrub_error"

    def __init__(self, message: str, *, erased: int) -> None:
        super().__init__(message)
        self.erased = erased


class Ledger:
    """The ledger of one installation, over its database.

    Args:
        db: the database holding ``ledger_records`` and ``ledger_content``.
        keys: the ledger keys; without them records can still be appended,
            but content can be neither stored nor read.
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
        """
        _check_name(kind, "kind", nullable=False, limit=50)
        for name, value in (("tenant", tenant), ("key_id", key_id), ("subject", subject)):
            _check_name(value, name, nullable=True, limit=_MAX_NAME)
        data_json = _to_json(data, "data")
        plaintext: bytes | None = None
        if content is not None:
            self._require_keys("store ledger content")  # fail before taking the lock
            plaintext = _to_json(content, "content").encode("utf-8")
        with self._locked() as conn:
            return self._append_locked(
                conn,
                kind,
                tenant=tenant,
                key_id=key_id,
                subject=subject,
                data_json=data_json,
                plaintext=plaintext,
            )

    def erase_subject(self, tenant: str, subject: str, *, actor: str) -> int:
        """Delete every stored content of ``subject`` in ``tenant`` (right to erasure).

        Appends an ``erasure`` tombstone (actor, count, seqs affected) in the
        same transaction, even when nothing was stored, so the request itself
        is on record. The records and their digests stay: the chain still
        verifies. Then scrubs the database file (see :meth:`_scrub`).
        Returns the number of content rows deleted.
        """
        _check_name(tenant, "tenant", nullable=False, limit=_MAX_NAME)
        _check_name(subject, "subject", nullable=False, limit=_MAX_NAME)
        where = sa.and_(ledger_records.c.tenant == tenant, ledger_records.c.subject == subject)
        return self._shred("erasure", tenant, subject, where, actor, {})

    def purge(self, tenant: str, older_than_ts: float, *, actor: str) -> int:
        """Delete the stored content of ``tenant``'s records older than ``older_than_ts``.

        Retention's counterpart of :meth:`erase_subject`, with a ``purge``
        tombstone naming the cut-off. Returns the number of content rows deleted.
        """
        _check_name(tenant, "tenant", nullable=False, limit=_MAX_NAME)
        cutoff = float(older_than_ts)
        where = sa.and_(ledger_records.c.tenant == tenant, ledger_records.c.ts < cutoff)
        return self._shred("purge", tenant, None, where, actor, {"older_than": cutoff})

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
        keys = self._require_keys("read ledger content")
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
        keys = self._require_keys("check ledger content")
        return keys.digest_matches(_to_json(content, "content").encode("utf-8"), digest[0])

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
        """The current head (seq and hash), to print and keep outside the database."""
        with self.db.begin() as conn:
            head = head_row(conn)
        seq, hash_ = (int(head.seq), str(head.hash)) if head else (0, GENESIS_HASH)
        return Checkpoint(seq=seq, hash=hash_, ts=time.time())

    # -- verifying and exporting ---------------------------------------------

    def verify(self, checkpoint: Checkpoint | None = None) -> VerifyReport:
        """Walk the whole chain and every stored content; name the first bad record.

        Records appended while the walk runs are not included. A truncated
        tail is only visible against a ``checkpoint`` taken earlier and kept
        elsewhere. Without keys, content is counted as unchecked.
        """
        with self.db.begin() as conn:
            head = head_row(conn)
        source = DbSource(self.db, int(head.seq) if head else 0)
        counts = {"checked": 0, "unchecked": 0}

        def check(row: ChainRow) -> str | None:
            return self._check_content(row, counts)

        report = walk_chain(source, checkpoint=checkpoint, content_check=check)
        return replace(
            report, content_checked=counts["checked"], content_unchecked=counts["unchecked"]
        )

    def export(
        self,
        out_dir: Path | str,
        *,
        tenant: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Path:
        """Write ``records.jsonl`` and ``manifest.json`` into ``out_dir``; return it.

        See :func:`intramuros.ledger.export.export_ledger`.
        """
        return export_ledger(self.db, Path(out_dir), tenant=tenant, since=since, until=until)

    # -- internals -----------------------------------------------------------

    def _require_keys(self, action: str) -> LedgerKeys:
        if self.keys is None:
            raise LedgerKeyMissing(
                f"Cannot {action}: no ledger key is configured. Create a key file with "
                "`generate_key_file` or set INTRAMUROS_LEDGER_KEY (base64 of 32 bytes)."
            )
        return self.keys

    @contextmanager
    def _locked(self, *, secure_delete: bool = False) -> Iterator[Connection]:
        """A write transaction that holds the ledger's append lock until it ends.

        The chain needs one writer at a time: two appends reading the same head
        would fork it. On SQLite, ``BEGIN IMMEDIATE`` takes the database's
        write lock before the head is read (a plain deferred BEGIN would only
        take it at the INSERT, after both writers read the same head; the
        loser then fails instead of waiting). On PostgreSQL, ``LOCK TABLE ...
        IN SHARE ROW EXCLUSIVE MODE``: it conflicts with itself and with every
        INSERT/UPDATE/DELETE but not with readers, is scoped to this schema's
        table, and is released at commit or rollback. ``SELECT ... FOR UPDATE``
        on the head row is not enough for an append-only table: there is no
        row to lock while it is empty, and a waiter that wakes re-reads the old
        head row, not the one just inserted after it, so both would take the
        same seq. An advisory lock would work too, but its key is per database,
        not per schema, and needs a magic number.
        """
        try:
            if self._sqlite:
                with self.db.engine.connect() as conn:
                    # Autocommit at the driver so that pysqlite issues no BEGIN
                    # of its own; we write BEGIN IMMEDIATE / COMMIT ourselves.
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                    previous = None
                    if secure_delete:
                        # Freed cells are overwritten with zeros, not just unlinked.
                        previous = conn.exec_driver_sql("PRAGMA secure_delete").scalar()
                        conn.exec_driver_sql("PRAGMA secure_delete=ON")
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    try:
                        yield conn
                    except BaseException:
                        with contextlib.suppress(SQLAlchemyError):
                            conn.exec_driver_sql("ROLLBACK")
                        raise
                    conn.exec_driver_sql("COMMIT")
                    if previous is not None:
                        conn.exec_driver_sql(f"PRAGMA secure_delete={int(previous)}")
            else:
                with self.db.engine.begin() as conn:
                    conn.execute(sa.text("LOCK TABLE ledger_records IN SHARE ROW EXCLUSIVE MODE"))
                    yield conn
        except SQLAlchemyError as exc:
            raise ServerError(f"Ledger database error: {type(exc).__name__}") from exc

    def _append_locked(
        self,
        conn: Connection,
        kind: str,
        *,
        tenant: str | None,
        key_id: str | None,
        subject: str | None,
        data_json: str,
        plaintext: bytes | None,
    ) -> LedgerEntry:
        head = head_row(conn)
        seq = int(head.seq) + 1 if head else 1
        prev = str(head.hash) if head else GENESIS_HASH
        encrypted: tuple[str, bytes, bytes] | None = None
        digest: str | None = None
        if plaintext is not None:
            keys = self._require_keys("store ledger content")
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
        conn.execute(ledger_records.insert().values(**fields, prev_hash=prev, hash=hash_))
        if encrypted is not None:
            version, nonce, ciphertext = encrypted
            conn.execute(
                ledger_content.insert().values(
                    seq=seq, key_version=version, nonce=nonce, ciphertext=ciphertext
                )
            )
        return LedgerEntry(
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
        )

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
        _check_name(actor, "actor", nullable=False, limit=_MAX_NAME)
        select_seqs = (
            sa.select(ledger_content.c.seq)
            .join(ledger_records, ledger_records.c.seq == ledger_content.c.seq)
            .where(where)
            .order_by(ledger_content.c.seq)
            .limit(SHRED_BATCH)
        )
        total, first = 0, True
        while True:
            with self._locked(secure_delete=True) as conn:
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
            self._scrub(total)
        return total

    def _scrub(self, erased: int) -> None:
        """Rewrite the database so that deleted ciphertext leaves its files on disk.

        SQLite: the DELETE ran with ``secure_delete`` (freed cells zeroed);
        ``VACUUM`` then rebuilds the file without free pages, and a TRUNCATE
        checkpoint empties the write-ahead log, which still holds the old page
        images. PostgreSQL (outside a transaction, as VACUUM must run): plain
        ``VACUUM`` only marks dead tuples' space free, and a dead tuple lying
        in what becomes a page's free gap keeps its bytes in the table file
        until reused (measured on PostgreSQL 15). ``VACUUM FULL`` rewrites the
        table into a new file and drops the old one, at the price of an
        exclusive lock on ``ledger_content`` for the rewrite (appends with
        content wait; appends without do not). Neither reaches PostgreSQL's
        WAL segments, WAL archives or backups, which keep the ciphertext until
        they are recycled.
        """
        try:
            with self.db.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                if self._sqlite:
                    conn.exec_driver_sql("VACUUM")
                    busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
                    if busy:
                        raise LedgerScrubError(
                            f"Erased {erased} content rows, but readers kept the write-ahead "
                            "log from being emptied; run `PRAGMA wal_checkpoint(TRUNCATE)` "
                            "when the server is idle.",
                            erased=erased,
                        )
                elif self.pg_vacuum_full:
                    conn.exec_driver_sql("VACUUM FULL ledger_content")
                else:
                    conn.exec_driver_sql("VACUUM ledger_content")
        except SQLAlchemyError as exc:
            raise LedgerScrubError(
                f"Erased {erased} content rows (recorded in the ledger), but VACUUM failed "
                f"({type(exc).__name__}); run it again before relying on the erasure on disk.",
                erased=erased,
            ) from exc

    def _check_content(self, row: ChainRow, counts: dict[str, int]) -> str | None:
        """The content check of :meth:`verify`: None when fine or not checkable."""
        stored = row.extra
        if stored is None:
            return None  # never had content, or erased: the digest alone stays
        assert row.fields is not None
        digest = row.fields["content_digest"]
        if digest is None:
            return "content is stored for a record written without content."
        version, nonce, ciphertext = stored
        if self.keys is None or version not in self.keys.versions:
            counts["unchecked"] += 1
            return None
        try:
            plaintext = self.keys.decrypt(
                version, nonce, ciphertext, content_aad(row.seq, row.fields["tenant"])
            )
        except LedgerKeyError:
            return (
                f"its stored content does not authenticate under key version {version!r}: "
                "it was altered or copied from another record (or a different key is loaded "
                "under that version)."
            )
        if not hmac.compare_digest(self.keys.digest(plaintext, version), digest):
            return "its stored content does not match the record's content digest."
        counts["checked"] += 1
        return None


def _check_name(value: Any, param: str, *, nullable: bool, limit: int) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidRequest(
            f"{param} must be a non-empty string of at most {limit} characters.", param=param
        )


def _to_json(value: Any, param: str) -> str:
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{param} must be a JSON object.", param=param)
    try:
        text = canonical_json(dict(value))
        text.encode("utf-8")  # unpaired surrogates would fail later, mid-transaction
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{param} is not JSON-serialisable: {exc}", param=param) from None
    return text
