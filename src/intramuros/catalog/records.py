"""The catalogue's record of one model: what it is, where it came from, what it can do."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Capability = Literal[
    "chat", "completion", "embeddings", "tools", "json", "transcription", "translation", "ocr"
]
OriginKind = Literal["package", "file", "upstream", "engine"]


@dataclass(frozen=True)
class AdapterSpec:
    """A LoRA adapter to register on its base (``Catalog.register_adapter``)."""

    path: Path
    name: str
    base: str
    license: str = "unknown"
    description: str = ""
    owner: str | None = None
    lineage: Mapping[str, Any] = field(default_factory=dict)
    replace: bool = False


class Origin(BaseModel):
    """Where a model's weights came from.

    ``kind`` is ``package`` (a registry package: ``package`` and ``version``
    set), ``file`` (added by an operator from ``path``), ``upstream`` (served
    by another server at ``url``; we hold no weights) or ``engine`` (computed by
    its engine plug-in alone: no weights, no server).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: OriginKind
    package: str | None = None
    version: str | None = None
    path: str | None = None
    url: str | None = None


class ModelRecord(BaseModel):
    """One model in the catalogue, with its provenance.

    ``path`` is the main weights file (GGUF, safetensors); ``sha256`` is its
    hash, checked on every load. ``aux_files`` maps further files the engine
    reads (tokenizer, config), relative to ``path``'s folder, to their
    sha256; they are checked too. ``options`` carries engine-specific
    settings, as the engine's ``options_model`` declares them (for
    ``openai-upstream``: ``base_url``, ``upstream_model``, ``api_key_env``,
    ``timeout``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The id clients use in the `model` parameter.")
    engine: str = Field(description="Engine plug-in that runs it, e.g. `llamacpp`.")
    format: str = Field(description="Weights format: gguf, safetensors, or `remote`.")
    path: str | None = Field(default=None, description="Main weights file.")
    sha256: str | None = Field(default=None, description="sha256 of the weights file.")
    size_bytes: int | None = None
    quantization: str | None = None
    architecture: str | None = None
    context_length: int = 2048
    license: str = "unknown"
    origin: Origin
    capabilities: tuple[Capability, ...] = ()
    aux_files: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    # A LoRA adapter: the model it adapts, whose loaded weights it shares (``path`` and
    # ``sha256`` are then the adapter file's).
    base: str | None = None
    # A model made from a tenant's data (fine-tuned): only that tenant sees and calls it.
    owner: str | None = None
    # How it was made (fine-tuning: the base's and the data's sha256, hyperparameters,
    # seed, metrics, library versions): its lineage, shown with it.
    lineage: dict[str, Any] | None = None
    bundled: bool = False
    created: int = Field(default_factory=lambda: int(time.time()))

    def has(self, capability: Capability) -> bool:
        """True when the model declares ``capability``."""
        return capability in self.capabilities

    def weights_path(self) -> Path | None:
        """The weights file as a path, if the model has local weights."""
        return Path(self.path) if self.path else None
