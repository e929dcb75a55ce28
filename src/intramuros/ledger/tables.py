"""The ledger's two tables and the migration steps that create them.

``ledger_records`` is the hash chain itself: one row per recorded event, never
updated, never deleted. ``ledger_content`` holds the optional encrypted
payload of a record (prompts, answers); it is the only thing erasure and
retention ever delete, which is why the chain covers only the content's keyed
digest and keeps verifying after the ciphertext is gone.

The ledger keys are never stored here: they live in a key file or in the
environment (see :mod:`intramuros.ledger.crypto`).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.store.db import metadata

ledger_records = sa.Table(
    "ledger_records",
    metadata,
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
    # Erasure looks records up by tenant and subject, retention and export by
    # tenant and time.
    sa.Index("ix_ledger_records_tenant_subject", "tenant", "subject"),
    sa.Index("ix_ledger_records_tenant_ts", "tenant", "ts"),
    sa.Index("ix_ledger_records_ts", "ts"),
)

ledger_content = sa.Table(
    "ledger_content",
    metadata,
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
)


def _create_ledger_tables(conn: Connection) -> None:
    # A private copy of the definitions, as store.db's own steps do: later
    # steps that add indexes or columns must not change what this step did.
    frozen = sa.MetaData()
    for table in (ledger_records, ledger_content):
        table.to_metadata(frozen).create(conn)


def ledger_migration_steps() -> list[tuple[str, Callable[[Connection], None]]]:
    """The schema steps of the ledger, as ``(name, apply)`` pairs, in order.

    They are meant to be appended to :data:`intramuros.store.db.MIGRATIONS`
    with the next free version numbers. Each ``apply`` runs inside the
    migration's transaction.
    """
    return [("ledger records and encrypted content", _create_ledger_tables)]
