"""Wire types of /v1/audio/transcriptions and /v1/audio/translations (OpenAI's shapes).

Requests are multipart forms, checked field by field here into an
:class:`AudioRequest` (each refusal names its ``param``); responses are the
pydantic models below, or text (``text``, ``srt``, ``vtt``). No engine code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile

from intramuros.errors import InvalidRequest
from intramuros.voice.languages import language_code

Task = Literal["transcribe", "translate"]
ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = ("json", "text", "srt", "vtt", "verbose_json")
MAX_PROMPT_CHARS = 4000

# Form fields each endpoint takes; array fields arrive as `name[]` from the openai client.
_COMMON = {"file", "model", "prompt", "response_format", "temperature"}
_TRANSCRIBE_ONLY = {"language", "timestamp_granularities", "stream", "include",
                    "chunking_strategy"}  # fmt: skip
FIELDS: dict[Task, frozenset[str]] = {
    "transcribe": frozenset(_COMMON | _TRANSCRIBE_ONLY),
    "translate": frozenset(_COMMON),
}


@dataclass(frozen=True)
class AudioRequest:
    """A checked transcription or translation request."""

    task: Task
    filename: str
    data: bytes
    model: str
    language: str | None = None
    prompt: str | None = None
    response_format: ResponseFormat = "json"
    temperature: float = 0.0
    words: bool = False
    stream: bool = False


async def audio_request(form: FormData, task: Task) -> AudioRequest:
    """Check a multipart form field by field; ``InvalidRequest`` naming the first bad one."""
    allowed = FIELDS[task]
    for key in form:
        if key.removesuffix("[]") not in allowed:
            raise InvalidRequest(f"Unrecognized request argument supplied: {key}", param=key)
    upload = form.get("file")
    if upload is None:
        raise InvalidRequest("Missing required parameter: 'file'.", param="file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("'file' must be a file upload (multipart/form-data).", param="file")
    model = _text(form, "model")
    if not model:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    fmt = _text(form, "response_format") or "json"
    if fmt not in RESPONSE_FORMATS:
        raise InvalidRequest(
            f"Invalid value for 'response_format': '{fmt}'. Supported values are: "
            f"{', '.join(RESPONSE_FORMATS)}.",
            param="response_format",
        )
    prompt = _text(form, "prompt")
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"'prompt' is longer than {MAX_PROMPT_CHARS} characters.",
                             param="prompt")  # fmt: skip
    temperature = _temperature(_text(form, "temperature"))
    granularities = _array(form, "timestamp_granularities")
    bad = [g for g in granularities if g not in ("word", "segment")]
    if bad:
        raise InvalidRequest(f"Invalid value for 'timestamp_granularities': '{bad[0]}'. "
                             "Supported values are: word, segment.",
                             param="timestamp_granularities")  # fmt: skip
    if granularities and fmt != "verbose_json":
        raise InvalidRequest("'timestamp_granularities' needs response_format=verbose_json.",
                             param="timestamp_granularities")  # fmt: skip
    include = _array(form, "include")
    if include:
        raise InvalidRequest(f"'include' ({', '.join(include)}) is not supported by Whisper "
                             "models.", param="include")  # fmt: skip
    chunking = _text(form, "chunking_strategy")
    if chunking not in (None, "auto"):
        raise InvalidRequest("'chunking_strategy' must be 'auto' (voice-activity detection "
                             "is always used).", param="chunking_strategy")  # fmt: skip
    stream = _flag(_text(form, "stream"), "stream")
    if stream and fmt not in ("json", "text"):
        raise InvalidRequest(f"Streaming sends text events; response_format '{fmt}' cannot be "
                             "streamed.", param="stream")  # fmt: skip
    return AudioRequest(
        task=task,
        filename=upload.filename or "audio",
        data=await upload.read(),
        model=model,
        language=language_code(_text(form, "language")),
        prompt=prompt or None,
        response_format=fmt,
        temperature=temperature,
        words="word" in granularities,
        stream=stream,
    )


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a text field, not a file.", param=name)
    return value.strip()


def _array(form: FormData, name: str) -> list[str]:
    values: list[Any] = [*form.getlist(name + "[]"), *form.getlist(name)]
    out: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise InvalidRequest(f"'{name}' must be text fields, not files.", param=name)
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


def _temperature(value: str | None) -> float:
    if value is None or value == "":
        return 0.0
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequest(f"Invalid value for 'temperature': '{value}' is not a number.",
                             param="temperature") from None  # fmt: skip
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise InvalidRequest(f"Invalid value for 'temperature': {value}. It must be between "
                             "0 and 1.", param="temperature")  # fmt: skip
    return number


def _flag(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidRequest(f"Invalid value for '{name}': '{value}' (true or false).", param=name)


# -- responses -------------------------------------------------------------------


class DurationUsage(BaseModel):
    """Usage of models billed by audio duration."""

    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionOut(BaseModel):
    """``response_format=json``."""

    text: str
    usage: DurationUsage


class WordOut(BaseModel):
    """A word with its times, in verbose_json."""

    word: str
    start: float
    end: float


class SegmentOut(BaseModel):
    """A segment, in verbose_json."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class VerboseOut(BaseModel):
    """``response_format=verbose_json``; ``words`` only with timestamp_granularities[]=word."""

    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    segments: list[SegmentOut]
    words: list[WordOut] | None = None
    usage: DurationUsage


class TextDeltaEvent(BaseModel):
    """A stream event: more text (one decoded segment)."""

    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str


class TextDoneEvent(BaseModel):
    """The last stream event: the whole text."""

    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str
    usage: DurationUsage
