"""Checking uploads: any accepted container/codec, its duration within the limit, or a 4xx.

FFmpeg (through PyAV, a dependency of faster-whisper) reads the file by its
content, not its name. We accept the containers OpenAI lists (wav, mp3, mp4/m4a,
ogg, flac, webm) and refuse the rest by name; garbage, a file cut short, a file
with no audio stream, zero-length and too-long audio each get their own error.

Memory does not grow with the recording. :func:`probe` decodes the stream
once, frame by frame, to check it: the duration its headers declare is
compared with the limit first, then the decoded duration, and decoding stops
as soon as it passes the limit; the samples are kept only when the whole
recording fits in one block (the usual short upload, decoded once). Longer
audio is decoded again, block by block, while it is transcribed
(:mod:`intramuros.voice.blocks`). Decoding checks a stop flag between packets,
so a caller that leaves or a server that shuts down stops it.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from intramuros.errors import EngineUnavailable
from intramuros.voice.errors import (
    AudioTooLong,
    AudioTooShort,
    BadAudio,
    DecodingStopped,
    UnsupportedAudioFormat,
)

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MIN_SECONDS = 0.1  # OpenAI's minimum
# FFmpeg demuxer names (a demuxer may have several, comma-separated) we accept.
ACCEPTED_DEMUXERS = frozenset({"wav", "mp3", "mov", "mp4", "m4a", "ogg", "flac", "matroska",
                               "webm"})  # fmt: skip
ACCEPTED_LABEL = "flac, m4a, mp3, mp4, ogg, wav, webm"
# Decoded audio shorter than this share of what the container declares: the file was cut.
TRUNCATED_RATIO = 0.9
LIMIT_SETTING = "voice_max_audio_seconds"

Stop = Callable[[], bool]
Samples = npt.NDArray[np.float32]


def never() -> bool:
    """A stop flag that is never raised (command-line use)."""
    return False


@dataclass(frozen=True)
class DecodedAudio:
    """A checked upload: what it is, how long, and its samples if it fits in one block.

    ``samples`` (16 kHz mono float32) is None for audio longer than the block
    size given to :func:`probe`: it is decoded again, block by block.
    """

    container: str
    codec: str
    duration: float
    samples: Samples | None = None


@dataclass(frozen=True)
class OpenedAudio:
    """An open container and its first audio stream, checked."""

    av: Any
    container: Any
    stream: Any
    codec: str
    demuxers: frozenset[str]


def load_av() -> Any:
    """PyAV, or the hint to install the voice extra."""
    try:
        import av
    except ImportError:
        raise EngineUnavailable(
            "Speech to text needs the voice extra: pip install 'intramuros[voice]'"
        ) from None
    return av


@contextlib.contextmanager
def open_audio(source: bytes) -> Iterator[OpenedAudio]:
    """Open ``source`` with FFmpeg: an accepted container with an audio stream, or 400."""
    av = load_av()
    if not source:
        raise AudioTooShort("The audio file is empty (0 bytes).", code="empty_file")
    try:
        container = av.open(io.BytesIO(source), mode="r", metadata_errors="ignore")
    except av.FFmpegError as exc:
        log.info("not audio: %s", exc)
        raise BadAudio(f"The file is not audio we can decode. Supported formats: "
                       f"{ACCEPTED_LABEL}.") from None  # fmt: skip
    with container:
        demuxers = frozenset(container.format.name.split(","))
        if not demuxers & ACCEPTED_DEMUXERS:
            raise UnsupportedAudioFormat(
                f"Unsupported file format '{container.format.name}'. Supported formats: "
                f"{ACCEPTED_LABEL}."
            )
        if not container.streams.audio:
            raise BadAudio("The file has no audio stream.", code="no_audio_stream")
        stream = container.streams.audio[0]
        codec = stream.codec_context.name if stream.codec_context else "unknown"
        yield OpenedAudio(av, container, stream, codec, demuxers)


def frames(opened: OpenedAudio, stop: Stop) -> Iterator[Any]:
    """The decoded frames of the stream, in order; ``stop()`` is checked between packets."""
    av, decoded_any = opened.av, False
    try:
        for packet in opened.container.demux(opened.stream):
            if stop():
                raise DecodingStopped("Decoding stopped: the request was cancelled or the "
                                      "server is shutting down.")  # fmt: skip
            for frame in packet.decode():
                decoded_any = True
                yield frame
    except av.FFmpegError as exc:
        log.info("decoding %s failed: %s", opened.codec, exc)
        if not decoded_any:
            raise UnsupportedAudioFormat(
                f"The audio codec ({opened.codec}) is not supported: the stream could not be "
                f"decoded. Supported formats: {ACCEPTED_LABEL}.",
                code="unsupported_codec",
            ) from None
        raise BadAudio("The audio file is truncated or corrupt: decoding stopped part-way.",
                       code="truncated_audio") from None  # fmt: skip


def resampler(av: Any, frame_size: int | None = None) -> Any:
    """FFmpeg's resampler to Whisper's input: 16 kHz, mono, float32 (in frames of
    ``frame_size`` samples if given: fewer, larger arrays for long audio)."""
    return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE,
                             frame_size=frame_size)  # fmt: skip


def resampled(resample: Any, frame: Any) -> Iterator[Samples]:
    """``frame`` (None: the resampler's tail) as 16 kHz mono float32 arrays."""
    if frame is not None:
        frame.pts = None  # the resampler re-times; gaps in pts are not our concern
    for out in resample.resample(frame):
        yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)


