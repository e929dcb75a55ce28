"""The KYC store on SQLite and PostgreSQL: atomic re-import, cases, decisions, re-screening."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from intramuros.kyc.errors import CaseNotFound
from intramuros.kyc.importers import ImportResult, parse_list
from intramuros.kyc.model import Entity, Name
from intramuros.kyc.workflow import KycWorkflow
from intramuros.ledger import Ledger
from intramuros.settings import load_settings
from intramuros.store.db import Database

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sanctions"


@pytest.fixture()
def flow(db_url: str, tmp_path: Path) -> Iterator[KycWorkflow]:
    db = Database(db_url)
    db.migrate()
    settings = load_settings(data_dir=tmp_path, database_url=db_url, kyc_refresh_seconds=0)
    yield KycWorkflow(db, Ledger(db, None), settings)
    db.close()


def _result(entities: list[Entity]) -> ImportResult:
    return ImportResult(entities=entities, files={"x": "0" * 64}, list_date="2026-12-01")


def _person(source_id: str, name: str, dob: str | None = None) -> Entity:
    return Entity("watch", source_id, "person", [Name(name)], birth_dates=[dob] if dob else [])


def test_import_status_and_versions(flow: KycWorkflow) -> None:
    result = parse_list(DATA / "un" / "UN_consolidated.xml", "un", "un")
    first = flow.store.import_list(result, "un", "un", "un.xml")
    second = flow.store.import_list(result, "un", "un", "un.xml")
    third = flow.store.import_list(_result([_person("1", "Solo Person")]), "un", "csv", "x.csv")
    assert first < second < third
    [status] = flow.store.status()
    assert (status.name, status.version, status.entities) == ("un", third, 1)
    assert flow.store.active_versions() == {"un": (third, 1)}
    assert len(flow.store.load_version(second)) == len(result.entities)  # previous one kept
    assert flow.store.load_version(first) == []  # older ones pruned
    assert flow.store.delete_list("un") and flow.store.status() == []


def test_reimport_is_atomic_for_concurrent_screening(flow: KycWorkflow) -> None:
    old = [_person(str(i), f"Oldname{i} Family{i}") for i in range(1500)]
    new = [_person(str(i), f"Newname{i} Family{i}") for i in range(1000)]
    flow.store.import_list(_result(old), "watch", "csv", "old.csv")
    flow.screener.refresh(force=True)
    seen: list[tuple[int, bool, bool]] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def screen_loop() -> None:
        try:
            while not stop.is_set():
                r1 = flow.screener.current()  # one snapshot per screening
                a = r1.screen(_subject("Oldname7 Family7"), min_score=0.95)
                b = r1.screen(_subject("Newname7 Family7"), min_score=0.95)
                seen.append((len(r1), bool(a), bool(b)))
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=screen_loop)
    thread.start()
    try:
        for _round in range(3):
            flow.store.import_list(_result(new), "watch", "csv", "new.csv")
            flow.store.import_list(_result(old), "watch", "csv", "old.csv")
        flow.store.import_list(_result(new), "watch", "csv", "new.csv")
        while not any(size == 1000 for size, _a, _b in seen[-5:]):
            flow.screener.refresh(force=True)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not failures
    # every screening saw a whole list: the old one (1500, old name only) or the new one
    assert set(seen) <= {(1500, True, False), (1000, False, True)}
    assert (1500, True, False) in seen and (1000, False, True) in seen


def _subject(name: str) -> object:
    from intramuros.kyc.match import Subject

    return Subject(name)


def test_cases_decisions_and_tenant_isolation(flow: KycWorkflow) -> None:
    flow.store.import_list(_result([_person("p1", "Ivan Testovsky", "1961-04-12")]),
                           "watch", "csv", "w.csv")  # fmt: skip
    [res] = flow.screen("acme", "k1", [{"name": "Ivan Testovskiy", "birth_date": "1961-04-12"}])
    assert res["matches"][0]["alert"] and res["case_id"]
    case_id = res["case_id"]
    [miss] = flow.screen("acme", "k1", [{"name": "Completely Different"}])
    assert miss["matches"] == [] and miss["case_id"] is None
    assert [c["id"] for c in flow.cases.list("acme")] == [case_id]
    assert flow.cases.list("globex") == []
    with pytest.raises(CaseNotFound):
        flow.cases.get("globex", case_id)
    with pytest.raises(CaseNotFound):
        flow.decide("globex", "k2", case_id, "false_positive", "not ours")
    case = flow.decide("acme", "k1", case_id, "escalate", "needs a second look")
    assert case["status"] == "escalated"
    case = flow.decide("acme", "k1", case_id, "true_match", "confirmed by passport copy")
    assert case["status"] == "confirmed"
    assert [h["decision"] for h in case["history"]] == ["escalate", "true_match"]
    kinds = [(r.kind, r.tenant) for r in flow.ledger.records()]
    assert kinds.count(("kyc_screening", "acme")) == 2
    assert kinds.count(("kyc_decision", "acme")) == 2
    assert ("kyc_decision", "globex") not in kinds
    assert flow.ledger.verify().ok


def test_thresholds_per_tenant(flow: KycWorkflow) -> None:
    flow.store.import_list(_result([_person("p1", "Ivan Testovsky")]), "watch", "csv", "w.csv")
    assert flow.threshold_for("acme") == flow.settings.kyc_threshold
    flow.store.set_threshold("globex", 0.99)
    [acme] = flow.screen("acme", None, [{"name": "Ivan Testovskiy"}])
    [globex] = flow.screen("globex", None, [{"name": "Ivan Testovskiy"}])
    assert acme["case_id"] and not globex["case_id"]
    assert globex["threshold"] == 0.99 and globex["matches"]  # still shown, not alerting


def test_rescreen_opens_cases_only_for_new_or_changed_hits(flow: KycWorkflow) -> None:
    v1 = [_person("p1", "Ivan Testovsky", "1961-04-12"), _person("p2", "Maria Exampleva")]
    flow.store.import_list(_result(v1), "watch", "csv", "w.csv")
    customers = [{"customer_id": "c1", "name": "Ivan Testovsky"},
                 {"customer_id": "c2", "name": "Olga Newcomer"},
                 {"customer_id": "c3", "name": "Maria Exampleva"}]  # fmt: skip
    first = flow.screen("acme", None, customers)
    assert [bool(r["case_id"]) for r in first] == [True, False, True]
    assert flow.rescreen("acme", None)["cases_opened"] == 0  # nothing changed
    v2 = [_person("p1", "Ivan Testovsky", "1961-04-13"),  # changed entry
          _person("p2", "Maria Exampleva"),  # unchanged
          _person("p3", "Olga Newcomer")]  # new entry  # fmt: skip
    flow.store.import_list(_result(v2), "watch", "csv", "w2.csv")
    summary = flow.rescreen("acme", None)
    assert summary["customers"] == 3 and summary["cases_opened"] == 2
    opened = {flow.cases.get("acme", c)["customer_id"] for c in summary["case_ids"]}
    assert opened == {"c1", "c2"}
    assert flow.rescreen("acme", None)["cases_opened"] == 0
    assert flow.rescreen("globex", None)["customers"] == 0


def test_a_screening_that_cannot_be_recorded_is_not_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The screening's record, its cases and the call's records are one transaction: when
    it cannot be written, nothing of it is, and the caller gets a 500, not an answer."""
    import sqlalchemy as sa

    from intramuros.errors import ServerError
    from intramuros.gate.tenants import Principal
    from intramuros.kyc import workflow
    from intramuros.kyc.service import KycService
    from intramuros.serving import recorder
    from intramuros.serving.service import InferenceService

    core = InferenceService(load_settings(data_dir=tmp_path, preload_models=[],
                                          egress_guard=False,
                                          kyc_matcher_processes=0))  # fmt: skip
    core.db.migrate()
    svc = KycService(core)
    tried: list[int] = []

    def full_disk(conn: Any, rows: Any) -> None:
        tried.append(len(rows))
        raise sa.exc.OperationalError("INSERT INTO kyc_cases", {}, Exception("disk full"))

    monkeypatch.setattr(workflow, "insert_cases", full_disk)
    monkeypatch.setattr(recorder, "RETRY_PAUSE", 0.01)
    who = Principal(tenant="acme", key_id=None, role="user")

    async def scenario() -> list[dict[str, Any]]:
        await svc.start()
        try:
            with pytest.raises(ServerError, match="could not be recorded"):
                await svc.screen(who, [{"name": "Jane Roe"}], None, 5, "/v1/kyc/screen")
            return core.db.recent_requests(5)
        finally:
            await svc.close()
            await core.close()

    rows = asyncio.run(scenario())
    assert len(tried) == recorder.RETRIES  # tried, and tried again, then given up
    # The call itself is on record, as failed; its screening record is not.
    assert [(r["route"], r["status"], r["error_code"]) for r in rows] == [
        ("/v1/kyc/screen", 500, "internal_error")]
    kinds = [e.kind for e in core.ledger.records()]
    assert "kyc_screening" not in kinds and kinds.count("model_call") == 1
