"""Long audio, transcribed block by block in bounded memory.

Whisper's engine takes a whole array of samples, and faster-whisper computes
voice activity and the log-Mel features of all of it before the first
segment: its memory grows with the audio (about 1 MB per second of speech,
plus twice the samples for voice-activity detection). So a recording longer
than one block is decoded again as it is transcribed, and handed to the
engine in blocks of ``voice_block_seconds``, each cut at the quietest
half-second near its end so that no word is split. Segment times are offset
by the block's start; the language detected in the first block with speech
is kept for the blocks after it, as Whisper detects it once on a whole file.
Memory then depends on the block size, never on the duration.

All of this runs in the model lane's worker thread, which owns the cancel flag.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from intramuros.engines.base import (
    Engine,
    TranscriptionEvent,
    TranscriptionParams,
    TranscriptionStart,
    TranscriptSegment,
)
from intramuros.voice.audio import (
    SAMPLE_RATE,
    DecodedAudio,
    Samples,
    Stop,
    frames,
    open_audio,
    resampled,
    resampler,
)

# Whisper's mel frames per second: a segment's ``seek`` counts them.
FRAMES_PER_SECOND = 100
# A block is cut in its last quarter, at most this many seconds before its end ...
SEARCH_SECONDS = 30.0
# ... at the centre of the quietest stretch this long, scored in frames of 20 ms.
QUIET_SECONDS = 0.5
ENERGY_FRAME = SAMPLE_RATE // 50


@dataclass(frozen=True)
class Block:
    """Samples from ``start`` (samples since the beginning of the recording)."""

    start: int
    samples: Samples

    @property
    def offset(self) -> float:
        """Seconds from the beginning of the recording."""
        return self.start / SAMPLE_RATE


def quiet_point(samples: Samples, lo: int, hi: int) -> int:
    """Where to cut ``samples`` between ``lo`` and ``hi``: the centre of its quietest stretch."""
    frames_in = (hi - lo) // ENERGY_FRAME
    width = max(1, int(QUIET_SECONDS * SAMPLE_RATE) // ENERGY_FRAME)
    if frames_in < width:
        return hi
    window = samples[lo : lo + frames_in * ENERGY_FRAME].reshape(frames_in, ENERGY_FRAME)
    energy = np.einsum("ij,ij->i", window, window, dtype=np.float64)
    sums = np.concatenate(([0.0], np.cumsum(energy)))
    quietest = int(np.argmin(sums[width:] - sums[:-width]))
    return lo + (quietest + width // 2) * ENERGY_FRAME


class BlockCutter:
    """Gathers samples into blocks of ``size``, each cut at a quiet point near its end.

    One buffer, reused: a block handed out is valid until the next one is asked for.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.search = min(int(SEARCH_SECONDS * SAMPLE_RATE), size // 4)
        self.buffer: Samples = np.empty(size, dtype=np.float32)
        self.filled = 0
        self.start = 0

    def add(self, data: Samples) -> Iterator[Block]:
        """Blocks completed by ``data``."""
        while len(data):
            n = min(len(data), self.size - self.filled)
            self.buffer[self.filled : self.filled + n] = data[:n]
            self.filled += n
            data = data[n:]
            if self.filled == self.size:
                cut = quiet_point(self.buffer, self.size - self.search, self.size)
                yield Block(self.start, self.buffer[:cut])
                rest = self.filled - cut
                self.buffer[:rest] = self.buffer[cut : self.filled].copy()
                self.filled, self.start = rest, self.start + cut

    def finish(self) -> Iterator[Block]:
        """The last block, if any samples are left."""
        if self.filled:
            yield Block(self.start, self.buffer[: self.filled])
            self.filled = 0


def blocks(source: bytes, audio: DecodedAudio, *, block_seconds: float,
           stop: Stop) -> Iterator[Block]:  # fmt: skip
    """The recording in blocks: the samples kept when it was checked, or decoded anew."""
    if audio.samples is not None:
        yield Block(0, audio.samples)
        return
    cutter = BlockCutter(max(1, int(block_seconds * SAMPLE_RATE)))
    with open_audio(source) as opened:
        resample = resampler(opened.av, frame_size=SAMPLE_RATE)
        for frame in frames(opened, stop):
            for data in resampled(resample, frame):
                yield from cutter.add(data)
        for data in resampled(resample, None):
            yield from cutter.add(data)
    yield from cutter.finish()


@dataclass
class BlockRun:
    """What the blocks of one transcription found, filled in by the worker thread.

    Read by the service once the stream has ended.
    """

    duration: float
    language: str | None = None
    language_probability: float = 0.0
    speech_seconds: float = 0.0
    blocks: int = 0
    # Whether ``language`` was detected on speech (not a guess on a silent block).
    heard: bool = False


def transcribe_blocks(
    engine: Engine,
    pieces: Iterable[Block],
    params: TranscriptionParams,
    cancel: threading.Event,
    run: BlockRun,
) -> Iterator[TranscriptionEvent]:
    """One start event, then the segments of every block, times from the recording's start.

    Each block gets the request's prompt; ids run on across blocks.
    """
    started = False
    index = 0
    for block in pieces:
        if cancel.is_set():
            return
        wanted = params
        if params.language is None and run.heard:
            wanted = replace(params, language=run.language)
        for event in engine.transcribe(block.samples, wanted, cancel):
            if isinstance(event, TranscriptionStart):
                run.speech_seconds += event.speech_duration
                if not run.heard:
                    run.language = event.language
                    run.language_probability = event.language_probability
                    run.heard = event.speech_duration > 0
                if not started:
                    started = True
                    yield replace(event, duration=run.duration)
                continue
            yield shifted(event, block, index)
            index += 1
        run.blocks += 1


def shifted(seg: TranscriptSegment, block: Block, index: int) -> TranscriptSegment:
    """``seg`` of ``block`` with times from the start of the recording and id ``index``.

    Times are kept within the block: Whisper reads audio in 30-second windows padded with
    silence, and now and then times the last words of a recording past its end.
    """
    offset = block.offset
    last = offset + len(block.samples) / SAMPLE_RATE

    def within(start: float, end: float) -> tuple[float, float]:
        start = min(max(start + offset, offset), last)
        return start, min(max(end + offset, start), last)

    words = []
    for w in seg.words:
        w_start, w_end = within(w.start, w.end)
        words.append(replace(w, start=w_start, end=w_end))
    start, end = within(seg.start, seg.end)
    return replace(seg, id=index, seek=seg.seek + block.start * FRAMES_PER_SECOND // SAMPLE_RATE,
                   start=start, end=end, words=tuple(words))  # fmt: skip
