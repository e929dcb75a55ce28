"""Small-first routing: send a request to the cheapest model that can serve it.

A request whose ``model`` is ``auto`` or a configured route name is served by
the route's members, cheapest first: a member is skipped when the caller's
key may not use it, it lacks a needed capability (chat, tools, JSON,
embeddings) or the prompt does not fit its context. The first eligible model
answers; when its answer fails the route's checks (invalid JSON, schema
violation, invalid tool call, empty) or its mean token log-probability is
below the route's threshold, the request is retried once on the next
eligible model up. Every attempt is an ordinary call of the platform
(admitted, metered, logged, in the ledger like any other); the decision is a
``routing`` record in the ledger, ``usage.routing`` in the answer, and the
``intramuros_route_*`` counters on ``/metrics``.

Streams need the whole answer to be checked: by default (``stream =
"buffer"``) a routed stream is generated whole, checked, possibly escalated,
and then sent as SSE chunks; ``stream = "direct"`` streams the first eligible
model's answer as it comes, unchecked and never escalated.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

from prometheus_client import Counter
from pydantic import BaseModel

from intramuros.catalog.records import Capability, ModelRecord
from intramuros.engines.base import Engine
from intramuros.errors import (
    ClientError,
    ContextLengthExceeded,
    IntramurosError,
    ModelCapabilityError,
    ModelNotFound,
    ServerError,
)
from intramuros.gate.tenants import Principal
from intramuros.platform.interface import Platform
from intramuros.platform.offload import run_cpu
from intramuros.protocol import openai as p
from intramuros.router import choose, validate
from intramuros.router.config import (
    AUTO,
    RouteProfile,
    check_against_catalog,
    parse_costs,
    parse_routes,
)
from intramuros.router.errors import NoEligibleModel, RouteForbidden
from intramuros.router.settings import RouterSettings
from intramuros.router.validate import LOW_CONFIDENCE
from intramuros.serving import convert
from intramuros.settings import section

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)
# The capability every model of a request kind has (the default `auto` ladder keeps these).
_KIND: dict[str, Capability] = {
    "/v1/chat/completions": "chat", "/v1/completions": "completion", "/v1/embeddings": "embeddings",
}  # fmt: skip
# Usage fields summed over a route's calls into ``routing.total``.
_SUMMED = ("prompt_tokens", "completion_tokens", "energy_joules", "cost_eur", "co2e_grams")
# The ledger caps names (tenant, key, subject) at 200 characters.
_MAX_SUBJECT = 200


@dataclass
class Routed:
    """A routed answer: what to send (a response or a chunk stream) and who produced it."""

    result: Any
    model: str


@dataclass
class _Attempt:
    model: str
    outcome: str
    reason: str
    confidence: float | None = None
    # The call's usage: tokens, and the metering (energy, cost, CO2) when present.
    tokens: dict[str, float] | None = None

    def public(self) -> dict[str, Any]:
        return {"model": self.model, "outcome": self.outcome, "reason": self.reason,
                "confidence": None if self.confidence is None
                else round(self.confidence, 4)}  # fmt: skip


@dataclass
class _Decision(Generic[R]):
    """What happened on one route: the answer kept, every attempt and skip."""

    route: choose.Resolution
    kind: Capability
    attempts: list[_Attempt] = field(default_factory=list)
    answer: R | None = None
    model: str | None = None
    escalated: bool = False
    reasons: list[str] = field(default_factory=list)

    def routing(self) -> dict[str, Any]:
        """The ``usage.routing`` object.

        ``total`` sums every model call the request took (an escalated request
        paid for two): tokens, and energy/cost/CO2 where the calls were metered.
        """
        total: dict[str, float] = {}
        for attempt in self.attempts:
            for key, value in (attempt.tokens or {}).items():
                total[key] = total.get(key, 0) + value
        return {
            "route": self.route.route, "model": self.model,
            "reason": "; ".join(self.reasons),
            "attempts": [a.public() for a in self.attempts], "escalated": self.escalated,
            "total": {k: round(v, 9) for k, v in total.items()},
        }  # fmt: skip


# What the router needs to know of one request kind (chat, completion, embeddings).
Fit = Callable[[ModelRecord], Awaitable[str | None]]
Call = Callable[[ModelRecord], Awaitable[R]]
Judge = Callable[[R], validate.Verdict]


class RouterService:
    """Routes (``auto`` and the configured profiles) over the platform's model calls."""

    def __init__(self, core: Platform) -> None:
        self.core = core
        config = section(core.settings, RouterSettings)
        # Validated once already when the settings loaded; parsing again is cheap.
        self.routes: dict[str, RouteProfile] = parse_routes(config.routes)
        self.costs = parse_costs(config.model_costs)
        registry = core.metrics_registry
        self.escalations = Counter(
            "intramuros_route_escalations",
            "Routed requests retried on the next model up, by route.",
            ["route"],
            registry=registry,
        )
        self.decisions = Counter(
            "intramuros_route_decisions",
            "Routed requests by route and the model whose answer was sent.",
            ["route", "model"],
            registry=registry,
        )

    async def start(self) -> None:
        """Check the routes against the catalogue (after the core service started)."""
        records = await self.core.model_records()
        # A ConfigError here ends `intramuros serve` with one error line (api/server.py).
        check_against_catalog(self.routes, [r.name for r in records])

    def is_route(self, model: str) -> bool:
        """True when a request's ``model`` names a route (``auto`` always does)."""
        return choose.is_route(model, self.routes)

    def route_names(self) -> list[str]:
        """Every route clients may name, ``auto`` first (for a listing such as /v1/models)."""
        return [AUTO, *(n for n in self.routes if n != AUTO)]

    # -- request kinds -----------------------------------------------------------

    async def chat(self, req: p.ChatCompletionRequest, who: Principal) -> Routed:
        """A chat completion on a route (whole, or as a buffered or direct stream)."""
        res = choose.resolve(req.model, req.metadata, self.routes)
        threshold = res.profile.min_confidence
        want_logprobs = bool(req.logprobs)

        async def fit(record: ModelRecord) -> str | None:
            probe = req.model_copy(update={"model": record.name})
            try:
                params = await run_cpu(convert.chat_params, probe, record)
            except ModelCapabilityError as exc:
                return exc.message
            engine, problem = await self._loaded(record)
            if engine is None or not engine.counts_tokens:
                return problem
            return await _prompt_fits(engine, partial(engine.count_chat_tokens, params),
                                      partial(convert.text_bytes, params.messages),
                                      params.sampling.max_tokens)  # fmt: skip

        if req.stream and res.profile.stream == "direct":
            return await self._direct_chat(req, who, res, fit)

        async def call(record: ModelRecord) -> p.ChatCompletionResponse:
            update: dict[str, Any] = {"model": record.name, "stream": False,
                                      "stream_options": None}  # fmt: skip
            if threshold is not None and not want_logprobs:
                update.update(logprobs=True, top_logprobs=None)
            out = await self.core.chat(req.model_copy(update=update), who)
            assert isinstance(out, p.ChatCompletionResponse)  # stream=False
            return out

        def judge(resp: p.ChatCompletionResponse) -> validate.Verdict:
            problem = validate.check_chat(resp, req, res.profile.checks)
            confidence = validate.chat_confidence(resp) if threshold is not None else None
            return validate.judge(problem, confidence, threshold)

        decision = await self._route(res, who, "/v1/chat/completions", fit, call, judge,
                                     _subject(req.user, req.metadata))  # fmt: skip
        resp = decision.answer
        assert resp is not None and decision.model is not None
        if not want_logprobs:
            for choice in resp.choices:
                choice.logprobs = None
        resp.usage.routing = decision.routing()
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return Routed(_chat_chunks(resp, include_usage), decision.model)
        return Routed(resp, decision.model)

    async def completion(self, req: p.CompletionRequest, who: Principal) -> Routed:
        """A text completion on a route (``metadata.task`` accepted as in chat)."""
        res = choose.resolve(req.model, req.metadata, self.routes)
        threshold = res.profile.min_confidence
        want_logprobs = req.logprobs is not None

        async def fit(record: ModelRecord) -> str | None:
            probe = req.model_copy(update={"model": record.name})
            prompts = convert.completion_prompts(probe)
            try:
                all_params = [convert.completion_params(probe, record, pr) for pr in prompts]
            except ModelCapabilityError as exc:
                return exc.message
            engine, problem = await self._loaded(record)
            if engine is None or not engine.counts_tokens:
                return problem
            for params in all_params:
                prompt = params.prompt
                if isinstance(prompt, str):
                    problem = await _prompt_fits(
                        engine, partial(engine.count_tokens, prompt),
                        partial(convert.text_bytes, [{"content": prompt}]),
                        params.sampling.max_tokens)  # fmt: skip
                else:
                    problem = _fits(len(prompt), params.sampling.max_tokens,
                                    engine.context_length)  # fmt: skip
                if problem is not None:
                    return problem
            return None

        async def call(record: ModelRecord) -> p.CompletionResponse:
            update: dict[str, Any] = {"model": record.name, "stream": False,
                                      "stream_options": None}  # fmt: skip
            if threshold is not None and not want_logprobs:
                update["logprobs"] = 0
            out = await self.core.completion(req.model_copy(update=update), who)
            assert isinstance(out, p.CompletionResponse)  # stream=False
            return out

        def judge(resp: p.CompletionResponse) -> validate.Verdict:
            problem = validate.check_completion(resp, req, res.profile.checks)
            confidence = validate.completion_confidence(resp) if threshold is not None else None
            return validate.judge(problem, confidence, threshold)

        if req.stream and res.profile.stream == "direct":
            return await self._direct_completion(req, who, res, fit)
        decision = await self._route(res, who, "/v1/completions", fit, call, judge,
                                     _subject(req.user, None))  # fmt: skip
        resp = decision.answer
        assert resp is not None and decision.model is not None
        if not want_logprobs:
            for choice in resp.choices:
                choice.logprobs = None
        if resp.usage is not None:
            resp.usage.routing = decision.routing()
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return Routed(_completion_chunks(resp, include_usage), decision.model)
        return Routed(resp, decision.model)

    async def embeddings(self, req: p.EmbeddingRequest, who: Principal) -> Routed:
        """Embeddings on a route: the cheapest embedding model the key may use."""
        res = choose.resolve(req.model, req.metadata, self.routes)

        async def fit(record: ModelRecord) -> str | None:
            try:
                convert.require(record, "embeddings", "embeddings")
            except ModelCapabilityError as exc:
                return exc.message
            return None

        async def call(record: ModelRecord) -> p.EmbeddingResponse:
            return await self.core.embeddings(req.model_copy(update={"model": record.name}), who)

        def judge(resp: p.EmbeddingResponse) -> validate.Verdict:
            return validate.Verdict(True, "ok", "vectors returned", None)

        decision = await self._route(res, who, "/v1/embeddings", fit, call, judge,
                                     _subject(req.user, req.metadata))  # fmt: skip
        resp = decision.answer
        assert resp is not None and decision.model is not None
        resp.usage.routing = decision.routing()
        return Routed(resp, decision.model)

    # -- the ladder ----------------------------------------------------------------

    async def _loaded(self, record: ModelRecord) -> tuple[Engine | None, str | None]:
        """The candidate's engine (loading it), or None and why it cannot serve."""
        try:
            loaded = await self.core.lane(record.name)
        except ModelNotFound:
            return None, "not in the catalogue"
        except ClientError:
            raise
        except IntramurosError as exc:
            return None, f"unavailable ({exc.code})"
        return loaded.engine, None


    async def _candidates(
        self, res: choose.Resolution, who: Principal, fit: Fit, decision: _Decision[Any]
    ) -> AsyncGenerator[ModelRecord, None]:
        """The route's eligible models in order; skipped ones noted in ``decision``."""
        records = await self.core.model_records()
        ladder = choose.ladder(res.profile, records, who, self.costs, decision.kind)
        decision.attempts.extend(_Attempt(s.model, "skipped", s.reason) for s in ladder.skipped)
        for record in ladder.models:
            problem = await fit(record)
            if problem is not None:
                decision.attempts.append(_Attempt(record.name, "skipped", problem))
                continue
            yield record
        if decision.answer is None:
            skipped = [a for a in decision.attempts if a.outcome == "skipped"]
            if not ladder.models and ladder.denied:
                raise RouteForbidden(
                    f"This API key may use no model of route '{res.route}'.", param="model"
                )
            if not any(a.outcome != "skipped" for a in decision.attempts):
                detail = "; ".join(f"{a.model}: {a.reason.rstrip('.')}" for a in skipped)
                raise NoEligibleModel(
                    f"No model of route '{res.route}' can serve this request"
                    + (f" ({detail})." if detail else ": it has no model of this kind."),
                    param="model",
                )

    async def _route(
        self,
        res: choose.Resolution,
        who: Principal,
        path: str,
        fit: Fit,
        call: Call[R],
        judge: Judge[R],
        subject: str | None,
    ) -> _Decision[R]:
        """Try the cheapest eligible model; on a failed verdict, once the next one up."""
        decision: _Decision[R] = _Decision(res, _KIND[path])
        if res.note:
            decision.reasons.append(res.note)
        escalate = res.profile.escalate
        tried: list[_Attempt] = []
        error: ServerError | None = None
        candidates = self._candidates(res, who, fit, decision)
        try:
            async for record in candidates:
                try:
                    answer = await call(record)
                except (ContextLengthExceeded, ModelCapabilityError) as exc:
                    # The core found it cannot serve this after all: a skip, not an attempt.
                    decision.attempts.append(_Attempt(record.name, "skipped", exc.message))
                    continue
                except ServerError as exc:
                    error = exc
                    attempt = _Attempt(record.name, "error", f"engine error ({exc.code})")
                    decision.attempts.append(attempt)
                    tried.append(attempt)
                    if len(tried) < 2 and escalate:
                        continue
                    break
                verdict = judge(answer)
                attempt = _Attempt(record.name, verdict.outcome, verdict.reason,
                                   verdict.confidence, _tokens(answer))  # fmt: skip
                decision.attempts.append(attempt)
                tried.append(attempt)
                # A failed check is worse than low confidence: never trade an answer
                # that passed the checks for one that did not.
                keep_first = (decision.answer is not None and tried[0].outcome == LOW_CONFIDENCE
                              and attempt.outcome not in ("ok", LOW_CONFIDENCE))  # fmt: skip
                if not keep_first:
                    decision.answer, decision.model = answer, record.name
                if verdict.ok or len(tried) >= 2 or not escalate:
                    break
        finally:
            await candidates.aclose()
        if decision.answer is None:
            assert error is not None  # else _candidates raised NoEligibleModel
            raise error
        decision.escalated = len(tried) >= 2
        decision.reasons.extend(_explain(decision, tried, escalate))
        await self._record(decision, who, path, subject)
        return decision

    async def _record(
        self, decision: _Decision[Any], who: Principal, path: str, subject: str | None
    ) -> None:
        """Count the decision and append it to the ledger."""
        route = decision.route.route
        self.decisions.labels(route, decision.model or "-").inc()
        if decision.escalated:
            self.escalations.labels(route).inc()
        answer_id = getattr(decision.answer, "id", None)
        data = {**decision.routing(), "path": path, "task": decision.route.task,
                "answer_id": answer_id if isinstance(answer_id, str) else None,
                "usage": {a.model: a.tokens for a in decision.attempts if a.tokens}}  # fmt: skip
        ladder_denied = [m for m in (decision.route.profile.models or ()) if not who.may_use(m)]
        if ladder_denied:
            data["denied"] = ladder_denied
        await self.core.audit_event("routing", tenant=who.tenant, key_id=who.key_id,
                                    subject=subject, data=data)  # fmt: skip

    # -- direct streams (no checks, no escalation) ----------------------------------

    async def _first(
        self, res: choose.Resolution, who: Principal, fit: Fit, decision: _Decision[Any]
    ) -> ModelRecord:
        candidates = self._candidates(res, who, fit, decision)
        try:
            async for record in candidates:
                decision.model = record.name
                return record
        finally:
            await candidates.aclose()
        raise NoEligibleModel(f"No model of route '{res.route}' can serve this request.",
                              param="model")  # fmt: skip

    async def _direct_chat(
        self, req: p.ChatCompletionRequest, who: Principal, res: choose.Resolution, fit: Fit
    ) -> Routed:
        decision: _Decision[Any] = _Decision(res, "chat")
        record = await self._first(res, who, fit, decision)
        stream = await self.core.chat(req.model_copy(update={"model": record.name}), who)
        assert not isinstance(stream, BaseModel)  # stream=True
        routing = self._direct_decided(decision, record)
        subject = _subject(req.user, req.metadata)
        await self._record(decision, who, "/v1/chat/completions", subject)
        return Routed(_with_routing(stream, routing), record.name)

    async def _direct_completion(
        self, req: p.CompletionRequest, who: Principal, res: choose.Resolution, fit: Fit
    ) -> Routed:
        decision: _Decision[Any] = _Decision(res, "completion")
        record = await self._first(res, who, fit, decision)
        stream = await self.core.completion(req.model_copy(update={"model": record.name}), who)
        assert not isinstance(stream, BaseModel)  # stream=True
        routing = self._direct_decided(decision, record)
        await self._record(decision, who, "/v1/completions", _subject(req.user, None))
        return Routed(_with_routing(stream, routing), record.name)

    @staticmethod
    def _direct_decided(decision: _Decision[Any], record: ModelRecord) -> dict[str, Any]:
        if decision.route.note:
            decision.reasons.append(decision.route.note)
        decision.reasons.append("streamed directly (route stream mode 'direct'): the answer "
                                "is not checked and never escalated")  # fmt: skip
        decision.attempts.append(_Attempt(record.name, "streamed", "not checked"))
        return decision.routing()


