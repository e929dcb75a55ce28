"""Errors of the voice workload: bad audio (400 naming ``file``), no decoder free (429),
decoding stopped by a shutdown (503)."""

from __future__ import annotations

from intramuros.errors import ClientError, InvalidRequest, ServerError


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


class DecodersBusy(ClientError):
    """Too many uploads are waiting for an audio decoder (``voice_decode_queue``)."""

    status = 429
    type = "rate_limit_error"
    code = "audio_decoders_busy"

    def __init__(self, waiting: int, *, retry_after: int = 1) -> None:
        super().__init__(
            f"Too many audio uploads are waiting to be decoded (limit {waiting}, setting "
            f"voice_decode_queue). Retry after {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


class DecodingStopped(ServerError):
    """Decoding was stopped before its end: the server is shutting down, or the caller left."""

    status = 503
    code = "shutting_down"
