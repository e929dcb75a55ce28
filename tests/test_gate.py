"""The gate: keys, roles, model allowlists, isolation between tenants, quotas."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from intramuros.errors import AuthenticationError, RateLimited
from intramuros.gate.policy import Limits
from intramuros.gate.quotas import Quotas
from intramuros.gate.tenants import Tenants
from intramuros.store.db import Database
from tests.conftest import CHAT_MODEL, EMBED_MODEL, Server, cli, start_server, stop_server

HI = {"model": CHAT_MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}


def check_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, object]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer im_0000000000000000_" + "A" * 43,
    "Bearer not-a-key", "bearer im_zz", "Bearer " + "x" * 5000, "Token abc",
])  # fmt: skip
def test_bad_keys_are_401(server: Server, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
                         ("POST", "/v1/embeddings"), ("GET", "/v1/usage"),
                         ("GET", "/v1/admin/keys")):  # fmt: skip
        r = httpx.request(method, server.base_url + path, headers=headers, json=HI, timeout=30)
        err = check_error(r, 401, "invalid_api_key")
        assert err["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"


def test_a_key_with_a_wrong_secret_is_401(server: Server) -> None:
    key = server.keys["user"]
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    r = httpx.post(server.base_url + "/v1/chat/completions", json=HI, timeout=30,
                   headers={"Authorization": f"Bearer {forged}"})  # fmt: skip
    check_error(r, 401, "invalid_api_key")


def test_open_routes_need_no_key(server: Server) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(server.base_url + path, timeout=30).status_code == 200


def test_revoked_and_expired_keys(server: Server) -> None:
    admin = server.headers("admin")
    r = httpx.post(server.base_url + "/v1/admin/keys", headers=admin, timeout=30,
                   json={"tenant": "acme"})  # fmt: skip
    assert r.status_code == 201, r.text
    key, key_id = r.json()["key"], r.json()["id"]
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(server.base_url + "/v1/models", headers=auth).status_code == 200
    assert httpx.delete(server.base_url + f"/v1/admin/keys/{key_id}", headers=admin).status_code \
        == 200  # fmt: skip
    check_error(httpx.get(server.base_url + "/v1/models", headers=auth), 401)
    check_error(httpx.delete(server.base_url + f"/v1/admin/keys/{key_id}", headers=admin), 404)
    # an expiring key made with the CLI, used after it lapsed
    short = cli(server.data_dir, "keys", "create", "--tenant", "acme", "--expires", "2s").strip()
    auth = {"Authorization": f"Bearer {short}"}
    assert httpx.get(server.base_url + "/v1/models", headers=auth).status_code == 200
    time.sleep(2.5)
    check_error(httpx.get(server.base_url + "/v1/models", headers=auth), 401)


def test_admin_routes_refuse_user_keys(server: Server) -> None:
    user = server.headers("user")
    for method, path, body in (
        ("GET", "/v1/admin/tenants", None), ("POST", "/v1/admin/tenants", {"name": "evil"}),
        ("DELETE", "/v1/admin/tenants/globex", None), ("GET", "/v1/admin/keys", None),
        ("POST", "/v1/admin/keys", {"tenant": "acme", "role": "admin"}),
        ("DELETE", "/v1/admin/keys/0000000000000000", None),
    ):  # fmt: skip
        r = httpx.request(method, server.base_url + path, headers=user, json=body, timeout=30)
        check_error(r, 403, "insufficient_permissions")
    # nothing happened
    tenants = httpx.get(server.base_url + "/v1/admin/tenants",
                        headers=server.headers("operator"))  # fmt: skip
    assert {t["name"] for t in tenants.json()["data"]} >= {"acme", "globex"}
    assert "evil" not in {t["name"] for t in tenants.json()["data"]}


def test_model_allowlist(server: Server) -> None:
    r = httpx.post(server.base_url + "/v1/admin/keys", headers=server.headers("admin"),
                   json={"tenant": "acme", "models": [EMBED_MODEL]})  # fmt: skip
    auth = {"Authorization": f"Bearer {r.json()['key']}"}
    check_error(httpx.post(server.base_url + "/v1/chat/completions", headers=auth, json=HI,
                           timeout=30), 403)  # fmt: skip
    listed = httpx.get(server.base_url + "/v1/models", headers=auth).json()["data"]
    assert [m["id"] for m in listed if m["intramuros"].get("kind") != "route"] == [EMBED_MODEL]
    # Routes are listed after the models: naming one lets the router choose among them.
    assert [m["id"] for m in listed if m["intramuros"].get("kind") == "route"] == ["auto"]
    check_error(httpx.get(server.base_url + f"/v1/models/{CHAT_MODEL}", headers=auth), 404)
    ok = httpx.post(server.base_url + "/v1/embeddings", headers=auth, timeout=30,
                    json={"model": EMBED_MODEL, "input": "x"})  # fmt: skip
    assert ok.status_code == 200


def test_tenants_are_isolated(server: Server) -> None:
    acme, globex = server.headers("user"), server.headers("other")
    r = httpx.post(server.base_url + "/v1/chat/completions", headers=acme, json=HI, timeout=60)
    assert r.status_code == 200
    mine = httpx.get(server.base_url + "/v1/requests", headers=acme).json()["data"]
    assert mine and all(row["tenant"] == "acme" for row in mine)
    an_id = mine[0]["request_id"]
    assert httpx.get(server.base_url + f"/v1/requests/{an_id}", headers=acme).status_code == 200
    # globex sees none of it: a foreign id is exactly like a missing one
    foreign = httpx.get(server.base_url + f"/v1/requests/{an_id}", headers=globex)
    missing = httpx.get(server.base_url + "/v1/requests/ffffffffffffffffffffffff", headers=globex)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["error"]["message"].replace(an_id, "X") == \
        missing.json()["error"]["message"].replace("ffffffffffffffffffffffff", "X")  # fmt: skip
    theirs = httpx.get(server.base_url + "/v1/requests", headers=globex).json()["data"]
    assert all(row["tenant"] == "globex" for row in theirs)
    assert an_id not in {row["request_id"] for row in theirs}
    usage = httpx.get(server.base_url + "/v1/usage", headers=globex).json()["data"]
    assert all(row["tenant"] == "globex" for row in usage)
    check_error(httpx.get(server.base_url + "/v1/usage?tenant=acme", headers=globex), 404)
    check_error(httpx.get(server.base_url + "/v1/usage?tenant=nosuch", headers=globex), 404)
    # the operator reads any tenant
    admin = httpx.get(server.base_url + "/v1/usage?tenant=acme",
                      headers=server.headers("operator"))  # fmt: skip
    assert admin.status_code == 200 and admin.json()["data"]
    assert all(row["tenant"] == "acme" for row in admin.json()["data"])


def test_usage_counts_tokens(server: Server) -> None:
    before = _tokens(server)
    r = httpx.post(server.base_url + "/v1/chat/completions", headers=server.headers("other"),
                   json=HI, timeout=60)  # fmt: skip
    used = r.json()["usage"]["total_tokens"]
    assert _tokens(server) == before + used


def _tokens(server: Server) -> int:
    rows = httpx.get(server.base_url + "/v1/usage", headers=server.headers("other")).json()["data"]
    return sum(int(row["total_tokens"]) for row in rows)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    data = tmp_path_factory.mktemp("limits")
    cli(data, "tenants", "create", "small", "--rpm", "1000")
    rpm_key = cli(data, "keys", "create", "--tenant", "small", "--rpm", "3").strip()
    budget_key = cli(data, "keys", "create", "--tenant", "small", "--monthly-tokens", "60").strip()
    srv = start_server(data, "--preload-models", CHAT_MODEL, auth=True)
    yield srv, rpm_key, budget_key
    stop_server(srv)


def test_rpm_limit_hits_exactly_at_its_value(limited: tuple[Server, str, str]) -> None:
    srv, key, _ = limited
    auth = {"Authorization": f"Bearer {key}"}
    codes = [httpx.post(srv.base_url + "/v1/chat/completions", headers=auth, json=HI,
                        timeout=60).status_code for _ in range(4)]  # fmt: skip
    assert codes == [200, 200, 200, 429]
    r = httpx.post(srv.base_url + "/v1/chat/completions", headers=auth, json=HI, timeout=60)
    err = check_error(r, 429, "rate_limit_exceeded")
    assert "3 requests per minute" in str(err["message"])
    assert 1 <= int(r.headers["retry-after"]) <= 60


def test_monthly_budget(limited: tuple[Server, str, str]) -> None:
    srv, _, key = limited
    auth = {"Authorization": f"Bearer {key}"}
    spent = 0
    for _ in range(10):
        r = httpx.post(srv.base_url + "/v1/chat/completions", headers=auth, json=HI, timeout=60)
        if r.status_code == 429:
            break
        spent += r.json()["usage"]["total_tokens"]
    else:
        raise AssertionError("the monthly budget never applied")
    assert spent >= 60, "refused before the budget was used"
    assert "Monthly token budget of 60" in r.json()["error"]["message"]
    assert int(r.headers["retry-after"]) > 0


def test_quota_windows_reset_on_time(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'q.db'}")
    db.migrate()
    now = [1_000_000.0]
    quotas = Quotas(db, clock=lambda: now[0])
    scope = [("key", "k", Limits(rpm=2, tpm=100))]
    quotas.admit(scope)
    quotas.admit(scope)
    with pytest.raises(RateLimited) as exc:
        quotas.admit(scope)
    assert exc.value.headers["Retry-After"] == "60"
    now[0] += 59.0
    with pytest.raises(RateLimited):
        quotas.admit(scope)
    now[0] += 1.0  # exactly one minute after the first request
    quotas.admit(scope)
    quotas.charge([("key", "k")], 100)
    now[0] += 30.0
    with pytest.raises(RateLimited) as exc:
        quotas.admit(scope)
    assert "100 tokens per minute" in exc.value.message
    now[0] += 30.0
    quotas.admit(scope)


def test_keys_are_stored_only_hashed(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    db.migrate()
    store = Tenants(db)
    store.create("t1")
    key, info = store.create_key("t1")
    secret = key.split("_", 2)[2]
    db.close()
    raw = (tmp_path / "k.db").read_bytes() + (tmp_path / "k.db-wal").read_bytes() \
        if (tmp_path / "k.db-wal").exists() else (tmp_path / "k.db").read_bytes()  # fmt: skip
    assert secret.encode() not in raw
    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    store = Tenants(db)
    assert store.authenticate(key).key_id == info.id
    with pytest.raises(AuthenticationError):
        store.authenticate(key.replace(secret, secret[::-1]))


def test_no_auth_only_on_loopback(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "intramuros.cli", "serve", "--no-auth", "--host", "0.0.0.0",
         "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode != 0
    assert "loopback" in r.stderr and "Traceback" not in r.stderr


def test_path_and_header_tricks(server: Server) -> None:
    user, key = server.headers("user"), server.keys["user"]
    # header spelling: the scheme is case-insensitive, extra spaces tolerated
    for value in (f"bearer {key}", f"BEARER {key}", f"Bearer   {key}"):
        r = httpx.get(server.base_url + "/v1/models", headers={"authorization": value})
        assert r.status_code == 200, value
    # the key in other places does not count
    for attempt in (
        {"headers": {"X-Api-Key": key}},
        {"params": {"api_key": key}},
        {"headers": {"Authorization": f"Bearer {key}x"}},
        {"headers": {"Authorization": f"Bearer {key} extra"}},
    ):  # fmt: skip
        r = httpx.get(server.base_url + "/v1/models", **attempt)  # type: ignore[arg-type]
        check_error(r, 401)
    # paths that try to slip past the /v1 prefix or into admin routes
    for path in ("/v1//admin/keys", "/v1/./admin/keys", "/v1/admin/../admin/keys",
                 "/V1/admin/keys", "/v1/admin/keys/", "/v1/admin%2Fkeys"):  # fmt: skip
        r = httpx.get(server.base_url + path, headers=user)
        assert r.status_code in (403, 404, 405), (path, r.status_code)
        assert "error" in r.json()
    # forwarded headers change nothing
    r = httpx.get(server.base_url + "/v1/admin/keys", timeout=30, headers={
        **user, "X-Forwarded-For": "127.0.0.1", "X-Original-URL": "/healthz"})
    check_error(r, 403)


def test_usage_and_purge_commands(server: Server) -> None:
    r = httpx.post(server.base_url + "/v1/chat/completions", headers=server.headers("user"),
                   json=HI, timeout=60)  # fmt: skip
    assert r.status_code == 200
    out = cli(server.data_dir, "usage", "--tenant", "acme")
    assert "acme" in out and CHAT_MODEL in out
    cli(server.data_dir, "tenants", "policy", "globex", "--retention-days", "30")
    out = cli(server.data_dir, "purge")
    assert "globex: purged 0 record(s)" in out
    rows = httpx.get(server.base_url + "/v1/admin/ledger?limit=1000",
                     headers=server.headers("operator")).json()["data"]  # fmt: skip
    purges = [r for r in rows if r["kind"] == "purge" and r["tenant"] == "globex"]
    assert purges and purges[-1]["data"]["actor"].startswith("cli:")
