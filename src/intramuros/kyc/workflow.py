"""Screening, cases, re-screening and decisions: the synchronous core of the workload.

Shared by the HTTP service (which runs it in a worker thread, inside a metered
call of the gate) and by the CLI. Every screening and every decision is a
ledger record; subject names are personal data, so the ledger keeps only a
keyed-free digest of the folded name, the customer id, scores and list ids.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from intramuros.kyc.cases import Cases, Decision
from intramuros.kyc.errors import ListNotFound
from intramuros.kyc.index import Hit, ScreeningIndex
from intramuros.kyc.match import Subject
from intramuros.kyc.model import Identifier
from intramuros.kyc.normalize import fold
from intramuros.kyc.screener import Screener
from intramuros.kyc.settings import KycSettings
from intramuros.kyc.store import KycStore
from intramuros.platform.interface import Auditor, UnitOfWork


def to_subject(data: dict[str, Any]) -> Subject:
    """A matcher subject from a wire/CSV subject dict."""
    return Subject(
        name=str(data["name"]),
        schema=str(data.get("type") or "any"),
        birth_date=data.get("birth_date") or None,
        nationality=data.get("nationality") or None,
        country=data.get("country") or None,
        gender=data.get("gender") or None,
        identifiers=tuple(Identifier(str(i["type"]), str(i["value"]))
                          for i in data.get("identifiers") or []),
    )


def name_digest(name: str) -> str:
    """What the ledger keeps of a screened name: a digest of its folded form."""
    return hashlib.sha256(fold(name).encode()).hexdigest()[:32]


def _match_out(hit: Hit, threshold: float) -> dict[str, Any]:
    e = hit.entity
    return {"list": e.list_name, "source_id": e.source_id, "name": e.caption, "schema": e.schema,
            "score": round(hit.score, 4), "alert": hit.score >= threshold,
            "programs": e.programs, "birth_dates": e.birth_dates,
            "nationalities": e.nationalities, "explanation": hit.explanation.to_dict(),
            "digest": e.digest()}  # fmt: skip


@dataclass
class _Pending:
    """Writes collected while screening a batch, flushed at its end."""

    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    hits: list[tuple[str, str, str, str, str | None]] = field(default_factory=list)


class KycWorkflow:
    """Lists, screening, cases and decisions over one database and ledger."""

    def __init__(self, db: UnitOfWork, ledger: Auditor, settings: KycSettings) -> None:
        self.settings = settings
        self.ledger = ledger
        self.store = KycStore(db)
        self.cases = Cases(db)
        self.screener = Screener(self.store, settings.kyc_refresh_seconds)

    def threshold_for(self, tenant: str) -> float:
        """The tenant's alert threshold, else the installation default."""
        own = self.store.threshold(tenant)
        return own if own is not None else self.settings.kyc_threshold

    def screen(self, tenant: str, key_id: str | None, subjects: list[dict[str, Any]], *,
               lists: list[str] | None = None, limit: int = 10, route: str = "/v1/kyc/screen",
               progress: Callable[[int], None] | None = None,
               auditor: Auditor | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """Screen subjects against one snapshot of the lists; open cases for alerts.

        The ``kyc_screening`` record goes to ``auditor`` (the ledger by default).
        """
        index = self.screener.current()
        threshold = self.threshold_for(tenant)
        wanted = set(lists) if lists else None
        if wanted and wanted - set(index.versions):
            missing = ", ".join(sorted(wanted - set(index.versions)))
            raise ListNotFound(f"No list loaded named: {missing}.", param="lists")
        batch = _Pending()
        results = []
        for n, data in enumerate(subjects, start=1):
            results.append(self._screen_one(tenant, index, data, threshold, wanted, limit, batch))
            if progress is not None:
                progress(n)
        self._flush(tenant, batch)
        self._audit(tenant, key_id, route, results, threshold, index, auditor or self.ledger)
        return results

    def _screen_one(self, tenant: str, index: ScreeningIndex, data: dict[str, Any],
                    threshold: float, wanted: set[str] | None, limit: int, batch: _Pending,
                    known: dict[tuple[str, str, str], str] | None = None,
                    ) -> dict[str, Any]:  # fmt: skip
        """One subject; with ``known`` (re-screening) only new or changed hits alert."""
        started = time.perf_counter()
        hits = index.screen(to_subject(data), min_score=min(self.settings.kyc_min_score, threshold),
                            limit=limit, lists=wanted)  # fmt: skip
        matches = [_match_out(h, threshold) for h in hits]
        alerts = [m for m in matches if m["alert"]]
        customer = data.get("customer_id")
        case_id = None
        if customer:
            batch.customers[customer] = data
            if known is not None:
                alerts = [m for m in alerts
                          if known.get((customer, m["list"], m["source_id"])) != m["digest"]]
        if alerts:
            case_id = self.cases.open(tenant, customer, data, alerts, {
                "threshold": threshold, "lists": _versions(index),
                "reason": "screening" if known is None else "rescreen: new or changed hits"})
        if customer and alerts:
            batch.hits += [(customer, m["list"], m["source_id"], m["digest"], case_id)
                           for m in alerts]  # fmt: skip
        for m in matches:
            m.pop("digest", None)
        return {"object": "kyc.screening", "subject": data, "threshold": threshold,
                "matches": matches, "case_id": case_id, "lists": _versions(index),
                "took_ms": round((time.perf_counter() - started) * 1000, 3)}  # fmt: skip

    def _flush(self, tenant: str, batch: _Pending) -> None:
        """Customers and hits of a whole batch, in two transactions (not two per row)."""
        if batch.customers:
            self.store.save_customers(tenant, batch.customers)
        if batch.hits:
            self.store.record_hits(tenant, batch.hits)

    def rescreen(self, tenant: str, key_id: str | None,
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:  # fmt: skip
        """Screen every stored customer again; cases only for new or changed hits."""
        self.screener.refresh(force=True)
        index = self.screener.index
        threshold = self.threshold_for(tenant)
        customers = self.store.customers(tenant)
        known = self.store.known_hits(tenant)
        batch = _Pending()
        results = []
        for n, (_cid, data) in enumerate(customers, start=1):
            results.append(self._screen_one(tenant, index, data, threshold, None, 10, batch,
                                            known))  # fmt: skip
            if progress is not None:
                progress(n)
        self._flush(tenant, batch)
        self._audit(tenant, key_id, "kyc rescreen", results, threshold, index, self.ledger)
        cases = [r["case_id"] for r in results if r["case_id"]]
        return {"customers": len(customers), "cases_opened": len(cases), "case_ids": cases,
                "lists": _versions(index)}  # fmt: skip

    def decide(self, tenant: str, key_id: str | None, case_id: str, decision: Decision,
               note: str) -> dict[str, Any]:  # fmt: skip
        """Record an analyst's decision on a case (ledger record included)."""
        case = self.cases.decide(tenant, case_id, decision, note, key_id)
        self.ledger.append("kyc_decision", tenant=tenant, key_id=key_id,
                           subject=case.get("customer_id"), data={
                               "case_id": case_id, "decision": decision,
                               "status": case["status"],
                               "note_sha256": hashlib.sha256(note.encode()).hexdigest(),
                               "matches": [f"{m['list']}:{m['source_id']}"
                                           for m in case["matches"]]})  # fmt: skip
        return case

    def _audit(self, tenant: str, key_id: str | None, route: str, results: list[dict[str, Any]],
               threshold: float, index: ScreeningIndex, auditor: Auditor) -> None:  # fmt: skip
        screenings = [{
            "customer_id": r["subject"].get("customer_id"),
            "name_sha256": name_digest(str(r["subject"]["name"])),
            "top_score": r["matches"][0]["score"] if r["matches"] else 0.0,
            "alerts": [f"{m['list']}:{m['source_id']}" for m in r["matches"] if m["alert"]],
            "case_id": r["case_id"],
        } for r in results]  # fmt: skip
        subject = screenings[0]["customer_id"] if len(screenings) == 1 else None
        auditor.append("kyc_screening", tenant=tenant, key_id=key_id, subject=subject, data={
            "route": route, "threshold": threshold, "lists": _versions(index),
            "count": len(screenings), "screenings": screenings})  # fmt: skip


def _versions(index: ScreeningIndex) -> dict[str, dict[str, int]]:
    return {name: {"version": v, "entities": n} for name, (v, n) in sorted(index.versions.items())}
