"""A finished transcript and its renderings: json, text, srt, vtt, verbose_json."""

from __future__ import annotations

from dataclasses import dataclass

from intramuros.engines.base import TranscriptSegment
from intramuros.voice import protocol as p
from intramuros.voice.languages import language_name

MEDIA_TYPES: dict[p.ResponseFormat, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
EXTENSIONS: dict[p.ResponseFormat, str] = {
    "json": ".json", "verbose_json": ".json", "text": ".txt", "srt": ".srt", "vtt": ".vtt",
}  # fmt: skip


@dataclass(frozen=True)
class Transcript:
    """What a transcription produced: language (code), duration, segments."""

    task: p.Task
    language: str
    duration: float
    segments: tuple[TranscriptSegment, ...]

    @property
    def text(self) -> str:
        """The whole text (segments joined, outer space trimmed)."""
        return "".join(s.text for s in self.segments).strip()

    def usage(self) -> p.DurationUsage:
        """OpenAI's duration usage."""
        return p.DurationUsage(seconds=round(self.duration, 3))


def render(t: Transcript, fmt: p.ResponseFormat, words: bool = False) -> str | dict[str, object]:
    """The response body: a dict for the JSON formats, text for the others."""
    if fmt == "json":
        return p.TranscriptionOut(text=t.text, usage=t.usage()).model_dump()
    if fmt == "verbose_json":
        return verbose(t, words).model_dump(exclude_none=True)
    if fmt == "srt":
        return srt(t.segments)
    if fmt == "vtt":
        return vtt(t.segments)
    return t.text + "\n"


def verbose(t: Transcript, words: bool) -> p.VerboseOut:
    """verbose_json: language by name (English for translations), segments, words if asked."""
    segments = [
        p.SegmentOut(id=s.id, seek=s.seek, start=_r(s.start), end=_r(s.end), text=s.text,
                     tokens=list(s.tokens), temperature=s.temperature,
                     avg_logprob=_r(s.avg_logprob, 5), compression_ratio=_r(s.compression_ratio, 5),
                     no_speech_prob=_r(s.no_speech_prob, 5))
        for s in t.segments
    ]  # fmt: skip
    word_list = (
        [p.WordOut(word=w.word.strip(), start=_r(w.start), end=_r(w.end))
         for s in t.segments for w in s.words]
        if words else None
    )  # fmt: skip
    language = "english" if t.task == "translate" else language_name(t.language)
    return p.VerboseOut(task=t.task, language=language, duration=_r(t.duration), text=t.text,
                        segments=segments, words=word_list, usage=t.usage())  # fmt: skip


def timestamp(seconds: float, decimal: str) -> str:
    """``HH:MM:SS,mmm`` (srt, ``decimal=","``) or ``HH:MM:SS.mmm`` (vtt)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def srt(segments: tuple[TranscriptSegment, ...]) -> str:
    """SubRip subtitles, one cue per segment, numbered from 1."""
    cues = [
        f"{i}\n{timestamp(s.start, ',')} --> {timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def vtt(segments: tuple[TranscriptSegment, ...]) -> str:
    """WebVTT subtitles, one cue per segment."""
    cues = [
        f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{s.text.strip()}\n"
        for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def _r(value: float, digits: int = 3) -> float:
    return round(float(value), digits)
