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

from sqlalchemy.engine import Connection

from intramuros.errors import EngineUnavailable
from intramuros.kyc.cases import Cases, Decision, insert_cases, new_case
from intramuros.kyc.errors import ListNotFound
from intramuros.kyc.index import Hit, ScreeningIndex
from intramuros.kyc.match import Subject
from intramuros.kyc.model import Identifier
from intramuros.kyc.normalize import fold
from intramuros.kyc.screener import Screener
from intramuros.kyc.settings import KycSettings
from intramuros.kyc.store import KycStore, write_customers, write_hits
from intramuros.platform.distributed import BatchWorkers, WorkerLost
from intramuros.platform.interface import Auditor, UnitOfWork

# How long a tenant's alert threshold is remembered (see KycWorkflow.threshold_for).
THRESHOLD_SECONDS = 1.0


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


# The list versions a screening used: {list name: (version id, entity count)}.
Versions = dict[str, tuple[int, int]]
# What matching subjects gives: the versions screened, and per subject its matches and the
# time it took (None instead when a wanted list is not loaded).
Matches = tuple[Versions, list[dict[str, Any]] | None]


def match_subjects(index: ScreeningIndex, subjects: list[dict[str, Any]], threshold: float,
                   min_score: float, wanted: frozenset[str] | None,
                   limit: int) -> Matches:  # fmt: skip
    """Match each subject against one snapshot of the lists (pure: no database, no
    record; runs in the server's threads or in a matcher process)."""
    versions = dict(index.versions)
    if wanted and wanted - set(versions):
        return versions, None
    lists = set(wanted) if wanted else None
    found = []
    for data in subjects:
        started = time.perf_counter()
        hits = index.screen(to_subject(data), min_score=min_score, limit=limit, lists=lists)
        found.append({"matches": [_match_out(h, threshold) for h in hits],
                      "took_ms": round((time.perf_counter() - started) * 1000, 3)})  # fmt: skip
    return versions, found


# Subjects in one remote matching task: large enough that sending it costs little
# next to matching it (about a millisecond a subject), small enough to spread.
REMOTE_CHUNK = 200


def match_remotely(workers: BatchWorkers, index: ScreeningIndex, subjects: list[dict[str, Any]],
                   threshold: float, min_score: float) -> Matches:  # fmt: skip
    """:func:`match_subjects` in chunks on ``workers`` (a cluster: the index is put in
    its object store once), in order."""
    shared = workers.share(index)
    chunks = [subjects[i:i + REMOTE_CHUNK] for i in range(0, len(subjects), REMOTE_CHUNK)]
    futures = [workers.submit(match_subjects, shared, chunk, threshold, min_score, None, 10)
               for chunk in chunks]  # fmt: skip
    found: list[dict[str, Any]] = []
    for future in futures:
        try:
            _, part = future.result()
        except WorkerLost:
            raise EngineUnavailable("A worker matching customers died twice; nothing was "
                                    "recorded: run the rescreen again.") from None
        found += part or []
    return dict(index.versions), found


@dataclass
class _Pending:
    """Writes collected while screening a batch, flushed at its end."""

    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    hits: list[tuple[str, str, str, str, str | None]] = field(default_factory=list)
    cases: list[dict[str, Any]] = field(default_factory=list)

    def write(self, tenant: str) -> Callable[[Connection], None]:
        """The batch's rows as one write on a transaction (cases first: hits name them)."""

        def write(conn: Connection) -> None:
            insert_cases(conn, self.cases)
            if self.customers:
                write_customers(conn, tenant, self.customers)
            if self.hits:
                write_hits(conn, tenant, self.hits)

        return write


