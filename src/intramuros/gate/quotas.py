"""Quotas: requests and tokens per minute, tokens per month, per key and per tenant.

Per-minute windows are sliding 60 s windows. With one server they are kept in
its memory. Replicas sharing one database (``quota_store``: ``database``, or
``auto`` with PostgreSQL) keep them in the database instead, so that a
tenant's limit holds across all of them: each admitted request and each
charge of tokens is a row of ``quota_events``; a replica admitting a request
locks the scope's row of ``quota_scopes``, counts the window and adds its
request in one transaction, so two replicas cannot both admit the last one.
Only scopes with a per-minute limit are counted there; calls without one read
nothing. The monthly budget is read from the ``usage`` table, which all
replicas share.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import threading
import time
from collections import deque
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.errors import RateLimited
from intramuros.gate.policy import Limits
from intramuros.gate.tables import quota_events, quota_scopes, usage
from intramuros.store.db import Database
from intramuros.store.driver import DriverStatement

WINDOW = 60.0


class _Window:
    """Events (time, tokens) of the last minute."""

    def __init__(self) -> None:
        self.requests: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()

    def trim(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - WINDOW:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= now - WINDOW:
            self.tokens.popleft()

    def token_sum(self) -> int:
        return sum(n for _, n in self.tokens)


def month_start(now: float) -> tuple[str, float]:
    """(first day ``YYYY-MM-01``, seconds until next month) in UTC."""
    d = dt.datetime.fromtimestamp(now, dt.UTC)
    days = calendar.monthrange(d.year, d.month)[1]
    nxt = d.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=days)
    return f"{d.year:04d}-{d.month:02d}-01", (nxt - d).total_seconds()


class Quotas:
    """Checks limits before a call and charges tokens after it."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time,
                 shared: bool = False) -> None:  # fmt: skip
        self.db = db
        self.clock = clock
        # Per-minute windows in the database, shared by replicas (see the module docstring).
        self.shared = shared
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()
        self._swept = 0.0

    def reads_database(self, scopes: list[tuple[str, str, Limits]]) -> bool:
        """Whether :meth:`admit` reads the database for these scopes (then call it in a
        thread): a monthly budget, or a per-minute limit shared by replicas."""
        return any(limits.monthly_tokens is not None or (self.shared and _per_minute(limits))
                   for _k, _i, limits in scopes)  # fmt: skip

    def charged_scopes(self, scopes: list[tuple[str, str, Limits]]) -> list[tuple[str, str]]:
        """The scopes whose tokens a finished call must charge: all of them in memory; in
        the database, only those with a tokens-per-minute limit."""
        if not self.shared:
            return [(kind, ident) for kind, ident, _l in scopes]
        return [(kind, ident) for kind, ident, limits in scopes if limits.tpm is not None]

    def admit(self, scopes: list[tuple[str, str, Limits]]) -> None:
        """Count one request against each ``(kind, id, limits)``, or raise ``RateLimited``.

        Nothing is counted unless every scope admits the request.
        """
        if self.shared:
            self._admit_shared(scopes)
            return
        now = self.clock()
        with self._lock:
            for kind, ident, limits in scopes:
                window = self._windows.setdefault((kind, ident), _Window())
                window.trim(now)
                if limits.rpm is not None and len(window.requests) >= limits.rpm:
                    wait = window.requests[0] + WINDOW - now
                    raise RateLimited(
                        f"Rate limit reached for {kind} {ident}: {limits.rpm} requests per "
                        f"minute.", retry_after=math.ceil(wait))  # fmt: skip
                if limits.tpm is not None and window.token_sum() >= limits.tpm:
                    wait = window.tokens[0][0] + WINDOW - now
                    raise RateLimited(
                        f"Rate limit reached for {kind} {ident}: {limits.tpm} tokens per minute.",
                        retry_after=math.ceil(wait))  # fmt: skip
            self._check_months(scopes, now)
            for kind, ident, _limits in scopes:
                self._windows[(kind, ident)].requests.append(now)

    def _admit_shared(self, scopes: list[tuple[str, str, Limits]]) -> None:
        limited = sorted((k, i, lim) for k, i, lim in scopes if _per_minute(lim))
        if limited:
            with self.db.begin() as conn:
                now = self.clock()
                # Locked in one order by every replica: two admissions cannot deadlock.
                for kind, ident, _limits in limited:
                    _lock_scope(conn, kind, ident)
                for kind, ident, limits in limited:
                    _check_window(conn, kind, ident, limits, now)
                self._check_months(scopes, now)
                conn.execute(quota_events.insert(), [
                    {"kind": kind, "ident": ident, "ts": now, "requests": 1, "tokens": 0}
                    for kind, ident, _limits in limited])  # fmt: skip
                if now - self._swept > WINDOW:
                    # Events older than the window count for nothing: dropped once a minute.
                    self._swept = now
                    conn.execute(quota_events.delete().where(quota_events.c.ts <= now - WINDOW))
        else:
            self._check_months(scopes, self.clock())

    def _check_months(self, scopes: list[tuple[str, str, Limits]], now: float) -> None:
        for kind, ident, limits in scopes:
            if limits.monthly_tokens is not None:
                used = self.month_tokens(kind, ident, now)
                if used >= limits.monthly_tokens:
                    _, wait = month_start(now)
                    raise RateLimited(
                        f"Monthly token budget of {limits.monthly_tokens} reached for "
                        f"{kind} {ident}.", retry_after=math.ceil(wait))  # fmt: skip

    def charge(self, scopes: list[tuple[str, str]], tokens: int) -> None:
        """Add a finished call's tokens to the per-minute windows kept in memory (shared
        windows are charged in the call's record: :func:`record_quota_tokens`)."""
        if tokens <= 0 or self.shared:
            return
        now = self.clock()
        with self._lock:
            for kind, ident in scopes:
                self._windows.setdefault((kind, ident), _Window()).tokens.append((now, tokens))

    def month_tokens(self, kind: str, ident: str, now: float) -> int:
        """Tokens used this calendar month by a tenant or a key (from ``usage``)."""
        first, _ = month_start(now)
        column = usage.c.tenant if kind == "tenant" else usage.c.key_id
        query = sa.select(sa.func.coalesce(
            sa.func.sum(usage.c.prompt_tokens + usage.c.completion_tokens), 0
        )).where(column == ident, usage.c.day >= first)  # fmt: skip
        with self.db.begin() as conn:
            return int(conn.execute(query).scalar() or 0)


