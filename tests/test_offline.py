"""Offline by construction: a full session opens no socket beyond this machine.

The server runs under ``strace -f -e trace=connect``, which sees every
connect(2) of every thread, Python or C, so nothing can slip past a
Python-level hook. The test fails (never skips) when strace is unavailable.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
from pathlib import Path

import openai
import pytest

from intramuros.offline import OFFLINE_ENV, enforce_offline
from tests.conftest import CHAT_MODEL, EMBED_MODEL, start_server, stop_server

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

CONNECT = re.compile(r"connect\(\d+, \{sa_family=(AF_INET6?), (.*?)\}")


def remote_addresses(trace: str) -> list[str]:
    """Every IP address the traced process tried to connect to."""
    found = []
    for family, rest in CONNECT.findall(trace):
        if family == "AF_INET":
            m = re.search(r'inet_addr\("([^"]+)"\)', rest)
        else:
            m = re.search(r'inet_pton\(AF_INET6, "([^"]+)"', rest)
        assert m, f"unparsed connect: {rest}"
        found.append(m.group(1))
    return found


def test_remote_address_parser() -> None:
    trace = (
        '123 connect(5, {sa_family=AF_INET, sin_port=htons(443), '
        'sin_addr=inet_addr("93.184.216.34")}, 16) = -1 ENETUNREACH\n'
        '124 connect(6, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), '
        'inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0\n'
        '125 connect(7, {sa_family=AF_UNIX, sun_path="/run/x"}, 110) = 0\n'
    )  # fmt: skip
    assert remote_addresses(trace) == ["93.184.216.34", "::1"]


def test_enforce_offline_sets_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    enforce_offline()
    assert all(os.environ[k] == v for k, v in OFFLINE_ENV.items())


def test_full_session_opens_no_outside_socket(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    assert strace, "strace is needed for this test (Debian package strace)"
    trace_file = tmp_path / "connect.trace"
    srv = start_server(
        tmp_path / "data",
        "--preload-models", f"{CHAT_MODEL},{EMBED_MODEL}",
        prefix=[strace, "-f", "-qq", "-e", "trace=connect,accept4", "-o", str(trace_file)],
    )  # fmt: skip
    try:
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0)
        client.chat.completions.create(model=CHAT_MODEL, max_tokens=8,
                                       messages=[{"role": "user", "content": "Hello"}])  # fmt: skip
        hi = [{"role": "user", "content": "Hi"}]
        list(client.chat.completions.create(model=CHAT_MODEL, max_tokens=8, stream=True,
                                            messages=hi))  # type: ignore[arg-type]
        client.chat.completions.create(
            model=CHAT_MODEL, max_tokens=60, tool_choice="required",
            messages=[{"role": "user", "content": "Weather in Rome?"}],
            tools=[{"type": "function", "function": {"name": "weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]}}}],
        )  # fmt: skip
        client.embeddings.create(model=EMBED_MODEL, input=["offline", "sovereign"])
        client.completions.create(model=CHAT_MODEL, prompt="Once", max_tokens=4)
        client.models.list()
        client.close()
    finally:
        stop_server(srv)
    trace = trace_file.read_text()
    # strace really watched the server: it saw it accept our connections
    assert "accept4(" in trace, "strace recorded nothing: the trace would prove nothing"
    outside = [a for a in remote_addresses(trace) if not ipaddress.ip_address(a).is_loopback]
    assert outside == [], f"the server tried to reach {outside}"


def test_server_runs_with_the_egress_guard(server) -> None:  # type: ignore[no-untyped-def]
    import httpx

    metrics = httpx.get(server.base_url + "/metrics", timeout=30).text
    assert "intramuros_egress_refused_total 0.0" in metrics
