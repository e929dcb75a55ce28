"""Writing calls down: metrics, request log, usage, quota charge and the ledger record.

Every model call, the workloads' included, ends here. One writer thread owns
the writing: calls hand it their records and it writes each burst of them
(whatever arrived while it wrote the last one, up to ``MAX_BURST``) in one
transaction, with one hold of the ledger's append lock: group commit. The
event loop never touches the database for a call's records.

What callers can rely on (docs/ARCHITECTURE.md, "Recording calls"):

* :meth:`CallRecorder.finish` returns once the call's records are committed,
  so that an answer's last byte leaves after its record: a call whose answer
  the client received is in the request log, the usage totals and the ledger,
  and ``GET /v1/requests/{id}`` and ``ledger verify`` see it. A crash after
  that loses nothing; a crash before it loses only calls not yet answered.
* A caller cancelled while waiting (its client went away) does not stop the
  writing: the record is written all the same.
* A streamed call is also put on record when it opens
  (:meth:`CallRecorder.open`), before its first byte.
* A burst that fails as a whole (a database error) is retried, then written
  call by call, so that one bad record costs only itself; a record that
  cannot be written at all is logged and counted (``ledger_failures``), and
  the answer still goes out.
* :meth:`CallRecorder.close` writes whatever is queued before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.engine import Connection

from intramuros.errors import ClientError, IntramurosError
from intramuros.gate.quotas import Quotas, record_quota_tokens, record_usage
from intramuros.ledger import Ledger
from intramuros.ledger.append import Appending
from intramuros.ledger.storage import writer_connection
from intramuros.meter.energy import EnergyMeter
from intramuros.meter.metrics import Metrics
from intramuros.meter.price import PriceModel
from intramuros.meter.tables import record_metering
from intramuros.platform.call import CallMeter
from intramuros.platform.interface import AuditEvent
from intramuros.serving.calls import metering_fields
from intramuros.store.db import request_log
from intramuros.store.driver import DriverStatement

log = logging.getLogger(__name__)

# Compiled once, run on the driver's cursor (store/driver.py): parameters per call.
_LOG_INSERT = DriverStatement(request_log.insert())
# Most calls written in one transaction: bounds how long one commit holds the lock.
MAX_BURST = 256
# A burst that fails (the database busy past its timeout, say) is tried this many times,
# this long apart, before its calls are written one by one.
RETRIES = 3
RETRY_PAUSE = 0.2


def _noop() -> None:
    pass


@dataclass
class _Job:
    """One call's records to write, and who is waiting for them."""

    kind: Literal["open", "close", "event"]
    meter: CallMeter | None
    exc: BaseException | None = None
    # An audit event's ledger fields (kind "event").
    event: dict[str, Any] | None = None
    # A closing call's workload records, written ahead of it in its transaction.
    events: tuple[AuditEvent, ...] = ()
    writes: tuple[Callable[[Connection], object], ...] = ()
    # Set by the writer once the job is committed.
    written: bool = False
    # Set (from the writer thread) once written; called with nothing.
    done: Callable[[], None] = _noop
    # Filled in before the job is queued (the meter is still the caller's until then).
    now: float = 0.0


