"""Schemathesis fuzzes the server from its own OpenAPI spec: no input may cause a 5xx."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CHAT_MODEL, EMBED_MODEL, Server, start_server, stop_server

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A small context keeps every generation the fuzzer triggers short.
    srv = start_server(tmp_path_factory.mktemp("fuzz"), "--n-ctx", "128",
                       "--preload-models", f"{CHAT_MODEL},{EMBED_MODEL}", auth=True)
    yield srv
    stop_server(srv)


def test_no_server_errors(fuzz_server: Server, tmp_path: Path) -> None:
    st = shutil.which("st") or str(Path(__file__).resolve().parents[1] / ".venv/bin/st")
    report = tmp_path / "report"
    cmd = [
        st, "run", fuzz_server.base_url + "/openapi.json",
        # the operator reaches every route (tenants, the whole ledger) a tenant's admin cannot
        "--header", f"Authorization: Bearer {fuzz_server.keys['operator']}",
        "--checks", "not_a_server_error",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", "6", "--seed", "20261123", "--workers", "1",
        "--max-time", "150", "--request-timeout", "120",
        "--report-dir", str(report),
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "Internal server error" not in fuzz_server.log_text()
