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
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from intramuros.errors import IntramurosError, ServerError
from intramuros.gate.tenants import Principal
from intramuros.kyc import protocol as kp
from intramuros.kyc.settings import KycSettings
from intramuros.kyc.summary import draft_summary
from intramuros.kyc.workflow import KycWorkflow
from intramuros.platform.interface import Platform
from intramuros.settings import section

MATCHER = "kyc-matcher"
log = logging.getLogger(__name__)


class KycService:
    """Serving logic of the kyc workload; routes call it, it calls the core service."""

    name = "kyc"
    body_limits: dict[str, int] = {}

    def __init__(self, core: Platform) -> None:
        self.core = core
        self.settings = section(core.settings, KycSettings)
        self.workflow = KycWorkflow(core.tables, core.auditor, self.settings)
        # The server refreshes in the background (below): a request never waits
        # for an index rebuild, it screens on the snapshot in place.
        self._interval = self.settings.kyc_refresh_seconds
        if self._interval > 0:  # 0: check on every screening (inline), no watcher
            self.workflow.screener.refresh_seconds = float("inf")
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the active lists into the index (tables exist by now), then watch them."""
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
        """Stop watching the lists (the index is memory only)."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher

    async def screen(self, who: Principal, subjects: list[dict[str, Any]],
                     lists: list[str] | None, limit: int,
                     route: str) -> list[dict[str, Any]]:  # fmt: skip
        """Screen subjects in one metered call."""
        subject = subjects[0].get("customer_id") if len(subjects) == 1 else None
        meter, _policy = await self.core.begin_call(who, route, MATCHER, subject)
        # The screening's record goes through the recorder (group-committed with other
        # calls' records) rather than in a transaction of its own on this thread.
        records = _Deferred()
        try:
            results = await asyncio.to_thread(self.workflow.screen, who.tenant, who.key_id,
                                              subjects, lists=lists, limit=limit, route=route,
                                              auditor=records)  # fmt: skip
        except BaseException as exc:
            await self.core.end_call(meter, exc)
            raise
        meter.extra = {"screenings": len(results),
                       "alerts": sum(1 for r in results if r["case_id"]),
                       "lists": results[0]["lists"] if results else {}}  # fmt: skip
        written = await asyncio.gather(*(self.core.audit_event(kind, **fields)
                                         for kind, fields in records.records))  # fmt: skip
        if not all(written):
            # A screening not on record is not answered (the cases it opened stay).
            failed = ServerError("The screening could not be recorded in the ledger.")
            await self.core.end_call(meter, failed)
            raise failed
        await self.core.end_call(meter)
        return results

    async def lists(self) -> list[dict[str, Any]]:
        """Status of every active list, and what the server's index holds."""
        rows = await asyncio.to_thread(self.workflow.store.status)
        loaded = self.workflow.screener.index.versions
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
        await asyncio.to_thread(self.workflow.store.set_threshold, tenant, req.threshold)
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
    """An auditor that keeps the records for the platform to write (``audit_event``)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def append(self, kind: str, *, tenant: str | None = None, key_id: str | None = None,
               subject: str | None = None, data: Mapping[str, Any],
               content: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        if content is not None:
            raise ValueError("a deferred audit record carries no content")
        self.records.append((kind, {"tenant": tenant, "key_id": key_id, "subject": subject,
                                    "data": data}))  # fmt: skip
