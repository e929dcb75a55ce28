"""Loaded models: verify, load once, hand out lanes, close at shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from intramuros.catalog.catalog import Catalog
from intramuros.catalog.records import ModelRecord
from intramuros.engines.base import Engine
from intramuros.engines.registry import engine_class
from intramuros.errors import ConfigError, EngineUnavailable, ModelNotFound
from intramuros.meter.metrics import Metrics
from intramuros.serving.scheduler import Lane
from intramuros.settings import Settings

log = logging.getLogger(__name__)

# How often a loaded adapter's record is read again: one removed from the catalogue
# (or replaced) while serving is let go within this many seconds.
ADAPTER_RECHECK_SECONDS = 1.0


@dataclass
class LoadedModel:
    """A model ready to serve: its record, engine and lane.

    An adapter's engine is its base's, with the adapter applied to its requests,
    and its lane is its base's: they share the base's slots and decode steps.
    """

    record: ModelRecord
    engine: Engine
    lane: Lane[Any]
    checked: float = 0.0


class ModelPool:
    """Loads models on demand (or at start-up) and keeps them loaded."""

    def __init__(self, catalog: Catalog, settings: Settings, metrics: Metrics) -> None:
        self.catalog = catalog
        self.settings = settings
        self.metrics = metrics
        self._loaded: dict[str, LoadedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing = False
        metrics.export_engines(
            lambda: [(name, m.engine.stats()) for name, m in list(self._loaded.items())]
        )

    def loaded(self) -> dict[str, LoadedModel]:
        """The models loaded now, by name."""
        return dict(self._loaded)

    async def get(self, name: str, tenant: str | None = None) -> LoadedModel:
        """The loaded model ``name``, loading (and verifying) it first if needed.

        Raises ``ModelNotFound``/``ModelFileMissing`` for unknown or missing
        models and ``ModelIntegrityError`` when the weights do not hash to
        their record; such a model is never loaded. With ``tenant`` (a
        client's call), a model another tenant owns (one fine-tuned on its
        data) is ``ModelNotFound``, exactly as one that does not exist.
        """
        if self._closing:
            raise EngineUnavailable("The server is shutting down.")
        ready = self._loaded.get(name)
        if ready is not None and (ready.record.base is None or self._adapter_current(ready)):
            _check_owner(ready.record, tenant)
            return ready
        record = self.catalog.get(name)
        _check_owner(record, tenant)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            ready = self._loaded.get(name)
            if ready is not None and ready.record == record:
                return ready
            if record.base is not None:
                base = await self.get(record.base)
                ready = await asyncio.to_thread(self._load_adapter, record, base)
            else:
                ready = await asyncio.to_thread(self._load, record)
            self._loaded[name] = ready
            self.metrics.models_loaded.set(len(self._loaded))
            return ready

    def _adapter_current(self, ready: LoadedModel) -> bool:
        """Whether a loaded adapter is still the catalogue's (read at most once a second).

        One removed is let go here (``ModelNotFound``); one replaced is loaded again.
        """
        now = time.monotonic()
        if now - ready.checked < ADAPTER_RECHECK_SECONDS:
            return True
        name = ready.record.name
        try:
            record = self.catalog.get(name)
        except ModelNotFound:
            self._unload_adapter(ready)
            raise
        ready.checked = now
        if record == ready.record:
            return True
        self._unload_adapter(ready)
        return False

    def _unload_adapter(self, ready: LoadedModel) -> None:
        if self._loaded.get(ready.record.name) is ready:
            del self._loaded[ready.record.name]
            self.metrics.models_loaded.set(len(self._loaded))
        ready.engine.close()  # lets the adapter go once no request uses it; the base stays
        log.info("let go of adapter %s", ready.record.name)

    def _load_adapter(self, record: ModelRecord, base: LoadedModel) -> LoadedModel:
        self.catalog.verify_record(record)
        engine = base.engine.with_adapter(record)
        log.info("adapter %s on %s (sha256 %s)", record.name, base.record.name, record.sha256)
        return LoadedModel(record=record, engine=engine, lane=base.lane,
                           checked=time.monotonic())  # fmt: skip

    def _load(self, record: ModelRecord) -> LoadedModel:
        self.catalog.ensure_files(record)
        self.catalog.verify_record(record)
        try:
            cls = engine_class(record.engine)
        except ConfigError as exc:
            log.error("model %s: %s", record.name, exc.message)
            raise EngineUnavailable(
                f"Model '{record.name}' needs engine '{record.engine}', which is not available."
            ) from None
        engine = cls(record, self.settings)
        self._allow_upstream(record)
        engine.load()
        log.info("loaded model %s (%s, sha256 %s)", record.name, record.engine, record.sha256)
        gauge = self.metrics.queue_depth.labels(model=record.name)
        lane: Lane[Any] = Lane(
            record.name,
            concurrency=engine.concurrency,
            queue_limit=self.settings.queue_limit,
            retry_after=self.settings.retry_after_seconds,
            on_depth=gauge.set,
        )
        return LoadedModel(record=record, engine=engine, lane=lane)

    @staticmethod
    def _allow_upstream(record: ModelRecord) -> None:
        """A model added after start-up: let the egress guard reach its engine's declared hosts."""
        from intramuros.egress import current_guard
        from intramuros.engines.registry import model_hosts

        guard = current_guard()
        if guard is None:
            return
        new = [h for h in model_hosts(record.engine, record.options)
               if not guard.policy.allows_name(h)]  # fmt: skip
        if new:
            guard.update(guard.policy.with_hosts(*new))

    async def close(self) -> None:
        """Unload everything."""
        self._closing = True
        # Adapters first: their engines are views of their bases'.
        models = sorted(self._loaded.values(), key=lambda m: m.record.base is None)
        for model in models:
            if model.record.base is None:
                model.lane.shutdown()
            await asyncio.to_thread(model.engine.close)
        self._loaded.clear()


def _check_owner(record: ModelRecord, tenant: str | None) -> None:
    if tenant is not None and record.owner is not None and record.owner != tenant:
        raise ModelNotFound(record.name)
