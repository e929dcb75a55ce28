"""The app in the test process: no model, no subprocess, real HTTP semantics through ASGI.

:func:`serve_in_process` builds the app exactly as ``intramuros serve`` does
(``create_app(settings)``), enters its lifespan on an event loop of its own
(an anyio blocking portal: one thread), and hands out synchronous httpx and
``openai`` clients whose transport passes each request to the app through
httpx's ASGI transport. The catalogue holds fake-engine models
(``intramuros.engines.fake``) besides the bundled ones; tenants and keys are
made through the Python API, as ``make_keys`` makes them with the CLI.

What it cannot show, and the real-server tests keep showing: sockets and
uvicorn (slow clients, a client that leaves mid-answer, signals), the
process's memory and event-loop freezes, real models. Answers are gathered
whole before the client sees them (httpx's ASGI transport does not stream).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx

from intramuros.catalog.records import Capability, ModelRecord, Origin
from intramuros.store.db import Database, dumps

FAKE_CHAT = "fake-chat"
FAKE_EMBED = "fake-embed"
BASE_URL = "http://intramuros.test"


def fake_record(
    name: str,
    capabilities: tuple[Capability, ...] = ("chat", "completion", "tools", "json"),
    *,
    context_length: int = 2048,
    **options: Any,
) -> ModelRecord:
    """A catalogue record of a fake-engine model (``options``: see ``FakeOptions``)."""
    return ModelRecord(
        name=name, engine="fake", format="none", context_length=context_length,
        license="apache-2.0", origin=Origin(kind="file"), capabilities=capabilities,
        options=options, description="fake engine (tests)",
    )  # fmt: skip


DEFAULT_MODELS = (fake_record(FAKE_CHAT), fake_record(FAKE_EMBED, ("embeddings",)))


def add_models(db: Database, records: tuple[ModelRecord, ...]) -> None:
    """Put ``records`` in the catalogue of ``db`` (a model added by an operator)."""
    for record in records:
        db.upsert_model(record.name, record.engine, record.sha256,
                        dumps(record.model_dump(mode="json")))  # fmt: skip


def make_keys_in(db: Database) -> dict[str, str]:
    """Tenants acme and globex and the keys ``make_keys`` makes, through the Python API."""
    from intramuros.gate.tenants import Tenants

    tenants = Tenants(db)
    acme = tenants.create("acme").id
    globex = tenants.create("globex").id
    return {
        "operator": tenants.create_key(acme, role="operator")[0],
        "admin": tenants.create_key(acme, role="admin")[0],
        "user": tenants.create_key(acme)[0],
        "other": tenants.create_key(globex)[0],
    }


class PortalTransport(httpx.BaseTransport):
    """A synchronous transport: each request goes to the app on the portal's event loop."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, app: Any) -> None:
        self._portal = portal
        self._asgi = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def send() -> tuple[int, httpx.Headers, bytes]:
            inner = httpx.Request(request.method, request.url, headers=request.headers,
                                  content=body, extensions=request.extensions)  # fmt: skip
            response = await self._asgi.handle_async_request(inner)
            return response.status_code, response.headers, await response.aread()

        status, headers, content = self._portal.call(send)
        return httpx.Response(status, headers=headers, content=content, request=request)


@dataclass
class InProcessApp:
    """A running in-process app, shaped like ``conftest.Server`` where tests meet it."""

    app: Any
    data_dir: Path
    portal: anyio.from_thread.BlockingPortal
    keys: dict[str, str] = field(default_factory=dict)
    _clients: list[Any] = field(default_factory=list)
    base_url: str = BASE_URL
    # The models it serves in the roles tests give them.
    chat_model: str = FAKE_CHAT
    embed_model: str = FAKE_EMBED
    stopped: bool = False

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        """An `intramuros` command on its data dir, in this process; its stdout."""
        from tests.helpers import quick_cli

        return quick_cli(self.data_dir, *args, env=env)

    @property
    def service(self) -> Any:
        """The app's ``InferenceService``."""
        return self.app.state.service

    def headers(self, who: str = "user") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"} if who in self.keys else {}

    def alive(self) -> bool:
        """True while the app runs: its lifespan not left, its event loop answering."""
        if self.stopped:
            return False
        try:
            self.portal.call(anyio.sleep, 0)
        except RuntimeError:
            return False
        return True

    @property
    def http(self) -> httpx.Client:
        """A shared client of the app, without a key (give ``headers=``)."""
        if not hasattr(self, "_http"):
            self._http = self.client()
        return self._http

    def transport(self) -> PortalTransport:
        return PortalTransport(self.portal, self.app)

    def client(self, who: str | None = None, **kw: Any) -> httpx.Client:
        """An httpx client of the app (with ``who``'s key); closed with the app."""
        client = httpx.Client(base_url=self.base_url, transport=self.transport(),
                              headers=self.headers(who) if who else {}, **kw)  # fmt: skip
        self._clients.append(client)
        return client

    def openai(self, who: str = "user") -> Any:
        """The official ``openai`` client, talking to the app."""
        import openai

        client = openai.OpenAI(base_url=self.base_url + "/v1", api_key=self.keys.get(who, "x"),
                               max_retries=0, http_client=httpx.Client(transport=self.transport()))
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()


@contextmanager
def serve_in_process(
    data_dir: Path,
    *,
    auth: bool = True,
    models: tuple[ModelRecord, ...] = DEFAULT_MODELS,
    preload: tuple[str, ...] | None = None,
    **settings: Any,
) -> Iterator[InProcessApp]:
    """The app on ``data_dir``, started (lifespan entered) and stopped around the block.

    With ``auth`` (the default) it gets ``make_keys_in``'s tenants and keys.
    ``preload`` defaults to the fake models; further keyword arguments are settings.
    """
    from intramuros.api.app import create_app
    from intramuros.settings import load_settings

    data_dir.mkdir(parents=True, exist_ok=True)
    config = load_settings(
        data_dir=data_dir, auth=auth,
        # The guard is process-wide: in the test process it would watch pytest itself.
        egress_guard=False,
        preload_models=list(preload if preload is not None else (m.name for m in models)),
        # No process in the fast tier: KYC matches in the app's own threads (the
        # real-server tests run the matcher processes).
        **{"kyc_matcher_processes": 0, **settings},
    )  # fmt: skip
    db = Database(config.resolved_database_url())
    try:
        db.migrate()
        add_models(db, models)
        keys = make_keys_in(db) if auth else {}
    finally:
        db.close()
    app = create_app(config)
    with ExitStack() as stack:
        portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
        # The lifespan freezes what start-up allocated (gc.freeze): let it go again after.
        stack.callback(gc.unfreeze)
        stack.enter_context(portal.wrap_async_context_manager(app.router.lifespan_context(app)))
        running = InProcessApp(app=app, data_dir=data_dir, portal=portal, keys=keys)
        stack.callback(running.close_clients)
        yield running
    running.stopped = True
