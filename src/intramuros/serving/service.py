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
from dataclasses import replace
from functools import partial
from pathlib import PurePath
from typing import Any, TypeVar

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
from intramuros.gate.keywatch import KeyWatch
from intramuros.gate.policy import TenantPolicy
from intramuros.gate.privacy import PiiDecision
from intramuros.gate.quotas import Quotas
from intramuros.gate.request_texts import (
    ChatTexts,
    CompletionTexts,
    EmbeddingTexts,
    RequestTexts,
    chat_size,
)
from intramuros.gate.tenants import Principal, Tenants, TenantTombstone
from intramuros.ledger import Ledger, LedgerKeys
from intramuros.meter.energy import EnergyMeter, open_sources
from intramuros.meter.metrics import Metrics
from intramuros.serving import convert
from intramuros.serving.calls import (
    CallMeter,
    chat_logprobs,
    completion_logprobs,
    metering_of,
    usage_of,
    zero_usage,
)
from intramuros.serving.offload import run_cpu
from intramuros.serving.pool import LoadedModel, ModelPool
from intramuros.serving.recorder import CallRecorder
from intramuros.serving.tenancy import PurgeContext, delete_tenant, finish_pending
from intramuros.settings import Settings
from intramuros.store.db import Database

log = logging.getLogger(__name__)

