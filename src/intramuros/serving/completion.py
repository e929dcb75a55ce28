"""``POST /v1/completions``: text completions, one choice per prompt, whole or streamed."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace
from functools import partial

from intramuros.engines.base import Delta
from intramuros.errors import IntramurosError
from intramuros.gate import privacy
from intramuros.gate.request_texts import CompletionTexts
from intramuros.gate.tenants import Principal
from intramuros.platform.call import CallMeter
from intramuros.protocol import openai as p
from intramuros.serving import convert
from intramuros.serving.admission import subject_of
from intramuros.serving.calls import (
    FINGERPRINT,
    completion_logprobs,
    usage_of,
)
from intramuros.serving.endpoint import Endpoint


class CompletionService(Endpoint):
    """Serves text completions; built once per app."""

    async def completion(
        self, req: p.CompletionRequest, who: Principal
    ) -> p.CompletionResponse | AsyncIterator[p.CompletionResponse]:
        """A text completion (one choice per prompt), whole or streamed."""
        meter = CallMeter("/v1/completions", req.model, streaming=bool(req.stream))
        subject = subject_of(req.user, req.metadata)
        meter.subject = privacy.provisional_subject(subject and subject[1], self.admission.keys)
        try:
            policy = await self.admission.admit(who, meter)
            model = await self.pool.get(req.model, who.tenant)
            meter.model_found = True
            meter.weights_sha256 = model.record.sha256
            prompts: list[str | list[int]] = convert.completion_prompts(req)
            stop = convert.completion_params(req, model.record, prompts[0]).sampling.stop
            size = sum(len(x) if isinstance(x, str) else 4 * len(x) for x in prompts) + sum(
                len(x) for x in (req.suffix or "", *stop))  # token ids: about 4 characters each
            decision, seen = await self.admission.privacy(
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
                await self.admission.check_context(
                    engine, counter, params.sampling.max_tokens, "prompt", model,
                    partial(convert.text_bytes, [{"content": prompt}]) if isinstance(prompt, str)
                    else None)
            first = self.admission.restored(await self.streams.open(
                model, meter, partial(engine.stream_completion, all_params[0])
            ), decision)  # fmt: skip
        except IntramurosError as exc:
            await self.recorder.finish(meter, exc)
            raise
        ident = "cmpl-" + secrets.token_hex(12)
        created = int(time.time())

        async def streams() -> AsyncIterator[tuple[int, AsyncGenerator[Delta, None]]]:
            yield 0, first
            for i, params in enumerate(all_params[1:], start=1):
                yield (
                    i,
                    await self.streams.open(
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
            gen = await self.streams.gather(deltas, meter, finish=index == len(all_params) - 1)
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
                async with aclosing(self.streams.metered(deltas, meter, finish=False)) as metered:
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
            await self.recorder.finish(meter, exc)
            raise
        except BaseException as exc:
            meter.status = 499
            await self.recorder.finish(meter, exc)
            raise
        await self.recorder.finish(meter)
        if include_usage:
            yield p.CompletionResponse(id=ident, created=created, model=model, choices=[],
                                       usage=usage_of(meter))  # fmt: skip
