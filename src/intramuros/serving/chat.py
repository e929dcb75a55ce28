"""``POST /v1/chat/completions``: a chat completion, whole or streamed."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from functools import partial

from intramuros.engines.base import Delta, TokenLogprob
from intramuros.errors import IntramurosError
from intramuros.gate import privacy
from intramuros.gate.request_texts import ChatTexts, chat_size
from intramuros.gate.tenants import Principal
from intramuros.platform.call import CallMeter
from intramuros.platform.offload import run_cpu
from intramuros.protocol import openai as p
from intramuros.serving import convert
from intramuros.serving.admission import subject_of
from intramuros.serving.calls import (
    FINGERPRINT,
    chat_logprobs,
    usage_of,
)
from intramuros.serving.endpoint import Endpoint


class ChatService(Endpoint):
    """Serves chat completions; built once per app."""

    async def chat(
        self, req: p.ChatCompletionRequest, who: Principal
    ) -> p.ChatCompletionResponse | AsyncIterator[p.ChatCompletionChunk]:
        """A chat completion, whole or as a stream of chunks."""
        meter = CallMeter("/v1/chat/completions", req.model, streaming=bool(req.stream))
        subject = subject_of(req.user, req.metadata)
        meter.subject = privacy.provisional_subject(subject and subject[1], self.admission.keys)
        try:
            policy = await self.admission.admit(who, meter)
            model = await self.pool.get(req.model, who.tenant)
            meter.model_found = True
            # Checking schemas and copying messages is Python work proportional to the
            # request: off the event loop, unless it is bounded and small.
            params = (convert.chat_params(req, model.record) if convert.small_chat(req)
                      else await run_cpu(convert.chat_params, req, model.record))  # fmt: skip
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
            decision, seen = await self.admission.privacy(meter, policy, chat_texts, subject, size,
                                                 "messages")  # fmt: skip
            if seen is not None:
                params = replace(
                    params, messages=seen.messages,
                    tools=tuple(replace(t, description=d) for t, d in zip(params.tools,
                                                                          seen.descriptions,
                                                                          strict=True)),
                    sampling=replace(params.sampling, stop=seen.stop))  # fmt: skip
            engine = model.engine
            await self.admission.check_context(engine, lambda: engine.count_chat_tokens(params),
                                      params.sampling.max_tokens, "messages", model,
                                      partial(convert.text_bytes, params.messages))  # fmt: skip
            deltas = self.admission.restored(await self.streams.open(
                model, meter, lambda cancel: engine.stream_chat(params, cancel)
            ), decision)  # fmt: skip
        except IntramurosError as exc:
            await self.recorder.finish(meter, exc)
            raise
        ident = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return self._chat_chunks(deltas, meter, ident, created, req.model, include_usage)
        gen = await self.streams.gather(deltas, meter)
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
        async with aclosing(self.streams.metered(deltas, meter)) as metered:
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