class CallRecorder:
    """Writes the records of calls, in bursts, from one writer thread; built once per service."""

    def __init__(self, ledger: Ledger, quotas: Quotas, metrics: Metrics, energy: EnergyMeter,
                 prices: PriceModel) -> None:  # fmt: skip
        self.ledger = ledger
        self.quotas = quotas
        self.metrics = metrics
        self.energy = energy
        self.prices = prices
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Transactions committed, and jobs in them (for tests and the benchmark).
        self.commits = 0
        self.committed_jobs = 0
        # The writer thread's own connection (opened on first use, again after an error).
        self._conn: Connection | None = None

    # -- the caller's side (event loop) ------------------------------------------

    async def finish(
        self,
        meter: CallMeter,
        exc: BaseException | None = None,
        *,
        events: Sequence[AuditEvent] = (),
        writes: Sequence[Callable[[Connection], object]] = (),
    ) -> bool:
        """Record the call (metrics, request log, usage, ledger); return once committed.

        ``events`` and ``writes`` (a workload's audit records and rows) go in
        the same transaction, ahead of the call's records. True if committed.
        A caller cancelled while waiting (the client went away) does not stop
        the writing: the job is already with the writer.
        """
        job = _Job("close", meter, exc, events=tuple(events), writes=tuple(writes))
        await self._submit(job)
        return job.written

    async def open(self, meter: CallMeter) -> None:
        """Put the opening of a streamed call on record, once, before its first byte."""
        if meter.opened:
            return
        meter.opened = True
        await self._submit(_Job("open", meter))

    async def event(self, kind: str, *, tenant: str | None, key_id: str | None,
                    subject: str | None, data: Mapping[str, Any]) -> bool:  # fmt: skip
        """Append an audit record with the next burst; True once committed, False if it
        could not be written (logged and counted, not raised)."""
        job = _Job("event", None, event={"kind": kind, "tenant": tenant, "key_id": key_id,
                                         "subject": subject, "data": data})  # fmt: skip
        await self._submit(job)
        return job.written

    async def _submit(self, job: _Job) -> None:
        loop = asyncio.get_running_loop()
        written = loop.create_future()

        def done() -> None:
            # The loop may have closed meanwhile (a CLI command ending): no one waits then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, written)

        job.done = done
        self._prepare(job)
        self._put(job)
        await asyncio.shield(written)

    def close(self) -> None:
        """Write everything queued, then stop the writer (blocking; idempotent)."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _put(self, job: _Job) -> None:
        with self._start_lock:
            if self._thread is None:
                # Started on first use, and again after close() (a service reopened in tests
                # and by the CLI): close() only stops it once the queue is written.
                self._thread = threading.Thread(target=self._run, name="call-recorder",
                                                daemon=True)  # fmt: skip
                self._thread.start()
            self._queue.put(job)

    def _prepare(self, job: _Job) -> None:
        """Close the meter and count the call in metrics (cheap; on the caller's side)."""
        meter, exc = job.meter, job.exc
        job.now = time.perf_counter()
        if job.kind != "close" or meter is None:
            return
        if isinstance(exc, IntramurosError):
            meter.status, meter.error_code = exc.status, exc.code
        elif exc is not None:
            # The client went away (the call was cancelled: 499, as nginx logs it) or
            # something unexpected broke (500).
            if meter.status < 400:
                cancelled = isinstance(exc, GeneratorExit | asyncio.CancelledError)
                meter.status = 499 if cancelled else 500
            meter.error_code = meter.error_code or type(exc).__name__
        now = job.now
        meter.ended = now
        self.energy.stop(meter.energy)
        energy = meter.energy
        meter.cost_eur = self.prices.cost_eur(energy.joules, energy.machine_seconds)
        meter.co2e_grams = self.prices.co2e_grams(energy.joules)
        m = self.metrics
        model = m.model_label(meter.model, reached=meter.model_found or meter.status < 400)
        series = m.call_series(meter.route, model, meter.status, energy.source)
        series.energy.inc(energy.joules)
        series.cpu_seconds.inc(energy.cpu_seconds)
        series.cost.inc(meter.cost_eur)
        series.co2e.inc(meter.co2e_grams)
        series.requests.inc()
        series.latency.observe(now - meter.started)
        series.prompt_tokens.inc(meter.prompt_tokens)
        series.completion_tokens.inc(meter.completion_tokens)
        if meter.first_token is not None:
            series.ttft.observe(meter.first_token - meter.started)
        if meter.queued_until is not None:
            series.queue_wait.observe(meter.queued_until - meter.started)
        if meter.tenant is not None and meter.status < 400:
            # Per-minute windows in memory are charged now, not at the commit, so that
            # the next call of the same key sees them; shared ones with the record.
            self.quotas.charge(meter.charge_scopes, meter.prompt_tokens + meter.completion_tokens)

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                burst = [job]
                stop = False
                while len(burst) < MAX_BURST:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    burst.append(more)
                self._write_burst(burst)
                if stop:
                    return
        finally:
            self._drop_connection()

    def _write_burst(self, burst: list[_Job]) -> None:
        try:
            if not self._commit(burst, RETRIES):
                if len(burst) == 1:
                    self._lost(burst[0])
                else:
                    # One bad record must not cost the others theirs: each on its own.
                    for job in burst:
                        if not self._commit([job], 1):
                            self._lost(job)
        finally:
            for job in burst:
                if job.kind == "close" and job.meter is not None and job.meter.pii is not None:
                    # The call is over: its values and placeholders are freed here, in
                    # this thread, rather than wherever the last reference goes.
                    job.meter.pii.release()
                job.done()

    def _commit(self, burst: list[_Job], tries: int) -> bool:
        """Write ``burst`` in one transaction; False if it failed ``tries`` times."""
        for attempt in range(tries):
            try:
                if self._conn is None:
                    self._conn = writer_connection(self.ledger.db)
                with self.ledger.appending(self._conn) as tx:
                    totals = _Totals()
                    for job in burst:
                        self._write(tx, job, totals)
                    totals.write(tx.conn)
                for job in burst:
                    job.written = True
                self.commits += 1
                self.committed_jobs += len(burst)
                return True
            except ClientError as err:  # a record that can never be written: no retry
                log.warning("a call record was refused: %s", err.message)
                return False
            except IntramurosError as err:
                problem = err.message
            except Exception as exc:  # the writer must outlive any one record
                log.exception("writing %d call record(s) failed", len(burst))
                problem = type(exc).__name__
            # The connection may be what failed (the database restarted): a new one next time.
            self._drop_connection()
            log.warning("writing %d call record(s) failed (try %d of %d): %s", len(burst),
                        attempt + 1, tries, problem)  # fmt: skip
            if attempt + 1 < tries:
                time.sleep(RETRY_PAUSE * (attempt + 1))
        return False

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _lost(self, job: _Job) -> None:
        # A call whose record cannot be written is still answered; the failure is loud in
        # the log and in the metrics, where operators look.
        self.metrics.ledger_failures.inc()
        what = job.meter.request_id if job.meter is not None else (job.event or {}).get("kind")
        log.error("could not record the %s of %s", job.kind, what)

    def _write(self, tx: Appending, job: _Job, totals: _Totals) -> None:
        if job.event is not None:
            tx.append(**job.event)
            return
        meter = job.meter
        assert meter is not None
        for write in job.writes:
            write(tx.conn)
        for e in job.events:
            tx.append(e.kind, tenant=e.tenant, key_id=e.key_id, subject=e.subject, data=e.data)
        if job.kind == "open":
            opening = {"request_id": meter.request_id, "route": meter.route,
                       "model": meter.model, "weights_sha256": meter.weights_sha256,
                       "streaming": True,
                       "pii": meter.pii.summary() if meter.pii else {}}  # fmt: skip
            # A crash (``kill -9``) mid-stream then leaves this record without its
            # closing ``model_call`` record: the call is known to have been answered in part.
            tx.append("model_call_open", tenant=meter.tenant, key_id=meter.key_id,
                      subject=meter.subject, data=opening)  # fmt: skip
            return
        now = job.now
        energy = meter.energy
        wall = time.time()
        totals.logs.append(dict(
            request_id=meter.request_id, ts=wall, route=meter.route,
            model=meter.model, status=meter.status, error_code=meter.error_code,
            prompt_tokens=meter.prompt_tokens, completion_tokens=meter.completion_tokens,
            latency_ms=(now - meter.started) * 1000,
            ttft_ms=((meter.first_token - meter.started) * 1000
                     if meter.first_token is not None else None),
            weights_sha256=meter.weights_sha256, tenant=meter.tenant, key_id=meter.key_id,
            cpu_seconds=energy.cpu_seconds, energy_joules=energy.joules,
            energy_source=energy.source, cost_eur=meter.cost_eur,
            co2e_grams=meter.co2e_grams,
        ))  # fmt: skip
        if meter.tenant is not None and meter.status < 400:
            totals.add(meter, wall)
            if self.quotas.shared:
                record_quota_tokens(tx.conn, meter.charge_scopes,
                                    meter.prompt_tokens + meter.completion_tokens, wall)
        data: dict[str, Any] = {
            "request_id": meter.request_id, "route": meter.route, "model": meter.model,
            "weights_sha256": meter.weights_sha256, "status": meter.status,
            "error_code": meter.error_code, "prompt_tokens": meter.prompt_tokens,
            "completion_tokens": meter.completion_tokens,
            "latency_ms": round((now - meter.started) * 1000, 3),
            "pii": meter.pii.summary() if meter.pii else {},
            **{k: v for k, v in metering_fields(meter).items() if k != "latency_ms"},
        }  # fmt: skip
        if meter.extra:
            data["extra"] = meter.extra
        content = None
        if meter.keep_content and meter.pii is not None:
            decision = meter.pii
            prompt = decision.recorded_prompt  # redacted when the request was scanned
            content = {
                "prompt": prompt if prompt is not None else [decision.for_record(t)
                                                             for t in meter.prompt_texts],
                "output": decision.for_record("".join(meter.output)),
            }
        tx.append("model_call", tenant=meter.tenant, key_id=meter.key_id,
                  subject=meter.subject, data=data, content=content)  # fmt: skip


class _Totals:
    """A burst's request-log rows and its daily usage and metering, summed per tenant, key,
    model and day: one statement per table and day's key, not one per call."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []
        # (tenant, key, model, day's timestamp) -> [calls, prompt, completion, cpu s, J, EUR, g]
        self.sums: dict[tuple[str, str, str, str], list[float]] = {}

    def add(self, meter: CallMeter, wall: float) -> None:
        assert meter.tenant is not None
        day = time.strftime("%Y-%m-%d", time.gmtime(wall))
        key = (meter.tenant, meter.key_id or "-", meter.model, day)
        sums = self.sums.setdefault(key, [0, 0, 0, 0.0, 0.0, 0.0, 0.0, wall])
        energy = meter.energy
        for i, value in enumerate((1, meter.prompt_tokens, meter.completion_tokens,
                                   energy.cpu_seconds, energy.joules, meter.cost_eur,
                                   meter.co2e_grams)):  # fmt: skip
            sums[i] += value

    def write(self, conn: Connection) -> None:
        if self.logs:
            _LOG_INSERT.execute(conn, self.logs)
        for (tenant, key_id, model, _day), s in self.sums.items():
            wall = s[7]
            record_usage(conn, tenant=tenant, key_id=key_id, model=model, prompt=int(s[1]),
                         completion=int(s[2]), now=wall, requests=int(s[0]))  # fmt: skip
            record_metering(conn, tenant=tenant, key_id=key_id, model=model, now=wall,
                            cpu_seconds=s[3], energy_joules=s[4], cost_eur=s[5],
                            co2e_grams=s[6])  # fmt: skip


def _resolve(written: asyncio.Future[None]) -> None:
    if not written.done():
        written.set_result(None)
