"""Whisper speech to text through faster-whisper (CTranslate2), int8 on CPU by default.

The model is a CTranslate2 Whisper directory (``model.bin``, ``config.json``,
``tokenizer.json``, ``vocabulary.*``) that the catalogue has verified. It is
opened from that directory only: faster-whisper downloads a model when given
a name instead of a path, so we never give it a name, and the hub's offline
switches are set as well. Voice-activity detection uses the Silero model that
ships inside the faster-whisper wheel.

Long recordings are decoded window by window (30 s each, the model's input),
so nothing is truncated; with VAD, silent stretches are skipped first. With
``voice_batch_size`` > 1 the speech chunks found by VAD are decoded in batches
(faster; used only for transcriptions whose segment times need not be exact:
json, text and streams; a batched result that repeats itself is decoded again
in order).

The engine transcribes the samples it is given, whole: faster-whisper holds
features for all of them at once, so the voice workload hands it long
recordings in blocks (``intramuros.voice.blocks``). When the language is to
be detected and voice-activity detection hears no speech, no language is
asked of Whisper (it would run its encoder on silence, seconds per block).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from intramuros.engines.base import (
    Engine,
    TranscriptionEvent,
    TranscriptionParams,
    TranscriptionStart,
    TranscriptSegment,
    TranscriptWord,
    WeightsKind,
)
from intramuros.errors import EngineError, EngineUnavailable, InvalidRequest
from intramuros.offline import enforce_offline

log = logging.getLogger(__name__)

# OpenAI's temperature 0: greedy first, then these on a failed decode (compression, logprob).
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Whisper's own threshold: text whose gzip ratio is above this is a decode stuck in a loop.
REPETITION_RATIO = 2.4
VOICE_EXTRA_HINT = "Speech to text needs the voice extra: pip install 'intramuros[voice]'"
SAMPLE_RATE = 16000  # Whisper's input


ComputeType = Literal["default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16",
                      "int16", "float16", "bfloat16", "float32"]  # fmt: skip


class WhisperOptions(BaseModel):
    """The catalogue options of a ``whisper`` model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    compute_type: ComputeType | None = Field(
        default=None,
        description="CTranslate2 compute type (default: the voice-compute-type setting).",
    )


