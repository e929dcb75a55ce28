"""The ledger's two tables and the migration steps that create and extend them.

``ledger_records`` is the hash chain itself: one row per recorded event, never
updated, never deleted. ``ledger_content`` holds the optional encrypted
payload of a record (prompts, answers); it is the only thing erasure and
retention ever delete, which is why the chain covers only the content's keyed
digest and keeps verifying after the ciphertext is gone.

Each record also carries a MAC of its hash under a key derived from the ledger
key (``mac_version``, ``mac``; see :mod:`intramuros.ledger.crypto`). Records
written before the ledger had keys, or by a keyless installation, have none.

The ledger keys are never stored here: they live in a key file or in the
environment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.store.db import Migration, area_steps, metadata


def _records_v5_columns() -> list[sa.Column[Any]]:
    """``ledger_records`` exactly as migration 5 created it."""
    return [
        # Assigned by the ledger under its append lock (1, 2, 3, ... no gaps), never
        # by the database: a sequence would leave gaps on rolled-back appends, and
        # gaps are exactly what verification reports as deletions.
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=True),
        sa.Column("key_id", sa.String(200), nullable=True),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("content_digest", sa.String(64), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    ]


def _records_v5_indexes() -> list[sa.Index]:
    # Erasure looks records up by tenant and subject, retention and export by
    # tenant and time.
    return [
        sa.Index("ix_ledger_records_tenant_subject", "tenant", "subject"),
        sa.Index("ix_ledger_records_tenant_ts", "tenant", "ts"),
        sa.Index("ix_ledger_records_ts", "ts"),
    ]


def _mac_v10_columns() -> list[sa.Column[Any]]:
    """The columns migration 10 adds to ``ledger_records``."""
    return [
        # The ledger key version the MAC was made with, and the hex MAC itself;
        # both null on records written without a key.
        sa.Column("mac_version", sa.String(50), nullable=True),
        sa.Column("mac", sa.String(64), nullable=True),
    ]


def _content_v5_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column(
            "seq",
            sa.BigInteger,
            sa.ForeignKey("ledger_records.seq"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("key_version", sa.String(50), nullable=False),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    ]


ledger_records = sa.Table(
    "ledger_records",
    metadata,
    *_records_v5_columns(),
    *_mac_v10_columns(),
    *_records_v5_indexes(),
)

ledger_content = sa.Table("ledger_content", metadata, *_content_v5_columns())

# Record kinds whose data lists (under "seqs") the records whose stored content
# they deleted. Verification accepts a missing content row only if one of these,
# later in the chain, names it.
TOMBSTONE_KINDS = frozenset({"erasure", "purge", "tenant_erasure"})


def _create_ledger_tables(conn: Connection) -> None:
    # Private copies of the definitions as they were at migration 5: later
    # steps that add columns must not change what this step created.
    frozen = sa.MetaData()
    sa.Table("ledger_records", frozen, *_records_v5_columns(), *_records_v5_indexes())
    sa.Table("ledger_content", frozen, *_content_v5_columns())
    frozen.create_all(conn)


def _add_mac_columns(conn: Connection) -> None:
    for column in _mac_v10_columns():
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE ledger_records ADD COLUMN {column.name} {kind}"))


def ledger_migration_steps() -> list[tuple[str, Callable[[Connection], None]]]:
    """Migration 5: the ledger's tables, as ``(name, apply)`` pairs, in order.

    Each ``apply`` runs inside the migration's transaction.
    """
    return [("ledger records and encrypted content", _create_ledger_tables)]


def chain_mac_steps() -> list[tuple[str, Callable[[Connection], None]]]:
    """Migration 10: records carry a MAC under the ledger key (two nullable columns).

    Records written before stay as they are (no MAC): verification accepts
    them only as the chain's prefix, authenticated by the first MAC'd record
    after them.
    """
    return [("ledger records carry a keyed MAC", _add_mac_columns)]


def migrations() -> list[Migration]:
    """The ledger's steps: its tables, then the records' MAC columns."""
    return area_steps("ledger", 10, [
        ("ledger records and encrypted content", [a for _n, a in ledger_migration_steps()]),
        ("ledger MACs", [a for _n, a in chain_mac_steps()]),
    ])  # fmt: skip