FINGERPRINT = "intramuros-0.1"
# Requests with fewer characters than this are scanned for personal data on the
# event loop (well under a millisecond); larger ones in the CPU pool.
_INLINE_PRIVACY = 4096
_T = TypeVar("_T")


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
        self.key_watch = KeyWatch(self.tenants)
        self.energy = _energy_meter(settings)
        self.prices = settings.price_model()
        self.recorder = CallRecorder(self.db, self.ledger, self.quotas, self.metrics,
                                     self.energy, self.prices)  # fmt: skip
        self.ready = False
        self.preload_error: str | None = None
        # Workloads' own purges (e.g. documents past retention), run on the same schedule
        # right after the ledger's; each is given the actor's name.
        self.purge_hooks: list[Callable[[str], object]] = []

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Migrate the database, register bundled models, preload the configured ones."""
        await asyncio.to_thread(self.db.migrate)
        # A keyed ledger and no key: refuse to start rather than fail to record every call.
        await asyncio.to_thread(self.ledger.require_appendable)
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
        await self.key_watch.start()

    async def _retention_loop(self) -> None:
        """Purge stored text past each tenant's retention, then the workloads' hooks."""
        from intramuros.gate.retention import run_retention

        actor = "retention-schedule"
        while True:
            purges: list[Callable[[], object]] = [
                functools.partial(finish_pending, self.purge_context(actor), self.tenants),
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

    def purge_context(self, actor: str) -> PurgeContext:
        """What a tenant purge needs, acting as ``actor``."""
        return PurgeContext(settings=self.settings, db=self.db, ledger=self.ledger, actor=actor)

    def delete_tenant(self, who: Principal, name: str) -> tuple[TenantTombstone, dict[str, int]]:
        """Delete a tenant and all its data (an operator's action, over HTTP)."""
        actor = f"key:{who.key_id}" if who.key_id else "no-auth"
        return delete_tenant(self.purge_context(actor), self.tenants, name)

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
        await self.key_watch.close()
        await self.pool.close()
        self.db.close()

    # -- models --------------------------------------------------------------

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

    async def _privacy(
        self,
        meter: CallMeter,
        policy: TenantPolicy,
        collect: Callable[[], RequestTexts[_T]],
        subject: tuple[str, str] | None,
        size: int,
        param: str,
    ) -> tuple[PiiDecision, _T | None]:
        """Apply the tenant's personal-data policy to every text field of the request.

        ``collect`` lists the fields; ``subject`` is the end user's id and its
        param; ``param`` the request's main field. Returns the decision and
        the request's values as the model may see them (None: as sent).
        Scanning is linear in the request; beyond a few kilobytes it runs in
        the CPU pool, never on the event loop.
        """
        keep = policy.store_content and self.ledger.keys is not None
        keys = self.ledger.keys

        def work() -> tuple[PiiDecision, _T | None]:
            texts = collect()
            fields = list(texts.fields)
            if subject is not None:
                fields.append(privacy.TextField(subject[0], (subject[1],), "subject"))
            decision = privacy.inspect_fields(fields, policy, keys=keys)
            if decision.refused:
                return decision, None
            if keep:
                decision.recorded_prompt = texts.record(decision)
            protected = texts.protect(decision)
            decision.forget_spans()  # freed here, in the worker, not on the event loop
            return decision, protected

        decision, protected = await run_cpu(work) if size > _INLINE_PRIVACY else work()
        meter.pii = decision  # recorded in the ledger even when the call is blocked
        if decision.subject is not None:
            meter.subject = decision.subject
        decision.enforce(param)  # a refusal names the field where the value was found
        meter.keep_content = keep
        if keep:
            meter.prompt_texts = decision.recorded_prompt or []
        return decision, protected

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
                # Restoring is linear, but a huge delta (an upstream's whole answer) is
                # still work to keep off the event loop.
                delta.text = (await run_cpu(restorer.feed, delta.text)
                              if len(delta.text) > _INLINE_PRIVACY * 16
                              else restorer.feed(delta.text))  # fmt: skip
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
            await self._finish(meter, exc)
            raise
        # The workload's own threads are not visible to the meter: its share of each
        # interval is an equal one (see meter/energy.py).
        self.energy.start(meter.energy)
        meter.queued_until = time.perf_counter()
        return meter, policy

    async def end_call(self, meter: CallMeter, exc: BaseException | None = None) -> None:
        """Close a call opened with ``begin_call`` (see there); its records are written
        (off the event loop) by the time this returns."""
        await self._finish(meter, exc)

    async def record_open(self, meter: CallMeter) -> None:
        """Put the opening of a streamed call on record before its first byte is sent.

        The bytes of a stream leave before its end; should the process die
        mid-stream, this record says the call was answered in part. Once per call.
        """
        await self.recorder.open(meter)

    async def _finish(self, meter: CallMeter, exc: BaseException | None = None) -> None:
        """Record the call; see :meth:`CallRecorder.finish`."""
        await self.recorder.finish(meter, exc)

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
        meter = CallMeter("/v1/chat/completions", req.model, streaming=bool(req.stream))
        subject = _subject_of(req.user, req.metadata)
        meter.subject = privacy.provisional_subject(subject and subject[1], self.ledger.keys)
        try:
            policy = await self._admit(who, meter)
            model = await self.pool.get(req.model)
            # Checking schemas and copying messages is Python work proportional to the
            # request: off the event loop.
            params = await run_cpu(convert.chat_params, req, model.record)
            meter.weights_sha256 = model.record.sha256
            rf = req.response_format.json_schema if req.response_format else None
            chat_texts = partial(
                ChatTexts, params.messages, params.tools, params.response_format,
                params.sampling.stop, first_index=-1 if req.safe_prompt else 0,
                schema_name=rf.name if rf else None,
                schema_description=rf.description if rf else None)  # fmt: skip
            size = chat_size(params.messages, params.tools, params.response_format is not None,
                             [*params.sampling.stop, rf.name if rf else None,
                              rf.description if rf else None])  # fmt: skip
            decision, seen = await self._privacy(meter, policy, chat_texts, subject, size,
                                                 "messages")  # fmt: skip
            if seen is not None:
                params = replace(
                    params, messages=seen.messages,
                    tools=tuple(replace(t, description=d) for t, d in zip(params.tools,
                                                                          seen.descriptions,
                                                                          strict=True)),
                    sampling=replace(params.sampling, stop=seen.stop))  # fmt: skip
            engine = model.engine
            await self._check_context(engine, lambda: engine.count_chat_tokens(params),
                                      params.sampling.max_tokens, "messages", model,
                                      partial(convert.text_bytes, params.messages))  # fmt: skip
            deltas = self._restored(await self._open_stream(
                model, meter, lambda cancel: engine.stream_chat(params, cancel)
            ), decision)  # fmt: skip
        except IntramurosError as exc:
            await self._finish(meter, exc)
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
            logprobs=chat_logprobs(gen.logprobs) if params.sampling.logprobs is not None else None,
            finish_reason=gen.finish_reason,
        )
        return p.ChatCompletionResponse(
            id=ident, created=created, model=req.model, system_fingerprint=FINGERPRINT,
            choices=[choice], usage=usage_of(meter),
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
                    logprobs=chat_logprobs(logprobs) if logprobs else None,
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
                choices=[], usage=usage_of(meter),
            )  # fmt: skip

    # -- completions ---------------------------------------------------------

    async def completion(
        self, req: p.CompletionRequest, who: Principal
    ) -> p.CompletionResponse | AsyncIterator[p.CompletionResponse]:
        """A text completion (one choice per prompt), whole or streamed."""
        meter = CallMeter("/v1/completions", req.model, streaming=bool(req.stream))
        subject = _subject_of(req.user, req.metadata)
        meter.subject = privacy.provisional_subject(subject and subject[1], self.ledger.keys)
        try:
            policy = await self._admit(who, meter)
            model = await self.pool.get(req.model)
            meter.weights_sha256 = model.record.sha256
            prompts: list[str | list[int]] = convert.completion_prompts(req)
            stop = convert.completion_params(req, model.record, prompts[0]).sampling.stop
            size = sum(len(x) if isinstance(x, str) else 4 * len(x) for x in prompts) + sum(
                len(x) for x in (req.suffix or "", *stop))  # token ids: about 4 characters each
            decision, seen = await self._privacy(
                meter, policy,
                partial(CompletionTexts, prompts, req.suffix, stop, model.engine.detokenize),
                subject, size, "prompt")  # fmt: skip
            all_params = [convert.completion_params(req, model.record, pr) for pr in prompts]
            if seen is not None:
                new_prompts, suffix, stop = seen
                all_params = [
                    replace(params, prompt=pr, suffix=suffix,
                            sampling=replace(params.sampling, stop=stop))
                    for params, pr in zip(all_params, new_prompts, strict=True)
                ]  # fmt: skip
            engine = model.engine
            for params in all_params:
                prompt = params.prompt
                counter: Callable[[], int] = (
                    partial(engine.count_tokens, prompt) if isinstance(prompt, str)
                    else partial(len, prompt)
                )  # fmt: skip
                await self._check_context(
                    engine, counter, params.sampling.max_tokens, "prompt", model,
                    partial(convert.text_bytes, [{"content": prompt}]) if isinstance(prompt, str)
                    else None)
            first = self._restored(await self._open_stream(
                model, meter, partial(engine.stream_completion, all_params[0])
            ), decision)  # fmt: skip
        except IntramurosError as exc:
            await self._finish(meter, exc)
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
                logprobs=completion_logprobs(gen.logprobs) if want_logprobs else None,
            ))  # fmt: skip
        return p.CompletionResponse(
            id=ident, created=created, model=req.model, system_fingerprint=FINGERPRINT,
            choices=choices, usage=usage_of(meter),
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
                                logprobs=(completion_logprobs(delta.logprobs)
                                          if want_logprobs else None),
                            )],
                        )  # fmt: skip
        except IntramurosError as exc:
            await self._finish(meter, exc)
            raise
        except BaseException as exc:
            meter.status = 499
            await self._finish(meter, exc)
            raise
        await self._finish(meter)
        if include_usage:
            yield p.CompletionResponse(id=ident, created=created, model=model, choices=[],
                                       usage=usage_of(meter))  # fmt: skip

    # -- embeddings ------------------------------------------------------------

    async def embeddings(self, req: p.EmbeddingRequest, who: Principal) -> p.EmbeddingResponse:
        """Vectors for each input, as floats or base64 of little-endian float32."""
        meter = CallMeter("/v1/embeddings", req.model)
        subject = _subject_of(req.user, req.metadata)
        meter.subject = privacy.provisional_subject(subject and subject[1], self.ledger.keys)
        try:
            policy = await self._admit(who, meter)
            model = await self.pool.get(req.model)
            meter.weights_sha256 = model.record.sha256
            convert.require(model.record, "embeddings", "embeddings")
            inputs = convert.embedding_inputs(req, self.settings.max_embedding_inputs)
            _, seen = await self._privacy(
                meter, policy, partial(EmbeddingTexts, inputs, model.engine.detokenize), subject,
                sum(len(x) if isinstance(x, str) else 4 * len(x) for x in inputs),
                "input")  # fmt: skip
            meter.keep_content = False  # vectors are not text worth keeping
            if seen is not None:
                inputs = [x if isinstance(x, str) else list(x) for x in seen]
            engine = model.engine
            if engine.counts_tokens:
                limit = engine.context_length
                counts = await run_cpu(lambda: [engine.count_tokens(item) if isinstance(item, str)
                                                else len(item) for item in inputs])  # fmt: skip
                for i, n in enumerate(counts):
                    if n > limit:
                        raise ContextLengthExceeded(model=req.model, context_length=limit,
                                                    prompt_tokens=n, max_tokens=0,
                                                    param=f"input[{i}]")  # fmt: skip
            result = await self._call(model, meter, lambda: engine.embed(inputs))
        except IntramurosError as exc:
            await self._finish(meter, exc)
            raise
        dims = len(result.vectors[0]) if result.vectors else 0
        wanted = req.dimensions if req.dimensions is not None else req.output_dimension
        if wanted is not None and wanted != dims:
            refusal = InvalidRequest(
                f"Model '{req.model}' produces {dims}-dimensional vectors; it cannot "
                f"produce {wanted}.",
                param="dimensions" if req.dimensions is not None else "output_dimension",
            )
            await self._finish(meter, refusal)
            raise refusal
        meter.prompt_tokens = result.prompt_tokens
        await self._finish(meter)
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

    async def _check_context(
        self,
        engine: Engine,
        count: Callable[[], int],
        max_tokens: int | None,
        param: str,
        model: LoadedModel,
        text_bytes: Callable[[], int] | None = None,
    ) -> None:
        """Refuse a prompt that cannot fit before it waits in the queue.

        A prompt whose length in bytes alone shows it cannot fit is refused
        without being tokenised; otherwise it is counted in the CPU pool
        (tokenising a megabyte takes about a second: never on the event loop).
        """
        if not engine.counts_tokens:
            return
        n_ctx = engine.context_length
        wanted = max_tokens if max_tokens is not None else 1
        per_token = engine.max_token_bytes

        def measure() -> tuple[int, bool]:
            """(prompt tokens, whether that is only a lower bound)."""
            if per_token and text_bytes is not None:
                # Only a prompt that cannot fit by itself is refused uncounted; one that
                # is short enough to fit is worth counting for an exact message.
                least = -(-text_bytes() // per_token)
                if least > n_ctx:
                    return least, True
            return count(), False

        prompt_tokens, at_least = await run_cpu(measure)
        if prompt_tokens + wanted > n_ctx:
            raise ContextLengthExceeded(model=model.record.name, context_length=n_ctx,
                                        prompt_tokens=prompt_tokens, max_tokens=wanted,
                                        param=param, at_least=at_least)  # fmt: skip

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
        if meter.streaming:
            try:
                await self.record_open(meter)
            except BaseException:
                await stream.aclose()
                raise

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
        """Pass deltas through, noting first token and usage; log the call at the end.

        Before each delta the call's key is checked: a key revoked meanwhile
        ends the call there (401 ``api_key_revoked``, as an error event in a stream).
        """
        self.key_watch.watch(meter.key_id)
        try:
            async with aclosing(deltas):
                async for delta in deltas:
                    self.key_watch.check(meter.key_id)
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
                await self._finish(meter, exc)
            raise
        except BaseException as exc:
            # The client went away (cancelled) or something unexpected broke.
            if finish:
                meter.status = (
                    499 if isinstance(exc, GeneratorExit | asyncio.CancelledError) else 500
                )
                await self._finish(meter, exc)
            raise
        finally:
            self.key_watch.unwatch(meter.key_id)
        if finish:
            await self._finish(meter)

    async def _gather(
        self, deltas: AsyncGenerator[Delta, None], meter: CallMeter, finish: bool = True
    ) -> Generation:
        text: list[str] = []
        gen = Generation(text="", finish_reason="stop", usage=zero_usage())
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


def _subject_of(user: str | None, metadata: dict[str, Any] | None) -> tuple[str, str] | None:
    """``(param, value)`` of the end user's id: ``user``, else ``metadata.user`` (or
    ``user_id``), if the client gave one."""
    if user:
        return "user", user
    for key in ("user", "user_id"):
        value = (metadata or {}).get(key)
        if value:
            return f"metadata.{key}", str(value)[:200]  # the ledger's subject limit
    return None


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


