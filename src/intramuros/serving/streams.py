"""Running a call on a model's lane: the first delta awaited, energy metered, the key
watched at every delta, the call recorded at its end."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing
from typing import Any

from intramuros.engines.base import Delta, Generation
from intramuros.errors import IntramurosError
from intramuros.gate.keywatch import KeyWatch
from intramuros.meter.energy import EnergyMeter
from intramuros.platform.aio import first
from intramuros.platform.call import CallMeter
from intramuros.serving.calls import zero_usage
from intramuros.serving.pool import LoadedModel
from intramuros.serving.recorder import CallRecorder


class Streams:
    """Lane work of every endpoint; built once per service."""

    def __init__(self, energy: EnergyMeter, key_watch: KeyWatch, recorder: CallRecorder) -> None:
        self.energy = energy
        self.key_watch = key_watch
        self.recorder = recorder

    async def open(
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
        head = await first(stream)
        if meter.queued_until is None:
            meter.queued_until = time.perf_counter()
        if meter.streaming:
            try:
                await self.recorder.open(meter)
            except BaseException:
                await stream.aclose()
                raise

        async def rest() -> AsyncGenerator[Delta, None]:
            async with aclosing(stream):
                if head is not None:
                    yield head
                async for delta in stream:
                    yield delta

        return rest()

    async def call(self, model: LoadedModel, meter: CallMeter, work: Callable[[], Any]) -> Any:
        """``work()`` on the model's lane, metered (a call that does not stream)."""
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

    async def metered(
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
                        meter.cached_tokens += delta.usage.cached_tokens
                    yield delta
        except IntramurosError as exc:
            if finish:
                await self.recorder.finish(meter, exc)
            raise
        except BaseException as exc:
            # The client went away (cancelled) or something unexpected broke.
            if finish:
                await self.recorder.finish(meter, exc)
            raise
        finally:
            self.key_watch.unwatch(meter.key_id)
        if finish:
            await self.recorder.finish(meter)

    async def gather(
        self, deltas: AsyncGenerator[Delta, None], meter: CallMeter, finish: bool = True
    ) -> Generation:
        """The whole answer of a stream of deltas (metered and recorded as ``metered``)."""
        text: list[str] = []
        gen = Generation(text="", finish_reason="stop", usage=zero_usage())
        async with aclosing(self.metered(deltas, meter, finish=finish)) as metered:
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
