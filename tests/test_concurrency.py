"""Concurrency on a real server: queue limit, arrival order, disconnects, a free event loop."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CHAT_MODEL, Server, start_server, stop_server

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

# The grammar forbids ending before 600 numbers: a generation that surely runs
# for the whole max_tokens (tens of seconds here), whatever the model would like.
ENDLESS_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "array", "items": {"type": "integer"}, "minItems": 600}},
    "required": ["a"],
}
LONG = {
    "model": CHAT_MODEL,
    "messages": [{"role": "user", "content": "List numbers."}],
    "max_tokens": 1500,
    "temperature": 1.0,
    "stream": True,
    "response_format": {"type": "json_schema",
                        "json_schema": {"name": "n", "schema": ENDLESS_SCHEMA}},
}  # fmt: skip
SHORT = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose model lane lets one request run (one slot) and one wait."""
    srv = start_server(tmp_path_factory.mktemp("conc"), "--queue-limit", "1", "--llama-slots", "1",
                       "--preload-models", CHAT_MODEL)  # fmt: skip
    yield srv
    stop_server(srv)


def metric(server: Server, name: str, **labels: str) -> float:
    text = httpx.get(server.base_url + "/metrics").text
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


class _Stream:
    """A long stream held open; the line iterator is kept so GC cannot close it."""

    def __init__(self, client: httpx.Client, response: httpx.Response, lines: Any) -> None:
        self.client, self.response, self.lines = client, response, lines

    def close(self) -> None:
        self.response.close()
        self.client.close()


def open_stream(server: Server) -> _Stream:
    """Start a long stream and read until it is really generating."""
    client = httpx.Client(base_url=server.base_url, timeout=120)
    response = client.send(client.build_request("POST", "/v1/chat/completions", json=LONG),
                           stream=True)  # fmt: skip
    assert response.status_code == 200
    lines = response.iter_lines()
    seen = 0
    for line in lines:
        if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
            seen += 1
            if seen >= 3:
                break
    return _Stream(client, response, lines)


def test_queue_full_answers_429_with_retry_after(small_server: Server) -> None:
    running = open_stream(small_server)
    waiting_result: dict[str, int] = {}

    def waiter() -> None:
        r = httpx.post(small_server.base_url + "/v1/chat/completions", timeout=120,
                       json=SHORT)  # fmt: skip
        waiting_result["status"] = r.status_code

    t = threading.Thread(target=waiter)
    t.start()
    try:
        wait_for(lambda: metric(small_server, "intramuros_queue_depth", model=CHAT_MODEL) == 1)
        r = httpx.post(small_server.base_url + "/v1/chat/completions", timeout=30,
                       json=SHORT)  # fmt: skip
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "queue_full"
        assert r.json()["error"]["type"] == "rate_limit_error"
    finally:
        running.close()
        t.join(timeout=60)
    assert waiting_result.get("status") == 200


def test_disconnect_frees_the_model(small_server: Server) -> None:
    before = metric(small_server, "intramuros_tokens_total", model=CHAT_MODEL,
                    direction="completion")  # fmt: skip
    running = open_stream(small_server)
    running.close()  # the client goes away mid-stream
    started = time.monotonic()
    r = httpx.post(small_server.base_url + "/v1/chat/completions", timeout=120,
                   json=SHORT)  # fmt: skip
    assert r.status_code == 200
    # A 1500-token generation takes far longer than this on this hardware; had
    # the abandoned stream kept the model, the next request would wait for it.
    assert time.monotonic() - started < 15
    wait_for(lambda: metric(small_server, "intramuros_requests_total", model=CHAT_MODEL,
                            status="499") >= 1)  # fmt: skip
    generated = metric(small_server, "intramuros_tokens_total", model=CHAT_MODEL,
                       direction="completion") - before  # fmt: skip
    assert generated < 500, "the abandoned generation should have stopped early"


def test_requests_are_served_in_arrival_order(small_server: Server, tmp_path: Path) -> None:
    srv = start_server(tmp_path / "order", "--queue-limit", "8", "--llama-slots", "1",
                       "--preload-models", CHAT_MODEL)  # fmt: skip
    try:
        running = open_stream(srv)
        finished: list[int] = []
        lock = threading.Lock()

        def call(i: int) -> None:
            r = httpx.post(srv.base_url + "/v1/chat/completions", timeout=120,
                           json={**SHORT, "max_tokens": 2})  # fmt: skip
            assert r.status_code == 200
            with lock:
                finished.append(i)

        threads = []
        for i in range(4):
            t = threading.Thread(target=call, args=(i,))
            t.start()
            threads.append(t)
            wait_for(lambda n=i + 1: metric(srv, "intramuros_queue_depth", model=CHAT_MODEL) == n)
        running.close()
        for t in threads:
            t.join(timeout=120)
        assert finished == [0, 1, 2, 3]
    finally:
        stop_server(srv)


def test_event_loop_stays_free_during_generation(small_server: Server) -> None:
    running = open_stream(small_server)
    try:
        for _ in range(5):
            t0 = time.monotonic()
            assert httpx.get(small_server.base_url + "/healthz", timeout=10).status_code == 200
            assert httpx.get(small_server.base_url + "/v1/models", timeout=10).status_code == 200
            # generous: a blocked loop would wait for the whole 1500-token generation
            assert time.monotonic() - t0 < 3
    finally:
        running.close()
