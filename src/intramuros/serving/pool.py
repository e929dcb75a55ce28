"""Loaded models: verify, load once, hand out lanes, close at shutdown."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from intramuros.catalog.catalog import Catalog
from intramuros.catalog.records import ModelRecord
from intramuros.engines.base import Engine
from intramuros.engines.registry import engine_class
from intramuros.errors import ConfigError, EngineUnavailable
from intramuros.meter.metrics import Metrics
from intramuros.serving.scheduler import Lane
from intramuros.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready to serve: its record, engine and lane."""

    record: ModelRecord
    engine: Engine
    lane: Lane[Any]


class ModelPool:
    """Loads models on demand (or at start-up) and keeps them loaded."""

    def __init__(self, catalog: Catalog, settings: Settings, metrics: Metrics) -> None:
        self.catalog = catalog
        self.settings = settings
        self.metrics = metrics
        self._loaded: dict[str, LoadedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing = False

    def loaded(self) -> dict[str, LoadedModel]:
        """The models loaded now, by name."""
        return dict(self._loaded)

    async def get(self, name: str) -> LoadedModel:
        """The loaded model ``name``, loading (and verifying) it first if needed.

        Raises ``ModelNotFound``/``ModelFileMissing`` for unknown or missing
        models and ``ModelIntegrityError`` when the weights do not hash to
        their record; such a model is never loaded.
        """
        if self._closing:
            raise EngineUnavailable("The server is shutting down.")
        ready = self._loaded.get(name)
        if ready is not None:
            return ready
        record = self.catalog.get(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            ready = self._loaded.get(name)
            if ready is not None:
                return ready
            ready = await asyncio.to_thread(self._load, record)
            self._loaded[name] = ready
            self.metrics.models_loaded.set(len(self._loaded))
            return ready

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
            concurrency=cls.max_concurrency,
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
        for model in list(self._loaded.values()):
            model.lane.shutdown()
            await asyncio.to_thread(model.engine.close)
        self._loaded.clear()
