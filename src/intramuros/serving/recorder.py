"""Writing a call down: metrics, request log, usage, quota charge and the ledger record.

Every model call, the workloads' included, ends here. The writing runs in a
thread (databases block); :meth:`CallRecorder.finish` returns once it is done,
so that an answer's last byte leaves after its record, and a caller cancelled
meanwhile (its client went away) does not stop it. A streamed call is also
put on record when it opens (:meth:`CallRecorder.open`), before its first byte.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from intramuros.errors import IntramurosError
from intramuros.gate.quotas import Quotas, record_usage
from intramuros.ledger import Ledger
from intramuros.meter.energy import EnergyMeter
from intramuros.meter.metrics import Metrics
from intramuros.meter.price import PriceModel
from intramuros.meter.tables import record_metering
from intramuros.serving.calls import CallMeter, metering_of
from intramuros.store.db import Database

log = logging.getLogger(__name__)


class CallRecorder:
    """Writes the records of calls; built once per service."""

    def __init__(self, db: Database, ledger: Ledger, quotas: Quotas, metrics: Metrics,
                 energy: EnergyMeter, prices: PriceModel) -> None:  # fmt: skip
        self.db = db
        self.ledger = ledger
        self.quotas = quotas
        self.metrics = metrics
        self.energy = energy
        self.prices = prices

    async def finish(self, meter: CallMeter, exc: BaseException | None = None) -> None:
        """Record the call (metrics, request log, usage, ledger), off the event loop.

        Returns once the records are written, so that an answer's last byte
        leaves after its record. A caller cancelled while waiting (the client
        went away) does not stop the writing: it carries on in its thread.
        """
        writing = asyncio.ensure_future(asyncio.to_thread(self.write, meter, exc))
        await asyncio.shield(writing)

    async def open(self, meter: CallMeter) -> None:
        """Put the opening of a streamed call on record, once, before its first byte."""
        if meter.opened:
            return
        meter.opened = True
        await asyncio.shield(asyncio.ensure_future(asyncio.to_thread(self.write_open, meter)))

    def write(self, meter: CallMeter, exc: BaseException | None = None) -> None:
        """Record the call in metrics, the request log, usage and the ledger (blocking)."""
        if isinstance(exc, IntramurosError):
            meter.status, meter.error_code = exc.status, exc.code
        elif exc is not None:
            meter.error_code = meter.error_code or type(exc).__name__
        now = time.perf_counter()
        meter.ended = now
        self.energy.stop(meter.energy)
        energy = meter.energy
        meter.cost_eur = self.prices.cost_eur(energy.joules, energy.machine_seconds)
        meter.co2e_grams = self.prices.co2e_grams(energy.joules)
        m = self.metrics
        m.energy.labels(meter.model, energy.source).inc(energy.joules)
        m.cpu_seconds.labels(meter.model).inc(energy.cpu_seconds)
        m.cost.labels(meter.model).inc(meter.cost_eur)
        m.co2e.labels(meter.model).inc(meter.co2e_grams)
        m.requests.labels(meter.route, meter.model, str(meter.status)).inc()
        m.latency.labels(meter.route, meter.model).observe(now - meter.started)
        m.tokens.labels(meter.model, "prompt").inc(meter.prompt_tokens)
        m.tokens.labels(meter.model, "completion").inc(meter.completion_tokens)
        if meter.first_token is not None:
            m.ttft.labels(meter.model).observe(meter.first_token - meter.started)
        if meter.queued_until is not None:
            m.queue_wait.labels(meter.model).observe(meter.queued_until - meter.started)
        try:
            self.db.log_request(
                request_id=meter.request_id, ts=time.time(), route=meter.route,
                model=meter.model, status=meter.status, error_code=meter.error_code,
                prompt_tokens=meter.prompt_tokens, completion_tokens=meter.completion_tokens,
                latency_ms=(now - meter.started) * 1000,
                ttft_ms=((meter.first_token - meter.started) * 1000
                         if meter.first_token is not None else None),
                weights_sha256=meter.weights_sha256, tenant=meter.tenant, key_id=meter.key_id,
                cpu_seconds=energy.cpu_seconds, energy_joules=energy.joules,
                energy_source=energy.source, cost_eur=meter.cost_eur,
                co2e_grams=meter.co2e_grams,
            )  # fmt: skip
            if meter.tenant is not None and meter.status < 400:
                tokens = meter.prompt_tokens + meter.completion_tokens
                scopes = [("tenant", meter.tenant)]
                if meter.key_id is not None:
                    scopes.append(("key", meter.key_id))
                self.quotas.charge(scopes, tokens)
                record_usage(self.db, tenant=meter.tenant, key_id=meter.key_id or "-",
                             model=meter.model, prompt=meter.prompt_tokens,
                             completion=meter.completion_tokens, now=time.time())  # fmt: skip
                record_metering(self.db, tenant=meter.tenant, key_id=meter.key_id or "-",
                                model=meter.model, now=time.time(),
                                cpu_seconds=energy.cpu_seconds, energy_joules=energy.joules,
                                cost_eur=meter.cost_eur,
                                co2e_grams=meter.co2e_grams)  # fmt: skip
        except IntramurosError as err:  # the answer matters more than its log line
            log.error("could not write request log: %s", err.message)
        self._record(meter, now)

    def write_open(self, meter: CallMeter) -> None:
        """Append the opening of a streamed call to the ledger, before its first byte.

        A crash (``kill -9``) mid-stream then leaves this record without its
        closing ``model_call`` record: the call is known to have been answered
        in part.
        """
        data = {"request_id": meter.request_id, "route": meter.route, "model": meter.model,
                "weights_sha256": meter.weights_sha256, "streaming": True,
                "pii": meter.pii.summary() if meter.pii else {}}  # fmt: skip
        try:
            self.ledger.append("model_call_open", tenant=meter.tenant, key_id=meter.key_id,
                               subject=meter.subject, data=data)  # fmt: skip
        except IntramurosError as err:
            self.metrics.ledger_failures.inc()
            log.error("could not append to the ledger: %s", err.message)

    def _record(self, meter: CallMeter, now: float) -> None:
        """Append the call to the ledger: who, what, which weights, what policy did."""
        data: dict[str, Any] = {
            "request_id": meter.request_id, "route": meter.route, "model": meter.model,
            "weights_sha256": meter.weights_sha256, "status": meter.status,
            "error_code": meter.error_code, "prompt_tokens": meter.prompt_tokens,
            "completion_tokens": meter.completion_tokens,
            "latency_ms": round((now - meter.started) * 1000, 3),
            "pii": meter.pii.summary() if meter.pii else {},
            **{k: v for k, v in metering_of(meter).model_dump().items()
               if v is not None and k not in ("latency_ms", "routing")},
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
        if meter.pii is not None:
            # The call is over: its values and placeholders are freed here, in this
            # worker thread, rather than wherever the last reference goes.
            meter.pii.release()
        try:
            self.ledger.append("model_call", tenant=meter.tenant, key_id=meter.key_id,
                               subject=meter.subject, data=data, content=content)  # fmt: skip
        except IntramurosError as err:
            # A call whose record cannot be written is still answered; the failure is
            # loud in the log and in the metrics, where operators look.
            self.metrics.ledger_failures.inc()
            log.error("could not append to the ledger: %s", err.message)
