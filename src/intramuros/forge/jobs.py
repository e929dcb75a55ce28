"""The fine-tuning jobs in the database: rows, events, checkpoints, the queue.

Every read names the tenant: another tenant's job is not found, exactly like
one that does not exist. Status changes are conditional updates (``WHERE
status = ...``), so a cancel racing a worker, or two workers racing for one
job, each see one consistent outcome.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.errors import NotFound
from intramuros.forge import protocol as p
from intramuros.forge.tables import (
    forge_checkpoints,
    forge_events,
    forge_jobs,
    forge_tenant_locks,
)
from intramuros.platform.interface import UnitOfWork

ACTIVE = ("validating_files", "validated", "queued", "running")
FINISHED_STATES = p.FINISHED
MAX_EVENT_PAGE = 100


class JobNotFound(NotFound):
    code = "not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"No fine-tuning job '{job_id[:64]}'.", param="fine_tuning_job_id")


@dataclass(frozen=True)
class JobRow:
    """One job as stored (JSON columns decoded)."""

    id: str
    tenant: str
    key_id: str | None
    status: str
    dialect: str
    model: str
    base_sha256: str
    suffix: str | None
    training_file: str
    validation_file: str | None
    training_sha256: str | None
    validation_sha256: str | None
    requested: dict[str, Any]
    hyper: dict[str, Any] | None
    seed: int
    metadata: dict[str, str] | None
    merge: bool
    auto_start: bool
    created_at: float
    modified_at: float
    started_at: float | None
    finished_at: float | None
    estimated_finish: float | None
    fine_tuned_model: str | None
    trained_tokens: int | None
    error: dict[str, Any] | None
    report: dict[str, Any] | None
    result: dict[str, Any] | None
    cancel_requested: bool
    worker: str | None
    heartbeat: float | None
    attempts: int
    suite: str | None = None


def model_name(row: JobRow) -> str:
    """The name the job's model is registered as: ``ft:<base>:<suffix>:<job>``."""
    return row.fine_tuned_model or f"ft:{row.model}:{row.suffix or 'ft'}:{row.id}"


_JSON = ("requested", "hyper", "metadata", "error", "report", "result")


def _row(mapping: Any) -> JobRow:
    values = dict(mapping)
    for name in _JSON:
        raw = values.get(name)
        values[name] = json.loads(raw) if raw else None
    values["requested"] = values["requested"] or {}
    return JobRow(**values)


def new_job_id() -> str:
    return "ftjob-" + secrets.token_hex(12)


def worker_id() -> str:
    """This process, as it signs the jobs it runs: host and pid."""
    import os

    return f"{socket.gethostname()[:40]}:{os.getpid()}"


