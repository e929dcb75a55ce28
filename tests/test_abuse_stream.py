"""Streams under attack: a key revoked mid-stream, a server killed mid-stream.

A revoked key's stream ends at its next token (revoked over HTTP in this
process, or with the command line in another); a stream whose server is
killed with SIGKILL after its first bytes leaves its opening record in the
ledger; a finished stream's record is written before its last byte.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CHAT_MODEL, Server, cli, start_server, stop_server

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

# A schema that forces a long answer: the grammar forbids the end before 300 numbers.
LONG = {
    "model": CHAT_MODEL, "max_tokens": 1500, "temperature": 0, "stream": True,
    "messages": [{"role": "user", "content": "List numbers."}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "numbers", "schema": {
        "type": "object", "required": ["n"], "properties": {
            "n": {"type": "array", "minItems": 300, "items": {"type": "integer"}}}}}},
}  # fmt: skip


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("stream"), "--preload-models", CHAT_MODEL,
                          auth=True)  # fmt: skip
    yield server
    stop_server(server)


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def _revoked_after(srv: Server, revoke: Any) -> tuple[int, float, dict[str, Any]]:
    """Stream with a fresh key, revoke it after a few chunks; (chunks, seconds to stop, last)."""
    key = cli(srv.data_dir, "keys", "create", "--tenant", "acme").strip()
    key_id = key.split("_")[1]
    chunks, revoked_at = 0, 0.0
    last: dict[str, Any] = {}
    with httpx.Client(base_url=srv.base_url, timeout=120) as c, c.stream(
            "POST", "/v1/chat/completions", json=LONG,
            headers={"Authorization": f"Bearer {key}"}) as stream:  # fmt: skip
        assert stream.status_code == 200
        for event in _events(stream.iter_lines()):
            last = event
            if "error" in event:
                break
            chunks += 1
            if chunks == 5:
                revoke(key_id)
                revoked_at = time.monotonic()
    return chunks, time.monotonic() - revoked_at, last


def test_revocation_over_http_ends_the_stream_at_the_next_token(srv: Server) -> None:
    # The admin key checked once beforehand (its first check costs a scrypt, tens of
    # milliseconds under load): what is measured is the server's answer to the revocation.
    assert httpx.get(srv.base_url + "/v1/admin/keys", headers=srv.headers("admin"),
                     timeout=30).status_code == 200  # fmt: skip

    def revoke(key_id: str) -> None:
        r = httpx.delete(srv.base_url + f"/v1/admin/keys/{key_id}", headers=srv.headers("admin"))
        assert r.status_code == 200

    chunks, after, last = _revoked_after(srv, revoke)
    # Today's code streamed on to the end: hundreds of chunks, then [DONE].
    assert last["error"]["code"] == "api_key_revoked" and last["error"]["type"] == \
        "authentication_error"  # fmt: skip
    assert chunks < 12, chunks
    assert after < 2.0


def test_revocation_from_another_process_ends_the_stream(srv: Server) -> None:
    def revoke(key_id: str) -> None:
        cli(srv.data_dir, "keys", "revoke", key_id)

    _chunks, after, last = _revoked_after(srv, revoke)
    assert last["error"]["code"] == "api_key_revoked"
    assert after < 3.0, f"the stream went on {after:.1f} s after the revocation"


def _ledger(srv: Server) -> list[dict[str, Any]]:
    r = httpx.get(srv.base_url + "/v1/admin/ledger", params={"limit": 1000},
                  headers=srv.headers("operator"), timeout=30)  # fmt: skip
    return list(r.json()["data"])


def test_a_finished_stream_is_on_record_before_its_last_byte(srv: Server) -> None:
    body = {**LONG, "user": "subject-finished", "max_tokens": 40}
    body.pop("response_format")
    with httpx.Client(base_url=srv.base_url, headers=srv.headers(), timeout=120) as c, \
            c.stream("POST", "/v1/chat/completions", json=body) as stream:  # fmt: skip
        lines = [line for line in stream.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        # read at once, before anything else could happen
        records = [r for r in _ledger(srv) if r["subject"] == "subject-finished"]
    kinds = [r["kind"] for r in records]
    assert kinds == ["model_call_open", "model_call"], kinds
    assert records[0]["data"]["request_id"] == records[1]["data"]["request_id"]
    assert records[1]["data"]["status"] == 200


def test_a_stream_cut_by_kill_9_leaves_its_opening_on_record(tmp_path: Path) -> None:
    server = start_server(tmp_path / "killed", "--preload-models", CHAT_MODEL, auth=True)
    try:
        body = {**LONG, "user": "subject-killed"}
        with httpx.Client(base_url=server.base_url, headers=server.headers(),
                          timeout=60) as c, c.stream("POST", "/v1/chat/completions",
                                                     json=body) as stream:  # fmt: skip
            received = 0
            try:
                for _event in _events(stream.iter_lines()):
                    received += 1
                    if received == 5:
                        server.proc.send_signal(signal.SIGKILL)
                        server.proc.wait(timeout=30)
            except httpx.TransportError:
                pass
        assert received >= 5
    finally:
        stop_server(server)
    # a new server on the same data: the call is on record, opened and never closed
    again = start_server(server.data_dir, "--preload-models", CHAT_MODEL)
    try:
        ledger = [r for r in httpx.get(again.base_url + "/v1/admin/ledger", timeout=30,
                                       params={"limit": 1000}).json()["data"]
                  if r["subject"] == "subject-killed"]  # fmt: skip
        assert [r["kind"] for r in ledger] == ["model_call_open"], ledger
        assert ledger[0]["data"]["model"] == CHAT_MODEL
        verify = httpx.get(again.base_url + "/v1/admin/ledger/verify", timeout=60).json()
        assert verify["ok"], verify
    finally:
        stop_server(again)
