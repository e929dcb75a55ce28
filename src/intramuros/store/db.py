"""Persistence: one SQLAlchemy Core engine over SQLite (default) or PostgreSQL.

The schema is versioned from day one: ``MIGRATIONS`` is an append-only list
of steps, each applied once, in order, inside a transaction, and recorded in
``schema_migrations``. Never edit a released step; add a new one.
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

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("policy", sa.Text, nullable=False),
    # Added by migration 11 (gate/tables.py): what other tables store as the tenant.
    sa.Column("id", sa.String(64), nullable=True, unique=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("models", sa.Text, nullable=True),
    sa.Column("limits", sa.Text, nullable=True),
)

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
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


def _v3_tenants(conn: Connection) -> None:
    """``tenants`` exactly as version 3 created it (11 adds ``id``), with keys and usage."""
    v3 = sa.MetaData()
    sa.Table(
        "tenants", v3,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("policy", sa.Text, nullable=False),
    ).create(conn)  # fmt: skip
    for table in (api_keys, usage):
        table.to_metadata(v3).create(conn)


def _create(*tables: sa.Table) -> Callable[[Connection], None]:
    """Create tables from a private copy of their definition.

    The copy keeps later DDL off the shared ``metadata``. When a later step
    alters one of these tables, freeze the earlier step by spelling the table
    out as it was then (see ``_v1_tables``).
    """

    def step(conn: Connection) -> None:
        frozen = sa.MetaData()
        for table in tables:
            table.to_metadata(frozen).create(conn)

    return step


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
    """One schema step: its version, a name for humans, and what it does."""

    version: int
    name: str
    apply: Callable[[Connection], None]


def _ledger_step(conn: Connection) -> None:
    from intramuros.ledger.tables import ledger_migration_steps

    for _name, apply in ledger_migration_steps():
        apply(conn)


def _area_step(module: str, steps: str = "migration_steps") -> Callable[[Connection], None]:
    """A step owned by one area's ``tables`` module (``migration_steps()``), imported late."""

    def step(conn: Connection) -> None:
        import importlib

        for _name, apply in getattr(importlib.import_module(module), steps)():
            apply(conn)

    return step


MIGRATIONS: list[Migration] = [
    Migration(1, "models and request log", _create_v1),
    Migration(2, "request log by time", _sql("CREATE INDEX ix_request_log_ts ON request_log (ts)")),
    Migration(3, "tenants, api keys, usage", _v3_tenants),
    Migration(4, "request log by tenant", _sql(
        "ALTER TABLE request_log ADD COLUMN tenant VARCHAR(64)",
        "ALTER TABLE request_log ADD COLUMN key_id VARCHAR(32)",
        "CREATE INDEX ix_request_log_tenant ON request_log (tenant, ts)",
    )),
    Migration(5, "ledger records and encrypted content", _ledger_step),
    Migration(6, "metering: energy, cost, CO2", _area_step("intramuros.meter.tables")),
    Migration(7, "files and document jobs", _area_step("intramuros.docai.tables")),
    Migration(8, "kyc lists, customers, cases", _area_step("intramuros.kyc.tables")),
    Migration(9, "files expire", _area_step("intramuros.docai.tables", "expiry_steps")),
    Migration(10, "ledger MACs", _area_step("intramuros.ledger.tables", "chain_mac_steps")),
    Migration(11, "tenants are identities", _area_step("intramuros.gate.tables")),
]


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

    def migrate(self) -> list[int]:
        """Apply the steps not yet applied; return their versions."""
        applied: list[int] = []
        try:
            with self.engine.begin() as conn:
                schema_migrations.create(conn, checkfirst=True)
            for step in MIGRATIONS:
                with self.engine.begin() as conn:
                    done = conn.execute(
                        sa.select(schema_migrations.c.version).where(
                            schema_migrations.c.version == step.version
                        )
                    ).first()
                    if done:
                        continue
                    step.apply(conn)
                    conn.execute(
                        schema_migrations.insert().values(
                            version=step.version, name=step.name, applied_at=time.time()
                        )
                    )
                    applied.append(step.version)
        except SQLAlchemyError as exc:
            raise ConfigError(f"Cannot prepare the database at {self.safe_url()}: {exc}") from None
        return applied

    def schema_version(self) -> int:
        """The highest applied migration."""
        with self.begin() as conn:
            value = conn.execute(sa.select(sa.func.max(schema_migrations.c.version))).scalar()
        return int(value or 0)

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
