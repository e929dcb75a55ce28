"""The one settings object of intramuros.

Values come, highest priority first, from command-line flags, ``INTRAMUROS_*``
environment variables, a TOML config file (``--config`` or
``INTRAMUROS_CONFIG``), and the defaults below. Every field's description is
also its ``--help`` text on the command line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from intramuros.errors import ConfigError


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/intramuros``, i.e. ``~/.local/share/intramuros`` by default."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "intramuros"


class Settings(BaseSettings):
    """Every setting of the server and the CLI."""

    model_config = SettingsConfigDict(
        env_prefix="INTRAMUROS_",
        extra="forbid",
        validate_default=True,
    )

    host: str = Field(
        default="127.0.0.1",
        description="Address to bind. The default serves only this machine.",
    )
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to listen on.")
    auth: bool = Field(
        default=True,
        description=(
            "Require an API key (Authorization: Bearer) on every /v1 route. --no-auth is "
            "refused unless the server binds a loopback address."
        ),
    )
    egress_guard: bool = Field(
        default=True,
        description=(
            "Refuse outbound connections from the server process except to loopback and the "
            "hosts of upstream engines in the catalogue (refusals are logged and counted)."
        ),
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where the database, assembled model files and logs live.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the database. Default: a SQLite file in the data dir. "
            "Use postgresql+psycopg://... to share state between replicas."
        ),
    )
    ledger_key_file: Path | None = Field(
        default=None,
        description=(
            "Key file (from `intramuros ledger keygen`) that encrypts prompt and output text "
            "kept in the ledger; else INTRAMUROS_LEDGER_KEY (base64, 32 bytes). Never stored "
            "in the database. Without a key, no text is kept."
        ),
    )
    purge_interval_seconds: int = Field(
        default=3600, ge=10, description="How often the retention purge runs in the server."
    )
    preload_models: list[str] = Field(
        default_factory=lambda: ["smollm2-135m-instruct"],
        description=(
            "Models loaded at start-up (comma-separated on the command line); /readyz "
            "answers 200 once they are. Other models load on first use."
        ),
    )
    n_ctx: int = Field(
        default=2048,
        ge=64,
        le=1_048_576,
        description="Context window (tokens) for llama.cpp models, capped at the model's own.",
    )
    n_threads: int | None = Field(
        default=None,
        ge=1,
        description=(
            "CPU threads per llama.cpp model. Default: half the cores (llama.cpp's own "
            "advice; all cores collapses under concurrent load, see benchmarks/RESULTS.md)."
        ),
    )
    n_batch: int = Field(default=512, ge=1, description="llama.cpp prompt batch size.")
    queue_limit: int = Field(
        default=16,
        ge=0,
        description=(
            "Requests allowed to wait per model besides the ones running; beyond it, "
            "429 with Retry-After."
        ),
    )
    retry_after_seconds: int = Field(
        default=1, ge=1, description="Retry-After value sent with 429 answers."
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted; larger bodies get 413.",
    )
    max_embedding_inputs: int = Field(
        default=2048, ge=1, description="Most inputs in one /v1/embeddings request."
    )
    upstream_timeout: float = Field(
        default=300.0, gt=0, description="Seconds to wait for an upstream engine's answer."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Server log level."
    )
    config: Path | None = Field(
        default=None,
        description="TOML config file with any of these settings (also INTRAMUROS_CONFIG).",
    )

    @model_validator(mode="after")
    def _no_open_door(self) -> Settings:
        if not self.auth and not _is_loopback(self.host):
            raise ValueError(
                f"authentication may only be disabled on a loopback address, not {self.host}"
            )
        return self

    @field_validator("preload_models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file_from(init_settings)
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    # -- derived values ----------------------------------------------------

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``sqlite:///<data_dir>/intramuros.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'intramuros.db'}"

    def llama_threads(self) -> int:
        """Threads for llama.cpp: the setting, or half the cores (at least one)."""
        return self.n_threads or max(1, (os.cpu_count() or 2) // 2)

    def models_dir(self) -> Path:
        """Where model files assembled from packages are kept."""
        return self.data_dir / "models"


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _config_file_from(init_settings: PydanticBaseSettingsSource) -> Path | None:
    init = init_settings()
    path = init.get("config") or os.environ.get("INTRAMUROS_CONFIG")
    if not path:
        return None
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"Config file {file} does not exist.")
    return file


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from flags (``overrides``), environment and config file.

    Raises ``ConfigError`` with a readable message when a value is invalid.
    """
    from pydantic import ValidationError

    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"Invalid settings: {problems}") from None
    except ValueError as exc:  # e.g. a TOML file that does not parse
        raise ConfigError(f"Invalid config file: {exc}") from None
