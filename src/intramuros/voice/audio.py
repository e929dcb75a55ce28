"""Decoding uploads: any accepted container/codec -> 16 kHz mono float32, or a clear 4xx.

FFmpeg (through PyAV, a dependency of faster-whisper) reads the file by its
content, not its name. We accept the containers OpenAI lists (wav, mp3, mp4/m4a,
ogg, flac, webm) and refuse the rest by name; garbage, a file cut short, a file
with no audio stream, zero-length and too-long audio each get their own error.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from intramuros.errors import EngineUnavailable
from intramuros.voice.errors import AudioTooLong, AudioTooShort, BadAudio, UnsupportedAudioFormat

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MIN_SECONDS = 0.1  # OpenAI's minimum
# FFmpeg demuxer names (a demuxer may have several, comma-separated) we accept.
ACCEPTED_DEMUXERS = frozenset({"wav", "mp3", "mov", "mp4", "m4a", "ogg", "flac", "matroska",
                               "webm"})  # fmt: skip
ACCEPTED_LABEL = "flac, m4a, mp3, mp4, ogg, wav, webm"
# Decoded audio shorter than this share of what the container declares: the file was cut.
TRUNCATED_RATIO = 0.9


@dataclass(frozen=True)
class DecodedAudio:
    """Samples ready for Whisper, and what they came from."""

    samples: npt.NDArray[np.float32]
    container: str
    codec: str

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.samples) / SAMPLE_RATE


def decode(source: bytes, *, max_seconds: float) -> DecodedAudio:
    """Decode ``source`` (the bytes of an upload or a file) to 16 kHz mono float32.

    Raises ``BadAudio`` (or a subclass) with ``param="file"`` for anything we
    cannot turn into at least 0.1 s and at most ``max_seconds`` of audio.
    """
    try:
        import av
    except ImportError:
        raise EngineUnavailable(
            "Speech to text needs the voice extra: pip install 'intramuros[voice]'"
        ) from None
    if not source:
        raise AudioTooShort("The audio file is empty (0 bytes).", code="empty_file")
    try:
        container = av.open(io.BytesIO(source), mode="r", metadata_errors="ignore")
    except av.FFmpegError as exc:
        log.info("not audio: %s", exc)
        raise BadAudio(f"The file is not audio we can decode. Supported formats: "
                       f"{ACCEPTED_LABEL}.") from None  # fmt: skip
    with container:
        demuxers = set(container.format.name.split(","))
        if not demuxers & ACCEPTED_DEMUXERS:
            raise UnsupportedAudioFormat(
                f"Unsupported file format '{container.format.name}'. Supported formats: "
                f"{ACCEPTED_LABEL}."
            )
        if not container.streams.audio:
            raise BadAudio("The file has no audio stream.", code="no_audio_stream")
        stream = container.streams.audio[0]
        codec = stream.codec_context.name if stream.codec_context else "unknown"
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > max_seconds:
            raise AudioTooLong(f"The audio is {declared:.0f} s long; the limit is "
                               f"{max_seconds:.0f} s.")  # fmt: skip
        samples = _decode_stream(av, container, stream, codec, max_seconds)
        if _cut_short(source, demuxers):
            raise BadAudio("The audio file is truncated: it ends before the end that its headers "
                           "announce.", code="truncated_audio")  # fmt: skip
    duration = len(samples) / SAMPLE_RATE
    if len(samples) == 0:
        raise AudioTooShort("The audio file contains no audio (zero length).",
                            code="empty_audio")  # fmt: skip
    if declared is not None and declared > 1.0 and duration < declared * TRUNCATED_RATIO:
        raise BadAudio(f"The audio file is truncated: it declares {declared:.1f} s but only "
                       f"{duration:.1f} s could be decoded.", code="truncated_audio")  # fmt: skip
    if duration < MIN_SECONDS:
        raise AudioTooShort(f"Audio file is too short ({duration:.3f} s). Minimum audio "
                            f"length is {MIN_SECONDS} seconds.")  # fmt: skip
    return DecodedAudio(samples=samples, container=container.format.name, codec=codec)


def _cut_short(data: bytes, demuxers: set[str]) -> bool:
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


def _decode_stream(
    av: Any, container: Any, stream: Any, codec: str, max_seconds: float
) -> npt.NDArray[np.float32]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[npt.NDArray[np.float32]] = []
    total = 0
    limit = int(max_seconds * SAMPLE_RATE)
    decoded_any = False

    def take(frames: Any) -> None:
        nonlocal total
        for out in frames:
            data = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            chunks.append(data)
            total += len(data)

    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                decoded_any = True
                frame.pts = None  # the resampler re-times; gaps in pts are not our concern
                take(resampler.resample(frame))
            if total > limit:
                raise AudioTooLong(f"The audio is longer than the limit of {max_seconds:.0f} s.")
        take(resampler.resample(None))
    except av.FFmpegError as exc:
        log.info("decoding %s failed: %s", codec, exc)
        if not decoded_any:
            raise UnsupportedAudioFormat(
                f"The audio codec ({codec}) is not supported: the stream could not be "
                f"decoded. Supported formats: {ACCEPTED_LABEL}.",
                code="unsupported_codec",
            ) from None
        raise BadAudio("The audio file is truncated or corrupt: decoding stopped part-way.",
                       code="truncated_audio") from None  # fmt: skip
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks)
