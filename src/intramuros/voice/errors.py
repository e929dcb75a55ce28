"""Errors of the voice workload: every one a 4xx naming the parameter at fault."""

from __future__ import annotations

from intramuros.errors import InvalidRequest


class BadAudio(InvalidRequest):
    """The uploaded file is not audio we can decode (garbage, truncated, no audio stream)."""

    code = "invalid_audio"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, param="file", code=code)


class UnsupportedAudioFormat(BadAudio):
    """Audio in a container or codec we do not take."""

    code = "unsupported_audio_format"


class AudioTooShort(BadAudio):
    """Zero-length audio, or shorter than OpenAI's 0.1 s minimum."""

    code = "audio_too_short"


class AudioTooLong(BadAudio):
    """Longer than ``voice_max_audio_seconds``."""

    code = "audio_too_long"