# -- helpers ------------------------------------------------------------------------


def _explain(decision: _Decision[Any], tried: list[_Attempt], escalate: bool) -> list[str]:
    """Why this model answered, in a few words (no answer text: this goes to the ledger)."""
    out: list[str] = []
    first, last = tried[0], tried[-1]
    if decision.escalated:
        out.append(f"escalated from {first.model}: {first.reason}")
        if last.outcome == "error":
            out.append(f"{last.model} failed ({last.reason}); kept {decision.model}'s answer")
        elif last.outcome != "ok":
            out.append(f"{last.model}'s answer also failed: {last.reason}")
            if decision.model != last.model:
                out.append(f"kept {decision.model}'s answer (it passed the checks)")
        else:
            out.append(f"{last.model}: {last.reason}")
    elif last.outcome == "ok":
        out.append(f"{last.model}: cheapest eligible model; {last.reason}")
    else:
        why = "route escalate = false" if not escalate else "no eligible model up to retry on"
        out.append(f"{last.model}: {last.reason}; not escalated ({why})")
    skipped = [a.model for a in decision.attempts if a.outcome == "skipped"]
    if skipped:
        out.append("skipped: " + ", ".join(dict.fromkeys(skipped)))
    return out


async def _prompt_fits(engine: Engine, count: Callable[[], int], text_bytes: Callable[[], int],
                       max_tokens: int | None) -> str | None:  # fmt: skip
    """Whether a prompt fits the engine's context, measured off the event loop.

    A prompt too long by its bytes alone is judged without being tokenised.
    """
    context, per_token = engine.context_length, engine.max_token_bytes

    def measure() -> int:
        if per_token:
            least = -(-text_bytes() // per_token)
            if least > context:
                return least
        return count()

    return _fits(await run_cpu(measure), max_tokens, context)


def _fits(prompt_tokens: int, max_tokens: int | None, context: int) -> str | None:
    wanted = prompt_tokens + (max_tokens if max_tokens is not None else 1)
    if wanted > context:
        return f"needs {wanted} tokens; its context is {context}"
    return None


def _tokens(answer: BaseModel) -> dict[str, float] | None:
    """Tokens and metering of one call, from its ``usage`` (what could be summed)."""
    usage = getattr(answer, "usage", None)
    if usage is None:
        return None
    out: dict[str, float] = {}
    for key in _SUMMED:
        value = getattr(usage, key, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value
    return out


def _subject(user: str | None, metadata: dict[str, Any] | None) -> str | None:
    """The end user's id, as the core service takes it (``user`` or ``metadata.user``)."""
    value = user or (metadata or {}).get("user") or (metadata or {}).get("user_id")
    return str(value)[:_MAX_SUBJECT] if value is not None else None


async def _with_routing(chunks: AsyncIterator[Any], routing: dict[str, Any]) -> AsyncIterator[Any]:
    """The core's chunks, with ``routing`` added to the usage chunk (if the client asked)."""
    try:
        async for chunk in chunks:
            if getattr(chunk, "usage", None) is not None:
                chunk.usage.routing = routing
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def _chat_chunks(
    resp: p.ChatCompletionResponse, include_usage: bool
) -> AsyncIterator[p.ChatCompletionChunk]:
    """A checked, whole chat answer sent as OpenAI stream chunks."""
    choice = resp.choices[0]

    def chunk(delta: p.ChatDelta, finish: str | None = None,
              logprobs: p.ChoiceLogprobs | None = None) -> p.ChatCompletionChunk:  # fmt: skip
        return p.ChatCompletionChunk(
            id=resp.id, created=resp.created, model=resp.model,
            system_fingerprint=resp.system_fingerprint,
            choices=[p.ChatChunkChoice(index=0, delta=delta, finish_reason=finish,
                                       logprobs=logprobs)],
            usage=None,
        )  # fmt: skip

    yield chunk(p.ChatDelta(role="assistant", content=""))
    message = choice.message
    if message.content:
        yield chunk(p.ChatDelta(content=message.content), logprobs=choice.logprobs)
    if message.tool_calls:
        yield chunk(p.ChatDelta(tool_calls=[
            p.ToolCallDelta(index=i, id=c.id, type="function",
                            function=p.FunctionCallDelta(name=c.function.name,
                                                         arguments=c.function.arguments))
            for i, c in enumerate(message.tool_calls)
        ]))  # fmt: skip
    yield chunk(p.ChatDelta(), finish=choice.finish_reason)
    if include_usage:
        yield p.ChatCompletionChunk(
            id=resp.id, created=resp.created, model=resp.model,
            system_fingerprint=resp.system_fingerprint, choices=[], usage=resp.usage,
        )  # fmt: skip


async def _completion_chunks(
    resp: p.CompletionResponse, include_usage: bool
) -> AsyncIterator[p.CompletionResponse]:
    """A checked, whole text completion sent as stream chunks (one per choice)."""
    for choice in resp.choices:
        yield p.CompletionResponse(
            id=resp.id, created=resp.created, model=resp.model,
            system_fingerprint=resp.system_fingerprint, choices=[choice],
        )  # fmt: skip
    if include_usage:
        yield p.CompletionResponse(id=resp.id, created=resp.created, model=resp.model,
                                   choices=[], usage=resp.usage)  # fmt: skip
