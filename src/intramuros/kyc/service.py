"""The KYC workload's service object, built once per app.

Screenings are metered calls of the gate (``core.begin_call(who,
"/v1/kyc/screen", "kyc-matcher")`` ... ``end_call``), so they appear in the
request log, metrics and usage like model calls; the matching itself runs in a
worker thread on the in-memory index (see :mod:`intramuros.kyc.workflow`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import PurePath
from typing import Any

from sqlalchemy.engine import Connection

from intramuros.errors import IntramurosError, ServerError
from intramuros.gate.tenants import Principal
from intramuros.kyc import protocol as kp
from intramuros.kyc.matcher import MatcherPool
from intramuros.kyc.settings import KycSettings
from intramuros.kyc.summary import draft_summary
from intramuros.kyc.workflow import KycWorkflow
from intramuros.platform.interface import AuditEvent, Platform
from intramuros.settings import section

MATCHER = "kyc-matcher"
# Screenings concluded on the event loop (cases, records: well under a millisecond each).
INLINE_SUBJECTS = 4
log = logging.getLogger(__name__)


class KycService:
    """Serving logic of the kyc workload; routes call it, it calls the core service."""

    name = "kyc"
    body_limits: dict[str, int] = {}

    def __init__(self, core: Platform) -> None:
        self.core = core
        self.settings = section(core.settings, KycSettings)
        self.workflow = KycWorkflow(core.tables, core.auditor, self.settings)
        processes = self.settings.kyc_matcher_processes
        # With matcher processes, they hold the index and keep it fresh; the server holds none.
        self.matcher = (MatcherPool(core.settings.resolved_database_url(), self.settings,
                                    processes) if processes > 0 else None)  # fmt: skip
        # The server refreshes in the background (below): a request never waits
        # for an index rebuild, it screens on the snapshot in place.
        self._interval = self.settings.kyc_refresh_seconds
        if self._interval > 0:  # 0: check on every screening (inline), no watcher
            self.workflow.screener.refresh_seconds = float("inf")
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the active lists into the index (tables exist by now), then watch them."""
        if self.matcher is not None:
            await self.matcher.start()
            return
        await asyncio.to_thread(self.workflow.screener.refresh, True)
        if self._interval > 0:
            self._refresher = asyncio.create_task(self._watch_lists())

    async def _watch_lists(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await asyncio.to_thread(self.workflow.screener.refresh, True)
            except IntramurosError as exc:  # the database may be briefly away: retry later
                log.warning("kyc list refresh failed: %s", exc.message)
            except Exception:  # never let the watcher die: screening goes on with the old index
                log.exception("kyc list refresh failed")

    async def close(self) -> None:
        """Stop watching the lists (the index is memory only), and the matcher processes."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self.matcher is not None:
            await asyncio.to_thread(self.matcher.close)

    async def screen(self, who: Principal, subjects: list[dict[str, Any]],
                     lists: list[str] | None, limit: int,
                     route: str) -> list[dict[str, Any]]:  # fmt: skip
        """Screen subjects in one metered call."""
        subject = subjects[0].get("customer_id") if len(subjects) == 1 else None
        meter, _policy = await self.core.begin_call(who, route, MATCHER, subject)
        # The screening's record, and the cases it opens, are written with the call's own
        # records: one transaction of the recorder, group-committed with other calls.
        records = _Deferred()
        writes: list[Callable[[Connection], None]] = []
        try:
            results = await self._screen(who, subjects, lists, limit, route, records, writes)
        except BaseException as exc:
            await self.core.end_call(meter, exc)
            raise
        meter.extra = {"screenings": len(results),
                       "alerts": sum(1 for r in results if r["case_id"]),
                       "lists": results[0]["lists"] if results else {}}  # fmt: skip
        if not await self.core.end_call(meter, events=records.events, writes=writes):
            # A screening not on record is not answered, and opened no case.
            failed = ServerError("The screening could not be recorded in the ledger.")
            await self.core.end_call(meter, failed)
            raise failed
        return results

    async def _screen(
        self, who: Principal, subjects: list[dict[str, Any]], lists: list[str] | None,
        limit: int, route: str, records: _Deferred, writes: list[Callable[[Connection], None]],
    ) -> list[dict[str, Any]]:
        if self.matcher is None:
            return await asyncio.to_thread(self.workflow.screen, who.tenant, who.key_id,
                                           subjects, lists=lists, limit=limit, route=route,
                                           auditor=records, writes=writes)  # fmt: skip
        flow = self.workflow
        threshold = flow.cached_threshold(who.tenant)
        if threshold is None:
            threshold = await asyncio.to_thread(flow.threshold_for, who.tenant)
        matched = await self.matcher.match(subjects, threshold,
                                           frozenset(lists) if lists else None, limit)
        conclude = partial(flow.conclude, who.tenant, who.key_id, subjects, matched, threshold,
                           lists=lists, route=route, auditor=records, writes=writes)  # fmt: skip
        # Concluding is bookkeeping proportional to the subjects: a few on the event loop,
        # a batch in a thread.
        return conclude() if len(subjects) <= INLINE_SUBJECTS else await asyncio.to_thread(conclude)

    async def lists(self) -> list[dict[str, Any]]:
        """Status of every active list, and what the server's index holds."""
        rows = await asyncio.to_thread(self.workflow.store.status)
        loaded = (await self.matcher.versions() if self.matcher is not None
                  else self.workflow.screener.index.versions)  # fmt: skip
        # The file name only: where the server keeps its files is not the caller's business.
        return [{**r.to_dict(), "source": PurePath(r.source).name,
                 "loaded": loaded.get(r.name, (None, 0))[0] == r.version}
                for r in rows]

    async def cases(self, who: Principal, status: str | None, limit: int) -> list[dict[str, Any]]:
        """The caller's tenant's cases."""
        return await asyncio.to_thread(self.workflow.cases.list, who.tenant, status, limit)

    async def case(self, who: Principal, case_id: str) -> dict[str, Any]:
        """One case of the caller's tenant."""
        return await asyncio.to_thread(self.workflow.cases.get, who.tenant, case_id)

    async def decide(self, who: Principal, case_id: str, req: kp.DecisionRequest) -> dict[str, Any]:
        """Record a decision on one of the caller's tenant's cases."""
        return await asyncio.to_thread(self.workflow.decide, who.tenant, who.key_id, case_id,
                                       req.decision, req.note)

    async def threshold(self, tenant: str) -> float:
        """A tenant's alert threshold."""
        return await asyncio.to_thread(self.workflow.threshold_for, tenant)

    async def set_threshold(self, who: Principal, req: kp.ThresholdRequest) -> str:
        """Set the threshold of a tenant the caller manages, record it; the tenant's id."""
        tenant = await self.core.managed_tenant(who, req.tenant)
        await asyncio.to_thread(self.workflow.set_threshold, tenant, req.threshold)
        await asyncio.to_thread(self.core.auditor.append, "admin", tenant=tenant,
                                key_id=who.key_id, subject=None,
                                data={"action": "kyc_threshold", "threshold": req.threshold})
        return tenant

    async def summarise(self, who: Principal, case_id: str, model: str | None) -> dict[str, Any]:
        """Draft a case summary with a local model (through the gate) and keep it on the case."""
        case = await self.case(who, case_id)
        summary = await draft_summary(self.core, who, case,
                                      model or self.settings.kyc_summary_model)
        updated = await asyncio.to_thread(self.workflow.cases.set_summary, who.tenant, case_id,
                                          summary)  # fmt: skip
        await asyncio.to_thread(self.core.auditor.append, "kyc_summary", tenant=who.tenant,
                                key_id=who.key_id, subject=case.get("customer_id"),
                                data={"case_id": case_id, "model": summary["model"],
                                      "machine_drafted": True})  # fmt: skip
        return updated


class _Deferred:
    """An auditor that keeps the records for the platform to write with the call."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def append(self, kind: str, *, tenant: str | None = None, key_id: str | None = None,
               subject: str | None = None, data: Mapping[str, Any],
               content: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        if content is not None:
            raise ValueError("a deferred audit record carries no content")
        self.events.append(AuditEvent(kind, tenant, key_id, subject, data))
