"""The Files API's settings: largest file, and the key that encrypts files at rest."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class FilesSettings(BaseModel):
    """The Files API's section of the settings (flat names, like every setting)."""

    model_config = ConfigDict(extra="forbid")

    files_max_bytes: int = Field(
        default=50 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest file accepted by POST /v1/files, and largest document in POST /v1/ocr; "
            "larger gets 413."
        ),
    )
    files_key_file: Path | None = Field(
        default=None,
        description=(
            "Key file (format of `intramuros ledger keygen`) encrypting stored files at rest. "
            "Default: the ledger key if one is configured, else <data-dir>/files.key, "
            "created with mode 0600 on first use."
        ),
    )
