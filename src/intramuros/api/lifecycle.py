"""What the server runs besides answering requests: the purge schedule and the egress guard.

The app starts them in its lifespan, after the core service and the workloads
have started, and stops the schedule when it shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable

from intramuros.errors import IntramurosError
from intramuros.gate.retention import run_retention
from intramuros.serving.service import InferenceService
from intramuros.serving.tenancy import finish_pending, purge_context

log = logging.getLogger(__name__)

ACTOR = "retention-schedule"


class PurgeSchedule:
    """Every ``purge_interval_seconds``: finish cut-short tenant deletions, purge stored
    text past each tenant's retention, then run the workloads' purge hooks."""

    def __init__(self, core: InferenceService) -> None:
        self.core = core
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the schedule in the background."""
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        """Stop the schedule (a purge in flight finishes in its thread)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        core = self.core
        while True:
            ctx = purge_context(core.settings, core.db, core.ledger, ACTOR)
            purges: list[Callable[[], object]] = [
                functools.partial(finish_pending, ctx, core.tenants),
                functools.partial(run_retention, core.tenants, core.ledger, actor=ACTOR),
                *(functools.partial(hook, ACTOR) for hook in core.purge_hooks),
            ]
            for purge in purges:
                try:
                    await asyncio.to_thread(purge)
                except IntramurosError as exc:
                    log.error("retention purge failed: %s", exc.message)
                except Exception:  # a database hiccup must not end the schedule for good
                    log.exception("retention purge failed")
            await asyncio.sleep(core.settings.purge_interval_seconds)


def guard_egress(core: InferenceService) -> None:
    """Install the process-wide egress guard: loopback plus the hosts the catalogue's models
    declare (each engine plug-in derives them from a model's options: ``Engine.egress_hosts``)."""
    from intramuros.egress import EgressPolicy, install_guard
    from intramuros.engines.registry import model_hosts

    hosts = [h for r in core.catalog.records() for h in model_hosts(r.engine, r.options)]
    if core.settings.database_url:
        db_host = core.db.engine.url.host
        if db_host:
            hosts.append(db_host)  # the shared PostgreSQL of several replicas

    def refused(target: str) -> None:
        core.metrics.egress_refused.inc()
        log.warning("egress refused: %s", target)

    install_guard(EgressPolicy(hosts=frozenset(hosts)), on_refused=refused)
