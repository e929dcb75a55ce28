"""The core service: built once per app (or command), it holds the platform's state.

It owns the database, catalogue, model pool, tenants, ledger, quotas, meters
and the call recorder, and serves the model routes through one service per
endpoint (:mod:`~intramuros.serving.chat`, :mod:`~intramuros.serving.completion`,
:mod:`~intramuros.serving.embeddings`), which share the admission checks
(:mod:`~intramuros.serving.admission`) and the lane plumbing
(:mod:`~intramuros.serving.streams`). Workloads see it only as a
:class:`~intramuros.platform.interface.Platform`. What runs on a schedule (the
retention purge, the egress guard) belongs to the app (``api/lifecycle.py``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import PurePath
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Connection

from intramuros.catalog.catalog import Catalog
from intramuros.catalog.records import AdapterSpec, ModelRecord
from intramuros.engines.base import Engine
from intramuros.errors import ConfigError, IntramurosError, NotFound
from intramuros.gate import scope
from intramuros.gate.keywatch import KeyWatch
from intramuros.gate.policy import TenantPolicy
from intramuros.gate.quotas import Quotas
from intramuros.gate.tenants import Principal, Tenants, TenantTombstone
from intramuros.ledger import Ledger, LedgerKeys
from intramuros.meter.energy import EnergyMeter, open_sources
from intramuros.meter.metrics import Metrics
from intramuros.meter.price import PriceModel
from intramuros.platform.call import CallMeter
from intramuros.platform.interface import AuditEvent, Auditor, UnitOfWork
from intramuros.protocol import openai as p
from intramuros.serving.admission import Admission
from intramuros.serving.chat import ChatService
from intramuros.serving.completion import CompletionService
from intramuros.serving.embeddings import EmbeddingService
from intramuros.serving.pool import LoadedModel, ModelPool
from intramuros.serving.recorder import CallRecorder
from intramuros.serving.streams import Streams
from intramuros.serving.tenancy import delete_tenant, purge_context
from intramuros.settings import Settings
from intramuros.store.db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S")


class InferenceService:
    """Everything between the HTTP routes (and the workloads) and the engines."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.resolved_database_url())
        self.catalog = Catalog(self.db, settings)
        self.metrics = Metrics()
        self.pool = ModelPool(self.catalog, settings, self.metrics)
        self.tenants = Tenants(self.db, settings.key_cache_seconds)
        self.ledger = Ledger(self.db, LedgerKeys.load(settings.ledger_key_file))
        self.quotas = Quotas(self.db, shared=settings.shared_quotas())
        self.key_watch = KeyWatch(self.tenants)
        self.energy = _energy_meter(settings)
        self.prices = PriceModel.from_settings(settings)
        self.recorder = CallRecorder(self.ledger, self.quotas, self.metrics, self.energy,
                                     self.prices)  # fmt: skip
        self.admission = Admission(self.tenants, self.quotas, self.ledger)
        self.streams = Streams(self.energy, self.key_watch, self.recorder)
        parts = (settings, self.pool, self.admission, self.streams, self.recorder)
        self.chats = ChatService(*parts)
        self.completions = CompletionService(*parts)
        self.embedder = EmbeddingService(*parts)
        self.ready = False
        self._prepared = False
        self.preload_error: str | None = None
        # Purges run on the app's retention schedule after the ledger's (see
        # api/lifecycle.py); each is given the actor's name.
        self.purge_hooks: list[Callable[[str], object]] = []

    # -- lifecycle ---------------------------------------------------------

    async def prepare(self) -> None:
        """Migrate the database and register the bundled models (once)."""
        if self._prepared:
            return
        await asyncio.to_thread(self.db.migrate)
        # A keyed ledger and no key: refuse to start rather than fail to record every call.
        await asyncio.to_thread(self.ledger.require_appendable)
        await asyncio.to_thread(self.catalog.sync_bundled)
        self._prepared = True

    async def start(self) -> None:
        """Prepare, preload the configured models, and watch the keys of calls in flight."""
        await self.prepare()
        for name in self.settings.preload_models:
            try:
                await self.pool.get(name)
            except IntramurosError as exc:
                # Keep serving other models; /readyz reports the failure.
                self.preload_error = f"{name}: {exc.message}"
                log.error("could not preload %s: %s", name, exc.message)
        self.ready = self.preload_error is None
        await self.key_watch.start()

    async def close(self) -> None:
        """Stop watching keys, unload models and close the database."""
        await self.key_watch.close()
        await self.pool.close()
        # Every call's records are written before the database closes.
        await asyncio.to_thread(self.recorder.close)
        self.db.close()

    # -- the model routes -------------------------------------------------------

    async def chat(
        self, req: p.ChatCompletionRequest, who: Principal
    ) -> p.ChatCompletionResponse | AsyncIterator[p.ChatCompletionChunk]:
        """A chat completion, whole or as a stream of chunks."""
        return await self.chats.chat(req, who)

    async def completion(
        self, req: p.CompletionRequest, who: Principal
    ) -> p.CompletionResponse | AsyncIterator[p.CompletionResponse]:
        """A text completion (one choice per prompt), whole or streamed."""
        return await self.completions.completion(req, who)

    async def embeddings(self, req: p.EmbeddingRequest, who: Principal) -> p.EmbeddingResponse:
        """Vectors for each input."""
        return await self.embedder.embeddings(req, who)

    def model_card(self, record: ModelRecord) -> p.ModelCard:
        """A record in ``/v1/models`` shape, provenance under ``intramuros``."""
        info = record.model_dump(mode="json", exclude={"name", "created", "options", "path"})
        info["loaded"] = record.name in self.pool.loaded()
        origin = info.get("origin") or {}
        if origin.get("path"):
            # The file's name, not where this server keeps it.
            origin["path"] = PurePath(origin["path"]).name
        if record.engine == "openai-upstream":
            info["upstream"] = {"base_url": record.options.get("base_url")}
        caps = set(record.capabilities)
        return p.ModelCard(
            id=record.name, created=record.created, owned_by="intramuros", name=record.name,
            description=record.description or None, max_context_length=record.context_length,
            capabilities=p.ModelCapabilities(
                completion_chat="chat" in caps, function_calling="tools" in caps,
                ocr="ocr" in caps, audio_transcription="transcription" in caps,
            ),
            intramuros=info,
        )  # fmt: skip

    def list_models(self, who: Principal) -> p.ModelList:
        """Every model in the catalogue that the caller's key may use."""
        return p.ModelList(
            data=[self.model_card(r) for r in self.catalog.records()
                  if who.may_use(r.name) and r.owner in (None, who.tenant)]
        )

    def policy_of(self, tenant: str) -> TenantPolicy:
        """The tenant's policy (the default one for a tenant not in the database)."""
        return self.admission.policy_of(tenant)

    # -- administration ------------------------------------------------------------

    def audit(self, who: Principal, action: str, tenant: str | None, **details: Any) -> None:
        """Append an admin action done over HTTP to the ledger."""
        actor = f"key:{who.key_id}" if who.key_id else "no-auth"
        self.ledger.append("admin", tenant=tenant, key_id=who.key_id, subject=None,
                           data={"action": action, "actor": actor, **details})  # fmt: skip

    def delete_tenant(self, who: Principal, name: str) -> tuple[TenantTombstone, dict[str, int]]:
        """Delete a tenant and all its data (an operator's action, over HTTP)."""
        actor = f"key:{who.key_id}" if who.key_id else "no-auth"
        ctx = purge_context(self.settings, self.db, self.ledger, actor)
        return delete_tenant(ctx, self.tenants, name)

    def revoke_key(self, who: Principal, key_id: str) -> None:
        """Revoke a key the caller may manage; any other key answers 404 like a missing one."""
        try:
            key = self.tenants.key(key_id)
        except NotFound:
            raise NotFound(f"No active key '{key_id}'.", param="key_id") from None
        if not who.may_administer(key.tenant) or (key.role == "operator"
                                                   and not who.is_operator):  # fmt: skip
            raise NotFound(f"No active key '{key_id}'.", param="key_id")
        self.tenants.revoke(key_id, tenant_id=key.tenant)
        self.key_watch.mark_revoked(key_id)
        self.audit(who, "key_revoke", key.tenant, key_id=key_id)

    # -- the platform, as workloads see it (intramuros.platform.interface) ----------

    @property
    def tables(self) -> UnitOfWork:
        """The database, for a workload's own tables."""
        return self.db

    @property
    def auditor(self) -> Auditor:
        """The ledger, to append to."""
        return self.ledger

    def keeps_content(self, policy: TenantPolicy) -> bool:
        """Whether text may be kept: the tenant asks for it and a ledger key encrypts it."""
        return policy.store_content and self.ledger.keys is not None

    def on_purge(self, hook: Callable[[str], object]) -> None:
        """Run ``hook(actor)`` on the retention schedule."""
        self.purge_hooks.append(hook)

    async def begin_call(
        self, who: Principal, route: str, model: str, subject: str | None = None
    ) -> tuple[CallMeter, TenantPolicy]:
        """Open a metered call for a workload: model allowed, quotas, then the meter runs.

        Pair every successful ``begin_call`` with exactly one ``end_call``, with
        the exception if the work failed: that writes the request log, usage,
        metrics and the ledger record, as for chat calls.
        """
        meter = CallMeter(route, model)
        meter.subject = subject
        try:
            policy = await self.admission.admit(who, meter)
        except IntramurosError as exc:
            await self.recorder.finish(meter, exc)
            raise
        # The workload's own threads are not visible to the meter: its share of each
        # interval is an equal one (see meter/energy.py).
        self.energy.start(meter.energy)
        meter.queued_until = time.perf_counter()
        return meter, policy

    async def end_call(
        self,
        meter: CallMeter,
        exc: BaseException | None = None,
        *,
        events: Sequence[AuditEvent] = (),
        writes: Sequence[Callable[[Connection], object]] = (),
    ) -> bool:
        """Close a call opened with ``begin_call``; its records (and ``events`` and
        ``writes``, in the same transaction) are written by return. True if committed."""
        return await self.recorder.finish(meter, exc, events=events, writes=writes)

    async def record_open(self, meter: CallMeter) -> None:
        """Put the opening of a streamed call on record before its first byte is sent."""
        await self.recorder.open(meter)

    async def run_metered(self, meter: CallMeter, func: Callable[..., S], *args: Any) -> S:
        """``func(*args)`` in a worker thread whose CPU time counts as the call's.

        Workloads run their CPU-bound work (OCR, speech decoding) through this
        instead of ``asyncio.to_thread``, so that energy is apportioned by real
        CPU time rather than in equal shares.
        """

        def run() -> S:
            meter.energy.attach_current_thread()
            return func(*args)

        return await asyncio.to_thread(run)

    async def lane(self, model: str) -> _Lane:
        """The model ``model``, loaded (and verified) if it was not."""
        return _Lane(await self.pool.get(model))

    async def model_record(self, name: str) -> ModelRecord:
        """One catalogue record."""
        return await asyncio.to_thread(self.catalog.get, name)

    async def model_records(self) -> list[ModelRecord]:
        """Every catalogue record."""
        return await asyncio.to_thread(self.catalog.records)

    async def add_adapter(self, adapter: AdapterSpec) -> ModelRecord:
        """Register a LoRA adapter GGUF on its base; served from the next request."""
        return await asyncio.to_thread(self.catalog.register_adapter, adapter)

    async def remove_model(self, name: str) -> None:
        """Take a model out of the catalogue (a running server lets it go within a second)."""
        await asyncio.to_thread(self.catalog.remove, name)

    async def managed_tenant(self, who: Principal, name: str | None) -> str:
        """The id of a tenant ``who`` may manage (404 for any other, as for a missing one)."""
        return await asyncio.to_thread(scope.managed, self.tenants, who, name)

    def tenant_id(self, name: str) -> str:
        """The id of the live tenant called ``name`` (``default`` answers its own name)."""
        return self.tenants.resolve_or_implicit(name)

    def tenant_policies(self) -> dict[str, TenantPolicy]:
        """Every live tenant's policy, by id."""
        return {t.id: t.policy for t in self.tenants.all()}

    def key_principal(self, tenant: str, key_id: str | None) -> Principal | None:
        """Who a stored job acts as now: its key if still active, else None."""
        if key_id is None:
            return Principal(tenant=tenant, key_id=None, role="admin")
        try:
            info = self.tenants.key(key_id)
        except NotFound:
            return None
        if info.tenant != tenant or not info.active(time.time()):
            return None
        return Principal(tenant=tenant, key_id=info.id, role=info.role, models=info.models,
                         limits=info.limits, tenant_name=info.tenant_name)  # fmt: skip

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """The Prometheus registry of this app (the router adds its counters there)."""
        return self.metrics.registry

    async def audit_event(self, kind: str, *, tenant: str | None, key_id: str | None,
                          subject: str | None, data: Mapping[str, Any]) -> bool:  # fmt: skip
        """Append a record with the recorder's next burst (group commit), off the loop;
        True once committed. A failure is logged and counted, not raised."""
        return await self.recorder.event(kind, tenant=tenant, key_id=key_id, subject=subject,
                                         data=data)  # fmt: skip


class _Lane:
    """A loaded model as :class:`~intramuros.platform.interface.ModelLane`."""

    def __init__(self, loaded: LoadedModel) -> None:
        self._loaded = loaded

    @property
    def record(self) -> ModelRecord:
        return self._loaded.record

    @property
    def engine(self) -> Engine:
        return self._loaded.engine

    def stream(self, work: Callable[[threading.Event], Iterator[T]]) -> AsyncGenerator[T, None]:
        return self._loaded.lane.stream(work)


def _energy_meter(settings: Settings) -> EnergyMeter:
    """The energy meter on the best counters allowed (ConfigError if a required one lacks)."""
    try:
        sources = open_sources(settings.energy_source, settings.powercap_root)
    except FileNotFoundError as exc:
        raise ConfigError(f"energy_source={settings.energy_source}: {exc}") from None
    meter = EnergyMeter(sources, watts_per_core=settings.watts_per_core)
    log.info("energy per call: %s", meter.label)
    return meter
