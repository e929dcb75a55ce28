"""Two `intramuros serve` replicas on one PostgreSQL, as behind a load balancer.

What must hold across them: a tenant's per-minute limit (counted once, not per
replica), the ledger's chain under appends from both at once, and a key
revoked on one refused by the other within seconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from intramuros.ledger import generate_key_file
from tests.conftest import Server, cli, pg_schema, start_server, stop_server
from tests.helpers import check_error, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MODEL = "fake-replica"


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh schema on the local PostgreSQL."""
    with pg_schema() as url:
        yield url


@pytest.fixture()
def replicas(tmp_path: Path, pg_url: str) -> Iterator[tuple[Server, Server, dict[str, str]]]:
    # The replicas' ledger key: one file, given to both (on two machines, the same file).
    key_file = tmp_path / "ledger.key"
    generate_key_file(key_file)
    env = {"INTRAMUROS_DATABASE_URL": pg_url, "INTRAMUROS_LEDGER_KEY_FILE": str(key_file)}
    cli(tmp_path, "models", "add", "--engine", "fake", "--name", MODEL, "--option",
        "reply_tokens=3", "--capabilities", "chat", env=env)  # fmt: skip
    # One data dir for both, as two replicas on one machine would share it.
    first = start_server(tmp_path, "--preload-models", MODEL, env=env, auth=True)
    second = None
    try:
        second = start_server(tmp_path, "--preload-models", MODEL, env=env, auth=first.keys)
        yield first, second, env
    finally:
        if second is not None:
            stop_server(second)
        stop_server(first)


def _chat(server: Server, key: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": MODEL, "max_tokens": 3,
                            "messages": [{"role": "user", "content": "Hi"}]})  # fmt: skip


def test_a_tenants_rate_limit_holds_across_replicas(
    replicas: tuple[Server, Server, dict[str, str]], tmp_path: Path
) -> None:
    first, second, env = replicas
    cli(tmp_path, "tenants", "policy", "globex", "--rpm", "6", env=env)
    key = first.keys["other"]  # globex's user
    codes = [_chat(server, key).status_code for _ in range(6) for server in (first, second)]
    # Counted once for both: six answered, then refused on either replica.
    assert codes.count(200) == 6 and codes[:6] == [200] * 6, codes
    assert set(codes[6:]) == {429}, codes
    check_error(_chat(second, key), 429, code="rate_limit_exceeded")


def test_the_ledger_chain_holds_under_appends_from_both(
    replicas: tuple[Server, Server, dict[str, str]], tmp_path: Path
) -> None:
    first, second, env = replicas
    key = first.keys["user"]
    failures: list[int] = []

    def load(server: Server) -> None:
        for _ in range(15):
            r = _chat(server, key)
            if r.status_code != 200:
                failures.append(r.status_code)

    threads = [threading.Thread(target=load, args=(s,)) for s in (first, second) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    done = run_cli("ledger", "verify", data_dir=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["authenticated"]
    assert report["checked"] >= 90  # every call of both replicas, in one chain


def test_a_key_revoked_on_one_replica_is_refused_by_the_other(
    replicas: tuple[Server, Server, dict[str, str]],
) -> None:
    first, second, _env = replicas
    key = first.keys["user"]
    key_id = key.split("_")[1]
    assert _chat(second, key).status_code == 200  # remembered by the second replica now
    r = httpx.delete(f"{first.base_url}/v1/admin/keys/{key_id}", timeout=30,
                     headers={"Authorization": f"Bearer {first.keys['admin']}"})  # fmt: skip
    assert r.status_code == 200, r.text
    check_error(_chat(first, key), 401)  # at once where it was revoked
    deadline = time.monotonic() + 5  # the replicas' promise (key_cache_seconds is 1 s)
    while _chat(second, key).status_code == 200:
        assert time.monotonic() < deadline, "the other replica still takes the revoked key"
        time.sleep(0.1)
    check_error(_chat(second, key), 401)
