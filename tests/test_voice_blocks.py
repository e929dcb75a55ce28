"""Long audio in bounded memory, and the personal-data policy on transcripts, without a server.

Checking an upload (``probe``) decodes it once, frame by frame, and stops at
the duration limit or when told to; long audio is decoded again in blocks cut
at quiet points, transcribed block by block with times offset. The transcript
guard refuses blocked personal data before any part of it would be sent.
The engine here is a stand-in that reports what it was given: the real
Whisper engine runs these paths in tests/test_voice_api.py and
tests/test_abuse_voice.py.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from intramuros.engines.base import (
    Engine,
    TranscriptionEvent,
    TranscriptionParams,
    TranscriptionStart,
    TranscriptSegment,
    TranscriptWord,
)
from intramuros.gate.policy import TenantPolicy
from intramuros.gate.privacy import PersonalDataBlocked
from intramuros.voice.audio import SAMPLE_RATE, probe
from intramuros.voice.blocks import (
    Block,
    BlockCutter,
    BlockRun,
    blocks,
    quiet_point,
    shifted,
    transcribe_blocks,
)
from intramuros.voice.errors import AudioTooLong, DecodingStopped
from intramuros.voice.policy import HOLD_CHARS, TranscriptGuard, inspect_call

CORPUS = Path(__file__).resolve().parent.parent / "benchmarks" / "voice_corpus"
IBAN = "DE89 3704 0044 0532 0130 00"


def _silent_webm(dest: Path, minutes: int) -> bytes:
    """``minutes`` of silent Opus in WebM written to a pipe: no duration in its headers."""
    one = dest.with_suffix(".one.ogg")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "anullsrc=r=48000:cl=mono", "-t", "60", "-c:a", "libopus", "-b:a", "6k",
                    str(one)], check=True, timeout=60)  # fmt: skip
    piped = subprocess.run(["ffmpeg", "-loglevel", "error", "-stream_loop", str(minutes - 1),
                            "-i", str(one), "-c", "copy", "-f", "webm", "pipe:1"],
                           check=True, capture_output=True, timeout=60)  # fmt: skip
    return piped.stdout


# -- checking an upload: the limit, the stop flag -----------------------------------------


@pytest.mark.slow
def test_decoding_stops_as_soon_as_it_passes_the_limit(tmp_path: Path) -> None:
    data = _silent_webm(tmp_path / "hour", 60)
    packets = 0

    def counting() -> bool:
        nonlocal packets
        packets += 1
        return False

    with pytest.raises(AudioTooLong) as info:
        probe(data, max_seconds=30, keep_seconds=10, stop=counting)
    assert info.value.status == 400 and info.value.param == "file"
    message = info.value.message
    assert "30 s" in message and "voice_max_audio_seconds" in message, message
    # An hour of 20 ms packets is 180,000; decoding stopped past 30 s, not at the end.
    assert 0 < packets <= 30 / 0.02 + 100, packets
    whole = probe(data, max_seconds=4000, keep_seconds=10)
    assert whole.duration == pytest.approx(3600, abs=1) and whole.samples is None


def test_a_raised_stop_flag_ends_decoding(tmp_path: Path) -> None:
    data = _silent_webm(tmp_path / "ten", 10)
    packets = 0

    def soon() -> bool:
        nonlocal packets
        packets += 1
        return packets > 50

    with pytest.raises(DecodingStopped) as info:
        probe(data, max_seconds=4000, keep_seconds=10, stop=soon)
    assert info.value.status == 503 and packets == 51
    with pytest.raises(DecodingStopped):
        list(blocks(data, probe(data, max_seconds=4000, keep_seconds=10), block_seconds=60,
                    stop=soon))  # fmt: skip


def test_blocks_decoded_again_are_the_samples_checked_with_nothing_lost() -> None:
    data = (CORPUS / "en-1.wav").read_bytes()
    whole = probe(data, max_seconds=60, keep_seconds=60)
    assert whole.samples is not None and whole.duration > 3
    long = probe(data, max_seconds=60, keep_seconds=1)  # "long": longer than one block
    assert long.samples is None and long.duration == pytest.approx(whole.duration, abs=0.01)
    pieces = [Block(b.start, b.samples.copy()) for b in blocks(data, long, block_seconds=1.2,
                                                                 stop=lambda: False)]  # fmt: skip
    assert len(pieces) >= 3
    assert all(len(b.samples) <= 1.2 * SAMPLE_RATE for b in pieces)
    assert [b.start for b in pieces] == list(np.cumsum([0] + [len(b.samples) for b in pieces])[:-1])
    joined = np.concatenate([b.samples for b in pieces])
    assert np.array_equal(joined, whole.samples)
    # Audio that fits in one block is not decoded again: the checked samples are the block.
    only = list(blocks(data, whole, block_seconds=1.2, stop=lambda: False))
    assert len(only) == 1 and only[0].samples is whole.samples


def test_blocks_are_cut_in_a_pause() -> None:
    rng = np.random.default_rng(7)
    speech = (rng.standard_normal(SAMPLE_RATE * 100) * 0.3).astype(np.float32)
    pause = slice(int(SAMPLE_RATE * 88.0), int(SAMPLE_RATE * 88.8))  # in the last quarter
    speech[pause] = 0.0
    cut = quiet_point(speech, int(SAMPLE_RATE * 75), SAMPLE_RATE * 100)
    assert pause.start <= cut < pause.stop
    cutter = BlockCutter(SAMPLE_RATE * 100)
    first = [Block(b.start, b.samples.copy()) for b in cutter.add(speech[: SAMPLE_RATE * 60])]
    assert first == []  # not full yet
    out = [Block(b.start, b.samples.copy()) for b in cutter.add(speech[SAMPLE_RATE * 60 :])]
    out += [Block(b.start, b.samples.copy()) for b in cutter.add(speech[:SAMPLE_RATE])]
    out += [Block(b.start, b.samples.copy()) for b in cutter.finish()]
    assert [b.start for b in out] == [0, len(out[0].samples)]
    assert pause.start <= len(out[0].samples) < pause.stop
    assert np.array_equal(np.concatenate([b.samples for b in out]),
                          np.concatenate([speech, speech[:SAMPLE_RATE]]))  # fmt: skip


# -- transcribing block by block ------------------------------------------------------------


class Recorder:
    """Stands in for an engine: one segment per block, and notes what each call was given."""

    def __init__(self, speech: list[bool], language: str = "de") -> None:
        self.speech = speech
        self.language = language
        self.calls: list[tuple[int, TranscriptionParams]] = []

    def transcribe(self, audio: Any, params: TranscriptionParams,
                   cancel: threading.Event) -> Iterator[TranscriptionEvent]:  # fmt: skip
        n = len(self.calls)
        self.calls.append((len(audio), params))
        heard = self.speech[n]
        yield TranscriptionStart(language=params.language or (self.language if heard else "en"),
                                 language_probability=0.9 if heard else 0.0,
                                 duration=len(audio) / SAMPLE_RATE,
                                 speech_duration=1.5 if heard else 0.0)  # fmt: skip
        if heard:
            word = TranscriptWord(0.75, 1.0, " Hallo", 0.9)
            yield TranscriptSegment(id=0, seek=50, start=0.5, end=2.0, text=f" Block {n}.",
                                    tokens=(1,), avg_logprob=-0.1, compression_ratio=1.0,
                                    no_speech_prob=0.0, temperature=0.0,
                                    words=(word,))  # fmt: skip


def test_segments_of_every_block_are_timed_from_the_start_of_the_recording() -> None:
    engine = Recorder([False, True, True, True])
    sizes = [SAMPLE_RATE * 90, SAMPLE_RATE * 100, SAMPLE_RATE * 95, SAMPLE_RATE * 10]
    starts = np.cumsum([0, *sizes[:-1]])
    pieces = [
        Block(int(s), np.zeros(n, dtype=np.float32)) for s, n in zip(starts, sizes, strict=True)
    ]
    run = BlockRun(duration=295.0)
    params = TranscriptionParams(prompt="Glossar: Vertrag")
    events = list(transcribe_blocks(cast(Engine, engine), pieces, params, threading.Event(), run))
    start = events[0]
    assert isinstance(start, TranscriptionStart) and start.duration == 295.0
    segments = [e for e in events if isinstance(e, TranscriptSegment)]
    assert len(events) == 4 and [s.id for s in segments] == [0, 1, 2]
    assert [s.start for s in segments] == [90.5, 190.5, 285.5]
    assert [s.end for s in segments] == [92.0, 192.0, 287.0]
    assert [s.words[0].start for s in segments] == [90.75, 190.75, 285.75]
    assert [s.seek for s in segments] == [50 + 9000, 50 + 19000, 50 + 28500]
    # The language heard first is kept; a silent block's guess is not; every block has the
    # request's prompt.
    assert [p.language for _, p in engine.calls] == [None, None, "de", "de"]
    assert {p.prompt for _, p in engine.calls} == {"Glossar: Vertrag"}
    assert (run.language, run.heard, run.blocks, run.speech_seconds) == ("de", True, 4, 4.5)


def test_times_past_the_end_of_a_block_are_kept_within_it() -> None:
    """Whisper pads its last window with silence and may time the last words past the
    end of the audio: no segment or word may end after its block (nor the recording)."""
    block = Block(SAMPLE_RATE * 120, np.zeros(SAMPLE_RATE * 10, dtype=np.float32))
    words = (TranscriptWord(8.0, 9.5, " late", 0.9), TranscriptWord(10.4, 11.2, " gone", 0.5))
    seg = TranscriptSegment(id=3, seek=0, start=8.0, end=11.2, text=" late gone", tokens=(1,),
                            avg_logprob=-0.1, compression_ratio=1.0, no_speech_prob=0.0,
                            temperature=0.0, words=words)  # fmt: skip
    out = shifted(seg, block, 7)
    assert (out.id, out.start, out.end) == (7, 128.0, 130.0)
    assert [(w.start, w.end) for w in out.words] == [(128.0, 129.5), (130.0, 130.0)]
    # The first block too (no offset), and an end before the start is lifted to it.
    first = Block(0, np.zeros(SAMPLE_RATE * 5, dtype=np.float32))
    word = TranscriptWord(4.5, 6.0, " x", 0.9)
    odd = TranscriptSegment(id=0, seek=0, start=4.0, end=3.0, text=" x", tokens=(1,),
                            avg_logprob=-0.1, compression_ratio=1.0, no_speech_prob=0.0,
                            temperature=0.0, words=(word,))  # fmt: skip
    fixed = shifted(odd, first, 0)
    assert (fixed.start, fixed.end) == (4.0, 4.0)
    assert [(w.start, w.end) for w in fixed.words] == [(4.5, 5.0)]


def test_a_cancelled_transcription_stops_between_blocks() -> None:
    engine = Recorder([True] * 5)
    cancel = threading.Event()
    pieces = (Block(i * SAMPLE_RATE, np.zeros(SAMPLE_RATE, dtype=np.float32)) for i in range(5))
    seen = []
    for event in transcribe_blocks(cast(Engine, engine), pieces, TranscriptionParams(language="en"),
                                   cancel, BlockRun(duration=5.0)):  # fmt: skip
        seen.append(event)
        if len(seen) == 3:
            cancel.set()
    assert len(engine.calls) == 2


# -- the personal-data policy on transcripts --------------------------------------------------


def _segments(*texts: str) -> list[TranscriptSegment]:
    return [TranscriptSegment(id=i, seek=0, start=float(i), end=i + 1.0, text=t, tokens=(),
                              avg_logprob=0.0, compression_ratio=1.0, no_speech_prob=0.0,
                              temperature=0.0) for i, t in enumerate(texts)]  # fmt: skip


def _released(guard: TranscriptGuard, segments: list[TranscriptSegment]) -> list[str]:
    """Texts the guard lets out before it refuses (or all of them)."""
    out: list[str] = []
    try:
        for event in guard.screen(segments):
            assert isinstance(event, TranscriptSegment)
            out.append(event.text)
    except PersonalDataBlocked as exc:
        assert exc.param == "file" and exc.status == 400 and "iban" in exc.message
        assert IBAN not in exc.message
        out.append("REFUSED")
    return out


BLOCK_IBAN = TenantPolicy(pii={"iban": "block"}, store_content=True)
filler = [" This is a long stretch of ordinary talk about the weather and trains." * 2] * 6


def test_a_blocked_value_split_across_segments_never_leaves() -> None:
    head, tail = IBAN[:9], IBAN[9:]
    segments = _segments(*filler, f" My account is {head}", f"{tail}, thanks.")
    released = _released(TranscriptGuard(BLOCK_IBAN), segments)
    assert released[-1] == "REFUSED"
    leaked = "".join(released)
    assert head not in leaked and tail not in leaked and "My account" not in leaked
    # What came long enough before it was released, in order, before the refusal.
    assert released[:-1] == filler[: len(released) - 1] and len(released) > 1


def test_the_refusal_records_the_decision_on_prompt_and_transcript() -> None:
    guard = TranscriptGuard(BLOCK_IBAN, prompt="Names: Müller, alice@example.com")
    assert _released(guard, _segments(f" Pay to {IBAN} today.")) == ["REFUSED"]
    assert guard.decision is not None
    assert guard.decision.summary() == {
        "email": {"count": 1, "action": "redact-in-logs"},
        "iban": {"count": 1, "action": "block"},
    }
    assert guard.decision.for_record(f"to {IBAN}") == "to [IBAN]"


def test_a_policy_that_blocks_nothing_holds_nothing_back() -> None:
    consumed: list[int] = []

    def produce() -> Iterator[TranscriptionEvent]:
        for i, seg in enumerate(_segments(f" Pay to {IBAN}.", " Then call me.")):
            consumed.append(i)
            yield seg

    guard = TranscriptGuard(TenantPolicy(pii={"iban": "redact-in-logs"}))
    events = guard.screen(produce())
    first = next(events)
    assert isinstance(first, TranscriptSegment) and IBAN in first.text
    assert consumed == [0]  # released before the next one was even decoded
    assert len(list(events)) == 1 and guard.decision is None


def test_a_clean_transcript_comes_out_whole_and_in_order() -> None:
    texts = [f" Sentence number {i} of a long and clean talk." for i in range(40)]
    out = _released(TranscriptGuard(BLOCK_IBAN), _segments(*texts))
    assert out == texts
    assert sum(len(t) for t in texts) > 4 * HOLD_CHARS


def test_the_decision_on_a_call_counts_prompt_and_transcript() -> None:
    policy = TenantPolicy(pii={"iban": "block"})
    decision = inspect_call(f"IBAN {IBAN}", "mail me at bob@example.org", policy)
    assert decision.found == {"iban": 1, "email": 1}
    assert inspect_call(None, None, policy).found == {}
