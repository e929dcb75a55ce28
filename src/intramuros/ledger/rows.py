"""Reading the ledger tables: records as entries and as rows for the verifier."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.ledger.chain import ChainRow, MalformedRow
from intramuros.ledger.tables import ledger_content, ledger_records
from intramuros.store.db import Database
from intramuros.store.driver import DriverStatement

_READ_BATCH = 1000


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger record as stored.

    ``data_json`` is the canonical JSON text the hash covers; :attr:`data` is
    it parsed. ``has_content`` tells whether encrypted content is (still) stored.
    """

    seq: int
    ts: float
    kind: str
    tenant: str | None
    key_id: str | None
    subject: str | None
    data_json: str
    content_digest: str | None
    prev_hash: str
    hash: str
    has_content: bool
    mac_version: str | None = None
    mac: str | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The record's fields (``data_json`` parsed)."""
        value = json.loads(self.data_json)
        return value if isinstance(value, dict) else {"value": value}

    def hashed_fields(self) -> dict[str, Any]:
        """The fields the record hash covers, as stored."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "tenant": self.tenant,
            "key_id": self.key_id,
            "subject": self.subject,
            "data": self.data_json,
            "content_digest": self.content_digest,
        }


@dataclass(frozen=True)
class StoredExtra:
    """What the database holds beside a record's hashed fields.

    ``content`` is ``(key_version, nonce, ciphertext)`` when content is
    stored; ``mac_version`` and ``mac`` are the record's MAC (``None`` on a
    record written without a key).
    """

    content: tuple[str, bytes, bytes] | None
    mac_version: str | None
    mac: str | None


class DbSource:
    """The live ledger as a :class:`~intramuros.ledger.chain.RowSource`, up to ``upto``.

    ``extend`` is asked once the rows up to ``upto`` are read: when it says
    so, the rows appended since (up to the head at that moment) are read too.
    The verifier uses it when content went missing during the walk: the
    erasure that deleted it appended its tombstone in the same transaction,
    after ``upto`` was read.
    """

    def __init__(self, db: Database, upto: int, extend: Callable[[], bool] | None = None) -> None:
        self.db = db
        self.upto = upto
        self.extend = extend

    def rows(self) -> Iterator[ChainRow]:
        """Every record from seq 1 to ``upto`` (or the later head), with its stored content."""
        yield from self._range(0, self.upto)
        if self.extend is not None and self.extend():
            with self.db.begin() as conn:
                head = head_row(conn)
            if head is not None and int(head.seq) > self.upto:
                yield from self._range(self.upto, int(head.seq))

    def _range(self, after: int, upto: int) -> Iterator[ChainRow]:
        # Keyset pages, each in its own short transaction: no server-side
        # cursor, and no transaction held open across the whole walk.
        last = after
        query = (
            sa.select(
                ledger_records,
                ledger_content.c.key_version,
                ledger_content.c.nonce,
                ledger_content.c.ciphertext,
            )
            .select_from(ledger_records.outerjoin(ledger_content))
            .order_by(ledger_records.c.seq)
            .limit(_READ_BATCH)
        )
        while True:
            page = query.where(ledger_records.c.seq > last, ledger_records.c.seq <= upto)
            with self.db.begin() as conn:
                rows = conn.execute(page).all()
            if not rows:
                return
            for row in rows:
                stored = None
                if row.key_version is not None:
                    stored = (row.key_version, bytes(row.nonce), bytes(row.ciphertext))
                yield chain_row(row, stored)
            last = int(rows[-1].seq)

    def at(self, seq: int) -> ChainRow | None:
        """The record stored under ``seq``, if any."""
        with self.db.begin() as conn:
            row = conn.execute(sa.select(ledger_records).where(ledger_records.c.seq == seq)).first()
        return chain_row(row) if row is not None else None

    def with_prev(self, prev_hash: str) -> list[ChainRow]:
        """The records whose prev_hash is ``prev_hash``."""
        # No index on prev_hash: this runs only after a failure, once or twice.
        query = sa.select(ledger_records).where(ledger_records.c.prev_hash == prev_hash)
        with self.db.begin() as conn:
            return [chain_row(row) for row in conn.execute(query).all()]


def chain_row(row: Any, stored: tuple[str, bytes, bytes] | None = None) -> ChainRow:
    """A ``ledger_records`` row as the verifier sees it; ``stored`` is its content, if any."""
    fields = {
        "seq": row.seq,
        "ts": row.ts,
        "kind": row.kind,
        "tenant": row.tenant,
        "key_id": row.key_id,
        "subject": row.subject,
        "data": row.data,
        "content_digest": row.content_digest,
    }
    extra = StoredExtra(stored, row.mac_version, row.mac)
    try:
        return ChainRow.from_fields(fields, row.prev_hash, row.hash, extra)
    except (TypeError, ValueError) as exc:
        raise MalformedRow(int(row.seq), f"record {row.seq} cannot be read: {exc}") from None


# Built once: every append reads the head.
class _Head(NamedTuple):
    seq: int
    hash: str
    mac_version: str | None
    mac: str | None


_HEAD = DriverStatement(sa.select(ledger_records.c.seq, ledger_records.c.hash,
                            ledger_records.c.mac_version, ledger_records.c.mac)
                  .order_by(ledger_records.c.seq.desc()).limit(1))  # fmt: skip


def head_row(conn: Connection) -> Any:
    """The last record's ``(seq, hash, mac_version, mac)``, or ``None`` for an empty ledger."""
    row = _HEAD.first(conn)
    return None if row is None else _Head(*row)


def entry_from_row(row: Any) -> LedgerEntry:
    """A ``ledger_records`` row (plus a ``has_content`` column) as a :class:`LedgerEntry`."""
    return LedgerEntry(
        seq=int(row.seq),
        ts=float(row.ts),
        kind=row.kind,
        tenant=row.tenant,
        key_id=row.key_id,
        subject=row.subject,
        data_json=row.data,
        content_digest=row.content_digest,
        prev_hash=row.prev_hash,
        hash=row.hash,
        has_content=bool(row.has_content),
        mac_version=row.mac_version,
        mac=row.mac,
    )
