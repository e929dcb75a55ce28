"""The gate: keys, roles, model allowlists, isolation between tenants, quotas.

Each test over HTTP runs twice: on the in-process app with fake-engine models
(fast) and on a real server with the bundled models (marked slow).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from intramuros.errors import AuthenticationError, RateLimited
from intramuros.gate.policy import Limits
from intramuros.gate.quotas import Quotas
from intramuros.gate.tenants import Tenants
from intramuros.store.db import Database
from tests.conftest import BACKENDS, Target, serve
from tests.helpers import check_error, cli, quick_cli, run_cli


def hi(target: Target) -> dict[str, object]:
    """A tiny chat request to ``target``'s chat model."""
    return {"model": target.chat_model, "max_tokens": 2,
            "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer im_0000000000000000_" + "A" * 43,
    "Bearer not-a-key", "bearer im_zz", "Bearer " + "x" * 5000, "Token abc",
])  # fmt: skip
def test_bad_keys_are_401(target: Target, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
                         ("POST", "/v1/embeddings"), ("GET", "/v1/usage"),
                         ("GET", "/v1/admin/keys")):  # fmt: skip
        r = target.http.request(method, path, headers=headers, json=hi(target), timeout=30)
        err = check_error(r, 401, "invalid_api_key")
        assert err["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"


def test_a_key_with_a_wrong_secret_is_401(target: Target) -> None:
    key = target.keys["user"]
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    r = target.http.post("/v1/chat/completions", json=hi(target), timeout=30,
                   headers={"Authorization": f"Bearer {forged}"})  # fmt: skip
    check_error(r, 401, "invalid_api_key")


def test_open_routes_need_no_key(target: Target) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert target.http.get(path, timeout=30).status_code == 200


def test_revoked_and_expired_keys(target: Target) -> None:
    admin = target.headers("admin")
    r = target.http.post("/v1/admin/keys", headers=admin, timeout=30,
                   json={"tenant": "acme"})  # fmt: skip
    assert r.status_code == 201, r.text
    key, key_id = r.json()["key"], r.json()["id"]
    auth = {"Authorization": f"Bearer {key}"}
    assert target.http.get("/v1/models", headers=auth).status_code == 200
    assert target.http.delete(f"/v1/admin/keys/{key_id}", headers=admin).status_code \
        == 200  # fmt: skip
    check_error(target.http.get("/v1/models", headers=auth), 401)
    check_error(target.http.delete(f"/v1/admin/keys/{key_id}", headers=admin), 404)
    # an expiring key made with the CLI, used after it lapsed
    short = target.cli("keys", "create", "--tenant", "acme", "--expires", "2s").strip()
    auth = {"Authorization": f"Bearer {short}"}
    assert target.http.get("/v1/models", headers=auth).status_code == 200
    time.sleep(2.5)
    check_error(target.http.get("/v1/models", headers=auth), 401)


def test_admin_routes_refuse_user_keys(target: Target) -> None:
    user = target.headers("user")
    for method, path, body in (
        ("GET", "/v1/admin/tenants", None), ("POST", "/v1/admin/tenants", {"name": "evil"}),
        ("DELETE", "/v1/admin/tenants/globex", None), ("GET", "/v1/admin/keys", None),
        ("POST", "/v1/admin/keys", {"tenant": "acme", "role": "admin"}),
        ("DELETE", "/v1/admin/keys/0000000000000000", None),
    ):  # fmt: skip
        r = target.http.request(method, path, headers=user, json=body, timeout=30)
        check_error(r, 403, "insufficient_permissions")
    # nothing happened
    tenants = target.http.get("/v1/admin/tenants",
                        headers=target.headers("operator"))  # fmt: skip
    assert {t["name"] for t in tenants.json()["data"]} >= {"acme", "globex"}
    assert "evil" not in {t["name"] for t in tenants.json()["data"]}


def test_model_allowlist(target: Target) -> None:
    r = target.http.post("/v1/admin/keys", headers=target.headers("admin"),
                   json={"tenant": "acme", "models": [target.embed_model]})  # fmt: skip
    auth = {"Authorization": f"Bearer {r.json()['key']}"}
    check_error(target.http.post("/v1/chat/completions", headers=auth, json=hi(target),
                           timeout=30), 403)  # fmt: skip
    listed = target.http.get("/v1/models", headers=auth).json()["data"]
    models = [m["id"] for m in listed if m["intramuros"].get("kind") != "route"]
    assert models == [target.embed_model]
    # Routes are listed after the models: naming one lets the router choose among them.
    assert [m["id"] for m in listed if m["intramuros"].get("kind") == "route"] == ["auto"]
    check_error(target.http.get(f"/v1/models/{target.chat_model}", headers=auth), 404)
    ok = target.http.post("/v1/embeddings", headers=auth, timeout=30,
                    json={"model": target.embed_model, "input": "x"})  # fmt: skip
    assert ok.status_code == 200


def test_tenants_are_isolated(target: Target) -> None:
    acme, globex = target.headers("user"), target.headers("other")
    r = target.http.post("/v1/chat/completions", headers=acme, json=hi(target), timeout=60)
    assert r.status_code == 200
    mine = target.http.get("/v1/requests", headers=acme).json()["data"]
    assert mine and all(row["tenant"] == "acme" for row in mine)
    an_id = mine[0]["request_id"]
    assert target.http.get(f"/v1/requests/{an_id}", headers=acme).status_code == 200
    # globex sees none of it: a foreign id is exactly like a missing one
    foreign = target.http.get(f"/v1/requests/{an_id}", headers=globex)
    missing = target.http.get("/v1/requests/ffffffffffffffffffffffff", headers=globex)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["error"]["message"].replace(an_id, "X") == \
        missing.json()["error"]["message"].replace("ffffffffffffffffffffffff", "X")  # fmt: skip
    theirs = target.http.get("/v1/requests", headers=globex).json()["data"]
    assert all(row["tenant"] == "globex" for row in theirs)
    assert an_id not in {row["request_id"] for row in theirs}
    usage = target.http.get("/v1/usage", headers=globex).json()["data"]
    assert all(row["tenant"] == "globex" for row in usage)
    check_error(target.http.get("/v1/usage?tenant=acme", headers=globex), 404)
    check_error(target.http.get("/v1/usage?tenant=nosuch", headers=globex), 404)
    # the operator reads any tenant
    admin = target.http.get("/v1/usage?tenant=acme",
                      headers=target.headers("operator"))  # fmt: skip
    assert admin.status_code == 200 and admin.json()["data"]
    assert all(row["tenant"] == "acme" for row in admin.json()["data"])


def test_usage_counts_tokens(target: Target) -> None:
    before = _tokens(target)
    r = target.http.post("/v1/chat/completions", headers=target.headers("other"),
                   json=hi(target), timeout=60)  # fmt: skip
    used = r.json()["usage"]["total_tokens"]
    assert _tokens(target) == before + used


def _tokens(target: Target) -> int:
    rows = target.http.get("/v1/usage", headers=target.headers("other")).json()["data"]
    return sum(int(row["total_tokens"]) for row in rows)


@pytest.fixture(scope="module", params=BACKENDS)
def limited(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Target, str, str]]:
    data = tmp_path_factory.mktemp("limits")
    run = quick_cli if request.param == "app" else cli
    run(data, "tenants", "create", "small", "--rpm", "1000")
    rpm_key = run(data, "keys", "create", "--tenant", "small", "--rpm", "3").strip()
    budget_key = run(data, "keys", "create", "--tenant", "small", "--monthly-tokens", "60").strip()
    with serve(request.param, data, preload=("chat",)) as srv:
        yield srv, rpm_key, budget_key