class WhisperEngine(Engine):
    """A CTranslate2 Whisper model run by faster-whisper."""

    name = "whisper"
    max_concurrency: ClassVar[int] = 1
    counts_tokens: ClassVar[bool] = False
    # A CTranslate2 folder: model.bin, and every other file beside it hashed too.
    options_model: ClassVar[type[BaseModel] | None] = WhisperOptions
    weights: ClassVar[WeightsKind] = "directory"
    weights_file: ClassVar[str | None] = "model.bin"
    weights_format: ClassVar[str] = "ctranslate2"
    capabilities: ClassVar[tuple[str, ...]] = ("transcription", "translation")

    _model: Any = None
    _batched: Any = None

    @property
    def multilingual(self) -> bool:
        """False for English-only models (``*.en``)."""
        return bool(self._model is not None and self._model.model.is_multilingual)

    def load(self) -> None:
        """Open the verified model directory with faster-whisper."""
        enforce_offline()
        try:
            from faster_whisper import (  # type: ignore[import-untyped]
                BatchedInferencePipeline,
                WhisperModel,
            )
        except ImportError:
            raise EngineUnavailable(VOICE_EXTRA_HINT) from None
        path = self.record.weights_path()
        if path is None:
            raise EngineUnavailable(f"Model '{self.record.name}' has no local weights.")
        settings = self.settings
        threads = settings.voice_threads or os.cpu_count() or 1
        compute_type = str(self.record.options.get("compute_type", settings.voice_compute_type))
        try:
            self._model = WhisperModel(str(path.parent), device="cpu", compute_type=compute_type,
                                       cpu_threads=threads, local_files_only=True)  # fmt: skip
        except (RuntimeError, ValueError, OSError) as exc:
            log.error("cannot load whisper model %s from %s: %s", self.record.name, path, exc)
            raise EngineUnavailable(f"Model '{self.record.name}' could not be loaded.") from None
        if settings.voice_batch_size > 1:
            self._batched = BatchedInferencePipeline(self._model)
        log.info("whisper %s: %s, %d threads, multilingual=%s, batch %d", self.record.name,
                 compute_type, threads, self.multilingual, settings.voice_batch_size)  # fmt: skip

    def close(self) -> None:
        """Drop the model (CTranslate2 frees its memory)."""
        self._model = None
        self._batched = None

    def _speech_in(self, audio: Any) -> bool:
        """Whether ``audio`` holds speech; only asked when the language is to be detected
        (English-only models need no detection)."""
        return not self.multilingual or _has_speech(audio)

    def _batches(self, params: TranscriptionParams) -> bool:
        """Batch VAD chunks only where it is safe: transcription, no exact times needed.

        Batched chunks are decoded without the text before them (translation then
        repeats itself) and their segment times skip the silences inside a chunk.
        """
        return (self._batched is not None and params.vad and params.task == "transcribe"
                and not params.timestamps and not params.word_timestamps)  # fmt: skip

    def transcribe(
        self, audio: Any, params: TranscriptionParams, cancel: threading.Event
    ) -> Iterator[TranscriptionEvent]:
        """Decode ``audio`` (16 kHz mono float32): a start event, then each segment."""
        if self._model is None:
            raise EngineUnavailable(f"Model '{self.record.name}' is not loaded.")
        if not self.multilingual and params.language not in (None, "en"):
            raise InvalidRequest(
                f"Model '{self.record.name}' only transcribes English; use a multilingual "
                "model for other languages.",
                param="language",
            )
        if not self.multilingual and params.task == "translate":
            raise InvalidRequest(
                f"Model '{self.record.name}' is English-only and cannot translate.", param="model"
            )
        if params.vad and params.language is None and not self._speech_in(audio):
            # Nothing to transcribe, and nothing to tell the language by: Whisper would
            # still run its encoder on silence to guess one (seconds per call).
            yield TranscriptionStart(language="en", language_probability=0.0,
                                     duration=len(audio) / SAMPLE_RATE,
                                     speech_duration=0.0)  # fmt: skip
            return
        temperatures = FALLBACK_TEMPERATURES if params.temperature == 0 else (params.temperature,)
        options: dict[str, Any] = {
            "language": params.language,
            "task": params.task,
            "beam_size": self.settings.voice_beam_size,
            "temperature": list(temperatures),
            "initial_prompt": params.prompt or None,
            "word_timestamps": params.word_timestamps,
            "vad_filter": params.vad,
        }
        try:
            if self._batches(params):
                segments, info = self._batched.transcribe(
                    audio, batch_size=self.settings.voice_batch_size, without_timestamps=False,
                    **options,
                )  # fmt: skip
            else:
                segments, info = self._model.transcribe(audio, **options)
            yield TranscriptionStart(
                language=str(info.language),
                language_probability=float(info.language_probability),
                duration=float(info.duration),
                speech_duration=float(info.duration_after_vad),
            )
            if self._batches(params):
                # Batched decoding has no temperature fallback: a chunk stuck repeating
                # itself stays so. Such a result is dropped and decoded in order instead.
                batched = []
                for seg in segments:
                    if cancel.is_set():
                        return
                    batched.append(seg)
                if any(seg.compression_ratio > REPETITION_RATIO for seg in batched):
                    log.info("whisper %s: batched decode repeated itself; decoding in order",
                             self.record.name)  # fmt: skip
                    segments, _ = self._model.transcribe(audio, **options)
                else:
                    segments = batched
            for index, seg in enumerate(segments):
                if cancel.is_set():
                    return
                yield _segment(index, seg)
        except (RuntimeError, ValueError) as exc:
            log.error("whisper %s failed: %s", self.record.name, exc)
            raise EngineError(f"Model '{self.record.name}' failed to transcribe.") from None


def _has_speech(audio: Any) -> bool:
    """Whether voice-activity detection (the Silero model inside faster-whisper) hears any."""
    from faster_whisper.vad import (  # type: ignore[import-untyped]
        VadOptions,
        get_speech_timestamps,
    )

    return bool(get_speech_timestamps(audio, VadOptions()))


def _segment(index: int, seg: Any) -> TranscriptSegment:
    """faster-whisper's Segment as our dataclass (ids renumbered from 0 per call)."""
    words = tuple(
        TranscriptWord(start=float(w.start), end=float(w.end), word=str(w.word),
                       probability=float(w.probability))
        for w in (seg.words or ())
    )  # fmt: skip
    return TranscriptSegment(
        id=index,
        seek=int(seg.seek),
        start=float(seg.start),
        end=float(seg.end),
        text=str(seg.text),
        tokens=tuple(int(t) for t in seg.tokens),
        avg_logprob=float(seg.avg_logprob),
        compression_ratio=float(seg.compression_ratio),
        no_speech_prob=float(seg.no_speech_prob),
        temperature=float(seg.temperature if seg.temperature is not None else 0.0),
        words=words,
    )
