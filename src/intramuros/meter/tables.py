"""Metering's storage: energy, cost and CO2e per call and per day.

Per call, five nullable columns on ``request_log`` (null for calls logged
before metering existed). Per day, ``usage_metering`` beside the token totals
of ``usage`` (same key: tenant, key, model, day), so ``GET /v1/usage`` can sum
energy, euros and grams the way it sums tokens.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.store.db import Migration, area_steps, metadata
from intramuros.store.driver import DriverStatement

usage_metering = sa.Table(
    "usage_metering",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("cpu_seconds", sa.Float, nullable=False),
    sa.Column("energy_joules", sa.Float, nullable=False),
    sa.Column("cost_eur", sa.Float, nullable=False),
    sa.Column("co2e_grams", sa.Float, nullable=False),
)


def _request_log_columns(conn: Connection) -> None:
    for column, kind in (("cpu_seconds", "FLOAT"), ("energy_joules", "FLOAT"),
                         ("energy_source", "VARCHAR(40)"), ("cost_eur", "FLOAT"),
                         ("co2e_grams", "FLOAT")):  # fmt: skip
        conn.execute(sa.text(f"ALTER TABLE request_log ADD COLUMN {column} {kind}"))


def _usage_metering(conn: Connection) -> None:
    frozen = sa.MetaData()
    usage_metering.to_metadata(frozen).create(conn)


def migration_steps() -> list[tuple[str, Callable[[Connection], None]]]:
    """(name, apply) pairs run in order by the database's migration for this area."""
    return [("request log energy columns", _request_log_columns),
            ("daily energy and cost", _usage_metering)]  # fmt: skip


# Built once (compiled once, cached): every call's record runs them.
_T = usage_metering.c
_METERING_UPDATE = DriverStatement(usage_metering.update().where(
    _T.tenant == sa.bindparam("b_tenant"), _T.key_id == sa.bindparam("b_key"),
    _T.model == sa.bindparam("b_model"), _T.day == sa.bindparam("b_day"),
).values(
    cpu_seconds=_T.cpu_seconds + sa.bindparam("b_cpu", type_=sa.Float),
    energy_joules=_T.energy_joules + sa.bindparam("b_joules", type_=sa.Float),
    cost_eur=_T.cost_eur + sa.bindparam("b_eur", type_=sa.Float),
    co2e_grams=_T.co2e_grams + sa.bindparam("b_co2e", type_=sa.Float),
))  # fmt: skip
_METERING_INSERT = DriverStatement(usage_metering.insert())


def record_metering(
    conn: Connection, *, tenant: str, key_id: str, model: str, now: float, cpu_seconds: float,
    energy_joules: float, cost_eur: float, co2e_grams: float,
) -> None:  # fmt: skip
    """Add one call's energy, cost and CO2e to its day's totals, in ``conn``'s transaction."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")
    updated = _METERING_UPDATE.execute(conn, {
        "b_tenant": tenant, "b_key": key_id, "b_model": model, "b_day": day,
        "b_cpu": cpu_seconds, "b_joules": energy_joules, "b_eur": cost_eur,
        "b_co2e": co2e_grams})  # fmt: skip
    if not updated:
        _METERING_INSERT.execute(conn, {
            "tenant": tenant, "key_id": key_id, "model": model, "day": day,
            "cpu_seconds": cpu_seconds, "energy_joules": energy_joules, "cost_eur": cost_eur,
            "co2e_grams": co2e_grams})  # fmt: skip


def migrations() -> list[Migration]:
    """Metering's step: energy columns on the request log, and daily totals."""
    return area_steps("meter", 30, [
        ("metering: energy, cost, CO2", [a for _n, a in migration_steps()]),
    ])  # fmt: skip
