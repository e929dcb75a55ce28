"""The voice workload: speech to text behind the gate.

A request is checked (``protocol``), admitted by the platform
(``begin_call``: key may use the model, quotas), its ``prompt`` inspected
under the tenant's personal-data policy (``policy``), its audio checked by
decoding it once in one of ``voice_decode_concurrency`` decoder slots (a
bounded waiting line, 429 beyond it; ``audio``), then transcribed by the
model's engine on the model's lane (one transcription at a time per model,
in arrival order, in the lane's worker thread), block by block (``blocks``),
so that memory does not grow with the recording. Segments come back as they
are decoded, screened under the policy: gathered into one answer, or streamed
as ``transcript.text.delta`` events. ``end_call`` writes the request log,
usage and the ledger record, with audio seconds and real-time factor.

Decoding and transcription stop when the caller leaves (the lane's cancel
flag, checked between packets, blocks and segments) and when the server
shuts down (:meth:`VoiceService.close`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field

from intramuros.catalog.records import Capability, ModelRecord
from intramuros.engines.base import (
    Engine,
    TranscriptionEvent,
    TranscriptionParams,
    TranscriptionStart,
    TranscriptSegment,
)
from intramuros.errors import EngineError, IntramurosError, ModelCapabilityError, QueueFull
from intramuros.gate.policy import TenantPolicy
from intramuros.gate.privacy import PersonalDataBlocked
from intramuros.gate.tenants import Principal
from intramuros.platform.aio import first
from intramuros.platform.call import CallMeter
from intramuros.platform.interface import Platform
from intramuros.serving.scheduler import Lane
from intramuros.settings import section
from intramuros.voice import protocol as p
from intramuros.voice.audio import DecodedAudio, probe
from intramuros.voice.blocks import BlockRun, blocks, transcribe_blocks
from intramuros.voice.errors import DecodersBusy
from intramuros.voice.formats import MEDIA_TYPES, Transcript, render
from intramuros.voice.policy import TranscriptGuard, blocked_in, inspect_call, transcript_blocked
from intramuros.voice.settings import VoiceSettings

log = logging.getLogger(__name__)

OPENAI_ALIAS = "whisper-1"
# Formats that show segment times: decoded in order, for exact times.
TIMED_FORMATS = ("srt", "vtt", "verbose_json")
ROUTES: dict[p.Task, str] = {
    "transcribe": "/v1/audio/transcriptions",
    "translate": "/v1/audio/translations",
}


@dataclass(frozen=True)
class Rendered:
    """A whole answer: a JSON object or text, and its media type."""

    body: str | dict[str, object]
    media_type: str


class _Clock:
    """When the engine really started (slot taken, in the worker thread) and stopped."""

    started: float | None = None
    stopped: float | None = None

    def timed(
        self, events: Iterator[TranscriptionEvent], meter: CallMeter | None = None
    ) -> Iterator[TranscriptionEvent]:
        """``events``, timed from their first step in the worker thread to the last."""
        self.started = time.perf_counter()
        # Where the core meters energy by thread CPU time, this worker's time is the call's.
        attach = getattr(getattr(meter, "energy", None), "attach_current_thread", None)
        if attach is not None:
            attach()
        try:
            yield from events
        finally:
            self.stopped = time.perf_counter()

    def seconds(self) -> float:
        """Seconds the engine has been working (so far, if not done)."""
        if self.started is None:
            return 0.0
        return (self.stopped or time.perf_counter()) - self.started


def model_name(requested: str, default: str) -> str:
    """``whisper-1`` (OpenAI's only Whisper name) is our default speech model."""
    return default if requested == OPENAI_ALIAS else requested


def params_of(req: p.AudioRequest, vad: bool) -> TranscriptionParams:
    """What the engine needs of a request."""
    return TranscriptionParams(task=req.task, language=req.language, prompt=req.prompt,
                               temperature=req.temperature, word_timestamps=req.words, vad=vad,
                               timestamps=req.response_format in TIMED_FORMATS)  # fmt: skip


def check_capability(record: ModelRecord, task: p.Task) -> None:
    """Refuse a model that cannot transcribe (a chat model) or translate (English-only)."""
    needed: Capability = "transcription" if task == "transcribe" else "translation"
    if not record.has(needed):
        raise ModelCapabilityError(f"Model '{record.name}' does not support {needed}.",
                                   param="model")  # fmt: skip


@dataclass
class _Call:
    """One transcription in flight: what the answer and the records need."""

    req: p.AudioRequest
    meter: CallMeter
    policy: TenantPolicy
    guard: TranscriptGuard
    clock: _Clock = field(default_factory=_Clock)
    audio: DecodedAudio | None = None
    run: BlockRun | None = None
    start: TranscriptionStart | None = None

    def transcript(self, segments: list[TranscriptSegment]) -> Transcript:
        """The finished transcript (language as first heard, duration as checked)."""
        assert self.audio is not None and self.run is not None and self.start is not None
        language = self.run.language or self.start.language
        return Transcript(self.req.task, language, self.audio.duration, tuple(segments))


class VoiceService:
    """Serving logic of the voice workload; routes call it, it calls the platform."""

    name = "voice"

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.settings = section(platform.settings, VoiceSettings)
        # Uploads are larger than JSON bodies: their own limit (413 above it).
        self.body_limits: dict[str, int] = {"/v1/audio": self.settings.voice_max_upload_bytes}
        # Checking an upload decodes it whole: CPU-bound, so a few at a time, in turn.
        self.decoders: Lane[DecodedAudio] = Lane(
            "audio-decoding", concurrency=self.settings.voice_decode_concurrency,
            queue_limit=self.settings.voice_decode_queue,
        )  # fmt: skip
        # Set at shut-down: decoding in any worker thread stops at its next packet.
        self.closing = threading.Event()

    async def start(self) -> None:
        """Nothing to prepare: speech models load on first use."""

    async def close(self) -> None:
        """Stop decoding (running decodes stop at their next packet, queued ones never start);
        the platform unloads the models."""
        self.closing.set()
        self.decoders.shutdown()

    async def transcribe(
        self, req: p.AudioRequest, who: Principal
    ) -> Rendered | AsyncIterator[p.TextDeltaEvent | p.TextDoneEvent]:
        """Transcribe (or translate) one upload: a whole answer, or a stream of events."""
        name = model_name(req.model, self.settings.voice_default_model)
        meter, policy = await self.platform.begin_call(who, ROUTES[req.task], name)
        call = _Call(req, meter, policy, TranscriptGuard(policy, req.prompt))
        try:
            await self._screen_prompt(call)
            check_capability(await self.platform.model_record(name), req.task)
            call.audio = await self._check_audio(req.data, meter)
            lane = await self.platform.lane(name)
            meter.weights_sha256 = lane.record.sha256
            call.run = BlockRun(duration=call.audio.duration)
            stream = lane.stream(self._work(lane.engine, call))
            call.start = await _started(stream)
            meter.queued_until = call.clock.started or time.perf_counter()
        except BaseException as exc:
            await self._fail(call, exc)
            raise
        if req.stream:
            try:
                await self.platform.record_open(meter)
            except BaseException as exc:
                await stream.aclose()
                await self._fail(call, exc)
                raise
            return self._events(stream, call)
        return await self._gather(stream, call)

    async def _screen_prompt(self, call: _Call) -> None:
        """The tenant's personal-data policy on the request's ``prompt`` (400 if blocked)."""
        meter, prompt = call.meter, call.req.prompt
        decision = await asyncio.to_thread(inspect_call, prompt, None, call.policy)
        meter.pii = decision  # recorded in the ledger even when the call is refused
        decision.enforce("prompt")
        meter.keep_content = self.platform.keeps_content(call.policy)
        if meter.keep_content and prompt:
            meter.prompt_texts = [prompt]

    async def _check_audio(self, data: bytes, meter: CallMeter) -> DecodedAudio:
        """The upload checked in a decoder slot, in turn: stopped if the caller leaves."""
        settings, closing = self.settings, self.closing

        def work(cancel: threading.Event) -> Iterator[DecodedAudio]:
            meter.energy.attach_current_thread()
            yield probe(data, max_seconds=settings.voice_max_audio_seconds,
                        keep_seconds=settings.voice_block_seconds,
                        stop=lambda: cancel.is_set() or closing.is_set())  # fmt: skip

        try:
            async with aclosing(self.decoders.stream(work)) as results:
                async for audio in results:
                    return audio
        except QueueFull:
            raise DecodersBusy(settings.voice_decode_queue) from None
        raise EngineError("Audio decoding ended without a result.")

    def _work(
        self, engine: Engine, call: _Call
    ) -> Callable[[threading.Event], Iterator[TranscriptionEvent]]:
        """What the model's lane runs: decode in blocks, transcribe each, screen the text."""
        assert call.audio is not None and call.run is not None
        audio, run, closing = call.audio, call.run, self.closing
        params = params_of(call.req, self.settings.voice_vad)
        block_seconds, data = self.settings.voice_block_seconds, call.req.data

        def work(cancel: threading.Event) -> Iterator[TranscriptionEvent]:
            pieces = blocks(data, audio, block_seconds=block_seconds,
                            stop=lambda: cancel.is_set() or closing.is_set())  # fmt: skip
            events = transcribe_blocks(engine, pieces, params, cancel, run)
            return call.clock.timed(call.guard.screen(events), call.meter)

        return work

    async def _gather(self, stream: AsyncGenerator[TranscriptionEvent, None],
                      call: _Call) -> Rendered:  # fmt: skip
        segments: list[TranscriptSegment] = []
        try:
            async with aclosing(stream):
                async for event in stream:
                    if isinstance(event, TranscriptSegment):
                        call.meter.mark_first()
                        segments.append(event)
            transcript = call.transcript(segments)
            await self._settle(call, transcript)
        except BaseException as exc:
            await self._fail(call, exc)
            raise
        await self._done(call, transcript)
        req = call.req
        return Rendered(render(transcript, req.response_format, req.words),
                        MEDIA_TYPES[req.response_format])  # fmt: skip

    async def _events(
        self, stream: AsyncGenerator[TranscriptionEvent, None], call: _Call
    ) -> AsyncIterator[p.TextDeltaEvent | p.TextDoneEvent]:
        segments: list[TranscriptSegment] = []
        try:
            async with aclosing(stream):
                async for event in stream:
                    if isinstance(event, TranscriptSegment) and event.text:
                        call.meter.mark_first()
                        # The first delta carries no leading space, like the joined text.
                        delta = event.text.lstrip() if not segments else event.text
                        segments.append(event)
                        yield p.TextDeltaEvent(delta=delta)
            transcript = call.transcript(segments)
            await self._settle(call, transcript)
        except BaseException as exc:
            await self._fail(call, exc)
            raise
        await self._done(call, transcript)
        yield p.TextDoneEvent(text=transcript.text, usage=transcript.usage())

    async def _settle(self, call: _Call, transcript: Transcript) -> None:
        """The policy on the whole transcript: refused if it holds blocked data; the
        decision (prompt and transcript) and, if kept, the text go to the records."""
        meter = call.meter
        decision = await asyncio.to_thread(inspect_call, call.req.prompt, transcript.text,
                                           call.policy)  # fmt: skip
        meter.pii = decision
        blocked = blocked_in(decision)
        if blocked:
            raise transcript_blocked(blocked)
        if meter.keep_content:
            meter.output = [transcript.text]  # redacted by the core before it is written

    async def _done(self, call: _Call, t: Transcript) -> None:
        assert call.run is not None
        meter, run, seconds = call.meter, call.run, call.clock.seconds()
        meter.completion_tokens = sum(len(s.tokens) for s in t.segments)
        meter.extra.update({
            "task": t.task,
            "audio_seconds": round(t.duration, 3),
            "speech_seconds": round(run.speech_seconds, 3),
            "decode_seconds": round(seconds, 3),
            "real_time_factor": round(seconds / t.duration, 4) if t.duration else None,
            "language": t.language,
            "language_probability": round(run.language_probability, 3),
            "segments": len(t.segments),
            "blocks": run.blocks,
        })  # fmt: skip
        await self.platform.end_call(meter)

    async def _fail(self, call: _Call, exc: BaseException) -> None:
        meter = call.meter
        if isinstance(exc, PersonalDataBlocked) and call.guard.decision is not None:
            meter.pii = call.guard.decision
        if not isinstance(exc, IntramurosError | GeneratorExit | asyncio.CancelledError):
            log.exception("transcription failed")
        await self.platform.end_call(meter, exc)


async def _started(stream: AsyncGenerator[TranscriptionEvent, None]) -> TranscriptionStart:
    """The start event, so that errors found before decoding still get their status."""
    head = await first(stream)
    if not isinstance(head, TranscriptionStart):
        await stream.aclose()
        raise EngineError("The speech engine did not report its start.")
    return head
