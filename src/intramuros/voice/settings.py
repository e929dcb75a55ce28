"""The voice workload's settings: default model, upload and duration limits, decoding."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class VoiceSettings(BaseModel):
    """The voice workload's section of the settings (flat names: ``--voice-...`` flags,
    ``INTRAMUROS_...`` variables and TOML keys, like every setting)."""

    model_config = ConfigDict(extra="forbid")

    voice_default_model: str = Field(
        default="whisper-base",
        description="Speech model used for `whisper-1` (OpenAI's name) and by `transcribe`.",
    )
    voice_max_upload_bytes: int = Field(
        default=25 * 1024 * 1024, ge=1024,
        description="Largest audio upload to /v1/audio/* in bytes (413 above it).",
    )
    voice_max_audio_seconds: float = Field(
        default=2 * 3600, gt=0,
        description=(
            "Longest recording accepted, in seconds: longer gets 400 audio_too_long, from the "
            "duration its headers declare or as soon as decoding passes it."
        ),
    )
    voice_block_seconds: float = Field(
        default=120, ge=10, le=3600,
        description=(
            "Long audio is decoded and transcribed in blocks of about this many seconds, cut "
            "at a quiet point (memory grows with the block, about 1 MB per second of speech, "
            "not with the recording)."
        ),
    )
    voice_decode_concurrency: int = Field(
        default=2, ge=1,
        description="Uploads whose audio is checked and decoded at once; others wait their turn.",
    )
    voice_decode_queue: int = Field(
        default=16, ge=0,
        description="Uploads that may wait for a decoder; beyond that, 429 with Retry-After.",
    )
    voice_vad: bool = Field(
        default=True,
        description="Skip non-speech with voice-activity detection (Silero) before decoding.",
    )
