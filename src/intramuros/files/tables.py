"""The Files API's table: one row per stored file (its bytes live encrypted in the data
dir, see :mod:`intramuros.files.store`).

The document workload's migration steps create it (:mod:`intramuros.docai.tables`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from intramuros.store.db import metadata


def files_v7_columns() -> list[sa.Column[Any]]:
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
    *files_v7_columns(),
    # Added by migration 9: when the file expires (OpenAI's expires_after), else NULL.
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Index("ix_files_tenant_created", "tenant", "created_at"),
    sa.Index("ix_files_expires", "expires_at"),
)
