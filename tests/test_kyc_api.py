"""KYC end to end: lists imported with the CLI, a real server, screening, cases, ledger, CLI."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, cli, start_server, stop_server
from tests.helpers import invoke, run_cli

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sanctions"


@pytest.fixture(scope="module")
def kyc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("kyc")
    cli(data_dir, "kyc", "lists", "import", str(DATA / "ofac"), "--format", "ofac",
        "--list", "ofac")  # fmt: skip
    cli(data_dir, "kyc", "lists", "import", str(DATA / "un" / "UN_consolidated.xml"),
        "--format", "un", "--list", "un")  # fmt: skip
    cli(data_dir, "kyc", "lists", "import",
        str(DATA / "opensanctions" / "us_congress_senzing.json"),
        "--format", "opensanctions-senzing", "--list", "us_congress")  # fmt: skip
    server = start_server(data_dir, "--preload-models", "", auth=True)
    yield server
    stop_server(server)


@pytest.fixture()
def api(kyc_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=kyc_server.base_url, timeout=60,
                      headers=kyc_server.headers("user")) as client:  # fmt: skip
        yield client


def _top(api: httpx.Client, **subject: object) -> dict[str, object]:
    r = api.post("/v1/kyc/screen", json=subject)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matches"], subject
    return body


@pytest.mark.parametrize("subject", [
    {"name": "KARNER, Matevz"},
    {"name": "Matevz Karner", "type": "person"},
    {"name": "Матевж Карнер"},
    {"name": "Matevž Karnerr", "birth_date": "1978-07-19", "nationality": "Slovenia"},
    {"name": "M. Karner", "identifiers": [{"type": "passport", "value": "P01104005"}]},
])  # fmt: skip
def test_known_sdn_entry_and_variants(api: httpx.Client, subject: dict[str, object]) -> None:
    body = _top(api, **subject)
    top = body["matches"][0]  # type: ignore[index]
    assert (top["list"], top["source_id"]) == ("ofac", "16814")
    assert top["alert"] and top["score"] >= body["threshold"]
    assert body["case_id"]
    assert top["explanation"]["name"]["listed"] in ("KARNER, Matevz", "KOVAC, Matevz")
    assert {"ofac", "un", "us_congress"} <= set(body["lists"])  # type: ignore[arg-type]


def test_other_lists_and_kinds(api: httpx.Client) -> None:
    both = _top(api, name="Eric Badege", birth_date="1971")["matches"]  # on OFAC and UN
    assert {m["list"] for m in both if m["alert"]} >= {"un", "ofac"}  # type: ignore[index]
    pep = _top(api, name="Jennifer McClellan", nationality="US")["matches"][0]  # type: ignore[index]
    assert pep["list"] == "us_congress" and pep["schema"] == "person"
    org = _top(api, name="Banco Nacional de Cuba S.A.", type="organization")
    assert org["matches"][0]["source_id"] == "306"  # type: ignore[index]
    wrong_dob = api.post("/v1/kyc/screen", json={"name": "Matevz Karner",
                                                 "birth_date": "1990-01-01"}).json()
    assert not wrong_dob["matches"] or wrong_dob["matches"][0]["score"] < 1.0
    clean = api.post("/v1/kyc/screen", json={"name": "Zyxwv Qwertyuiop"}).json()
    assert clean["matches"] == [] and clean["case_id"] is None


def test_batch(api: httpx.Client) -> None:
    r = api.post("/v1/kyc/screen/batch", json={"subjects": [
        {"name": "Matevz Karner"}, {"name": "Zyxwv Qwertyuiop"}, {"name": "Eric Badege"}]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [bool(d["case_id"]) for d in data] == [True, False, True]
    assert r.json()["screenings_per_second"] > 0


def test_cases_decisions_isolation_report_ledger(kyc_server: Server, api: httpx.Client) -> None:
    body = _top(api, name="Matevz Karner", customer_id="cust-<b>42</b>")
    case_id = body["case_id"]
    listed = api.get("/v1/kyc/cases").json()["data"]
    assert case_id in [c["id"] for c in listed]
    case = api.get(f"/v1/kyc/cases/{case_id}").json()
    assert case["status"] == "open" and case["matches"][0]["source_id"] == "16814"
    other = httpx.Client(base_url=kyc_server.base_url, headers=kyc_server.headers("other"))
    with other:
        for method, path, payload in (
            ("GET", f"/v1/kyc/cases/{case_id}", None),
            ("GET", f"/v1/kyc/cases/{case_id}/report", None),
            ("POST", f"/v1/kyc/cases/{case_id}/decision", {"decision": "false_positive"}),
        ):
            r = other.request(method, path, json=payload)
            missing = other.request(method, path.replace(case_id, "case_00000000000000000000"),
                                    json=payload)  # fmt: skip
            assert r.status_code == missing.status_code == 404
            mine, absent = r.json()["error"], missing.json()["error"]
            fake = "case_00000000000000000000"
            assert mine["message"] == absent["message"].replace(fake, case_id)
            assert (mine["code"], mine["type"]) == (absent["code"], absent["type"])
        assert case_id not in [c["id"] for c in other.get("/v1/kyc/cases").json()["data"]]
    r = api.post(f"/v1/kyc/cases/{case_id}/decision",
                 json={"decision": "true_match", "note": "passport copy matches"})
    assert r.status_code == 200 and r.json()["status"] == "confirmed"
    report = api.get(f"/v1/kyc/cases/{case_id}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "KARNER, Matevz" in report.text and "passport copy matches" in report.text
    assert "cust-&lt;b&gt;42&lt;/b&gt;" in report.text and "<b>42</b>" not in report.text
    admin = {"Authorization": f"Bearer {kyc_server.keys['admin']}"}
    records = httpx.get(kyc_server.base_url + "/v1/admin/ledger?tenant=acme&limit=1000",
                        headers=admin).json()["data"]  # fmt: skip
    kinds = {r["kind"] for r in records}
    assert {"kyc_screening", "kyc_decision"} <= kinds
    decision = [r for r in records if r["kind"] == "kyc_decision"][-1]
    assert decision["data"]["case_id"] == case_id and decision["data"]["decision"] == "true_match"
    screening = [r for r in records if r["kind"] == "kyc_screening"
                 and r["subject"] == "cust-<b>42</b>"][-1]  # fmt: skip
    assert screening["data"]["screenings"][0]["case_id"] == case_id
    assert "Karner" not in str(screening["data"])  # the name itself is not kept in clear
    requests = api.get("/v1/requests").json()["data"]
    assert any(r["route"] == "/v1/kyc/screen" and r["model"] == "kyc-matcher" for r in requests)


def test_threshold_per_tenant(kyc_server: Server, api: httpx.Client) -> None:
    admin = {"Authorization": f"Bearer {kyc_server.keys['admin']}"}
    operator = {"Authorization": f"Bearer {kyc_server.keys['operator']}"}
    assert api.put("/v1/kyc/threshold", json={"tenant": "globex", "threshold": 0.99}
                   ).status_code == 403  # fmt: skip
    # acme's admin rules acme only: globex answers as a tenant that does not exist
    r = httpx.put(kyc_server.base_url + "/v1/kyc/threshold", headers=admin,
                  json={"tenant": "globex", "threshold": 0.999})  # fmt: skip
    assert r.status_code == 404
    r = httpx.put(kyc_server.base_url + "/v1/kyc/threshold", headers=operator,
                  json={"tenant": "globex", "threshold": 0.999})  # fmt: skip
    assert r.status_code == 200
    with httpx.Client(base_url=kyc_server.base_url, headers=kyc_server.headers("other")) as other:
        assert other.get("/v1/kyc/threshold").json()["threshold"] == 0.999
        body = other.post("/v1/kyc/screen", json={"name": "Matevz Karnerr"}).json()
        assert body["matches"] and body["case_id"] is None
    assert api.get("/v1/kyc/threshold").json()["threshold"] < 0.999


@pytest.mark.parametrize("payload, param", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "!!!"}, "name"),
    ({"name": "x" * 301}, "name"),
    ({"name": "A B", "birth_date": "12/03/1990"}, "birth_date"),
    ({"name": "A B", "birth_date": "1990-13-01"}, "birth_date"),
    ({"name": "A B", "type": "spaceship"}, "type"),
    ({"name": "A B", "limit": 0}, "limit"),
    ({"name": "A B", "unknown": 1}, "unknown"),
    ({"name": "A B", "identifiers": [{"type": "passport"}]}, "identifiers[0].value"),
    ({"name": ["A"]}, "name"),
])  # fmt: skip
def test_screen_bad_input(api: httpx.Client, payload: dict[str, object], param: str) -> None:
    r = api.post("/v1/kyc/screen", json=payload)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_other_routes_bad_input(kyc_server: Server, api: httpx.Client) -> None:
    assert api.post("/v1/kyc/screen", content=b"{not json",
                    headers={"content-type": "application/json"}).status_code == 400
    assert httpx.post(kyc_server.base_url + "/v1/kyc/screen", json={"name": "A"}).status_code == 401
    assert api.post("/v1/kyc/screen/batch", json={"subjects": []}).status_code == 400
    big = {"subjects": [{"name": "A B"}] * 1001}
    assert api.post("/v1/kyc/screen/batch", json=big).json()["error"]["param"] == "subjects"
    assert api.get("/v1/kyc/cases/nope").status_code == 404
    assert api.get("/v1/kyc/cases?limit=0").status_code == 400
    r = api.post("/v1/kyc/cases/nope/decision", json={"decision": "maybe"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "decision"
    case_id = _top(api, name="Eric Badege")["case_id"]
    r = api.post(f"/v1/kyc/cases/{case_id}/decision", json={"decision": "escalate",
                                                            "note": "x" * 10_001})
    assert r.status_code == 400 and r.json()["error"]["param"] == "note"
    admin = {"Authorization": f"Bearer {kyc_server.keys['admin']}"}
    r = httpx.put(kyc_server.base_url + "/v1/kyc/threshold", headers=admin,
                  json={"tenant": "acme", "threshold": 2})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["param"] == "threshold"
    huge = b'{"subjects": [' + b",".join([b'{"name": "' + b"x" * 900 + b'"}'] * 10_000) + b"]}"
    assert api.post("/v1/kyc/screen/batch", content=huge,
                    headers={"content-type": "application/json"}).status_code == 413
    emoji = api.post("/v1/kyc/screen", json={"name": "\U0001f600\U0001f600"})
    assert emoji.status_code == 400 and emoji.json()["error"]["param"] == "name"
    odd = api.post("/v1/kyc/screen", json={"name": "Ka\u0301rner \u200bMatevz\t\n"})
    assert odd.status_code == 200 and odd.json()["matches"][0]["source_id"] == "16814"
    r = api.post("/v1/kyc/screen", json={"name": "A B", "lists": ["ofac", "nonesuch"]})
    assert r.status_code == 404 and r.json()["error"]["param"] == "lists"
    only_un = api.post("/v1/kyc/screen", json={"name": "Eric Badege", "lists": ["un"]}).json()
    assert {m["list"] for m in only_un["matches"]} == {"un"}
    assert api.get("/healthz").status_code == 200  # still serving


def test_lists_route_and_live_reimport(kyc_server: Server, api: httpx.Client,
                                       tmp_path: Path) -> None:  # fmt: skip
    lists = {row["name"]: row for row in api.get("/v1/kyc/lists").json()["data"]}
    assert lists["ofac"]["entities"] == 8976 and lists["ofac"]["loaded"]
    assert len(lists["un"]["sha256"]) == 64 and lists["un"]["list_date"] == "2026-02-27"
    inhouse = tmp_path / "inhouse.csv"
    inhouse.write_text("id,name,type,birth_dates\nih-1,Quentin Zebulon Example,person,1970\n")
    cli(kyc_server.data_dir, "kyc", "lists", "import", str(inhouse), "--format", "csv",
        "--list", "inhouse")  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = api.post("/v1/kyc/screen", json={"name": "Quentin Example"}).json()
        if body["matches"]:
            break
        time.sleep(0.5)
    assert body["matches"][0]["list"] == "inhouse" and "inhouse" in body["lists"]


def test_cli_screen_rescreen_and_errors(kyc_server: Server, tmp_path: Path) -> None:
    data_dir = kyc_server.data_dir
    customers = tmp_path / "customers.csv"
    customers.write_text(
        "customer_id,name,birth_date,nationality,identifiers\n"
        "c1,Matevz Karner,1978-07-19,Slovenia,passport:P01104005\n"
        "c2,Zyxwv Qwertyuiop,,,\n"
        "c3,,,,\n"
        "c4,Eric Badege,not-a-date,,\n"
        "c5,Usama bin Ladin,,,\n",
        encoding="utf-8",
    )
    out = tmp_path / "results.csv"
    r = run_cli("kyc", "screen", str(customers), "--out", str(out), "--tenant", "acme",
                data_dir=data_dir)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "customers.csv:4: name" in r.stderr and "customers.csv:5: birth_date" in r.stderr
    assert "screened 3 customers" in r.stdout and "/s" in r.stdout
    with out.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["customer_id"] for row in rows] == ["c1", "c2", "c5"]
    assert rows[0]["alert"] == "True" and rows[0]["best_source_id"] == "16814"
    assert rows[1]["alert"] == "False" and rows[2]["alert"] == "True"
    r = run_cli("kyc", "rescreen", "--tenant", "acme", data_dir=data_dir)
    assert r.returncode == 0 and "0 case(s) opened" in r.stdout, r.stdout + r.stderr
    status = invoke("kyc", "lists", "status", "--data-dir", str(data_dir), catch_exceptions=True)
    assert "ofac\tversion" in status.stdout and "8976 entities" in status.stdout
    broken = tmp_path / "broken.csv"
    broken.write_text("id,name\nb1,Broken List Entry\nb2,\nb3,Another Entry,extra\n")
    result = invoke("kyc", "lists", "import", str(broken), "--format", "csv", "--list", "broken",
                    "--data-dir", str(data_dir), catch_exceptions=True)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "skipped: broken.csv:3: empty name" in result.stderr
    assert "skipped: broken.csv:4: more fields than the header" in result.stderr
    assert "1 entities, 2 row(s) skipped" in result.stdout
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    for args, message in (
        (("kyc", "screen", str(customers), "--out", str(out), "--tenant", "nobody"),
         "No tenant 'nobody'"),
        (("kyc", "rescreen", "--tenant", "nobody"), "No tenant 'nobody'"),
        (("kyc", "lists", "import", str(tmp_path / "missing.csv"), "--format", "csv",
          "--list", "x"), "No such file"),
        (("kyc", "lists", "import", str(customers), "--format", "un", "--list", "x"),
         "not well-formed"),
        (("kyc", "lists", "import", str(customers), "--format", "csv", "--list", "bad name!"),
         "--list must be"),
        (("kyc", "threshold", "--tenant", "acme", "1.5"), "1.5"),
        (("kyc", "screen", str(binary), "--out", str(out), "--tenant", "acme"), "UTF-8"),
    ):  # fmt: skip
        # in-process (a subprocess per case costs seconds of start-up)
        result = invoke(*args, "--data-dir", str(data_dir), catch_exceptions=True)
        assert result.exit_code != 0 and message in result.stderr, (args, result.stderr)
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit), result.exception


def test_machine_drafted_summary(kyc_server: Server, api: httpx.Client) -> None:
    case_id = _top(api, name="Matevz Karner", birth_date="1978-07-19")["case_id"]
    with httpx.Client(base_url=kyc_server.base_url, headers=kyc_server.headers("other")) as other:
        assert other.post(f"/v1/kyc/cases/{case_id}/summary").status_code == 404
    r = api.post(f"/v1/kyc/cases/{case_id}/summary", timeout=300)
    assert r.status_code == 200, r.text
    summary = r.json()["summary"]
    assert summary["machine_drafted"] is True and summary["model"] == "smollm2-135m-instruct"
    assert summary["text"].strip()
    report = api.get(f"/v1/kyc/cases/{case_id}/report").text
    assert "machine-drafted by smollm2-135m-instruct" in report
    bad = api.post(f"/v1/kyc/cases/{case_id}/summary", json={"model": "no-such-model"})
    assert 400 <= bad.status_code < 500 and bad.json()["error"]["param"] == "model"
    assert api.post(f"/v1/kyc/cases/{case_id}/summary", json={"model": ""}).status_code == 400
