"""Persistence: one SQLAlchemy Core engine over SQLite (default) or PostgreSQL.

Each area owns its tables and the steps that create and change them. An area
registers a function returning its steps (:class:`Migration`: area, step
number, name, what it does) in the entry-point group ``intramuros.migrations``;
:meth:`Database.migrate` runs every registered step not yet applied, each in a
transaction, in the order of the areas' ranks and then of their step numbers,
and records it in ``schema_steps``. Never edit a released step; add a new one.
The store itself owns the catalogue's ``models`` table and the request log.

Databases made before areas numbered their own steps recorded one global
version per step in ``schema_migrations``; they are adopted once (see
:data:`LEGACY_VERSIONS`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from intramuros.errors import ConfigError, ServerError

metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("engine", sa.String(100), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

request_log = sa.Table(
    "request_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("route", sa.String(100), nullable=False),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("error_code", sa.String(100), nullable=True),
    sa.Column("prompt_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("completion_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("ttft_ms", sa.Float, nullable=True),
    sa.Column("weights_sha256", sa.String(64), nullable=True),
    sa.Column("tenant", sa.String(64), nullable=True),
    sa.Column("key_id", sa.String(32), nullable=True),
    # Added by migration 6 (meter/tables.py).
    sa.Column("cpu_seconds", sa.Float, nullable=True),
    sa.Column("energy_joules", sa.Float, nullable=True),
    sa.Column("energy_source", sa.String(40), nullable=True),
    sa.Column("cost_eur", sa.Float, nullable=True),
    sa.Column("co2e_grams", sa.Float, nullable=True),
)

def _v1_tables() -> tuple[sa.Table, ...]:
    """``models`` and ``request_log`` exactly as version 1 created them."""
    v1 = sa.MetaData()
    return (
        sa.Table(
            "models", v1,
            sa.Column("name", sa.String(200), primary_key=True),
            sa.Column("engine", sa.String(100), nullable=False),
            sa.Column("sha256", sa.String(64), nullable=True),
            sa.Column("record", sa.Text, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
        ),
        sa.Table(
            "request_log", v1,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("request_id", sa.String(64), nullable=False),
            sa.Column("ts", sa.Float, nullable=False),
            sa.Column("route", sa.String(100), nullable=False),
            sa.Column("model", sa.String(200), nullable=True),
            sa.Column("status", sa.Integer, nullable=False),
            sa.Column("error_code", sa.String(100), nullable=True),
            sa.Column("prompt_tokens", sa.Integer, nullable=False, default=0),
            sa.Column("completion_tokens", sa.Integer, nullable=False, default=0),
            sa.Column("latency_ms", sa.Float, nullable=False),
            sa.Column("ttft_ms", sa.Float, nullable=True),
            sa.Column("weights_sha256", sa.String(64), nullable=True),
        ),
    )  # fmt: skip


def _create_v1(conn: Connection) -> None:
    for table in _v1_tables():
        table.create(conn)


def _sql(*statements: str) -> Callable[[Connection], None]:
    """A step written as plain SQL that SQLite and PostgreSQL both accept."""

    def step(conn: Connection) -> None:
        for statement in statements:
            conn.execute(sa.text(statement))

    return step


@dataclass(frozen=True)
class Migration:
    """One schema step of an area.

    ``rank`` orders the areas (an area's steps may need another's tables: the
    store's come first, then the ledger, the gate, metering, then workloads);
    within an area, ``step`` numbers count from 1 and are never reused.
    """

    area: str
    step: int
    name: str
    apply: Callable[[Connection], None]
    rank: int = 100


MIGRATIONS_GROUP = "intramuros.migrations"

# The global versions of databases made before areas numbered their own steps.
LEGACY_VERSIONS: dict[int, tuple[str, int]] = {
    1: ("store", 1), 2: ("store", 2), 3: ("gate", 1), 4: ("store", 3), 5: ("ledger", 1),
    6: ("meter", 1), 7: ("docai", 1), 8: ("kyc", 1), 9: ("docai", 2), 10: ("ledger", 2),
    11: ("gate", 2),
}  # fmt: skip


def store_migrations() -> list[Migration]:
    """The store's own steps: the catalogue's records and the request log."""
    return [
        Migration("store", 1, "models and request log", _create_v1, rank=0),
        Migration("store", 2, "request log by time",
                  _sql("CREATE INDEX ix_request_log_ts ON request_log (ts)"), rank=0),
        Migration("store", 3, "request log by tenant", _sql(
            "ALTER TABLE request_log ADD COLUMN tenant VARCHAR(64)",
            "ALTER TABLE request_log ADD COLUMN key_id VARCHAR(32)",
            "CREATE INDEX ix_request_log_tenant ON request_log (tenant, ts)",
        ), rank=0),
    ]  # fmt: skip


def installed_migrations() -> list[Migration]:
    """Every step the installed areas register, in the order they are applied."""
    from importlib.metadata import entry_points

    found: list[Migration] = []
    for point in entry_points(group=MIGRATIONS_GROUP):
        try:
            steps = point.load()()
        except Exception as exc:  # a broken plug-in: say which, never a traceback
            raise ConfigError(f"Migrations of '{point.name}' ({point.value}) cannot be loaded: "
                              f"{type(exc).__name__}: {exc}") from None
        found.extend(steps)
    seen: set[tuple[str, int]] = set()
    for m in found:
        if (m.area, m.step) in seen:
            raise ConfigError(f"Migration step {m.step} of area '{m.area}' is declared twice.")
        seen.add((m.area, m.step))
    return sorted(found, key=lambda m: (m.rank, m.area, m.step))


Step = Callable[[Connection], None]


def area_steps(area: str, rank: int, steps: list[tuple[str, list[Step]]]) -> list[Migration]:
    """An area's steps from ``(name, [apply, ...])`` pairs: step numbers from 1, in order."""

    def run_all(applies: list[Callable[[Connection], None]]) -> Callable[[Connection], None]:
        def step(conn: Connection) -> None:
            for apply in applies:
                apply(conn)

        return step

    return [Migration(area, i, name, run_all(applies), rank=rank)
            for i, (name, applies) in enumerate(steps, start=1)]  # fmt: skip


schema_steps = sa.Table(
    "schema_steps",
    metadata,
    sa.Column("area", sa.String(100), primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)


class Database:
    """The database of one intramuros installation."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = sa.create_engine(url, future=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ConfigError(f"Cannot use database URL: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction; database failures surface as ``ServerError``."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise ServerError(f"Database error: {type(exc).__name__}") from exc

    def migrate(self, steps: list[Migration] | None = None) -> list[tuple[str, int]]:
        """Apply the steps not yet applied (default: every installed area's); return them."""
        wanted = installed_migrations() if steps is None else steps
        applied: list[tuple[str, int]] = []
        try:
            with self.engine.begin() as conn:
                self._adopt_legacy(conn)
            for step in wanted:
                with self.engine.begin() as conn:
                    done = conn.execute(sa.select(schema_steps.c.step).where(
                        schema_steps.c.area == step.area, schema_steps.c.step == step.step,
                    )).first()  # fmt: skip
                    if done:
                        continue
                    step.apply(conn)
                    conn.execute(schema_steps.insert().values(
                        area=step.area, step=step.step, name=step.name, applied_at=time.time()))
                    applied.append((step.area, step.step))
        except SQLAlchemyError as exc:
            raise ConfigError(f"Cannot prepare the database at {self.safe_url()}: {exc}") from None
        return applied

    @staticmethod
    def _adopt_legacy(conn: Connection) -> None:
        """Create ``schema_steps``; record there what ``schema_migrations`` says was done."""
        inspector = sa.inspect(conn)
        if inspector.has_table("schema_steps"):
            return
        schema_steps.to_metadata(sa.MetaData()).create(conn)
        if not inspector.has_table("schema_migrations"):
            return
        rows = conn.execute(sa.select(schema_migrations)).all()
        for row in rows:
            area, step = LEGACY_VERSIONS[int(row.version)]
            conn.execute(schema_steps.insert().values(area=area, step=step, name=row.name,
                                                      applied_at=row.applied_at))  # fmt: skip

    def applied_steps(self) -> list[tuple[str, int]]:
        """Every step applied so far, as ``(area, step)``."""
        with self.begin() as conn:
            rows = conn.execute(sa.select(schema_steps.c.area, schema_steps.c.step)
                                .order_by(schema_steps.c.area, schema_steps.c.step)).all()
        return [(str(r.area), int(r.step)) for r in rows]

    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()

    # -- models ------------------------------------------------------------

    def upsert_model(self, name: str, engine: str, sha256: str | None, record: str) -> None:
        """Insert or replace one catalogue record (JSON text)."""
        with self.begin() as conn:
            conn.execute(models.delete().where(models.c.name == name))
            conn.execute(
                models.insert().values(
                    name=name, engine=engine, sha256=sha256, record=record, updated_at=time.time()
                )
            )

    def delete_model(self, name: str) -> bool:
        """Remove a record; True if it existed."""
        with self.begin() as conn:
            return bool(conn.execute(models.delete().where(models.c.name == name)).rowcount)

    def model_records(self) -> list[str]:
        """Every stored record (JSON text), by name."""
        with self.begin() as conn:
            rows = conn.execute(sa.select(models.c.record).order_by(models.c.name)).all()
        return [row[0] for row in rows]

    # -- request log -------------------------------------------------------

    def log_request(self, **values: Any) -> None:
        """Append one row to the request log."""
        with self.begin() as conn:
            conn.execute(request_log.insert().values(**values))

    def recent_requests(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest rows of the request log, newest first."""
        with self.begin() as conn:
            rows = conn.execute(
                sa.select(request_log).order_by(request_log.c.id.desc()).limit(limit)
            ).mappings()
            return [dict(row) for row in rows]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the CLI read while the server writes; busy_timeout avoids
    # spurious "database is locked" between the two.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def dumps(obj: Any) -> str:
    """Canonical JSON for stored records."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
