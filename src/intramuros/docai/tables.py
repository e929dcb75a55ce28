"""Tables of the document-AI area and the migration steps that create them.

``docai_jobs`` and ``docai_job_items`` are OCR batch jobs submitted over the
API: one row per job, one per input file, with each item's result encrypted
like a file. The Files API's ``files`` table (:mod:`intramuros.files.tables`)
is created by this area's steps too: the Files API is part of this workload.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.files.tables import files_v7_columns
from intramuros.store.db import Migration, area_steps, metadata

docai_jobs = sa.Table(
    "docai_jobs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("options", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("completed_at", sa.Float, nullable=True),
    sa.Column("heartbeat", sa.Float, nullable=True),
    sa.Column("worker", sa.String(64), nullable=True),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("succeeded", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("pages", sa.Integer, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_docai_jobs_tenant_created", "tenant", "created_at"),
    sa.Index("ix_docai_jobs_status", "status"),
)

docai_job_items = sa.Table(
    "docai_job_items",
    metadata,
    sa.Column("job_id", sa.String(40), sa.ForeignKey("docai_jobs.id"), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("file_id", sa.String(40), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("pages", sa.Integer, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("key_version", sa.String(50), nullable=True),
    sa.Column("nonce", sa.LargeBinary, nullable=True),
    sa.Column("result", sa.LargeBinary, nullable=True),
    sa.Column("completed_at", sa.Float, nullable=True),
)


def _create_tables(conn: Connection) -> None:
    # A private copy, as the store's own steps do: a later step that alters these
    # tables must not change what this one created.
    frozen = sa.MetaData()
    sa.Table("files", frozen, *files_v7_columns(),
             sa.Index("ix_files_tenant_created", "tenant", "created_at")).create(conn)  # fmt: skip
    for table in (docai_jobs, docai_job_items):
        table.to_metadata(frozen).create(conn)


def migration_steps() -> list[tuple[str, Callable[[Connection], None]]]:
    """(name, apply) pairs run in order by the database's migration for this area (7)."""
    return [("files, OCR jobs and their items", _create_tables)]


def expiry_steps() -> list[tuple[str, Callable[[Connection], None]]]:
    """Migration 9: files may expire (a column and its index)."""

    def add_expiry(conn: Connection) -> None:
        conn.execute(sa.text("ALTER TABLE files ADD COLUMN expires_at FLOAT"))
        conn.execute(sa.text("CREATE INDEX ix_files_expires ON files (expires_at)"))

    return [("files expire", add_expiry)]


def migrations() -> list[Migration]:
    """The document workload's steps."""
    return area_steps("docai", 100, [
        ("files and document jobs", [a for _n, a in migration_steps()]),
        ("files expire", [a for _n, a in expiry_steps()]),
    ])  # fmt: skip
