"""The unfinished-jobs limit holds when creates race (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from intramuros.errors import RateLimited
from intramuros.forge.jobs import Jobs, new_job_id
from tests.conftest import open_db


def _row(tenant: str) -> dict[str, Any]:
    now = time.time()
    return {
        "id": new_job_id(), "tenant": tenant, "key_id": None, "status": "validating_files",
        "dialect": "openai", "model": "m", "base_sha256": "0" * 64, "suffix": None,
        "training_file": "file-x", "validation_file": None, "training_sha256": "0" * 64,
        "validation_sha256": None, "requested": {}, "seed": 1, "metadata": None,
        "merge": False, "auto_start": True, "created_at": now, "modified_at": now,
        "cancel_requested": False, "attempts": 0,
    }  # fmt: skip


def test_racing_creates_cannot_pass_the_limit_together(db_url: str) -> None:
    db = open_db(db_url)
    jobs = Jobs(db)
    racers = 6
    gate = threading.Barrier(racers)
    outcomes: list[str] = []

    def admit_for(tenant: str) -> Callable[[Connection], None]:
        return lambda conn: admit(conn, tenant)

    def admit(conn: Connection, tenant: str) -> None:
        seen = jobs.active_count(conn, tenant)
        # Widen the window between the count and the insert: without the tenant's lock
        # every racer would count zero here.
        time.sleep(0.2)
        if seen >= 1:
            raise RateLimited("limit", retry_after=60)

    def create(tenant: str) -> None:
        gate.wait()
        try:
            jobs.create(_row(tenant), admit_for(tenant))
            outcomes.append("created")
        except RateLimited:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=("acme",)) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert sorted(outcomes) == ["created"] + ["refused"] * (racers - 1)
        with db.begin() as conn:
            assert jobs.active_count(conn, "acme") == 1
        # Another tenant has a limit of its own.
        jobs.create(_row("globex"), admit_for("globex"))
        # A tenant's purge takes its lock row too; it can start again afterwards.
        with db.begin() as conn:
            assert jobs.delete_tenant(conn, "acme") == 1
        jobs.create(_row("acme"), admit_for("acme"))
    finally:
        db.close()


def test_a_refused_create_stores_nothing(db_url: str) -> None:
    db = open_db(db_url)
    jobs = Jobs(db)

    def refuse(conn: Connection) -> None:
        raise RateLimited("no", retry_after=1)

    try:
        with pytest.raises(RateLimited):
            jobs.create(_row("acme"), refuse)
        with db.begin() as conn:
            assert jobs.active_count(conn, "acme") == 0
    finally:
        db.close()
