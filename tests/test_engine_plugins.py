"""A third party's engine, installed beside ours: added with `models add --engine`, served,
and allowed to reach exactly the host it declares."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import openai
import pytest

from tests.conftest import start_server, stop_server
from tests.helpers import cli, run_cli

pytestmark = pytest.mark.slow

# One in a documentation range that no one answers: the engine tries it undeclared.
UNDECLARED = "http://198.51.100.7:9/"


def _own_address() -> str:
    """An address of this machine that is not loopback (the guard allows all of loopback), so
    that reaching the echo service shows the declared host was let through. A machine with
    none falls back to loopback: the undeclared probe is still refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.7", 9))  # UDP: picks the route's source, sends nothing
            address = str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"
    return address if not address.startswith("127.") else "127.0.0.1"


HOST = _own_address()


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        text = parse_qs(urlparse(self.path).query).get("text", [""])[0]
        body = json.dumps({"text": text}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    httpd = ThreadingHTTPServer((HOST, 0), _Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The plug-in as a separately installed distribution: its module and a .dist-info."""
    site = tmp_path_factory.mktemp("site")
    shutil.copy(Path(__file__).with_name("loopecho_engine.py"), site / "loopecho_engine.py")
    info = site / "loopecho-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: loopecho\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[intramuros.engines]\nloopecho = loopecho_engine:LoopEchoEngine\n")
    return {"PYTHONPATH": str(site)}


def test_a_third_party_engine_is_added_served_and_fenced(
    tmp_path: Path, echo: str, plugin_env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    engines = run_cli("models", "engines", env=plugin_env)
    listed = engines.stdout
    assert engines.returncode == 0, engines.stderr
    assert "loopecho" in listed and "base_url" in listed and "probe_url" in listed
    # Its options are checked against what it declares, each refusal naming the option.
    bad = run_cli("models", "add", "--engine", "loopecho", "--name", "e", "--option",
                  f"base_url={echo}", "--option", "colour=blue", data_dir=data, env=plugin_env)
    assert bad.returncode != 0 and "colour" in bad.stderr
    bad = run_cli("models", "add", "--engine", "loopecho", "--name", "e", "--option",
                  "base_url=not a url", data_dir=data, env=plugin_env)
    assert bad.returncode != 0 and "base_url" in bad.stderr
    missing = run_cli("models", "add", "--engine", "nosuch", "--name", "e", data_dir=data,
                      env=plugin_env)
    assert missing.returncode != 0 and "nosuch" in missing.stderr and "loopecho" in missing.stderr
    cli(data, "models", "add", "--engine", "loopecho", "--name", "echo", "--option",
        f"base_url={echo}", "--option", f"probe_url={UNDECLARED}", "--option", "prefix=heard",
        env=plugin_env)
    srv = start_server(data, "--preload-models", "echo", auth=True, env=plugin_env)
    try:
        client = openai.OpenAI(api_key=srv.keys["user"], base_url=f"{srv.base_url}/v1")
        card = client.models.retrieve("echo").model_dump()
        assert card["intramuros"]["engine"] == "loopecho"
        answer = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "hello walls"}])
        # The declared host was reached; the undeclared one was stopped by the guard.
        assert answer.choices[0].message.content == "heard: hello walls | probe: refused"
        metrics = srv.http.get("/metrics").text
        assert any(line.startswith("intramuros_egress_refused_total")
                   and not line.endswith(" 0.0") for line in metrics.splitlines())
        client.close()
    finally:
        stop_server(srv)
    # Without the plug-in installed, a server still starts; the model is refused when
    # asked for, naming the missing plug-in.
    srv = start_server(data, "--preload-models", "")
    try:
        r = srv.http.post("/v1/chat/completions", json={
            "model": "echo", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code >= 500 and "loopecho" in r.json()["error"]["message"], r.text
    finally:
        stop_server(srv)
