"""The KYC matcher processes of a real server: what happens when one dies, or the server does.

The server matches names in a worker process of its own (``kyc_matcher_processes``),
so that matching runs beside the event loop rather than in its threads. These
tests kill that worker, and the server, and check that screening comes back
and that nothing is left running.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import cli, start_server, stop_server
from tests.helpers import check_error

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sanctions"


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # The command may hold spaces and parentheses: the fields follow the last ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _matchers(pid: int) -> list[int]:
    """The server's matcher processes (its spawned children, not the resource tracker)."""
    return [c for c in _children(pid)
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]  # fmt: skip


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # exited, not yet reaped by its new parent


def _screen(client: httpx.Client, name: str = "Matevz Karner") -> httpx.Response:
    return client.post("/v1/kyc/screen", json={"name": name, "type": "person"})


def test_a_dead_matcher_costs_one_screening_and_the_server_ends_its_matchers(
    tmp_path: Path,
) -> None:
    cli(tmp_path, "kyc", "lists", "import", str(DATA / "ofac"), "--format", "ofac",
        "--list", "ofac")  # fmt: skip
    server = start_server(tmp_path, "--preload-models", "", "--kyc-matcher-processes", "1",
                          auth=True)  # fmt: skip
    try:
        with httpx.Client(base_url=server.base_url, timeout=60,
                          headers=server.headers("user")) as client:  # fmt: skip
            first = _screen(client)
            assert first.status_code == 200, first.text
            assert first.json()["matches"][0]["source_id"] == "16814"
            (matcher,) = _matchers(server.proc.pid)
            os.kill(matcher, signal.SIGKILL)  # out of memory, an operator's mistake
            deadline = time.monotonic() + 10
            while not _gone(matcher) and time.monotonic() < deadline:
                time.sleep(0.05)
            lost = _screen(client)
            # The screening in flight (or the first after) gets a clear 503; none is
            # answered from nothing, and the next ones are answered again.
            if lost.status_code != 200:
                check_error(lost, 503, code="kyc_matcher_restarted")
            again = _screen(client)
            assert again.status_code == 200, again.text
            assert again.json()["matches"][0]["source_id"] == "16814"
            (replacement,) = _matchers(server.proc.pid)
            assert replacement != matcher
            # Every answered screening opened its case and is in the request log.
            cases = client.get("/v1/kyc/cases", headers=server.headers("admin"))
            answered = 2 + (lost.status_code == 200)
            assert len(cases.json()["data"]) == answered
        # The server killed outright cannot stop its matcher: the matcher ends by itself.
        os.kill(server.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not _gone(replacement) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(replacement)
    finally:
        stop_server(server)


def test_a_stopped_server_stops_its_matchers(tmp_path: Path) -> None:
    cli(tmp_path, "kyc", "lists", "import", str(DATA / "un" / "UN_consolidated.xml"),
        "--format", "un", "--list", "un")  # fmt: skip
    server = start_server(tmp_path, "--preload-models", "", "--kyc-matcher-processes", "2",
                          auth=True)  # fmt: skip
    try:
        with httpx.Client(base_url=server.base_url, timeout=60,
                          headers=server.headers("user")) as client:  # fmt: skip
            r = client.post("/v1/kyc/screen/batch", json={"subjects": [
                {"name": f"Subject {i}"} for i in range(200)]})  # fmt: skip
            assert r.status_code == 200, r.text
            assert len(r.json()["data"]) == 200
            lists = client.get("/v1/kyc/lists").json()["data"]
            assert [(x["name"], x["loaded"]) for x in lists] == [("un", True)]
        matchers = _matchers(server.proc.pid)
        assert 1 <= len(matchers) <= 2
        server.proc.send_signal(signal.SIGTERM)  # what systemd does
        server.proc.wait(timeout=30)
        # uvicorn's way: the shutdown is graceful, then the signal is raised again.
        assert server.proc.returncode in (0, -signal.SIGTERM)
        assert all(_gone(m) for m in matchers)
    finally:
        stop_server(server)
