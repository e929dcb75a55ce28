"""The inference service: built once at start-up, it serves every model call.

Routes hand it wire requests; it validates them against the model, queues
them on the model's lane, runs the engine, meters the call (tokens, queue
wait, time to first token, latency), writes the request log, and returns
wire responses (or, for streams, an async iterator of wire chunks).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from intramuros.api import protocol as p
from intramuros.catalog.catalog import Catalog
from intramuros.catalog.records import ModelRecord
from intramuros.engines.base import Delta, Engine, Generation, TokenLogprob
from intramuros.errors import (
    ContextLengthExceeded,
    IntramurosError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from intramuros.gate import privacy
from intramuros.gate.policy import TenantPolicy
from intramuros.gate.privacy import PiiDecision
from intramuros.gate.quotas import Quotas, record_usage
from intramuros.gate.tenants import Principal, Tenants
from intramuros.ledger import Ledger, LedgerKeys
from intramuros.meter.energy import CallEnergy, EnergyMeter, open_sources
from intramuros.meter.metrics import Metrics
from intramuros.meter.tables import record_metering
from intramuros.serving import convert
from intramuros.serving.pool import LoadedModel, ModelPool
from intramuros.settings import Settings
from intramuros.store.db import Database

log = logging.getLogger(__name__)

FINGERPRINT = "intramuros-0.1"


@dataclass
class CallMeter:
    """Timings and counts of one call, filled in as it runs."""

    route: str
    model: str
    started: float = field(default_factory=time.perf_counter)
    queued_until: float | None = None
    first_token: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: int = 200
    error_code: str | None = None
    weights_sha256: str | None = None
    request_id: str = field(default_factory=lambda: secrets.token_hex(12))
    tenant: str | None = None
    key_id: str | None = None
    subject: str | None = None
    pii: PiiDecision | None = None
    # Only filled when the tenant keeps content (then redacted before it is written).
    keep_content: bool = False
    prompt_texts: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    # Workload-specific measures (pages, audio seconds, ...): written to the ledger record
    # under ``extra`` and shown in the ledger.
    extra: dict[str, Any] = field(default_factory=dict)
    energy: CallEnergy = field(default_factory=CallEnergy)
    ended: float | None = None
    cost_eur: float = 0.0
    co2e_grams: float = 0.0

    def mark_first(self) -> None:
        """Note the first generated output."""
        if self.first_token is None:
            self.first_token = time.perf_counter()


class InferenceService:
    """Everything between the HTTP routes and the engines."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.resolved_database_url())
        self.catalog = Catalog(self.db, settings)
        self.metrics = Metrics()
        self.pool = ModelPool(self.catalog, settings, self.metrics)
        self.tenants = Tenants(self.db)
        self.ledger = Ledger(self.db, LedgerKeys.load(settings.ledger_key_file))
        self.quotas = Quotas(self.db)
        self.energy = _energy_meter(settings)
        self.prices = settings.price_model()
        self.ready = False
        self.preload_error: str | None = None
        # Workloads' own purges (e.g. documents past retention), run on the same schedule
        # right after the ledger's; each is given the actor's name.
        self.purge_hooks: list[Callable[[str], object]] = []

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Migrate the database, register bundled models, preload the configured ones."""
        await asyncio.to_thread(self.db.migrate)
        await asyncio.to_thread(self.catalog.sync_bundled)
        if self.settings.egress_guard:
            self._guard_egress()
        for name in self.settings.preload_models:
            try:
                await self.pool.get(name)
            except IntramurosError as exc:
                # Keep serving other models; /readyz reports the failure.
                self.preload_error = f"{name}: {exc.message}"
                log.error("could not preload %s: %s", name, exc.message)
        self.ready = self.preload_error is None
        self._purger = asyncio.create_task(self._retention_loop())

    async def _retention_loop(self) -> None:
        """Purge stored text past each tenant's retention, then the workloads' hooks."""
        from intramuros.gate.retention import run_retention

        actor = "retention-schedule"
        while True:
            purges: list[Callable[[], object]] = [
                functools.partial(run_retention, self.tenants, self.ledger, actor=actor),
                *(functools.partial(hook, actor) for hook in self.purge_hooks),
            ]
            for purge in purges:
                try:
                    await asyncio.to_thread(purge)
                except IntramurosError as exc:
                    log.error("retention purge failed: %s", exc.message)
                except Exception:  # a database hiccup must not end the schedule for good
                    log.exception("retention purge failed")
            await asyncio.sleep(self.settings.purge_interval_seconds)

    def audit(self, who: Principal, action: str, tenant: str | None, **details: Any) -> None:
        """Append an admin action done over HTTP to the ledger."""
        actor = f"key:{who.key_id}" if who.key_id else "no-auth"
        self.ledger.append("admin", tenant=tenant, key_id=who.key_id, subject=None,
                           data={"action": action, "actor": actor, **details})  # fmt: skip

    def _guard_egress(self) -> None:
        """Install the process-wide egress guard: loopback plus upstream engines' hosts."""
        from intramuros.egress import EgressPolicy, install_guard

        hosts = [h for r in self.catalog.records() if (h := r.upstream_host()) is not None]
        if self.settings.database_url:
            db_host = self.db.engine.url.host
            if db_host:
                hosts.append(db_host)  # the shared PostgreSQL of several replicas

        def refused(target: str) -> None:
            self.metrics.egress_refused.inc()
            log.warning("egress refused: %s", target)

        install_guard(EgressPolicy(hosts=frozenset(hosts)), on_refused=refused)

    async def close(self) -> None:
        """Stop the purge schedule, unload models and close the database."""
        purger = getattr(self, "_purger", None)
        if purger is not None:
            purger.cancel()
        await self.pool.close()
        self.db.close()

    # -- models --------------------------------------------------------------

    def model_card(self, record: ModelRecord) -> p.ModelCard:
        """A record in ``/v1/models`` shape, provenance under ``intramuros``."""
        info = record.model_dump(mode="json", exclude={"name", "created", "options", "path"})
        info["loaded"] = record.name in self.pool.loaded()
        if record.engine == "openai-upstream":
            info["upstream"] = {"base_url": record.options.get("base_url")}
        return p.ModelCard(
            id=record.name, created=record.created, owned_by="intramuros", intramuros=info
        )

    def list_models(self, who: Principal) -> p.ModelList:
        """Every model in the catalogue that the caller's key may use."""
        return p.ModelList(
            data=[self.model_card(r) for r in self.catalog.records() if who.may_use(r.name)]
        )

    def policy_of(self, tenant: str) -> TenantPolicy:
        """The tenant's policy (the default one for a tenant not in the database)."""
        try:
            return self.tenants.policy(tenant)
        except NotFound:
            return TenantPolicy()

    def _privacy(
        self, meter: CallMeter, policy: TenantPolicy, texts: list[str], param: str
    ) -> PiiDecision:
        """Apply the tenant's personal-data policy to the request's texts."""
        decision = privacy.inspect(texts, policy)
        meter.pii = decision  # recorded in the ledger even when the call is blocked
        decision.enforce(param)
        meter.keep_content = policy.store_content and self.ledger.keys is not None
        if meter.keep_content:
            meter.prompt_texts = texts
        return decision

    async def _restored(
        self, deltas: AsyncGenerator[Delta, None], decision: PiiDecision
    ) -> AsyncGenerator[Delta, None]:
        """Deltas with pseudonyms turned back into real values, across chunk borders."""
        async with aclosing(deltas):
            if decision.pseudonymiser is None:
                async for delta in deltas:
                    yield delta
                return
            restorer = decision.pseudonymiser.stream_restorer()
            async for delta in deltas:
                delta.text = restorer.feed(delta.text)
                if delta.finish_reason is not None:
                    delta.text += restorer.flush()
                for i, call in enumerate(delta.tool_calls):
                    delta.tool_calls[i] = replace(call, arguments=decision.for_client(
                        call.arguments))  # fmt: skip
                yield delta

    async def _admit(self, who: Principal, meter: CallMeter) -> TenantPolicy:
        """Model allowed for this key? Limits left? Counts the request if so."""
        meter.tenant, meter.key_id = who.tenant, who.key_id
        if not who.may_use(meter.model):
            raise PermissionDenied(
                f"This API key may not use model '{meter.model}'.", param="model"
            )
        # One hop off the event loop for both database reads, not two.
        return await asyncio.to_thread(self._policy_and_quota, who)

    def _policy_and_quota(self, who: Principal) -> TenantPolicy:
        policy = self.policy_of(who.tenant)
        scopes = [("tenant", who.tenant, policy.limits)]
        if who.key_id is not None:
            scopes.append(("key", who.key_id, who.limits))
        self.quotas.admit(scopes)
        return policy

    # -- calls made by workloads (OCR, speech, screening) -------------------------

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
            policy = await self._admit(who, meter)
        except IntramurosError as exc:
            self._finish(meter, exc)
            raise
        # The workload's own threads are not visible to the meter: its share of each
        # interval is an equal one (see meter/energy.py).
        self.energy.start(meter.energy)
        meter.queued_until = time.perf_counter()
        return meter, policy

    def end_call(self, meter: CallMeter, exc: BaseException | None = None) -> None:
        """Close a call opened with ``begin_call`` (see there)."""
        self._finish(meter, exc)

    async def run_metered(self, meter: CallMeter, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` in a worker thread whose CPU time counts as the call's.

        Workloads run their CPU-bound work (OCR, speech decoding) through this
        instead of ``asyncio.to_thread``, so that energy is apportioned by real
        CPU time rather than in equal shares.
        """

        def run() -> Any:
            meter.energy.attach_current_thread()
            return func(*args)

        return await asyncio.to_thread(run)

    # -- chat ----------------------------------------------------------------

    async def chat(
        self, req: p.ChatCompletionRequest, who: Principal
    ) -> p.ChatCompletionResponse | AsyncIterator[p.ChatCompletionChunk]:
        """A chat completion, whole or as a stream of chunks."""
        meter = CallMeter("/v1/chat/completions", req.model)
        meter.subject = req.user or _subject_of(req.metadata)
        try:
            policy = await self._admit(who, meter)
            model = await self.pool.get(req.model)
            params = convert.chat_params(req, model.record)
            meter.weights_sha256 = model.record.sha256
            texts = privacy.message_texts(params.messages)
            decision = self._privacy(meter, policy, texts, "messages")
            params = replace(params, messages=privacy.protect_messages(list(params.messages),
                                                                       decision))  # fmt: skip
            engine = model.engine
            self._check_context(engine, lambda: engine.count_chat_tokens(params),
                                params.sampling.max_tokens, "messages", model)  # fmt: skip
            deltas = self._restored(await self._open_stream(
                model, meter, lambda cancel: engine.stream_chat(params, cancel)
            ), decision)  # fmt: skip
        except IntramurosError as exc:
            self._finish(meter, exc)
            raise
        ident = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return self._chat_chunks(deltas, meter, ident, created, req.model, include_usage)
        gen = await self._gather(deltas, meter)
        message = p.ChatMessageOut(content=gen.text if not gen.tool_calls else (gen.text or None))
        if gen.tool_calls:
            message.tool_calls = [
                p.ToolCallOut(id=c.id, function=p.FunctionCallOut(name=c.name,
                                                                  arguments=c.arguments))
                for c in gen.tool_calls
            ]  # fmt: skip
        choice = p.ChatChoice(
            index=0,
            message=message,
            logprobs=_chat_logprobs(gen.logprobs) if params.sampling.logprobs is not None else None,
            finish_reason=gen.finish_reason,
        )
        return p.ChatCompletionResponse(
            id=ident, created=created, model=req.model, system_fingerprint=FINGERPRINT,
            choices=[choice], usage=_usage_of(meter),
        )  # fmt: skip

    async def _chat_chunks(
        self,
        deltas: AsyncGenerator[Delta, None],
        meter: CallMeter,
        ident: str,
        created: int,
        model: str,
        include_usage: bool,
    ) -> AsyncIterator[p.ChatCompletionChunk]:
        def chunk(delta: p.ChatDelta, finish: str | None = None,
                  logprobs: list[TokenLogprob] | None = None) -> p.ChatCompletionChunk:  # fmt: skip
            return p.ChatCompletionChunk(
                id=ident, created=created, model=model, system_fingerprint=FINGERPRINT,
                choices=[p.ChatChunkChoice(
                    index=0, delta=delta, finish_reason=finish,
                    logprobs=_chat_logprobs(logprobs) if logprobs else None,
                )],
                usage=None,
            )  # fmt: skip

        yield chunk(p.ChatDelta(role="assistant", content=""))
        async with aclosing(self._metered(deltas, meter)) as metered:
            async for delta in metered:
                if delta.text or delta.logprobs:
                    yield chunk(p.ChatDelta(content=delta.text), logprobs=delta.logprobs)
                if delta.tool_calls:
                    yield chunk(p.ChatDelta(tool_calls=[
                    p.ToolCallDelta(index=i, id=c.id, type="function",
                                    function=p.FunctionCallDelta(name=c.name,
                                                                 arguments=c.arguments))
                    for i, c in enumerate(delta.tool_calls)
                ]))  # fmt: skip
                if delta.finish_reason is not None:
                    yield chunk(p.ChatDelta(), finish=delta.finish_reason)
        if include_usage:
            yield p.ChatCompletionChunk(
                id=ident, created=created, model=model, system_fingerprint=FINGERPRINT,
                choices=[], usage=_usage_of(meter),
            )  # fmt: skip

    # -- completions ---------------------------------------------------------

    async def completion(
        self, req: p.CompletionRequest, who: Principal
    ) -> p.CompletionResponse | AsyncIterator[p.CompletionResponse]:
        """A text completion (one choice per prompt), whole or streamed."""
        meter = CallMeter("/v1/completions", req.model)
        meter.subject = req.user or _subject_of(req.metadata)
        try:
            policy = await self._admit(who, meter)
            model = await self.pool.get(req.model)
            meter.weights_sha256 = model.record.sha256
            prompts = convert.completion_prompts(req)
            decision = self._privacy(meter, policy, [x for x in prompts if isinstance(x, str)],
                                     "prompt")  # fmt: skip
            prompts = [decision.for_model(x) if isinstance(x, str) else x for x in prompts]
            all_params = [convert.completion_params(req, model.record, pr) for pr in prompts]
            engine = model.engine
            for params in all_params:
                prompt = params.prompt
                counter: Callable[[], int] = (
                    partial(engine.count_tokens, prompt) if isinstance(prompt, str)
                    else partial(len, prompt)
                )  # fmt: skip
                self._check_context(engine, counter, params.sampling.max_tokens, "prompt", model)
            first = self._restored(await self._open_stream(
                model, meter, partial(engine.stream_completion, all_params[0])
            ), decision)  # fmt: skip
        except IntramurosError as exc:
            self._finish(meter, exc)
            raise
        ident = "cmpl-" + secrets.token_hex(12)
        created = int(time.time())

        async def streams() -> AsyncIterator[tuple[int, AsyncGenerator[Delta, None]]]:
            yield 0, first
            for i, params in enumerate(all_params[1:], start=1):
                yield (
                    i,
                    await self._open_stream(
                        model, meter, partial(engine.stream_completion, params)
                    ),
                )

        want_logprobs = req.logprobs is not None
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return self._completion_chunks(streams(), meter, ident, created, req.model,
                                           want_logprobs, include_usage)  # fmt: skip
        choices: list[p.CompletionChoice] = []
        async for index, deltas in streams():
            gen = await self._gather(deltas, meter, finish=index == len(all_params) - 1)
            choices.append(p.CompletionChoice(
                index=index, text=gen.text, finish_reason=gen.finish_reason,
                logprobs=_completion_logprobs(gen.logprobs) if want_logprobs else None,
            ))  # fmt: skip
        return p.CompletionResponse(
            id=ident, created=created, model=req.model, system_fingerprint=FINGERPRINT,
            choices=choices, usage=_usage_of(meter),
        )  # fmt: skip

    async def _completion_chunks(
        self,
        streams: AsyncIterator[tuple[int, AsyncGenerator[Delta, None]]],
        meter: CallMeter,
        ident: str,
        created: int,
        model: str,
        want_logprobs: bool,
        include_usage: bool,
    ) -> AsyncIterator[p.CompletionResponse]:
        try:
            async for index, deltas in streams:
                async with aclosing(self._metered(deltas, meter, finish=False)) as metered:
                    async for delta in metered:
                        if delta.text or delta.finish_reason or delta.logprobs:
                            yield p.CompletionResponse(
                            id=ident, created=created, model=model,
                            system_fingerprint=FINGERPRINT,
                            choices=[p.CompletionChoice(
                                index=index, text=delta.text, finish_reason=delta.finish_reason,
                                logprobs=(_completion_logprobs(delta.logprobs)
                                          if want_logprobs else None),
                            )],
                        )  # fmt: skip
        except IntramurosError as exc:
            self._finish(meter, exc)
            raise
        except BaseException as exc:
            meter.status = 499
            self._finish(meter, exc)
            raise
        self._finish(meter)
        if include_usage:
            yield p.CompletionResponse(id=ident, created=created, model=model, choices=[],
                                       usage=_usage_of(meter))  # fmt: skip

    # -- embeddings ------------------------------------------------------------

    async def embeddings(self, req: p.EmbeddingRequest, who: Principal) -> p.EmbeddingResponse:
        """Vectors for each input, as floats or base64 of little-endian float32."""
        meter = CallMeter("/v1/embeddings", req.model)
        meter.subject = req.user or _subject_of(req.metadata)
        try:
            policy = await self._admit(who, meter)
            model = await self.pool.get(req.model)
            meter.weights_sha256 = model.record.sha256
            convert.require(model.record, "embeddings", "embeddings")
            inputs = convert.embedding_inputs(req, self.settings.max_embedding_inputs)
            decision = self._privacy(meter, policy, [x for x in inputs if isinstance(x, str)],
                                     "input")  # fmt: skip
            meter.keep_content = False  # vectors are not text worth keeping
            inputs = [decision.for_model(x) if isinstance(x, str) else x for x in inputs]
            engine = model.engine
            if engine.counts_tokens:
                limit = engine.context_length
                for i, item in enumerate(inputs):
                    n = engine.count_tokens(item) if isinstance(item, str) else len(item)
                    if n > limit:
                        raise ContextLengthExceeded(model=req.model, context_length=limit,
                                                    prompt_tokens=n, max_tokens=0,
                                                    param=f"input[{i}]")  # fmt: skip
            result = await self._call(model, meter, lambda: engine.embed(inputs))
        except IntramurosError as exc:
            self._finish(meter, exc)
            raise
        dims = len(result.vectors[0]) if result.vectors else 0
        wanted = req.dimensions if req.dimensions is not None else req.output_dimension
        if wanted is not None and wanted != dims:
            refusal = InvalidRequest(
                f"Model '{req.model}' produces {dims}-dimensional vectors; it cannot "
                f"produce {wanted}.",
                param="dimensions" if req.dimensions is not None else "output_dimension",
            )
            self._finish(meter, refusal)
            raise refusal
        meter.prompt_tokens = result.prompt_tokens
        self._finish(meter)
        data = [
            p.EmbeddingData(index=i, embedding=(
                base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")
                if req.encoding_format == "base64" else v
            ))
            for i, v in enumerate(result.vectors)
        ]  # fmt: skip
        return p.EmbeddingResponse(
            id="embd-" + secrets.token_hex(12), data=data, model=req.model,
            usage=p.EmbeddingUsage(prompt_tokens=result.prompt_tokens,
                                   total_tokens=result.prompt_tokens,
                                   **metering_of(meter).model_dump(exclude_none=True)),
        )  # fmt: skip

    # -- machinery -------------------------------------------------------------

    def _check_context(
        self,
        engine: Engine,
        count: Callable[[], int],
        max_tokens: int | None,
        param: str,
        model: LoadedModel,
    ) -> None:
        """Refuse a prompt that cannot fit before it waits in the queue.

        Counting runs on the event loop: tokenising is microseconds per
        kilobyte and does not touch the model's decoding state.
        """
        if not engine.counts_tokens:
            return
        n_ctx = engine.context_length
        prompt_tokens = count()
        wanted = max_tokens if max_tokens is not None else 1
        if prompt_tokens + wanted > n_ctx:
            raise ContextLengthExceeded(model=model.record.name, context_length=n_ctx,
                                        prompt_tokens=prompt_tokens, max_tokens=wanted,
                                        param=param)  # fmt: skip

    async def _open_stream(
        self,
        model: LoadedModel,
        meter: CallMeter,
        work: Callable[[Any], Iterator[Delta]],
    ) -> AsyncGenerator[Delta, None]:
        """Start ``work`` on the model's lane and wait for its first delta.

        Waiting for the first delta means errors found when the engine starts
        (context too long, bad grammar) still become a proper HTTP status,
        before any byte of a stream is sent.
        """
        stream = model.lane.stream(self._energy_metered(meter, work))
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            first = None
        except BaseException:
            await stream.aclose()
            raise
        if meter.queued_until is None:
            meter.queued_until = time.perf_counter()

        async def rest() -> AsyncGenerator[Delta, None]:
            async with aclosing(stream):
                if first is not None:
                    yield first
                async for delta in stream:
                    yield delta

        return rest()

    async def _call(self, model: LoadedModel, meter: CallMeter, work: Callable[[], Any]) -> Any:
        def metered() -> Any:
            meter.queued_until = time.perf_counter()
            self.energy.start(meter.energy)
            meter.energy.attach_current_thread()
            try:
                return work()
            finally:
                self.energy.stop(meter.energy)

        result = await model.lane.call(metered)
        meter.first_token = time.perf_counter()
        return result

    def _energy_metered(
        self, meter: CallMeter, work: Callable[[Any], Iterator[Delta]]
    ) -> Callable[[Any], Iterator[Delta]]:
        """``work`` with the call's energy metered while it runs in the lane's worker thread."""

        def run(cancel: Any) -> Iterator[Delta]:
            if meter.queued_until is None:
                meter.queued_until = time.perf_counter()  # the wait ends when the worker starts
            self.energy.start(meter.energy)
            meter.energy.attach_current_thread()
            try:
                yield from work(cancel)
            finally:
                self.energy.stop(meter.energy)

        return run

    async def _metered(
        self, deltas: AsyncGenerator[Delta, None], meter: CallMeter, finish: bool = True
    ) -> AsyncGenerator[Delta, None]:
        """Pass deltas through, noting first token and usage; log the call at the end."""
        try:
            async with aclosing(deltas):
                async for delta in deltas:
                    if delta.text or delta.tool_calls:
                        meter.mark_first()
                    if meter.keep_content:
                        meter.output.append(delta.text)
                        meter.output.extend(c.arguments for c in delta.tool_calls)
                    if delta.usage is not None:
                        meter.prompt_tokens += delta.usage.prompt_tokens
                        meter.completion_tokens += delta.usage.completion_tokens
                    yield delta
        except IntramurosError as exc:
            if finish:
                self._finish(meter, exc)
            raise
        except BaseException as exc:
            # The client went away (cancelled) or something unexpected broke.
            if finish:
                meter.status = (
                    499 if isinstance(exc, GeneratorExit | asyncio.CancelledError) else 500
                )
                self._finish(meter, exc)
            raise
        if finish:
            self._finish(meter)

    async def _gather(
        self, deltas: AsyncGenerator[Delta, None], meter: CallMeter, finish: bool = True
    ) -> Generation:
        text: list[str] = []
        gen = Generation(text="", finish_reason="stop", usage=_zero())
        async with aclosing(self._metered(deltas, meter, finish=finish)) as metered:
            async for delta in metered:
                text.append(delta.text)
                gen.logprobs.extend(delta.logprobs)
                gen.tool_calls.extend(delta.tool_calls)
                if delta.finish_reason is not None:
                    gen.finish_reason = delta.finish_reason
                if delta.usage is not None:
                    gen.usage = delta.usage
        gen.text = "".join(text)
        return gen

    def _finish(self, meter: CallMeter, exc: BaseException | None = None) -> None:
        """Record the call in metrics and in the request log."""
        if isinstance(exc, IntramurosError):
            meter.status, meter.error_code = exc.status, exc.code
        elif exc is not None:
            meter.error_code = meter.error_code or type(exc).__name__
        now = time.perf_counter()
        meter.ended = now
        self.energy.stop(meter.energy)
        energy = meter.energy
        meter.cost_eur = self.prices.cost_eur(energy.joules, energy.machine_seconds)
        meter.co2e_grams = self.prices.co2e_grams(energy.joules)
        m = self.metrics
        m.energy.labels(meter.model, energy.source).inc(energy.joules)
        m.cpu_seconds.labels(meter.model).inc(energy.cpu_seconds)
        m.cost.labels(meter.model).inc(meter.cost_eur)
        m.co2e.labels(meter.model).inc(meter.co2e_grams)
        m.requests.labels(meter.route, meter.model, str(meter.status)).inc()
        m.latency.labels(meter.route, meter.model).observe(now - meter.started)
        m.tokens.labels(meter.model, "prompt").inc(meter.prompt_tokens)
        m.tokens.labels(meter.model, "completion").inc(meter.completion_tokens)
        if meter.first_token is not None:
            m.ttft.labels(meter.model).observe(meter.first_token - meter.started)
        if meter.queued_until is not None:
            m.queue_wait.labels(meter.model).observe(meter.queued_until - meter.started)
        try:
            self.db.log_request(
                request_id=meter.request_id, ts=time.time(), route=meter.route,
                model=meter.model, status=meter.status, error_code=meter.error_code,
                prompt_tokens=meter.prompt_tokens, completion_tokens=meter.completion_tokens,
                latency_ms=(now - meter.started) * 1000,
                ttft_ms=((meter.first_token - meter.started) * 1000
                         if meter.first_token is not None else None),
                weights_sha256=meter.weights_sha256, tenant=meter.tenant, key_id=meter.key_id,
                cpu_seconds=energy.cpu_seconds, energy_joules=energy.joules,
                energy_source=energy.source, cost_eur=meter.cost_eur,
                co2e_grams=meter.co2e_grams,
            )  # fmt: skip
            if meter.tenant is not None and meter.status < 400:
                tokens = meter.prompt_tokens + meter.completion_tokens
                scopes = [("tenant", meter.tenant)]
                if meter.key_id is not None:
                    scopes.append(("key", meter.key_id))
                self.quotas.charge(scopes, tokens)
                record_usage(self.db, tenant=meter.tenant, key_id=meter.key_id or "-",
                             model=meter.model, prompt=meter.prompt_tokens,
                             completion=meter.completion_tokens, now=time.time())  # fmt: skip
                record_metering(self.db, tenant=meter.tenant, key_id=meter.key_id or "-",
                                model=meter.model, now=time.time(),
                                cpu_seconds=energy.cpu_seconds, energy_joules=energy.joules,
                                cost_eur=meter.cost_eur,
                                co2e_grams=meter.co2e_grams)  # fmt: skip
        except IntramurosError as err:  # the answer matters more than its log line
            log.error("could not write request log: %s", err.message)
        self._record(meter, now)

    def _record(self, meter: CallMeter, now: float) -> None:
        """Append the call to the ledger: who, what, which weights, what policy did."""
        data: dict[str, Any] = {
            "request_id": meter.request_id, "route": meter.route, "model": meter.model,
            "weights_sha256": meter.weights_sha256, "status": meter.status,
            "error_code": meter.error_code, "prompt_tokens": meter.prompt_tokens,
            "completion_tokens": meter.completion_tokens,
            "latency_ms": round((now - meter.started) * 1000, 3),
            "pii": meter.pii.summary() if meter.pii else {},
            **{k: v for k, v in metering_of(meter).model_dump().items()
               if v is not None and k not in ("latency_ms", "routing")},
        }  # fmt: skip
        if meter.extra:
            data["extra"] = meter.extra
        content = None
        if meter.keep_content and meter.pii is not None:
            decision = meter.pii
            content = {
                "prompt": [decision.for_record(t) for t in meter.prompt_texts],
                "output": decision.for_record("".join(meter.output)),
            }
        try:
            self.ledger.append("model_call", tenant=meter.tenant, key_id=meter.key_id,
                               subject=meter.subject, data=data, content=content)  # fmt: skip
        except IntramurosError as err:
            # A call whose record cannot be written is still answered; the failure is
            # loud in the log and in the metrics, where operators look.
            self.metrics.ledger_failures.inc()
            log.error("could not append to the ledger: %s", err.message)


def _subject_of(metadata: dict[str, Any] | None) -> str | None:
    """The end user's id from ``metadata.user`` (or ``user_id``), if the client gave one."""
    value = (metadata or {}).get("user") or (metadata or {}).get("user_id")
    return str(value)[:200] if value is not None else None  # the ledger's subject limit


def _zero() -> Any:
    from intramuros.engines.base import Usage

    return Usage(0, 0)


def _energy_meter(settings: Settings) -> EnergyMeter:
    """The energy meter on the best counters allowed (ConfigError if a required one lacks)."""
    from intramuros.errors import ConfigError

    try:
        sources = open_sources(settings.energy_source, settings.powercap_root)
    except FileNotFoundError as exc:
        raise ConfigError(f"energy_source={settings.energy_source}: {exc}") from None
    meter = EnergyMeter(sources, watts_per_core=settings.watts_per_core)
    log.info("energy per call: %s", meter.label)
    return meter


def _ms(start: float, end: float | None) -> float | None:
    return round((end - start) * 1000, 3) if end is not None else None


def metering_of(meter: CallMeter) -> p.Metering:
    """The call's timings, energy, cost and CO2e, as the extra ``usage`` fields."""
    decode = None
    if meter.first_token is not None and meter.ended is not None and meter.completion_tokens > 1:
        span = meter.ended - meter.first_token
        # Tokens after the first one, over the time after the first one.
        decode = round((meter.completion_tokens - 1) / span, 3) if span > 0 else None
    energy = meter.energy
    return p.Metering(
        queue_ms=_ms(meter.started, meter.queued_until), ttft_ms=_ms(meter.started,
                                                                     meter.first_token),
        latency_ms=_ms(meter.started, meter.ended), decode_tokens_per_second=decode,
        cpu_seconds=round(energy.cpu_seconds, 6), energy_joules=round(energy.joules, 6),
        energy_source=energy.source, cost_eur=round(meter.cost_eur, 12),
        co2e_grams=round(meter.co2e_grams, 9),
    )  # fmt: skip


def _usage_of(meter: CallMeter) -> p.UsageOut:
    return p.UsageOut(prompt_tokens=meter.prompt_tokens,
                      completion_tokens=meter.completion_tokens,
                      total_tokens=meter.prompt_tokens + meter.completion_tokens,
                      **metering_of(meter).model_dump(exclude_none=True))  # fmt: skip


def _chat_logprobs(items: list[TokenLogprob] | None) -> p.ChoiceLogprobs:
    return p.ChoiceLogprobs(content=[
        p.TokenLogprobOut(token=t.token, logprob=t.logprob, bytes=t.bytes, top_logprobs=[
            p.TopLogprobOut(token=a.token, logprob=a.logprob, bytes=a.bytes) for a in t.top
        ])
        for t in items or []
    ])  # fmt: skip


def _completion_logprobs(items: list[TokenLogprob]) -> p.CompletionLogprobs:
    offsets: list[int] = []
    pos = 0
    for t in items:
        offsets.append(pos)
        pos += len(t.token)
    return p.CompletionLogprobs(
        tokens=[t.token for t in items],
        token_logprobs=[t.logprob for t in items],
        top_logprobs=[{a.token: a.logprob for a in t.top} for t in items],
        text_offset=offsets,
    )
