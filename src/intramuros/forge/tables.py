"""Tables of the fine-tuning area: jobs (the queue), their events and checkpoints.

The queue is the ``forge_jobs`` table, so a restart or a crash loses no job:
a worker claims a queued job (or a running one whose worker died) in one
conditional update, and resumes it from its last checkpoint.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.store.db import Migration, area_steps, metadata

forge_jobs = sa.Table(
    "forge_jobs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("dialect", sa.String(10), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("base_sha256", sa.String(64), nullable=False),
    sa.Column("suffix", sa.String(64), nullable=True),
    sa.Column("training_file", sa.String(64), nullable=False),
    sa.Column("validation_file", sa.String(64), nullable=True),
    sa.Column("training_sha256", sa.String(64), nullable=True),
    sa.Column("validation_sha256", sa.String(64), nullable=True),
    sa.Column("requested", sa.Text, nullable=False),  # hyperparameters as asked (JSON)
    sa.Column("hyper", sa.Text, nullable=True),  # as resolved for this data (JSON)
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("metadata", sa.Text, nullable=True),
    sa.Column("merge", sa.Boolean, nullable=False),
    sa.Column("auto_start", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("modified_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("estimated_finish", sa.Float, nullable=True),
    sa.Column("fine_tuned_model", sa.String(300), nullable=True),
    sa.Column("trained_tokens", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),  # {code, message, param} (JSON)
    sa.Column("report", sa.Text, nullable=True),  # the data check's report (JSON)
    sa.Column("result", sa.Text, nullable=True),  # what the worker made (JSON)
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("worker", sa.String(64), nullable=True),
    sa.Column("heartbeat", sa.Float, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    # The bundled bench suite the job is scored on, before and after training.
    sa.Column("suite", sa.String(100), nullable=True),
    sa.Index("ix_forge_jobs_tenant_created", "tenant", "created_at"),
    sa.Index("ix_forge_jobs_status", "status"),
)

forge_events = sa.Table(
    "forge_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(40), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("type", sa.String(10), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=True),
    sa.Index("ix_forge_events_job", "job_id", "seq"),
)

forge_checkpoints = sa.Table(
    "forge_checkpoints",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("job_id", sa.String(40), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Index("ix_forge_checkpoints_job", "job_id", "step"),
)


# One row per tenant, locked while a job is created: the count of its unfinished jobs
# and the insert happen under that lock, so two creates racing cannot both pass the limit.
forge_tenant_locks = sa.Table(
    "forge_tenant_locks",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
)


def _create(conn: Connection) -> None:
    # A private copy: a later step that alters these tables must not change this one.
    frozen = sa.MetaData()
    for table in (forge_jobs, forge_events, forge_checkpoints):
        table.to_metadata(frozen).create(conn)


def _create_locks(conn: Connection) -> None:
    frozen = sa.MetaData()
    forge_tenant_locks.to_metadata(frozen).create(conn)
    # A database made by the first step of an older version has no ``suite`` column yet.
    columns = {c["name"] for c in sa.inspect(conn).get_columns("forge_jobs")}
    if "suite" not in columns:
        conn.execute(sa.text("ALTER TABLE forge_jobs ADD COLUMN suite VARCHAR(100)"))


def migrations() -> list[Migration]:
    """The fine-tuning area's steps."""
    return area_steps("forge", 130, [
        ("fine-tuning jobs, events, checkpoints", [_create]),
        ("a lock row per tenant for the job limits; the suite a job is scored on",
         [_create_locks]),
    ])  # fmt: skip
