"""The call recorder: one writer thread, group commit, and the guarantees callers rely on."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from intramuros.gate.quotas import Quotas
from intramuros.ledger import Ledger
from intramuros.meter.energy import EnergyMeter
from intramuros.meter.metrics import Metrics
from intramuros.meter.price import PriceModel
from intramuros.platform.call import CallMeter
from intramuros.serving.recorder import CallRecorder
from intramuros.settings import load_settings
from intramuros.store.db import request_log


@pytest.fixture
def recorder(ledger: Ledger, db: Any) -> Iterator[CallRecorder]:
    settings = load_settings()
    rec = CallRecorder(ledger, Quotas(db), Metrics(), EnergyMeter([], watts_per_core=10.0),
                       PriceModel.from_settings(settings))  # fmt: skip
    yield rec
    rec.close()


def _meter(i: int, **kw: Any) -> CallMeter:
    meter = CallMeter("/v1/chat/completions", "m", tenant="acme", key_id="k1", **kw)
    meter.prompt_tokens, meter.completion_tokens = 3, i
    return meter


def _logged(db: Any) -> set[str]:
    with db.begin() as conn:
        return set(conn.execute(sa.select(request_log.c.request_id)).scalars())


def _ledgered(ledger: Ledger, kind: str = "model_call") -> list[dict[str, Any]]:
    return [r.data for r in ledger.records(limit=10_000) if r.kind == kind]


def test_a_burst_is_one_commit_and_every_call_is_on_record(
    recorder: CallRecorder, ledger: Ledger, db: Any
) -> None:
    meters = [_meter(i) for i in range(60)]

    async def run() -> None:
        await asyncio.gather(*(recorder.finish(m) for m in meters),
                             recorder.event("kyc_screening", tenant="acme", key_id="k1",
                                            subject=None, data={"count": 1}))  # fmt: skip

    asyncio.run(run())
    ids = {m.request_id for m in meters}
    assert ids <= _logged(db)
    assert {d["request_id"] for d in _ledgered(ledger)} == ids
    assert len(_ledgered(ledger, "kyc_screening")) == 1
    # Grouped: far fewer transactions than calls (the first call may commit alone).
    assert recorder.committed_jobs == 61 and recorder.commits <= 10
    assert ledger.verify().ok


def test_a_held_write_lock_delays_the_record_not_the_event_loop(
    recorder: CallRecorder, ledger: Ledger, db_url: str, db: Any
) -> None:
    ledger.append("warm", data={})
    # Another process's writer, holding what the recorder's transaction needs: SQLite's
    # database write lock, or PostgreSQL's lock on the ledger table.
    holder: Any
    if db_url.startswith("sqlite"):
        holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None,
                                 check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        holder = psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"))
        holder.execute("LOCK TABLE ledger_records IN SHARE ROW EXCLUSIVE MODE")
    released = threading.Timer(1.0, lambda: holder.execute("COMMIT"))
    lags: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - t0 - 0.005)

    async def run() -> float:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        t0 = time.perf_counter()
        await asyncio.gather(*(recorder.finish(_meter(i)) for i in range(5)))
        waited = time.perf_counter() - t0
        stop.set()
        await tick
        return waited

    released.start()
    try:
        waited = asyncio.run(run())
    finally:
        released.join()
        holder.close()
    assert waited >= 0.9  # the records waited for the lock, and were written after it
    assert len(_ledgered(ledger)) == 5
    assert max(lags) < 0.05, max(lags)  # the loop went on meanwhile


def test_a_cancelled_caller_does_not_stop_the_writing(
    recorder: CallRecorder, ledger: Ledger, db: Any
) -> None:
    meter = _meter(1)

    async def run() -> None:
        task = asyncio.create_task(recorder.finish(meter, asyncio.CancelledError()))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    recorder.close()  # writes what is queued before returning
    assert meter.request_id in _logged(db)
    [record] = _ledgered(ledger)
    assert record["status"] == 499  # a client that went away, as nginx logs it


def test_one_bad_record_costs_only_itself(recorder: CallRecorder, ledger: Ledger) -> None:
    good = [_meter(i) for i in range(4)]
    bad = _meter(9, subject="x" * 10_000)  # longer than the ledger takes

    async def run() -> None:
        await asyncio.gather(*(recorder.finish(m) for m in [good[0], good[1], bad, *good[2:]]))

    asyncio.run(run())
    assert {d["request_id"] for d in _ledgered(ledger)} == {m.request_id for m in good}
    assert recorder.metrics.ledger_failures._value.get() == 1
    assert ledger.verify().ok


def test_opening_then_closing_a_stream(recorder: CallRecorder, ledger: Ledger) -> None:
    meter = _meter(2, streaming=True)

    async def run() -> None:
        await recorder.open(meter)
        await recorder.open(meter)  # once
        await recorder.finish(meter)

    asyncio.run(run())
    kinds = [r.kind for r in ledger.records(limit=100)]
    assert kinds == ["model_call_open", "model_call"]