def too_long(max_seconds: float, declared: float | None = None) -> AudioTooLong:
    """The refusal of a recording over the limit, naming the limit and its setting."""
    if declared is not None:
        return AudioTooLong(f"The audio is {declared:.0f} s long; this server accepts at most "
                            f"{max_seconds:.0f} s (setting {LIMIT_SETTING}).")  # fmt: skip
    return AudioTooLong(f"The audio is longer than this server's limit of {max_seconds:.0f} s "
                        f"(setting {LIMIT_SETTING}); decoding stopped there.")  # fmt: skip


class _Keeper:
    """The decoded samples, while they fit in ``capacity``; dropped (None) once they do not."""

    def __init__(self, capacity: int) -> None:
        # Pages of the buffer that are never written are never resident.
        self.buffer: Samples | None = np.empty(capacity, dtype=np.float32)
        self.filled = 0

    def add(self, data: Samples) -> None:
        if self.buffer is None:
            return
        end = self.filled + len(data)
        if end > len(self.buffer):
            self.buffer = None
            return
        self.buffer[self.filled : end] = data
        self.filled = end

    def samples(self) -> Samples | None:
        return None if self.buffer is None else self.buffer[: self.filled]


def probe(
    source: bytes, *, max_seconds: float, keep_seconds: float, stop: Stop = never
) -> DecodedAudio:
    """Check ``source`` (an upload's bytes) by decoding it once, in bounded memory.

    Raises ``BadAudio`` (or a subclass) with ``param="file"`` for anything we
    cannot turn into at least 0.1 s and at most ``max_seconds`` of audio, and
    ``DecodingStopped`` once ``stop()`` is true. The samples come back only
    when there are at most ``keep_seconds`` of them.
    """
    keeper = _Keeper(int(keep_seconds * SAMPLE_RATE) + SAMPLE_RATE)
    seconds = 0.0
    with open_audio(source) as opened:
        declared = _declared_seconds(opened.container, opened.stream)
        if declared is not None and declared > max_seconds:
            raise too_long(max_seconds, declared)
        resample = resampler(opened.av)
        for frame in frames(opened, stop):
            seconds += frame.samples / frame.sample_rate
            if seconds > max_seconds:
                raise too_long(max_seconds)
            if keeper.buffer is not None:
                for data in resampled(resample, frame):
                    keeper.add(data)
        if keeper.buffer is not None:
            for data in resampled(resample, None):
                keeper.add(data)
        if _cut_short(source, opened.demuxers):
            raise BadAudio("The audio file is truncated: it ends before the end that its headers "
                           "announce.", code="truncated_audio")  # fmt: skip
        container = opened.container.format.name
    samples = keeper.samples()
    duration = len(samples) / SAMPLE_RATE if samples is not None else seconds
    if duration == 0:
        raise AudioTooShort("The audio file contains no audio (zero length).",
                            code="empty_audio")  # fmt: skip
    if declared is not None and declared > 1.0 and duration < declared * TRUNCATED_RATIO:
        raise BadAudio(f"The audio file is truncated: it declares {declared:.1f} s but only "
                       f"{duration:.1f} s could be decoded.", code="truncated_audio")  # fmt: skip
    if duration < MIN_SECONDS:
        raise AudioTooShort(f"Audio file is too short ({duration:.3f} s). Minimum audio "
                            f"length is {MIN_SECONDS} seconds.")  # fmt: skip
    return DecodedAudio(container=container, codec=opened.codec, duration=duration,
                        samples=samples)  # fmt: skip


def _cut_short(data: bytes, demuxers: frozenset[str]) -> bool:
    """True when a WAV's data chunk or an Ogg stream ends before its own header says it does.

    FFmpeg decodes what is there without complaint for these two, so we look:
    a WAV data chunk announces its size; an Ogg stream's last page has the
    end-of-stream flag.
    """
    if "wav" in demuxers and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        offset = 12
        while offset + 8 <= len(data):
            size = int.from_bytes(data[offset + 4 : offset + 8], "little")
            if data[offset : offset + 4] == b"data":
                present = len(data) - offset - 8
                # 0 and 0xFFFFFFFF: a streamed WAV that never knew its size.
                return 0 < size < 0xFFFFFFFF and present < size * TRUNCATED_RATIO
            offset += 8 + size + (size & 1)
        return False
    if "ogg" in demuxers:
        last = data.rfind(b"OggS")
        return last >= 0 and last + 5 < len(data) and not data[last + 5] & 0x04
    return False


def _declared_seconds(container: Any, stream: Any) -> float | None:
    """The duration the file's headers announce, if any."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000
    return None