class Jobs:
    """The jobs of every tenant (each method names the tenant it acts for)."""

    def __init__(self, tables: UnitOfWork) -> None:
        self.tables = tables

    # -- rows -------------------------------------------------------------------

    def create(self, row: dict[str, Any], admit: Callable[[Connection], None]) -> None:
        """Store a new job once ``admit(conn)`` (the tenant's limits) has passed, both under
        the tenant's lock row: two creates racing cannot both pass a limit."""
        values = {k: (json.dumps(v) if k in _JSON and v is not None else v)
                  for k, v in row.items()}  # fmt: skip
        with self.tables.begin() as conn:
            _lock_tenant(conn, row["tenant"])
            admit(conn)
            conn.execute(forge_jobs.insert().values(**values))

    def get(self, tenant: str | None, job_id: str) -> JobRow:
        """The job (of ``tenant``, unless None: the worker's view)."""
        query = sa.select(forge_jobs).where(forge_jobs.c.id == job_id)
        if tenant is not None:
            query = query.where(forge_jobs.c.tenant == tenant)
        with self.tables.begin() as conn:
            found = conn.execute(query).mappings().first()
        if found is None:
            raise JobNotFound(job_id)
        return _row(found)

    def page(self, tenant: str, after: str | None, limit: int,
             status: str | None = None) -> tuple[list[JobRow], bool]:  # fmt: skip
        """Newest first, after the job ``after`` (OpenAI's cursor)."""
        query = sa.select(forge_jobs).where(forge_jobs.c.tenant == tenant)
        if status is not None:
            query = query.where(forge_jobs.c.status == status)
        if after:
            anchor = self.get(tenant, after)
            query = query.where(sa.or_(
                forge_jobs.c.created_at < anchor.created_at,
                sa.and_(forge_jobs.c.created_at == anchor.created_at,
                        forge_jobs.c.id < anchor.id),
            ))  # fmt: skip
        query = query.order_by(forge_jobs.c.created_at.desc(), forge_jobs.c.id.desc())
        with self.tables.begin() as conn:
            rows = conn.execute(query.limit(limit + 1)).mappings().all()
        return [_row(r) for r in rows[:limit]], len(rows) > limit

    def update(self, job_id: str, *, when: tuple[str, ...] | None = None,
               conn: Connection | None = None, **values: Any) -> bool:  # fmt: skip
        """Set ``values`` on the job (only while its status is one of ``when``)."""
        values = {k: (json.dumps(v) if k in _JSON and v is not None else v)
                  for k, v in values.items()}  # fmt: skip
        values.setdefault("modified_at", time.time())
        query = forge_jobs.update().where(forge_jobs.c.id == job_id).values(**values)
        if when is not None:
            query = query.where(forge_jobs.c.status.in_(when))
        if conn is not None:
            return bool(conn.execute(query).rowcount)
        with self.tables.begin() as own:
            return bool(own.execute(query).rowcount)

    @staticmethod
    def active_count(conn: Connection, tenant: str) -> int:
        """The tenant's jobs not yet finished."""
        return int(conn.execute(
            sa.select(sa.func.count()).select_from(forge_jobs)
            .where(forge_jobs.c.tenant == tenant, forge_jobs.c.status.in_(ACTIVE))
        ).scalar_one())  # fmt: skip

    @staticmethod
    def tokens_since(conn: Connection, tenant: str, since: float) -> int:
        """Tokens the tenant's jobs created since ``since`` will train (or trained)."""
        rows = conn.execute(
            sa.select(forge_jobs.c.trained_tokens, forge_jobs.c.report, forge_jobs.c.hyper)
            .where(forge_jobs.c.tenant == tenant, forge_jobs.c.created_at >= since,
                   forge_jobs.c.status != "cancelled")
        ).all()  # fmt: skip
        total = 0
        for trained, report, hyper in rows:
            if trained is not None:
                total += int(trained)
            elif report and hyper:
                total += int(json.loads(report).get("planned_tokens", 0))
        return total

    def next_runnable(
        self, stale_before: float, usable: Callable[[JobRow], bool] = lambda _: True
    ) -> JobRow | None:
        """The oldest job a worker may take (``usable`` by it): queued, or running with a
        dead worker."""
        with self.tables.begin() as conn:
            rows = conn.execute(
                sa.select(forge_jobs)
                .where(sa.or_(forge_jobs.c.status == "queued",
                              forge_jobs.c.status == "running"))
                .order_by(forge_jobs.c.created_at)
            ).mappings().all()  # fmt: skip
        for found in rows:
            row = _row(found)
            if (row.status == "queued" or _abandoned(row, stale_before)) and usable(row):
                return row
        return None

    def claim(self, row: JobRow, me: str) -> bool:
        """Take ``row`` for worker ``me`` if nobody changed it meanwhile."""
        now = time.time()
        with self.tables.begin() as conn:
            query = forge_jobs.update().where(
                forge_jobs.c.id == row.id, forge_jobs.c.status == row.status,
                forge_jobs.c.attempts == row.attempts,
            ).values(status="running", worker=me, heartbeat=now, modified_at=now,
                     started_at=row.started_at or now, attempts=row.attempts + 1)  # fmt: skip
            return bool(conn.execute(query).rowcount)

    def has_work(self, data_dir: Path) -> bool:
        """Whether a job waits whose checked data is in ``data_dir`` (a worker there could
        run it; a running one may have a live worker, which the lock tells)."""
        from intramuros.forge.workdir import EXAMPLES, job_dir

        with self.tables.begin() as conn:
            rows = conn.execute(
                sa.select(forge_jobs.c.id, forge_jobs.c.tenant)
                .where(forge_jobs.c.status.in_(("queued", "running")))
            ).all()  # fmt: skip
        return any((job_dir(data_dir, tenant, job) / EXAMPLES).is_file() for job, tenant in rows)

    def tenant_jobs(self, tenant: str) -> list[str]:
        with self.tables.begin() as conn:
            return [r[0] for r in conn.execute(
                sa.select(forge_jobs.c.id).where(forge_jobs.c.tenant == tenant))]  # fmt: skip

    def delete_tenant(self, conn: Connection, tenant: str) -> int:
        ids = [r[0] for r in conn.execute(
            sa.select(forge_jobs.c.id).where(forge_jobs.c.tenant == tenant))]  # fmt: skip
        if ids:
            conn.execute(forge_events.delete().where(forge_events.c.job_id.in_(ids)))
            conn.execute(forge_checkpoints.delete().where(forge_checkpoints.c.job_id.in_(ids)))
            conn.execute(forge_jobs.delete().where(forge_jobs.c.id.in_(ids)))
        conn.execute(forge_tenant_locks.delete().where(forge_tenant_locks.c.tenant == tenant))
        return len(ids)

    # -- events and checkpoints ------------------------------------------------------

    def event(self, job_id: str, message: str, *, level: str = "info",
              data: dict[str, Any] | None = None, kind: str = "message",
              conn: Connection | None = None) -> None:  # fmt: skip
        values = dict(job_id=job_id, created_at=time.time(), level=level, type=kind,
                      message=message, data=json.dumps(data) if data is not None else None)
        if conn is not None:
            conn.execute(forge_events.insert().values(**values))
            return
        with self.tables.begin() as own:
            own.execute(forge_events.insert().values(**values))

    def events(self, job_id: str, after: str | None, limit: int) -> tuple[list[p.JobEvent], bool]:
        """Newest first (OpenAI's order), after the event ``after``."""
        query = sa.select(forge_events).where(forge_events.c.job_id == job_id)
        if after:
            seq = _event_seq(after)
            query = query.where(forge_events.c.seq < seq)
        query = query.order_by(forge_events.c.seq.desc()).limit(limit + 1)
        with self.tables.begin() as conn:
            rows = conn.execute(query).mappings().all()
        out = [p.JobEvent(id=f"ftevent-{r['seq']}", created_at=int(r["created_at"]),
                          level=r["level"], message=r["message"], type=r["type"],
                          data=json.loads(r["data"]) if r["data"] else None)
               for r in rows[:limit]]  # fmt: skip
        return out, len(rows) > limit

    def checkpoint(self, job_id: str, step: int, metrics: dict[str, Any]) -> str:
        checkpoint_id = "ftckpt-" + secrets.token_hex(12)
        with self.tables.begin() as conn:
            conn.execute(forge_checkpoints.insert().values(
                id=checkpoint_id, job_id=job_id, step=step, created_at=time.time(),
                metrics=json.dumps(metrics)))  # fmt: skip
        return checkpoint_id

    def checkpoints(self, job_id: str, after: str | None,
                    limit: int) -> tuple[list[dict[str, Any]], bool]:  # fmt: skip
        query = sa.select(forge_checkpoints).where(forge_checkpoints.c.job_id == job_id)
        if after:
            with self.tables.begin() as conn:
                anchor = conn.execute(sa.select(forge_checkpoints.c.step).where(
                    forge_checkpoints.c.id == after,
                    forge_checkpoints.c.job_id == job_id)).scalar()  # fmt: skip
            if anchor is None:
                raise NotFound(f"No checkpoint '{after[:64]}'.", param="after")
            query = query.where(forge_checkpoints.c.step < anchor)
        query = query.order_by(forge_checkpoints.c.step.desc()).limit(limit + 1)
        with self.tables.begin() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings().all()]
        for r in rows:
            r["metrics"] = json.loads(r["metrics"])
        return rows[:limit], len(rows) > limit


def _lock_tenant(conn: Connection, tenant: str) -> None:
    """Create the tenant's lock row if needed, and hold it until the transaction ends."""
    key = {"tenant": tenant}
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(forge_tenant_locks).values(**key).on_conflict_do_nothing())
    else:  # SQLite: this write takes the database's write lock for the transaction
        conn.execute(forge_tenant_locks.insert().prefix_with("OR IGNORE").values(**key))
    conn.execute(sa.select(forge_tenant_locks.c.tenant)
                 .where(forge_tenant_locks.c.tenant == tenant).with_for_update())  # fmt: skip


def _event_seq(event_id: str) -> int:
    try:
        return int(event_id.removeprefix("ftevent-"))
    except ValueError:
        raise NotFound(f"No event '{event_id[:64]}'.", param="after") from None


def _abandoned(row: JobRow, stale_before: float) -> bool:
    """A running job whose worker is gone: on this host with its pid dead, or silent."""
    if row.heartbeat is None or row.heartbeat < stale_before:
        return True
    host, _, pid = (row.worker or "").rpartition(":")
    if host == socket.gethostname()[:40] and pid.isdigit():
        import os

        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False
