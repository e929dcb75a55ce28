"""An upstream pool: one model served by three real upstream processes, one killed mid-load.

The upstreams are intramuros servers on loopback (any OpenAI-compatible server
would do), the gateway another one whose model ``pooled`` names all three.
Checked: calls are spread by outstanding count; with an upstream killed while
calls run, no non-streaming call fails (each is retried elsewhere), every
stream either ends normally or with an error event (never a hang or a cut
connection); the dead upstream is taken out, and put back once it answers
again on its port; all of it on ``/metrics``.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import CHAT_MODEL, Server, start_server, stop_server
from tests.test_batching import together
from tests.test_concurrency import wait_for

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

UPSTREAMS = 3


def upstream(tmp: Path, i: int, port: int | None = None) -> Server:
    return start_server(tmp / f"up{i}", "--preload-models", CHAT_MODEL, "--llama-slots", "2",
                        port=port)  # fmt: skip


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[Server]]]:
    tmp = tmp_path_factory.mktemp("pool")
    ups = [upstream(tmp, i) for i in range(UPSTREAMS)]
    gateway = start_server(tmp / "gw", "--preload-models", "", "--upstream-probe-seconds", "0.5",
                           "--upstream-max-failures", "2")  # fmt: skip
    urls = [a for u in ups for a in ("--base-url", u.base_url + "/v1")]
    gateway.cli("models", "add-upstream", "pooled", *urls, "--upstream-model", CHAT_MODEL)
    yield gateway, ups
    for server in (gateway, *ups):
        stop_server(server)


def pool_metrics(gateway: Server) -> dict[tuple[str, str], float]:
    """``{(metric, upstream host:port): value}`` of the pool's metrics."""
    text = httpx.get(gateway.base_url + "/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        m = re.match(r'intramuros_engine_(upstream_\w+)\{model="pooled",upstream="([^"]+)"\} (\S+)',
                     line)  # fmt: skip
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def where(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


def ask(gateway: Server, *, stream: bool = False, tokens: int = 12) -> tuple[int, str]:
    """(HTTP status, text or the stream's outcome: "done" or "error:<code>")."""
    body = {"model": "pooled", "max_tokens": tokens, "temperature": 0.7, "stream": stream,
            "messages": [{"role": "user", "content": "Tell me about the sea."}]}
    with httpx.Client(base_url=gateway.base_url, timeout=120) as http:
        if not stream:
            r = http.post("/v1/chat/completions", json=body)
            return r.status_code, r.text
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            outcome = "cut"
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    outcome = "done"
                elif line.startswith("data: ") and '"error"' in line:
                    outcome = "error:" + str(json.loads(line[6:])["error"]["code"])
            return r.status_code, outcome


def test_calls_are_spread_over_the_upstreams(pool: tuple[Server, list[Server]]) -> None:
    gateway, ups = pool
    results = together([lambda: ask(gateway)] * 9)
    assert all(status == 200 for status, _ in results), results
    sent = pool_metrics(gateway)
    counts = [sent[("upstream_requests_total", where(u))] for u in ups]
    assert all(c >= 1 for c in counts), counts
    assert all(sent[("upstream_in_service", where(u))] == 1 for u in ups)


def test_an_upstream_killed_mid_load(pool: tuple[Server, list[Server]], tmp_path: Path) -> None:
    gateway, ups = pool
    victim = ups[1]
    calls = [lambda: ask(gateway, tokens=40)] * 12 + [lambda: ask(gateway, stream=True,
                                                                   tokens=80)] * 4  # fmt: skip

    def kill_soon() -> tuple[int, str]:
        time.sleep(1.0)
        victim.proc.send_signal(signal.SIGKILL)
        return 0, "killed"

    results = together([*calls, kill_soon])
    whole, streams = results[:12], results[12:16]
    assert all(status == 200 for status, _ in whole), whole
    assert all(json.loads(text)["choices"][0]["message"]["content"] for _, text in whole)
    for status, outcome in streams:
        assert status == 200 and (outcome == "done" or outcome.startswith("error:")), streams
    # Taken out of service (two failures in a row here), and the pool goes on without it.
    for _ in range(4):
        assert ask(gateway)[0] == 200
    wait_for(lambda: pool_metrics(gateway)[("upstream_in_service", where(victim))] == 0)
    later = pool_metrics(gateway)
    assert later[("upstream_failures_total", where(victim))] >= 1
    failovers = re.search(r'intramuros_engine_upstream_failovers_total\{model="pooled"\} (\S+)',
                          httpx.get(gateway.base_url + "/metrics", timeout=10).text)  # fmt: skip
    assert failovers is not None and float(failovers.group(1)) >= 1, "nothing was retried"
    assert later[("upstream_taken_out_total", where(victim))] >= 1
    assert all(s == 200 for s, _ in together([lambda: ask(gateway)] * 6))
    # Back on its port: the prober puts it back in service.
    stop_server(victim)
    ups[1] = upstream(tmp_path, 1, port=victim.port)
    wait_for(lambda: pool_metrics(gateway)[("upstream_in_service", where(victim))] == 1)
    before = pool_metrics(gateway)[("upstream_requests_total", where(victim))]
    together([lambda: ask(gateway)] * 6)
    assert pool_metrics(gateway)[("upstream_requests_total", where(victim))] > before


def test_every_upstream_down_is_a_clean_503(tmp_path: Path) -> None:
    gateway = start_server(tmp_path / "gw", "--preload-models", "")
    try:
        gateway.cli("models", "add-upstream", "nowhere", "--base-url", "http://127.0.0.1:9/v1",
                    "--base-url", "http://127.0.0.1:10/v1")  # fmt: skip
        r = httpx.post(gateway.base_url + "/v1/chat/completions", timeout=60, json={
            "model": "nowhere", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"
        assert "not reachable" in r.json()["error"]["message"]
    finally:
        stop_server(gateway)
