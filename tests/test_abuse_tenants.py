"""Tenants are identities, admins rule only their own tenant, key ids do not leak.

Against a real server: a deleted tenant's files, OCR jobs, KYC cases, request
log, usage and stored ledger content are gone, and a new tenant of the same
name starts empty under a new id; a tenant's admin key is refused (exactly as
for a missing tenant) on every admin route aimed at another tenant; server
paths never appear in answers. In-process: the time of a refused key does not
tell whether its id exists; databases of the previous version are migrated.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import (
    CHAT_MODEL,
    Server,
    bundled_file,
    cli,
    start_server,
    steps_before,
    stop_server,
)
from tests.test_docai_docs import make_pdf

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

LIST = "id,name,type\nih-1,Quentin Zebulon Example,person\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("tenants")
    key_file = data_dir / "ledger.key"
    subprocess.run([sys.executable, "-m", "intramuros.cli", "ledger", "keygen", str(key_file)],
                   check=True, capture_output=True)  # fmt: skip
    KEY_ENV["INTRAMUROS_LEDGER_KEY_FILE"] = str(key_file)
    inhouse = data_dir / "inhouse.csv"
    inhouse.write_text(LIST)
    cli(data_dir, "kyc", "lists", "import", str(inhouse), "--format", "csv", "--list", "inhouse",
        env=KEY_ENV)  # fmt: skip
    server = start_server(data_dir, "--preload-models", CHAT_MODEL, env=KEY_ENV, auth=True)
    yield server
    stop_server(server)


# The server's ledger key: commands run with it (their records are keyed).
KEY_ENV: dict[str, str] = {}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _new_tenant(srv: Server, name: str) -> str:
    cli(srv.data_dir, "tenants", "create", name, "--store-content", env=KEY_ENV)
    return cli(srv.data_dir, "keys", "create", "--tenant", name, env=KEY_ENV).strip()


def _leave_traces(srv: Server, key: str) -> dict[str, str]:
    """Everything a tenant can store: a file, an OCR job, a KYC case, calls, content."""
    with httpx.Client(base_url=srv.base_url, headers=_auth(key), timeout=240) as c:
        pdf = make_pdf([["Delivery note DN-88", "Shipped to Globex on 2026-11-02"]])
        up = c.post("/v1/files", files={"file": ("note.pdf", pdf, "application/pdf")},
                    data={"purpose": "ocr"})  # fmt: skip
        assert up.status_code == 200, up.text
        file_id = up.json()["id"]
        job = c.post("/v1/batch/ocr", json={"file_ids": [file_id]})
        assert job.status_code in (200, 201), job.text
        job_id = job.json()["id"]
        deadline = time.monotonic() + 120
        while c.get(f"/v1/batch/ocr/{job_id}").json()["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        screened = c.post("/v1/kyc/screen", json={"name": "Quentin Zebulon Example"})
        assert screened.status_code == 200 and screened.json()["case_id"], screened.text
        chat = c.post("/v1/chat/completions", json={
            "model": CHAT_MODEL, "max_tokens": 3, "user": "subject-1",
            "messages": [{"role": "user", "content": "Say hi."}]})  # fmt: skip
        assert chat.status_code == 200, chat.text
        request_id = c.get("/v1/requests").json()["data"][0]["request_id"]
    return {"file": file_id, "job": job_id, "case": screened.json()["case_id"],
            "request": request_id}  # fmt: skip


def _sees_nothing_of(srv: Server, key: str, old: dict[str, str]) -> None:
    with httpx.Client(base_url=srv.base_url, headers=_auth(key), timeout=60) as c:
        assert c.get("/v1/files").json()["data"] == []
        for path in (f"/v1/files/{old['file']}", f"/v1/files/{old['file']}/content",
                     f"/v1/batch/ocr/{old['job']}", f"/v1/kyc/cases/{old['case']}",
                     f"/v1/requests/{old['request']}"):  # fmt: skip
            assert c.get(path).status_code == 404, path
        assert c.get("/v1/batch/ocr").json()["data"] == []
        assert c.get("/v1/kyc/cases").json()["data"] == []
        assert c.get("/v1/requests").json()["data"] == []
        assert c.get("/v1/usage").json()["data"] == []


def _rows_of(srv: Server, tenant_id: str) -> dict[str, int]:
    engine = sa.create_engine(f"sqlite:///{srv.data_dir / 'intramuros.db'}")
    counts = {}
    with engine.connect() as conn:
        for table in ("api_keys", "request_log", "usage", "usage_metering", "files",
                      "docai_jobs", "kyc_cases", "kyc_customers", "kyc_hits"):  # fmt: skip
            counts[table] = conn.execute(sa.text(
                f"SELECT count(*) FROM {table} WHERE tenant = :t"), {"t": tenant_id}).scalar_one()
        counts["ledger_content"] = conn.execute(sa.text(
            "SELECT count(*) FROM ledger_content c JOIN ledger_records r ON r.seq = c.seq "
            "WHERE r.tenant = :t"), {"t": tenant_id}).scalar_one()  # fmt: skip
    engine.dispose()
    return counts


@pytest.mark.parametrize("how", ["cli", "http"])
def test_a_deleted_tenant_leaves_nothing_and_its_name_starts_empty(srv: Server, how: str) -> None:
    name = f"bee-{how}"
    key = _new_tenant(srv, name)
    old_id = httpx.get(srv.base_url + "/v1/admin/tenants", headers=srv.headers("operator"),
                       timeout=30).json()["data"]  # fmt: skip
    old_id = next(t["id"] for t in old_id if t["name"] == name)
    traces = _leave_traces(srv, key)
    assert _rows_of(srv, old_id)["files"] == 1 and _rows_of(srv, old_id)["ledger_content"] >= 1
    if how == "cli":
        out = cli(srv.data_dir, "tenants", "delete", name, env=KEY_ENV)
        assert f"id {old_id}" in out and "never reused" in out
    else:
        r = httpx.delete(srv.base_url + f"/v1/admin/tenants/{name}",
                         headers=srv.headers("operator"), timeout=120)  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["purged"]["files"] == 1 and r.json()["purged"]["kyc_cases"] == 1
    # the old key is dead at once, and nothing of the old tenant is left anywhere
    assert httpx.get(srv.base_url + "/v1/models", headers=_auth(key)).status_code == 401
    assert all(n == 0 for n in _rows_of(srv, old_id).values()), _rows_of(srv, old_id)
    assert not (srv.data_dir / "files" / old_id).exists()
    # the name is free again, for a new identity that starts empty
    new_key = _new_tenant(srv, name)
    listed = httpx.get(srv.base_url + "/v1/admin/tenants", headers=srv.headers("operator"),
                       timeout=30).json()["data"]  # fmt: skip
    new_id = next(t["id"] for t in listed if t["name"] == name)
    assert new_id != old_id and new_id.startswith(name + ".")
    _sees_nothing_of(srv, new_key, traces)
    # the ledger kept the old tenant's records (their content erased), and still verifies
    ledger = httpx.get(srv.base_url + "/v1/admin/ledger", timeout=30,
                       params={"limit": 1000}, headers=srv.headers("operator")).json()["data"]
    actions = [r["data"].get("action") for r in ledger if r["tenant"] == old_id]
    assert "tenant_delete" in actions and "tenant_purged" in actions
    verify = httpx.get(srv.base_url + "/v1/admin/ledger/verify",
                       headers=srv.headers("operator"), timeout=120).json()  # fmt: skip
    assert verify["ok"], verify


def _check_refused(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)


def test_a_tenant_admin_rules_only_its_own_tenant(srv: Server) -> None:
    op, admin = srv.headers("operator"), srv.headers("admin")
    other_key = srv.keys["other"]
    other_id = httpx.get(srv.base_url + "/v1/admin/keys?tenant=globex", headers=op,
                         timeout=30).json()["data"][0]["id"]  # fmt: skip
    seq = max(r["seq"] for r in httpx.get(
        srv.base_url + "/v1/admin/ledger", params={"tenant": "globex", "limit": 1000},
        headers=op, timeout=30).json()["data"])  # fmt: skip
    forbidden: list[tuple[str, str, Any, int]] = [
        ("POST", "/v1/admin/tenants", {"name": "evil"}, 403),
        ("DELETE", "/v1/admin/tenants/globex", None, 403),
        ("GET", "/v1/admin/ledger/verify", None, 403),
        ("GET", "/v1/admin/keys?tenant=globex", None, 404),
        ("POST", "/v1/admin/keys", {"tenant": "globex", "role": "admin"}, 404),
        ("DELETE", f"/v1/admin/keys/{other_id}", None, 404),
        ("GET", "/v1/admin/tenants/globex/policy", None, 404),
        ("PATCH", "/v1/admin/tenants/globex/policy", {"pii_default": "allow"}, 404),
        ("GET", "/v1/admin/ledger?tenant=globex", None, 404),
        ("GET", f"/v1/admin/ledger/{seq}/content", None, 404),
        ("GET", "/v1/usage?tenant=globex", None, 404),
        ("PUT", "/v1/kyc/threshold", {"tenant": "globex", "threshold": 0.99}, 404),
        # its own tenant, but beyond an admin: limits, operator keys
        ("PATCH", "/v1/admin/tenants/acme/policy", {"limits": {"rpm": 100000}}, 403),
        ("POST", "/v1/admin/keys", {"role": "operator"}, 400),
    ]  # fmt: skip
    for method, path, body, status in forbidden:
        _check_refused(httpx.request(method, srv.base_url + path, headers=admin, json=body,
                                     timeout=30), status)  # fmt: skip
    # a foreign tenant answers exactly like one that does not exist
    foreign = httpx.get(srv.base_url + "/v1/admin/tenants/globex/policy", headers=admin)
    missing = httpx.get(srv.base_url + "/v1/admin/tenants/nosuch/policy", headers=admin)
    assert foreign.json()["error"]["message"].replace("globex", "X") == \
        missing.json()["error"]["message"].replace("nosuch", "X")  # fmt: skip
    # nothing happened to globex: its key works, its threshold and policy are unchanged
    assert httpx.get(srv.base_url + "/v1/models", headers=_auth(other_key)).status_code == 200
    policy = httpx.get(srv.base_url + "/v1/admin/tenants/globex/policy", headers=op).json()
    assert policy["policy"]["pii_default"] == "redact-in-logs"
    # what an admin sees of the world is its own tenant
    tenants = httpx.get(srv.base_url + "/v1/admin/tenants", headers=admin).json()["data"]
    assert [t["name"] for t in tenants] == ["acme"]
    keys = httpx.get(srv.base_url + "/v1/admin/keys", headers=admin).json()["data"]
    assert keys and {k["tenant"] for k in keys} == {"acme"}
    ledger = httpx.get(srv.base_url + "/v1/admin/ledger", params={"limit": 1000},
                       headers=admin).json()["data"]  # fmt: skip
    assert ledger and {r["tenant"] for r in ledger} == {"acme"}
    # and it does manage its own tenant
    made = httpx.post(srv.base_url + "/v1/admin/keys", headers=admin, json={"role": "admin"})
    assert made.status_code == 201 and made.json()["tenant"] == "acme"
    gone = httpx.delete(srv.base_url + f"/v1/admin/keys/{made.json()['id']}", headers=admin)
    assert gone.status_code == 200
    changed = httpx.patch(srv.base_url + "/v1/admin/tenants/acme/policy", headers=admin,
                          json={"retention_days": 30})  # fmt: skip
    assert changed.status_code == 200 and changed.json()["policy"]["retention_days"] == 30
    assert httpx.put(srv.base_url + "/v1/kyc/threshold", headers=admin,
                     json={"threshold": 0.9}).json()["tenant"] == "acme"  # fmt: skip
    # an admin cannot revoke the operator's key even though it sits in its tenant
    op_id = srv.keys["operator"].split("_")[1]
    _check_refused(httpx.delete(srv.base_url + f"/v1/admin/keys/{op_id}", headers=admin), 404)
    # the operator does all of it across tenants
    for path in ("/v1/admin/keys?tenant=globex", "/v1/admin/tenants/globex/policy",
                 "/v1/admin/ledger?tenant=globex", "/v1/usage?tenant=globex",
                 f"/v1/admin/ledger/{seq}/content", "/v1/admin/ledger/verify"):  # fmt: skip
        assert httpx.get(srv.base_url + path, headers=op, timeout=120).status_code == 200, path


def test_no_server_path_in_answers(srv: Server, tmp_path: Path) -> None:
    # a model added from a file: its origin is shown by file name only
    weights = bundled_file(CHAT_MODEL)
    cli(srv.data_dir, "models", "add", str(weights), "--name", "own-copy", "--license",
        "Apache-2.0", env=KEY_ENV)  # fmt: skip
    user = srv.headers("user")
    bodies = [httpx.get(srv.base_url + path, headers=user, timeout=30).text
              for path in ("/v1/models", "/v1/models/own-copy", "/v1/kyc/lists")]  # fmt: skip
    for body in bodies:
        assert str(srv.data_dir) not in body and str(weights.parent) not in body, body[:300]
    lists = httpx.get(srv.base_url + "/v1/kyc/lists", headers=user).json()["data"]
    assert lists[0]["source"] == "inhouse.csv"
    card = httpx.get(srv.base_url + "/v1/models/own-copy", headers=user).json()
    assert card["intramuros"]["origin"]["path"] == weights.name


def test_unknown_key_ids_take_as_long_as_wrong_secrets(tmp_path: Path) -> None:
    from intramuros.errors import AuthenticationError
    from intramuros.gate.tenants import Tenants
    from intramuros.store.db import Database

    db = Database(f"sqlite:///{tmp_path / 'keys.db'}")
    db.migrate()
    tenants = Tenants(db)
    tenants.create("acme")
    key, info = tenants.create_key("acme")
    wrong_secret = key[:-5] + ("AAAAA" if not key.endswith("AAAAA") else "BBBBB")
    unknown_id = "im_" + "0" * 16 + key[19:]
    times: dict[str, list[float]] = {"wrong_secret": [], "unknown_id": []}
    for _ in range(15):
        for kind, token in (("wrong_secret", wrong_secret), ("unknown_id", unknown_id)):
            start = time.perf_counter()
            with pytest.raises(AuthenticationError):
                tenants.authenticate(token)
            times[kind].append(time.perf_counter() - start)
    wrong, unknown = (statistics.median(times[k]) for k in ("wrong_secret", "unknown_id"))
    # Today's code answered an unknown id in 1.7 ms and a wrong secret in 42 ms.
    assert 0.5 < unknown / wrong < 2.0, (unknown, wrong)
    assert tenants.authenticate(key).key_id == info.id
    db.close()


def test_databases_of_the_previous_version_are_migrated(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from intramuros.gate.tenants import Tenants
    from intramuros.store import db as store

    # A database as the previous version left it: tenant "zed" was deleted then, which
    # removed its row and revoked its keys but left its records behind.
    database = store.Database(db_url)
    database.migrate(steps_before(10))
    with database.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (name, created_at, policy) "
                             "VALUES ('acme', 1, '{}')"))
        for tenant in ("acme", "zed"):
            conn.execute(sa.text(
                "INSERT INTO request_log (request_id, ts, route, status, prompt_tokens, "
                "completion_tokens, latency_ms, tenant) VALUES (:r, 1, '/v1/x', 200, 0, 0, 1, :t)"
            ), {"r": f"req-{tenant}", "t": tenant})  # fmt: skip
    database.migrate()
    tenants = Tenants(database)
    assert tenants.resolve("acme") == "acme"  # a live tenant keeps its name as its id
    assert [t.id for t in tenants.tombstones(pending_only=True)] == ["zed"]
    assert tenants.create("zed").id != "zed"  # the old zed's rows are not the new one's
    from intramuros.ledger import Ledger
    from intramuros.serving.tenancy import finish_pending, purge_context
    from intramuros.settings import load_settings

    settings = load_settings(data_dir=Path("/nonexistent-data-dir"), database_url=db_url)
    ctx = purge_context(settings, database, Ledger(database), actor="test")
    # The core's own rows only: no workload plug-in's purge.
    monkeypatch.setattr("intramuros.serving.tenancy.installed_workloads", list)
    done = finish_pending(ctx, tenants)
    assert done["zed"]["requests"] == 1
    with database.begin() as conn:
        left = conn.execute(sa.text("SELECT tenant FROM request_log")).scalars().all()
    assert left == ["acme"]
    database.close()