def _per_minute(limits: Limits) -> bool:
    return limits.rpm is not None or limits.tpm is not None


def _lock_scope(conn: Connection, kind: str, ident: str) -> None:
    """Create the scope's row if needed, and lock it until the transaction ends."""
    key = {"kind": kind, "ident": ident}
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(quota_scopes).values(**key).on_conflict_do_nothing())
    else:  # SQLite: the transaction already holds the database's write lock
        conn.execute(quota_scopes.insert().prefix_with("OR IGNORE").values(**key))
    conn.execute(sa.select(quota_scopes.c.kind).where(
        quota_scopes.c.kind == kind, quota_scopes.c.ident == ident).with_for_update())


def _check_window(conn: Connection, kind: str, ident: str, limits: Limits, now: float) -> None:
    """``RateLimited`` if the scope's last minute, as all replicas recorded it, is full."""
    e = quota_events.c
    since = now - WINDOW
    requests, tokens, first_request, first_tokens = conn.execute(sa.select(
        sa.func.coalesce(sa.func.sum(e.requests), 0), sa.func.coalesce(sa.func.sum(e.tokens), 0),
        sa.func.min(sa.case((e.requests > 0, e.ts))), sa.func.min(sa.case((e.tokens > 0, e.ts))),
    ).where(e.kind == kind, e.ident == ident, e.ts > since)).one()  # fmt: skip
    if limits.rpm is not None and requests >= limits.rpm:
        raise RateLimited(
            f"Rate limit reached for {kind} {ident}: {limits.rpm} requests per minute.",
            retry_after=math.ceil(first_request + WINDOW - now))  # fmt: skip
    if limits.tpm is not None and tokens >= limits.tpm:
        raise RateLimited(
            f"Rate limit reached for {kind} {ident}: {limits.tpm} tokens per minute.",
            retry_after=math.ceil(first_tokens + WINDOW - now))  # fmt: skip


def record_quota_tokens(conn: Connection, scopes: list[tuple[str, str]], tokens: int,
                        now: float) -> None:  # fmt: skip
    """Charge a finished call's tokens to shared per-minute windows, in ``conn``'s
    transaction (the call's record)."""
    if tokens > 0 and scopes:
        conn.execute(quota_events.insert(), [
            {"kind": kind, "ident": ident, "ts": now, "requests": 0, "tokens": tokens}
            for kind, ident in scopes])  # fmt: skip


