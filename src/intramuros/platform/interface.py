"""What a workload may do with the platform: the one interface it is given.

A workload (document AI, KYC, speech, and any third-party one) is built with a
:class:`Platform` and reaches the rest of the system only through it: it
admits a call for a principal (model allowlist, quotas, personal-data policy),
runs its work metered, on a model's lane when a model does the work, records
the outcome, appends audit records, keeps its own tables through a unit of
work, registers purge hooks, reads the catalogue, and calls models through the
same gate as any client. It never holds the core's database, ledger, model
pool, catalogue or tenant store.

The core inference service implements this interface; mypy holds workloads
to it (they annotate ``Platform``, not the service).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Connection

from intramuros.catalog.records import AdapterSpec, ModelRecord
from intramuros.engines.base import Engine
from intramuros.gate.policy import TenantPolicy
from intramuros.gate.tenants import Principal
from intramuros.platform.call import CallMeter
from intramuros.protocol import openai as p
from intramuros.settings import Settings

T = TypeVar("T")
S = TypeVar("S")


@dataclass(frozen=True)
class AuditEvent:
    """An audit record to append (see :meth:`Platform.end_call`)."""

    kind: str
    tenant: str | None
    key_id: str | None
    subject: str | None
    data: Mapping[str, Any]


class UnitOfWork(Protocol):
    """A workload's own tables: ``with tables.begin() as conn:`` is one transaction."""

    def begin(self) -> AbstractContextManager[Connection]:
        """A transaction (database failures surface as ``ServerError``)."""
        ...


class Auditor(Protocol):
    """Appends records to the ledger (blocking: call it off the event loop)."""

    def append(
        self,
        kind: str,
        *,
        tenant: str | None = None,
        key_id: str | None = None,
        subject: str | None = None,
        data: Mapping[str, Any],
        content: Mapping[str, Any] | None = None,
    ) -> Any:
        """Append one record; ``content`` is encrypted and kept apart (see the ledger)."""
        ...


class ModelLane(Protocol):
    """A loaded model and its lane: work on it runs in arrival order, in its threads."""

    @property
    def record(self) -> ModelRecord:
        """The model's catalogue record (provenance, capabilities)."""
        ...

    @property
    def engine(self) -> Engine:
        """The engine that runs it (drive it only from ``stream``'s work)."""
        ...

    def stream(self, work: Callable[[threading.Event], Iterator[T]]) -> AsyncGenerator[T, None]:
        """Run ``work(cancel)`` in the lane's worker thread; its items as they come.

        Closing the generator sets ``cancel``; the slot is freed when the work returns.
        """
        ...


class Platform(Protocol):
    """The platform as a workload sees it (see the module docstring)."""

    @property
    def settings(self) -> Settings:
        """The settings; a workload reads its own section with ``settings.section(...)``."""
        ...

    @property
    def tables(self) -> UnitOfWork:
        """The workload's tables (created by its migration steps)."""
        ...

    @property
    def auditor(self) -> Auditor:
        """The ledger, to append audit records to."""
        ...

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """The Prometheus registry of ``/metrics``, for a workload's own counters."""
        ...

    async def audit_event(
        self,
        kind: str,
        *,
        tenant: str | None,
        key_id: str | None,
        subject: str | None,
        data: Mapping[str, Any],
    ) -> bool:
        """Append a record off the event loop; False if it could not be written (logged
        and counted in ``intramuros_ledger_failures_total``: an answer matters more
        than its record)."""
        ...

    def keeps_content(self, policy: TenantPolicy) -> bool:
        """Whether a call under ``policy`` may keep its text (encrypted) in the ledger."""
        ...

    def on_purge(self, hook: Callable[[str], object]) -> None:
        """Run ``hook(actor)`` on the platform's retention schedule (blocking, in a thread)."""
        ...

    # -- calls -------------------------------------------------------------------

    async def begin_call(
        self, who: Principal, route: str, model: str, subject: str | None = None
    ) -> tuple[CallMeter, TenantPolicy]:
        """Admit a call: model allowed, quotas left; its meter runs from now."""
        ...

    async def end_call(
        self,
        meter: CallMeter,
        exc: BaseException | None = None,
        *,
        events: Sequence[AuditEvent] = (),
        writes: Sequence[Callable[[Connection], object]] = (),
    ) -> bool:
        """Record the call (request log, usage, metering, ledger) before returning.

        ``events`` (audit records) and ``writes`` (the workload's own rows,
        each a function of the transaction's connection) are written in the
        same transaction as the call's records, ahead of them: all of it is
        committed, or none. True once committed; False if it could not be
        written (logged and counted; a workload that must not answer without
        its record checks this).
        """
        ...

    async def record_open(self, meter: CallMeter) -> None:
        """Put a streamed call on record before its first byte is sent."""
        ...

    async def run_metered(self, meter: CallMeter, func: Callable[..., S], *args: Any) -> S:
        """``func(*args)`` in a worker thread whose CPU time counts as the call's."""
        ...

    async def lane(self, model: str) -> ModelLane:
        """The model ``model``, loaded (and verified) if it was not."""
        ...

    # -- the catalogue -----------------------------------------------------------------

    async def model_record(self, name: str) -> ModelRecord:
        """One catalogue record (``ModelNotFound`` if there is none)."""
        ...

    async def model_records(self) -> list[ModelRecord]:
        """Every catalogue record."""
        ...

    async def add_adapter(self, adapter: AdapterSpec) -> ModelRecord:
        """Register a llama.cpp LoRA adapter GGUF on its base (hashed, provenance kept)."""
        ...

    async def remove_model(self, name: str) -> None:
        """Take a model out of the catalogue."""
        ...

    # -- models through the gate, as a client would call them ---------------------------

    async def chat(
        self, req: p.ChatCompletionRequest, who: Principal
    ) -> p.ChatCompletionResponse | AsyncIterator[p.ChatCompletionChunk]:
        """A chat completion (admitted, metered, recorded like any client's)."""
        ...

    async def completion(
        self, req: p.CompletionRequest, who: Principal
    ) -> p.CompletionResponse | AsyncIterator[p.CompletionResponse]:
        """A text completion."""
        ...

    async def embeddings(self, req: p.EmbeddingRequest, who: Principal) -> p.EmbeddingResponse:
        """Embeddings."""
        ...

    # -- tenants -------------------------------------------------------------------

    async def managed_tenant(self, who: Principal, name: str | None) -> str:
        """The id of the tenant ``name`` (default: the caller's) that ``who`` may manage.

        Any other answers ``NotFound`` exactly as a tenant that does not exist.
        """
        ...

    def tenant_id(self, name: str) -> str:
        """The id of the live tenant called ``name`` (blocking; ``NotFound`` if none).

        The implicit tenant ``default`` (whose calls run without authentication)
        answers its own name.
        """
        ...

    def tenant_policies(self) -> dict[str, TenantPolicy]:
        """Every live tenant's policy, by id (blocking)."""
        ...

    def key_principal(self, tenant: str, key_id: str | None) -> Principal | None:
        """Who a stored job acts as now: its key, if still active (blocking; None if not)."""
        ...
