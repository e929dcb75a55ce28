"""The one settings object of intramuros.

Values come, highest priority first, from command-line flags, ``INTRAMUROS_*``
environment variables, a TOML config file (``--config`` or
``INTRAMUROS_CONFIG``), and the defaults below. Every field's description is
also its ``--help`` text on the command line.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from intramuros.errors import ConfigError

# Grid carbon intensity presets, gCO2e per kWh: SDES "Key figures on climate 2023" (IEA data)
# for the EU-27 and France, 2021.
GRID_PRESETS: dict[str, float] = {"eu": 264.0, "fr": 60.0}
S = TypeVar("S", bound=BaseModel)


def grid_intensity(value: str) -> float:
    """gCO2e per kWh for a preset name (``eu``, ``fr``) or a number given as text."""
    preset = GRID_PRESETS.get(value.strip().lower())
    if preset is not None:
        return preset
    number = float(value)  # ValueError for anything else: the settings report it
    if number < 0:
        raise ValueError("grid intensity cannot be negative")
    return number


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
    quota_store: Literal["auto", "memory", "database"] = Field(
        default="auto",
        description=(
            "Where per-minute quotas are counted: 'memory' (this server alone), 'database' "
            "(shared by every replica of the database, so that a tenant's limit holds across "
            "them), or 'auto': the database when --database-url is set (PostgreSQL "
            "replicas), memory otherwise."
        ),
    )
    key_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description=(
            "How long a checked API key and its tenant's policy are remembered before the "
            "database is read again. A key revoked or a policy changed through this server "
            "applies at once; through the command line or another replica, within this "
            "delay. 0 reads the database on every call."
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
            "Key file (from `intramuros ledger keygen`) of the ledger: MACs every record so "
            "that a database writer cannot forge them, signs checkpoints and exports, and "
            "encrypts prompt and output text kept in the ledger; else INTRAMUROS_LEDGER_KEY "
            "(base64, 32 bytes). Never stored in the database; the CLI on the gateway host "
            "needs it too. Without a key, records are not authenticated and no text is kept."
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
        description=(
            "Context window (tokens) of each request to a llama.cpp model, capped at the "
            "model's own; a model holds llama-slots of them."
        ),
    )
    llama_slots: int = Field(
        default=4,
        ge=1,
        le=256,
        description=(
            "Requests a llama.cpp model decodes together (continuous batching); more wait "
            "in its queue. A model's own `slots` option overrides it."
        ),
    )
    n_threads: int | None = Field(
        default=None,
        ge=1,
        description=(
            "CPU threads per llama.cpp model. Default: half the cores (llama.cpp's own "
            "advice; all cores collapses under concurrent load, see benchmarks/RESULTS.md)."
        ),
    )
    n_batch: int = Field(
        default=512,
        ge=1,
        le=65_536,
        description="Tokens in one llama.cpp decode step (the running streams' next tokens, "
        "then prompt chunks).",
    )
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
    max_json_values: int = Field(
        default=32_768,
        ge=1024,
        description=(
            "Most JSON values (objects, arrays and their items) in one request body; more "
            "gets 413 before the body is parsed (parsing holds the whole server)."
        ),
    )
    max_embedding_inputs: int = Field(
        default=2048, ge=1, description="Most inputs in one /v1/embeddings request."
    )
    upstream_timeout: float = Field(
        default=300.0, gt=0, description="Seconds to wait for an upstream engine's answer."
    )
    upstream_max_failures: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Failures in a row (connection, 5xx) after which an upstream of a model's "
        "pool is taken out of service, until it answers GET /models again.",
    )
    upstream_probe_seconds: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="How often an upstream out of service is asked GET /models.",
    )
    ray_address: str | None = Field(
        default=None,
        max_length=500,
        description="A Ray cluster to run batch work on (docai batch, kyc rescreen), e.g. "
        "ray://10.0.0.5:10001 or 10.0.0.5:6379 (extra `ray`); unset: local worker processes.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Server log level."
    )
    # -- meter (issue 5: energy, price, CO2) --
    energy_source: Literal["auto", "rapl", "nvml", "estimate"] = Field(
        default="auto",
        description=(
            "Where per-call energy comes from: auto (RAPL and/or NVML counters when readable, "
            "else the CPU-time estimate), rapl, nvml (refuse to start without them), estimate."
        ),
    )
    powercap_root: Path = Field(
        default=Path("/sys/class/powercap"),
        description="Linux powercap directory holding the RAPL zones (intel-rapl:N, amd-rapl:N).",
    )
    watts_per_core: float = Field(
        default=3.5,
        gt=0,
        le=1000,
        description=(
            "Estimated power of one busy core, used without energy counters: energy = CPU "
            "seconds x this. Default 3.5 W: Cloud Carbon Footprint's average maximum watts "
            "per vCPU for x86 cloud servers."
        ),
    )
    hardware_price_eur: float = Field(
        default=3000.0, ge=0, description="Purchase price of this machine (EUR), amortised."
    )
    hardware_lifetime_years: float = Field(
        default=4.0, gt=0, description="Years over which the machine's price is amortised."
    )
    hardware_utilisation: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Fraction of its life the machine is busy (less use: more per call).",
    )
    electricity_eur_per_kwh: float = Field(
        default=0.20, ge=0, description="Electricity price (EUR per kWh)."
    )
    grid_intensity: str = Field(
        default="eu",
        description=(
            "Carbon intensity of the electricity: 'eu' (264 gCO2/kWh, EU-27 2021), 'fr' "
            "(60 gCO2/kWh, France 2021; both SDES/IEA) or a number of gCO2e per kWh."
        ),
    )

    # -- the speech engine (faster-whisper) --
    voice_compute_type: str = Field(
        default="int8",
        description="CTranslate2 compute type for speech models (int8, int8_float32, float32).",
    )
    voice_threads: int = Field(
        default=0, ge=0, description="CPU threads per speech model (0: every core)."
    )
    voice_beam_size: int = Field(
        default=5, ge=1, le=16, description="Beam width of speech decoding."
    )
    voice_batch_size: int = Field(
        default=1, ge=1, le=64,
        description=(
            "Speech chunks (found by VAD) decoded together for json/text answers (faster, "
            "approximate times); 1: 30 s windows in order, each with the text before it."
        ),
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

    @field_validator("grid_intensity")
    @classmethod
    def _known_grid(cls, value: str) -> str:
        try:
            grid_intensity(value)
        except ValueError:
            raise ValueError("grid_intensity must be 'eu', 'fr' or a non-negative number") from None
        return value

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

    def shared_quotas(self) -> bool:
        """Whether per-minute quotas are counted in the database (``quota_store``)."""
        if self.quota_store == "auto":
            return bool(self.database_url)
        return self.quota_store == "database"

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


# Sections of the settings that other parts contribute (the router, each workload): entry
# points "name = module:Class", each class a pydantic model of flat fields. They are
# loaded here by name, so this module imports nothing above it.
SECTIONS_GROUP = "intramuros.settings"


@cache
def settings_class() -> type[Settings]:
    """The settings with every installed section: the class :func:`load_settings` builds."""
    from importlib.metadata import entry_points

    sections = []
    for point in sorted(entry_points(group=SECTIONS_GROUP), key=lambda p: p.name):
        try:
            section = point.load()
        except Exception as exc:  # a broken plug-in: say which, never a traceback
            raise ConfigError(f"Settings section '{point.name}' ({point.value}) cannot be "
                              f"loaded: {type(exc).__name__}: {exc}") from None
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            raise ConfigError(f"Settings section '{point.name}' ({point.value}) is not a "
                              "pydantic model.")
        sections.append(section)
    return type("Settings", (Settings, *sections), {"__doc__": Settings.__doc__,
                                                    "__module__": __name__})


def section(settings: Settings, kind: type[S]) -> S:
    """The section ``kind`` of ``settings`` (its defaults if that section was not loaded)."""
    if isinstance(settings, kind):
        return settings
    return kind()


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from flags (``overrides``), environment and config file.

    Every installed section is included (see :func:`settings_class`). Raises
    ``ConfigError`` with a readable message when a value is invalid.
    """
    from pydantic import ValidationError

    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return settings_class()(**clean)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"Invalid settings: {problems}") from None
    except ValueError as exc:  # e.g. a TOML file that does not parse
        raise ConfigError(f"Invalid config file: {exc}") from None