class KycWorkflow:
    """Lists, screening, cases and decisions over one database and ledger."""

    def __init__(self, db: UnitOfWork, ledger: Auditor, settings: KycSettings) -> None:
        self.settings = settings
        self.db = db
        self.ledger = ledger
        self.store = KycStore(db)
        self.cases = Cases(db)
        self.screener = Screener(self.store, settings.kyc_refresh_seconds)
        # tenant -> (threshold, monotonic time it is good until)
        self._thresholds: dict[str, tuple[float, float]] = {}

    def threshold_for(self, tenant: str) -> float:
        """The tenant's alert threshold, else the installation default.

        Remembered for ``THRESHOLD_SECONDS``: one set through this workflow
        applies at once, one set elsewhere (the command line, another
        replica) within that delay.
        """
        hit = self._thresholds.get(tenant)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        own = self.store.threshold(tenant)
        value = own if own is not None else self.settings.kyc_threshold
        self._thresholds[tenant] = (value, now + THRESHOLD_SECONDS)
        return value

    def cached_threshold(self, tenant: str) -> float | None:
        """The tenant's threshold if :meth:`threshold_for` read it lately (no I/O); else None."""
        hit = self._thresholds.get(tenant)
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def set_threshold(self, tenant: str, value: float) -> None:
        """Set (replace) the tenant's alert threshold; it applies to the next screening."""
        self.store.set_threshold(tenant, value)
        self._thresholds.pop(tenant, None)

    def screen(self, tenant: str, key_id: str | None, subjects: list[dict[str, Any]], *,
               lists: list[str] | None = None, limit: int = 10, route: str = "/v1/kyc/screen",
               progress: Callable[[int], None] | None = None,
               auditor: Auditor | None = None,
               writes: list[Callable[[Connection], None]] | None = None,
               ) -> list[dict[str, Any]]:  # fmt: skip
        """Screen subjects against one snapshot of the lists, in this thread; open cases
        for alerts (see :meth:`conclude`)."""
        threshold = self.threshold_for(tenant)
        matched = match_subjects(self.screener.current(), subjects, threshold,
                                 min(self.settings.kyc_min_score, threshold),
                                 frozenset(lists) if lists else None, limit)  # fmt: skip
        return self.conclude(tenant, key_id, subjects, matched, threshold, lists=lists,
                             route=route, progress=progress, auditor=auditor,
                             writes=writes)  # fmt: skip

    def conclude(self, tenant: str, key_id: str | None, subjects: list[dict[str, Any]],
                 matched: Matches, threshold: float, *, lists: list[str] | None = None,
                 route: str = "/v1/kyc/screen", progress: Callable[[int], None] | None = None,
                 auditor: Auditor | None = None,
                 writes: list[Callable[[Connection], None]] | None = None,
                 ) -> list[dict[str, Any]]:  # fmt: skip
        """The screenings of ``subjects`` from their matches (:func:`match_subjects`, here
        or in a matcher process): cases for alerts, customers kept, the record.

        The ``kyc_screening`` record goes to ``auditor`` (the ledger by
        default). The cases, customers and hits are written in one
        transaction of their own, or, with ``writes``, handed over as one
        write for the caller to commit with the call's record.
        """
        versions, found = matched
        if found is None:
            missing = ", ".join(sorted(set(lists or ()) - set(versions)))
            raise ListNotFound(f"No list loaded named: {missing}.", param="lists")
        batch = _Pending()
        results = []
        for n, (data, item) in enumerate(zip(subjects, found, strict=True), start=1):
            results.append(self._conclude_one(tenant, data, item, threshold, versions, batch))
            if progress is not None:
                progress(n)
        if writes is not None:
            writes.append(batch.write(tenant))
        else:
            self._flush(tenant, batch)
        self._audit(tenant, key_id, route, results, threshold, versions, auditor or self.ledger)
        return results

    def _conclude_one(self, tenant: str, data: dict[str, Any], item: dict[str, Any],
                      threshold: float, versions: Versions, batch: _Pending,
                      known: dict[tuple[str, str, str], str] | None = None,
                      ) -> dict[str, Any]:  # fmt: skip
        """One subject; with ``known`` (re-screening) only new or changed hits alert."""
        matches: list[dict[str, Any]] = item["matches"]
        alerts = [m for m in matches if m["alert"]]
        customer = data.get("customer_id")
        case_id = None
        if customer:
            batch.customers[customer] = data
            if known is not None:
                alerts = [m for m in alerts
                          if known.get((customer, m["list"], m["source_id"])) != m["digest"]]
        if alerts:
            row = new_case(tenant, customer, data, alerts, {
                "threshold": threshold, "lists": _versions(versions),
                "reason": "screening" if known is None else "rescreen: new or changed hits"})
            batch.cases.append(row)
            case_id = str(row["id"])
        if customer and alerts:
            batch.hits += [(customer, m["list"], m["source_id"], m["digest"], case_id)
                           for m in alerts]  # fmt: skip
        for m in matches:
            m.pop("digest", None)
        return {"object": "kyc.screening", "subject": data, "threshold": threshold,
                "matches": matches, "case_id": case_id, "lists": _versions(versions),
                "took_ms": item["took_ms"]}  # fmt: skip

    def _flush(self, tenant: str, batch: _Pending) -> None:
        """Cases, customers and hits of a whole batch, in one transaction (not one per row)."""
        if batch.cases or batch.customers or batch.hits:
            with self.db.begin() as conn:
                batch.write(tenant)(conn)

    def rescreen(self, tenant: str, key_id: str | None,
                 progress: Callable[[int], None] | None = None,
                 workers: BatchWorkers | None = None) -> dict[str, Any]:  # fmt: skip
        """Screen every stored customer again; cases only for new or changed hits.

        With ``workers`` (a Ray cluster's) the matching runs there in chunks, against
        one shared copy of the index; the cases, records and ledger stay here.
        """
        self.screener.refresh(force=True)
        index = self.screener.index
        threshold = self.threshold_for(tenant)
        customers = self.store.customers(tenant)
        known = self.store.known_hits(tenant)
        batch = _Pending()
        results = []
        subjects = [data for _cid, data in customers]
        min_score = min(self.settings.kyc_min_score, threshold)
        if workers is None:
            versions, found = match_subjects(index, subjects, threshold, min_score, None, 10)
        else:
            versions, found = match_remotely(workers, index, subjects, threshold, min_score)
        for n, (data, item) in enumerate(zip(subjects, found or [], strict=True), start=1):
            results.append(self._conclude_one(tenant, data, item, threshold, versions, batch,
                                              known))  # fmt: skip
            if progress is not None:
                progress(n)
        self._flush(tenant, batch)
        self._audit(tenant, key_id, "kyc rescreen", results, threshold, versions, self.ledger)
        cases = [r["case_id"] for r in results if r["case_id"]]
        return {"customers": len(customers), "cases_opened": len(cases), "case_ids": cases,
                "lists": _versions(versions)}  # fmt: skip

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
               threshold: float, versions: Versions, auditor: Auditor) -> None:  # fmt: skip
        screenings = [{
            "customer_id": r["subject"].get("customer_id"),
            "name_sha256": name_digest(str(r["subject"]["name"])),
            "top_score": r["matches"][0]["score"] if r["matches"] else 0.0,
            "alerts": [f"{m['list']}:{m['source_id']}" for m in r["matches"] if m["alert"]],
            "case_id": r["case_id"],
        } for r in results]  # fmt: skip
        subject = screenings[0]["customer_id"] if len(screenings) == 1 else None
        auditor.append("kyc_screening", tenant=tenant, key_id=key_id, subject=subject, data={
            "route": route, "threshold": threshold, "lists": _versions(versions),
            "count": len(screenings), "screenings": screenings})  # fmt: skip


def _versions(versions: Versions) -> dict[str, dict[str, int]]:
    return {name: {"version": v, "entities": n} for name, (v, n) in sorted(versions.items())}
