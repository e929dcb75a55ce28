"""One request may slow itself, never the server: big bodies against a real server.

Each attack runs while another process polls /healthz every 10 ms; every poll
sent during the attack must be answered within 100 ms. Bodies stay under the
8 MiB body limit, as an attacker's would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import CHAT_MODEL, EMBED_MODEL, Server, start_server, stop_server
from tests.watch import HealthWatch

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

LIMIT = 8 * 1024 * 1024
BUDGET = 0.100  # seconds: the slowest /healthz answer allowed during an attack


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("loop"), "--preload-models",
                          f"{CHAT_MODEL},{EMBED_MODEL}", "--max-body-bytes", str(LIMIT),
                          auth=True)  # fmt: skip
    yield server
    stop_server(server)


def _attack(srv: Server, path: str, body: bytes) -> tuple[httpx.Response, float]:
    """Send ``body`` while /healthz is watched; the response and the slowest poll."""
    assert len(body) < LIMIT
    with HealthWatch(srv.base_url) as watch:
        start = time.time()
        r = httpx.post(srv.base_url + path, content=body, timeout=300,
                       headers={**srv.headers(), "content-type": "application/json"})  # fmt: skip
        end = time.time()
    return r, watch.worst(start, end)


def _chat(content: object, **extra: object) -> bytes:
    return json.dumps({"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}],
                       "max_tokens": 5, **extra}).encode()  # fmt: skip


def test_seven_megabyte_prompt_is_refused_without_freezing(srv: Server) -> None:
    # Today's code tokenised it on the event loop: 4.4 s of total freeze before its 400.
    r, worst = _attack(srv, "/v1/chat/completions", _chat("word " * 1_400_000))
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert "at least" in r.json()["error"]["message"]
    assert worst < BUDGET, f"/healthz took {worst * 1000:.0f} ms"
    body = json.dumps({"model": CHAT_MODEL, "prompt": "word, " * 1_200_000}).encode()
    r, worst = _attack(srv, "/v1/completions", body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    assert worst < BUDGET, f"/healthz took {worst * 1000:.0f} ms"


def test_a_routed_seven_megabyte_prompt_is_judged_without_freezing(srv: Server) -> None:
    # `auto` checks each member's context before choosing: that counting is off the loop too.
    r, worst = _attack(srv, "/v1/chat/completions", _chat("word " * 1_400_000, model="auto"))
    assert r.status_code == 400, r.text
    assert worst < BUDGET, f"/healthz took {worst * 1000:.0f} ms"


def test_a_prompt_that_fits_the_bytes_bound_is_counted_off_the_loop(srv: Server) -> None:
    # 48 KB: not refused by its size alone (a token is at most 32 bytes), so it is tokenised.
    r, worst = _attack(srv, "/v1/chat/completions", _chat("ab " * 16_000))
    assert r.status_code == 400 and "at least" not in r.json()["error"]["message"]
    assert worst < BUDGET, f"/healthz took {worst * 1000:.0f} ms"


_CROWDS = {
    # a million token ids: parsing and validating them held the loop for 0.4 s
    "token_ids": ("/v1/completions", {"model": CHAT_MODEL, "prompt": list(range(1, 1_000_000))}),
    # 200,000 messages: 1.5 s of validation on the event loop
    "messages": ("/v1/chat/completions",
                 {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "a"}] * 200_000}),
    # the cheapest bytes for the most parsing work: 0.9 s for json.loads alone
    "empty_arrays": ("/v1/embeddings", {"model": EMBED_MODEL, "input": [[]] * 2_500_000}),
    "strings": ("/v1/embeddings", {"model": EMBED_MODEL, "input": ["a"] * 1_300_000}),
}  # fmt: skip


@pytest.mark.parametrize("shape", sorted(_CROWDS))
def test_too_many_json_values_are_refused_before_parsing(srv: Server, shape: str) -> None:
    path, body = _CROWDS[shape]
    r, worst = _attack(srv, path, json.dumps(body, separators=(",", ":")).encode())
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["code"] == "payload_too_large" and "max_json_values" in error["message"]
    assert worst < BUDGET, f"/healthz took {worst * 1000:.0f} ms"


def test_commas_inside_strings_are_not_values(srv: Server) -> None:
    # Prose full of commas is one string: counted exactly (off the loop), then served.
    prose = "a, b, c, " * 600_000
    r, worst = _attack(srv, "/v1/chat/completions", _chat(prose))
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert worst < BUDGET


@pytest.mark.parametrize(("field", "value", "limit"), [
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
     * 4000, 128),
    ("stop", ["x"] * 30_000, 16),
    ("logit_bias", {str(i): 1 for i in range(30_000)}, 1024),
    ("metadata", {str(i): "x" for i in range(30_000)}, 64),
])  # fmt: skip
def test_long_lists_are_refused_before_their_items_are_validated(
    srv: Server, field: str, value: object, limit: int
) -> None:
    r, worst = _attack(srv, "/v1/chat/completions", _chat("hi", **{field: value}))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and f"at most {limit}" in error["message"]
    assert worst < BUDGET, f"/healthz took {worst * 1000:.0f} ms"


def test_many_messages_under_the_value_limit_do_not_freeze(srv: Server) -> None:
    # 10,000 messages (30,000 values) are accepted and converted off the loop.
    body = json.dumps({"model": CHAT_MODEL, "max_tokens": 5,
                       "messages": [{"role": "user", "content": "a"}] * 10_000}).encode()
    r, worst = _attack(srv, "/v1/chat/completions", body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert worst < BUDGET, f"/healthz took {worst * 1000:.0f} ms"


def test_sigterm_stops_the_server_while_it_is_busy(tmp_path: Path) -> None:
    server = start_server(tmp_path / "term", "--preload-models", CHAT_MODEL, auth=True)
    try:
        body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Count to 1000."}],
                "max_tokens": 1500, "temperature": 0, "stream": True}  # fmt: skip
        big = _chat("word " * 1_400_000)
        with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=60) as c, \
                c.stream("POST", "/v1/chat/completions", json=body) as stream:  # fmt: skip
            lines = stream.iter_lines()
            assert next(lines).startswith("data: ")
            # a big body in flight too
            proc = subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-H",
                                     f"Authorization: Bearer {server.keys['user']}", "-H",
                                     "content-type: application/json", "--data-binary", "@-",
                                     server.base_url + "/v1/chat/completions"],
                                    stdin=subprocess.PIPE)  # fmt: skip
            assert proc.stdin is not None
            proc.stdin.write(big)
            proc.stdin.close()
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(timeout=30)
            stopped = time.monotonic() - started
            proc.wait(timeout=30)
        # uvicorn's graceful shutdown lasts 5 s; then open streams are cut.
        assert stopped < 10, f"the server took {stopped:.1f} s to stop"
    finally:
        stop_server(server)