# Built once: compiled once and cached, only the parameters change (the hot path of every
# call's record). Parameter names differ from the columns', as SQLAlchemy requires in UPDATE.
_USAGE_WHERE = (usage.c.tenant == sa.bindparam("b_tenant"), usage.c.key_id == sa.bindparam("b_key"),
                usage.c.model == sa.bindparam("b_model"), usage.c.day == sa.bindparam("b_day"))
_USAGE_UPDATE = DriverStatement(usage.update().where(*_USAGE_WHERE).values(
    requests=usage.c.requests + sa.bindparam("b_requests", type_=sa.Integer),
    prompt_tokens=usage.c.prompt_tokens + sa.bindparam("b_prompt", type_=sa.Integer),
    completion_tokens=usage.c.completion_tokens + sa.bindparam("b_completion", type_=sa.Integer),
))
_USAGE_INSERT = DriverStatement(usage.insert())


def record_usage(
    conn: Connection, *, tenant: str, key_id: str, model: str, prompt: int, completion: int,
    now: float, requests: int = 1,
) -> None:  # fmt: skip
    """Add calls (one by default) to the daily ``usage`` totals (update, else insert), in
    ``conn``'s transaction."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")
    updated = _USAGE_UPDATE.execute(conn, {
        "b_tenant": tenant, "b_key": key_id, "b_model": model, "b_day": day,
        "b_requests": requests, "b_prompt": prompt,
        "b_completion": completion})  # fmt: skip
    if not updated:
        _USAGE_INSERT.execute(conn, {
            "tenant": tenant, "key_id": key_id, "model": model, "day": day,
            "requests": requests, "prompt_tokens": prompt,
            "completion_tokens": completion})  # fmt: skip


def usage_report(
    db: Database, *, tenant: str | None, since: str | None = None, until: str | None = None
) -> list[dict[str, object]]:
    """Totals by tenant, model and day (``since``/``until`` are ``YYYY-MM-DD``).

    Tokens and requests come from ``usage``; CPU time, energy, cost and CO2e
    from ``usage_metering`` (zero for days recorded before metering existed).
    """
    from intramuros.meter.tables import usage_metering as um

    joined = usage.outerjoin(um, sa.and_(
        usage.c.tenant == um.c.tenant, usage.c.key_id == um.c.key_id,
        usage.c.model == um.c.model, usage.c.day == um.c.day))  # fmt: skip
    query = sa.select(
        usage.c.tenant, usage.c.model, usage.c.day,
        sa.func.sum(usage.c.requests).label("requests"),
        sa.func.sum(usage.c.prompt_tokens).label("prompt_tokens"),
        sa.func.sum(usage.c.completion_tokens).label("completion_tokens"),
        sa.func.coalesce(sa.func.sum(um.c.cpu_seconds), 0.0).label("cpu_seconds"),
        sa.func.coalesce(sa.func.sum(um.c.energy_joules), 0.0).label("energy_joules"),
        sa.func.coalesce(sa.func.sum(um.c.cost_eur), 0.0).label("cost_eur"),
        sa.func.coalesce(sa.func.sum(um.c.co2e_grams), 0.0).label("co2e_grams"),
    ).select_from(joined).group_by(usage.c.tenant, usage.c.model, usage.c.day).order_by(
        usage.c.day, usage.c.tenant, usage.c.model)  # fmt: skip
    if tenant is not None:
        query = query.where(usage.c.tenant == tenant)
    if since:
        query = query.where(usage.c.day >= since)
    if until:
        query = query.where(usage.c.day <= until)
    with db.begin() as conn:
        return [
            {**dict(row), "requests": int(row["requests"]),
             "prompt_tokens": int(row["prompt_tokens"]),
             "completion_tokens": int(row["completion_tokens"]),
             "total_tokens": int(row["prompt_tokens"]) + int(row["completion_tokens"]),
             "cpu_seconds": round(float(row["cpu_seconds"]), 6),
             "energy_joules": round(float(row["energy_joules"]), 6),
             "cost_eur": round(float(row["cost_eur"]), 9),
             "co2e_grams": round(float(row["co2e_grams"]), 9)}
            for row in conn.execute(query).mappings()
        ]  # fmt: skip