def test_rpm_limit_hits_exactly_at_its_value(limited: tuple[Target, str, str]) -> None:
    srv, key, _ = limited
    auth = {"Authorization": f"Bearer {key}"}
    codes = [srv.http.post("/v1/chat/completions", headers=auth, json=hi(srv),
                           timeout=60).status_code for _ in range(4)]  # fmt: skip
    assert codes == [200, 200, 200, 429]
    r = srv.http.post("/v1/chat/completions", headers=auth, json=hi(srv), timeout=60)
    err = check_error(r, 429, "rate_limit_exceeded")
    assert "3 requests per minute" in str(err["message"])
    assert 1 <= int(r.headers["retry-after"]) <= 60


def test_monthly_budget(limited: tuple[Target, str, str]) -> None:
    srv, _, key = limited
    auth = {"Authorization": f"Bearer {key}"}
    spent = 0
    for _ in range(10):
        r = srv.http.post("/v1/chat/completions", headers=auth, json=hi(srv), timeout=60)
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


def test_shared_quotas_hold_across_replicas(db_url: str) -> None:
    """Two replicas of one database (two Quotas, two engines) count one window."""
    import threading

    from intramuros.gate.quotas import record_quota_tokens

    first = Database(db_url)
    first.migrate()
    second = Database(db_url)
    now = [1_000_000.0]
    a = Quotas(first, clock=lambda: now[0], shared=True)
    b = Quotas(second, clock=lambda: now[0], shared=True)
    scope = [("tenant", "acme", Limits(rpm=3, tpm=100)), ("key", "k1", Limits())]
    assert a.reads_database(scope) and not a.reads_database([("key", "k1", Limits())])
    assert a.charged_scopes(scope) == [("tenant", "acme")]  # only what has a tpm
    a.admit(scope)
    b.admit(scope)
    now[0] += 10
    a.admit(scope)
    with pytest.raises(RateLimited) as exc:
        b.admit(scope)
    assert exc.value.headers["Retry-After"] == "50"  # the first request leaves in 50 s
    now[0] += 50.0
    b.admit(scope)  # one minute after the first: its slot is free again
    with first.begin() as conn:
        record_quota_tokens(conn, [("tenant", "acme")], 100, now[0])
    with pytest.raises(RateLimited, match="100 tokens per minute"):
        a.admit([("tenant", "acme", Limits(tpm=100))])
    # Many requests at once from both replicas: exactly the limit is admitted.
    now[0] += 120.0
    burst = [("tenant", "globex", Limits(rpm=7))]
    admitted: list[int] = []
    refused: list[int] = []

    def hammer(quotas: Quotas) -> None:
        for _ in range(6):
            try:
                quotas.admit(burst)
                admitted.append(1)
            except RateLimited:
                refused.append(1)

    threads = [threading.Thread(target=hammer, args=(q,)) for q in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 7 and len(refused) == 24 - 7
    first.close()
    second.close()


class _Clock:
    """``time.monotonic`` under the test's control."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _two_processes(tmp_path: Path, cache_seconds: float) -> tuple[Tenants, Tenants, Database]:
    """The server's tenant store (remembering keys) and another process's (the CLI)."""
    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    db.migrate()
    return Tenants(db, cache_seconds), Tenants(Database(db.url), 0), db


def test_a_key_revoked_elsewhere_is_refused_within_the_cache_delay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock()
    monkeypatch.setattr("intramuros.gate.tenants.time.monotonic", clock)
    server, other, _db = _two_processes(tmp_path, cache_seconds=1.0)
    other.create("acme")
    key, info = other.create_key("acme")
    assert server.cached_principal(key) is None  # never checked: the database decides
    assert server.authenticate(key).key_id == info.id
    assert server.cached_principal(key) == server.authenticate(key)
    other.revoke(info.id)  # the command line, or another replica
    clock.now += 0.5
    assert server.cached_principal(key) is not None  # within the delay, as documented
    clock.now += 0.6
    assert server.cached_principal(key) is None
    with pytest.raises(AuthenticationError):
        server.authenticate(key)
    assert server.cached_principal(key) is None  # a refusal is never remembered


def test_a_change_made_through_the_server_applies_at_once(tmp_path: Path) -> None:
    server, _other, _db = _two_processes(tmp_path, cache_seconds=60)
    tenant = server.create("acme")
    key, info = server.create_key("acme")
    server.authenticate(key)
    server.policy(tenant.id)
    assert server.cached_policy(tenant.id) is not None
    keep = server.policy(tenant.id).model_copy(update={"store_content": True})
    server.set_policy(tenant.id, keep)
    assert server.policy(tenant.id).store_content
    server.revoke(info.id)
    assert server.cached_principal(key) is None
    with pytest.raises(AuthenticationError):
        server.authenticate(key)
    key2, _ = server.create_key("acme")
    server.authenticate(key2)
    server.delete("acme", actor="test")
    assert server.cached_principal(key2) is None and server.cached_policy(tenant.id) is None


def test_keys_are_not_remembered_past_expiry_or_with_no_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock()
    monkeypatch.setattr("intramuros.gate.tenants.time.monotonic", clock)
    server, _other, _db = _two_processes(tmp_path, cache_seconds=30)
    server.create("acme")
    short, _ = server.create_key("acme", expires_in=2)
    server.authenticate(short)
    clock.now += 2.5  # past the key's expiry, well within the cache delay
    assert server.cached_principal(short) is None
    uncached, _o, _d = _two_processes(tmp_path / "b", cache_seconds=0)
    uncached.create("acme")
    key, _ = uncached.create_key("acme")
    uncached.authenticate(key)
    assert uncached.cached_principal(key) is None
    # Tokens that are not keys are not even hashed for a lookup.
    assert server.cached_principal("x" * 10_000) is None and server.cached_principal(None) is None


@pytest.mark.slow
def test_no_auth_only_on_loopback(tmp_path: Path) -> None:
    r = run_cli("serve", "--no-auth", "--host", "0.0.0.0", data_dir=tmp_path, timeout=60)
    assert r.returncode != 0
    assert "loopback" in r.stderr and "Traceback" not in r.stderr


def test_path_and_header_tricks(target: Target) -> None:
    user, key = target.headers("user"), target.keys["user"]
    # header spelling: the scheme is case-insensitive, extra spaces tolerated
    for value in (f"bearer {key}", f"BEARER {key}", f"Bearer   {key}"):
        r = target.http.get("/v1/models", headers={"authorization": value})
        assert r.status_code == 200, value
    # the key in other places does not count
    for attempt in (
        {"headers": {"X-Api-Key": key}},
        {"params": {"api_key": key}},
        {"headers": {"Authorization": f"Bearer {key}x"}},
        {"headers": {"Authorization": f"Bearer {key} extra"}},
    ):  # fmt: skip
        r = target.http.get("/v1/models", **attempt)  # type: ignore[arg-type]
        check_error(r, 401)
    # paths that try to slip past the /v1 prefix or into admin routes
    for path in ("/v1//admin/keys", "/v1/./admin/keys", "/v1/admin/../admin/keys",
                 "/V1/admin/keys", "/v1/admin/keys/", "/v1/admin%2Fkeys"):  # fmt: skip
        r = target.http.get(path, headers=user)
        assert r.status_code in (403, 404, 405), (path, r.status_code)
        assert "error" in r.json()
    # forwarded headers change nothing
    r = target.http.get("/v1/admin/keys", timeout=30, headers={
        **user, "X-Forwarded-For": "127.0.0.1", "X-Original-URL": "/healthz"})
    check_error(r, 403)


def test_usage_and_purge_commands(target: Target) -> None:
    r = target.http.post("/v1/chat/completions", headers=target.headers("user"),
                   json=hi(target), timeout=60)  # fmt: skip
    assert r.status_code == 200
    out = target.cli("usage", "--tenant", "acme")
    assert "acme" in out and target.chat_model in out
    target.cli("tenants", "policy", "globex", "--retention-days", "30")
    out = target.cli("purge")
    assert "globex: purged 0 record(s)" in out
    rows = target.http.get("/v1/admin/ledger?limit=1000",
                     headers=target.headers("operator")).json()["data"]  # fmt: skip
    purges = [r for r in rows if r["kind"] == "purge" and r["tenant"] == "globex"]
    assert purges and purges[-1]["data"]["actor"].startswith("cli:")
