"""Tables of the document-AI area and the migration step that creates them.

``files`` is the Files API's index: one row per stored file (its bytes live
encrypted in the data dir, see :mod:`intramuros.files.store`). ``docai_jobs``
and ``docai_job_items`` are OCR batch jobs submitted over the API: one row per
job, one per input file, with each item's result encrypted like a file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.store.db import metadata


def _files_v7_columns() -> list[sa.Column[Any]]:
    """The ``files`` columns as migration 7 created them."""
    return [
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("mime_type", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("key_version", sa.String(50), nullable=False),
    ]


files = sa.Table(
    "files",
    metadata,
    *_files_v7_columns(),
    # Added by migration 9: when the file expires (OpenAI's expires_after), else NULL.
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Index("ix_files_tenant_created", "tenant", "created_at"),
    sa.Index("ix_files_expires", "expires_at"),
)

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
    sa.Table("files", frozen, *_files_v7_columns(),
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
