"""The voice workload: speech to text behind the gate.

A request is checked (``protocol``), admitted by the core service
(``begin_call``: key may use the model, quotas), its audio decoded off the
event loop (``audio``), then decoded by the model's engine on the model's lane
(one transcription at a time per model, in arrival order, in the lane's worker
thread). Segments come back as they are decoded: gathered into one answer, or
streamed as ``transcript.text.delta`` events. ``end_call`` writes the request
log, usage and the ledger record, with audio seconds and real-time factor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from intramuros.catalog.records import Capability, ModelRecord
from intramuros.engines.base import (
    TranscriptionEvent,
    TranscriptionParams,
    TranscriptionStart,
    TranscriptSegment,
)
from intramuros.errors import EngineError, IntramurosError, ModelCapabilityError
from intramuros.gate.tenants import Principal
from intramuros.serving.service import CallMeter, InferenceService
from intramuros.voice import protocol as p
from intramuros.voice.audio import DecodedAudio, decode
from intramuros.voice.formats import MEDIA_TYPES, Transcript, render

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


class VoiceService:
    """Serving logic of the voice workload; routes call it, it calls the core service."""

    name = "voice"

    def __init__(self, core: InferenceService) -> None:
        self.core = core
        self.settings = core.settings
        # Uploads are larger than JSON bodies: their own limit (413 above it).
        self.body_limits: dict[str, int] = {"/v1/audio": core.settings.voice_max_upload_bytes}

    async def start(self) -> None:
        """Nothing to prepare: speech models load on first use."""

    async def close(self) -> None:
        """Nothing to release: the core pool unloads the models."""

    async def transcribe(
        self, req: p.AudioRequest, who: Principal
    ) -> Rendered | AsyncIterator[p.TextDeltaEvent | p.TextDoneEvent]:
        """Transcribe (or translate) one upload: a whole answer, or a stream of events."""
        name = model_name(req.model, self.settings.voice_default_model)
        meter, _policy = await self.core.begin_call(who, ROUTES[req.task], name)
        clock = _Clock()
        try:
            record = await asyncio.to_thread(self.core.catalog.get, name)
            check_capability(record, req.task)
            audio = await asyncio.to_thread(decode, req.data,
                                            max_seconds=self.settings.voice_max_audio_seconds)
            loaded = await self.core.pool.get(name)
            meter.weights_sha256 = loaded.record.sha256
            engine, params = loaded.engine, params_of(req, self.settings.voice_vad)
            stream = loaded.lane.stream(
                lambda cancel: clock.timed(engine.transcribe(audio.samples, params, cancel), meter)
            )
            start = await _first(stream)
            meter.queued_until = clock.started or time.perf_counter()
        except BaseException as exc:
            self._fail(meter, exc)
            raise
        if req.stream:
            return self._events(stream, start, audio, req, meter, clock)
        return await self._gather(stream, start, audio, req, meter, clock)

    async def _gather(
        self,
        stream: AsyncGenerator[TranscriptionEvent, None],
        start: TranscriptionStart,
        audio: DecodedAudio,
        req: p.AudioRequest,
        meter: CallMeter,
        clock: _Clock,
    ) -> Rendered:
        segments: list[TranscriptSegment] = []
        try:
            async with aclosing(stream):
                async for event in stream:
                    if isinstance(event, TranscriptSegment):
                        meter.mark_first()
                        segments.append(event)
        except BaseException as exc:
            self._fail(meter, exc)
            raise
        transcript = Transcript(req.task, start.language, audio.duration, tuple(segments))
        self._done(meter, transcript, start, clock)
        return Rendered(render(transcript, req.response_format, req.words),
                        MEDIA_TYPES[req.response_format])  # fmt: skip

    async def _events(
        self,
        stream: AsyncGenerator[TranscriptionEvent, None],
        start: TranscriptionStart,
        audio: DecodedAudio,
        req: p.AudioRequest,
        meter: CallMeter,
        clock: _Clock,
    ) -> AsyncIterator[p.TextDeltaEvent | p.TextDoneEvent]:
        segments: list[TranscriptSegment] = []
        try:
            async with aclosing(stream):
                async for event in stream:
                    if isinstance(event, TranscriptSegment) and event.text:
                        meter.mark_first()
                        # The first delta carries no leading space, like the joined text.
                        delta = event.text.lstrip() if not segments else event.text
                        segments.append(event)
                        yield p.TextDeltaEvent(delta=delta)
        except BaseException as exc:
            self._fail(meter, exc)
            raise
        transcript = Transcript(req.task, start.language, audio.duration, tuple(segments))
        self._done(meter, transcript, start, clock)
        yield p.TextDoneEvent(text=transcript.text, usage=transcript.usage())

    def _done(
        self, meter: CallMeter, t: Transcript, start: TranscriptionStart, clock: _Clock
    ) -> None:
        seconds = clock.seconds()
        meter.completion_tokens = sum(len(s.tokens) for s in t.segments)
        meter.extra.update({
            "task": t.task,
            "audio_seconds": round(t.duration, 3),
            "speech_seconds": round(start.speech_duration, 3),
            "decode_seconds": round(seconds, 3),
            "real_time_factor": round(seconds / t.duration, 4) if t.duration else None,
            "language": t.language,
            "language_probability": round(start.language_probability, 3),
            "segments": len(t.segments),
        })  # fmt: skip
        self.core.end_call(meter)

    def _fail(self, meter: CallMeter, exc: BaseException) -> None:
        if not isinstance(exc, IntramurosError):
            cancelled = isinstance(exc, GeneratorExit | asyncio.CancelledError)
            meter.status = 499 if cancelled else 500
            if not cancelled:
                log.exception("transcription failed")
        self.core.end_call(meter, exc)


async def _first(stream: AsyncGenerator[TranscriptionEvent, None]) -> TranscriptionStart:
    """The start event, so that errors found before decoding still get their status."""
    try:
        first: Any = await stream.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await stream.aclose()
        raise
    if not isinstance(first, TranscriptionStart):
        await stream.aclose()
        raise EngineError("The speech engine did not report its start.")
    return first
