"""The catalogue: every model this installation can serve, with its provenance.

Records live in the database. Bundled models are (re)registered from their
installed packages at start-up; operators add their own GGUF files or
upstream servers, or a model of any installed engine plug-in
(:meth:`Catalog.add_model`: the catalogue knows no engine; the caller checks
the model against its engine's declarations first, see
``intramuros.engines.registry.new_model``). A model's weights are hashed again
every time it is loaded (:meth:`Catalog.verify_record`), and a mismatch
refuses the load.
"""

from __future__ import annotations

import hashlib
import logging
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intramuros.catalog.bundled import BUNDLED, BundledModel, find_bundled
from intramuros.catalog.gguf import read_gguf_info
from intramuros.catalog.records import AdapterSpec, Capability, ModelRecord, Origin
from intramuros.errors import (
    InvalidRequest,
    ModelFileMissing,
    ModelIntegrityError,
    ModelNotFound,
)
from intramuros.settings import Settings
from intramuros.store.db import Database, dumps

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
ALL_CAPABILITIES: tuple[Capability, ...] = typing.get_args(Capability)
# A model folder added for an engine that names no aux files: its top-level files, at most this
# many (each is hashed now and on every load).
MAX_FOLDER_FILES = 64


def sha256_file(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of re-hashing one model's files."""

    name: str
    ok: bool
    detail: str
    expected: str | None = None
    actual: str | None = None


class Catalog:
    """Model records backed by the database."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    # -- reading -----------------------------------------------------------

    def records(self) -> list[ModelRecord]:
        """All records, by name."""
        return [ModelRecord.model_validate_json(raw) for raw in self.db.model_records()]

    def get(self, name: str) -> ModelRecord:
        """The record called ``name``.

        Raises ``ModelFileMissing`` naming the package for a bundled model
        whose package is not installed, ``ModelNotFound`` otherwise.
        """
        for record in self.records():
            if record.name == name:
                return record
        bundled = find_bundled(name)
        if bundled is not None:
            raise ModelFileMissing(bundled.install_hint(), model=name)
        raise ModelNotFound(name)

    # -- bundled models ----------------------------------------------------

    def sync_bundled(self) -> list[str]:
        """Register every bundled model whose package is installed; return their names.

        Chunked weights (Gemma) are joined into the data dir once, and checked
        against the pinned hash before being registered.
        """
        names: list[str] = []
        for bundled in BUNDLED:
            if not bundled.installed():
                log.info("bundled model %s not installed (%s)", bundled.name, bundled.package)
                continue
            path = self._bundled_path(bundled)
            if path is None:
                continue
            record = ModelRecord(
                name=bundled.name,
                engine=bundled.engine,
                format=bundled.format,
                path=str(path),
                sha256=bundled.sha256,
                size_bytes=self._bundled_size(bundled, path),
                quantization=bundled.quantization,
                architecture=bundled.architecture,
                context_length=bundled.context_length,
                license=bundled.license,
                origin=Origin(
                    kind="package", package=bundled.package, version=bundled.installed_version()
                ),
                capabilities=bundled.capabilities,
                aux_files=dict(bundled.aux_files),
                description=bundled.description,
                bundled=True,
            )
            self._save(record, keep_created=True)
            names.append(bundled.name)
        return names

    def _bundled_path(self, bundled: BundledModel) -> Path | None:
        if bundled.assembled_name is None:
            return bundled.package_path()
        # Chunked weights are joined on first load (see ensure_files), not here:
        # start-up stays fast and nothing is copied for a model nobody uses.
        return self.settings.models_dir() / bundled.assembled_name

    def _bundled_size(self, bundled: BundledModel, path: Path) -> int | None:
        if path.exists():
            return path.stat().st_size
        if bundled.assembled_name is None:
            return None
        from importlib import import_module

        module = import_module(bundled.assembler or bundled.module)
        try:
            return int(sum(p.stat().st_size for p in module.chunk_paths()))
        except (ImportError, OSError):
            return None

    def ensure_files(self, record: ModelRecord) -> None:
        """Assemble a bundled model's chunked weights into the data dir if not done yet."""
        bundled = find_bundled(record.name)
        path = record.weights_path()
        if bundled is None or bundled.assembled_name is None or path is None or path.exists():
            return
        from importlib import import_module

        try:
            module = import_module(bundled.assembler or bundled.module)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            module.assemble(partial, overwrite=True)
        except (ImportError, FileNotFoundError, ValueError) as exc:
            log.error("cannot assemble %s: %s", bundled.name, exc)
            raise ModelFileMissing(bundled.install_hint(), model=record.name) from None
        partial.replace(path)

    # -- operators' own models ----------------------------------------------

    def add_file(
        self,
        path: Path,
        *,
        name: str,
        license: str = "unknown",
        capabilities: tuple[Capability, ...] | None = None,
        context_length: int | None = None,
        replace: bool = False,
        owner: str | None = None,
        lineage: dict[str, Any] | None = None,
    ) -> ModelRecord:
        """Register a GGUF file (or CTranslate2 Whisper directory) the operator supplies
        (``owner`` and ``lineage`` as for :meth:`add_adapter`: a merged fine-tuned model)."""
        self._check_new_name(name, replace)
        path = path.expanduser().resolve()
        if path.is_dir():
            return self._add_ct2_dir(path, name=name, license=license,
                                     capabilities=capabilities, replace=replace)  # fmt: skip
        if not path.is_file():
            raise InvalidRequest(f"{path} is not a file.", param="path")
        info = read_gguf_info(path)
        if info.metadata.get("general.type") == "adapter":
            raise InvalidRequest(
                f"{path.name} is an adapter, not a model: add it with "
                "`intramuros models add-adapter NAME --base MODEL --adapter FILE`.",
                param="path",
            )
        caps = capabilities or (
            ("chat", "completion", "tools", "json") if info.has_chat_template
            else ("completion", "json")
        )  # fmt: skip
        if "embeddings" in caps:
            raise InvalidRequest(
                "The llamacpp engine serves chat and completion; embeddings are not supported "
                "for added GGUF files yet.",
                param="capabilities",
            )
        if "chat" in caps and not info.has_chat_template:
            raise InvalidRequest(
                f"{path.name} has no chat template, so it cannot serve chat.",
                param="capabilities",
            )
        record = ModelRecord(
            name=name,
            engine="llamacpp",
            format="gguf",
            path=str(path),
            sha256=sha256_file(path),
            size_bytes=path.stat().st_size,
            quantization=info.quantization,
            architecture=info.architecture,
            context_length=context_length or info.context_length or 2048,
            license=license if license != "unknown" else (info.license or "unknown"),
            origin=Origin(kind="file", path=str(path)),
            capabilities=caps,
            description=info.name or "",
            owner=owner,
            lineage=lineage,
        )
        self._save(record)
        return record

    def _add_ct2_dir(
        self,
        path: Path,
        *,
        name: str,
        license: str,
        capabilities: tuple[Capability, ...] | None,
        replace: bool,
    ) -> ModelRecord:
        """Register a CTranslate2 Whisper directory: model.bin plus its hashed aux files."""
        from intramuros.catalog.ct2 import inspect_dir

        try:
            info = inspect_dir(path)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="path") from None
        speech: tuple[Capability, ...] = (
            ("transcription", "translation") if info.multilingual else ("transcription",)
        )
        caps = capabilities or speech
        unsupported = [c for c in caps if c not in speech]
        if unsupported:
            raise InvalidRequest(
                f"A {'multilingual' if info.multilingual else 'English-only'} Whisper model "
                f"can serve {', '.join(speech)}, not {', '.join(unsupported)}.",
                param="capabilities",
            )
        record = ModelRecord(
            name=name,
            engine="whisper",
            format="ctranslate2",
            path=str(info.weights),
            sha256=sha256_file(info.weights),
            size_bytes=info.weights.stat().st_size,
            architecture="whisper",
            context_length=448,
            license=license,
            origin=Origin(kind="file", path=str(path)),
            capabilities=caps,
            aux_files={rel: sha256_file(path / rel) for rel in info.aux_files},
            description=f"CTranslate2 Whisper ({'multilingual' if info.multilingual else 'en'})",
        )
        self._save(record)
        return record

    def add_upstream(
        self,
        *,
        name: str,
        base_url: str,
        upstream_model: str | None = None,
        capabilities: tuple[Capability, ...] = ("chat", "completion"),
        context_length: int = 4096,
        license: str = "unknown",
        api_key_env: str | None = None,
        replace: bool = False,
    ) -> ModelRecord:
        """Register a model served by an OpenAI-compatible upstream server.

        (A shorthand of :meth:`add_model` for the ``openai-upstream`` engine; the
        command line checks the options against the engine's own declaration.)
        """
        self._check_new_name(name, replace)
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s]*)?", base_url):
            raise InvalidRequest("base_url must be an http(s) URL.", param="base_url")
        options: dict[str, str] = {"base_url": base_url.rstrip("/")}
        options["upstream_model"] = upstream_model or name
        if api_key_env:
            options["api_key_env"] = api_key_env
        return self.add_model(name=name, engine="openai-upstream", options=options,
                              capabilities=capabilities, context_length=context_length,
                              license=license, origin_url=base_url, replace=replace)  # fmt: skip

    def add_model(
        self,
        *,
        name: str,
        engine: str,
        capabilities: Sequence[str],
        path: Path | None = None,
        weights_file: str | None = None,
        aux_files: Sequence[str] = (),
        format: str = "remote",
        options: Mapping[str, Any] | None = None,
        context_length: int = 4096,
        license: str = "unknown",
        origin_url: str | None = None,
        description: str = "",
        replace: bool = False,
    ) -> ModelRecord:
        """Register a model of any engine plug-in (``intramuros models add --engine``).

        The engine's checks (its options, what it serves, whether it reads a
        path) are the caller's: see ``intramuros.engines.registry.new_model``.
        Here: the name, the capabilities, and the files. ``path`` None: no local
        weights (origin ``upstream`` at ``origin_url``, else ``engine``). A file:
        the weights, hashed. A folder (``weights_file`` given): that file inside
        it is the weights, and ``aux_files`` (relative paths), or else every
        other file at its top level, are hashed alongside; all are checked again
        on every load.
        """
        self._check_new_name(name, replace)
        caps = _checked_capabilities(capabilities)
        if not 16 <= context_length <= 10_000_000:
            raise InvalidRequest("context_length must be between 16 and 10,000,000 tokens.",
                                 param="context_length")  # fmt: skip
        common: dict[str, Any] = dict(
            name=name, engine=engine, format=format, context_length=context_length,
            license=license, capabilities=caps, options=dict(options or {}),
            description=description,
        )  # fmt: skip
        if path is None:
            origin = Origin(kind="upstream", url=origin_url) if origin_url else None
            record = ModelRecord(**common, origin=origin or Origin(kind="engine"))
        else:
            folder = path.expanduser().resolve()
            weights, aux = _weights_files(folder, weights_file, tuple(aux_files))
            record = ModelRecord(
                **common, path=str(weights), sha256=sha256_file(weights),
                size_bytes=weights.stat().st_size, origin=Origin(kind="file", path=str(folder)),
                aux_files={rel: sha256_file(weights.parent / rel) for rel in aux},
            )  # fmt: skip
        self._save(record)
        return record

    def add_adapter(
        self,
        path: Path,
        *,
        name: str,
        base: str,
        license: str = "unknown",
        description: str = "",
        replace: bool = False,
        owner: str | None = None,
        lineage: dict[str, Any] | None = None,
    ) -> ModelRecord:
        """Register a llama.cpp LoRA adapter GGUF on ``base`` (a GGUF model of the catalogue).

        The adapter serves what its base serves, in its context window; its file
        is hashed like any model's and checked again on every load. ``owner``
        (a tenant id) keeps it to that tenant; ``lineage`` says how it was made.
        """
        self._check_new_name(name, replace)
        parent = self.get(base)
        if parent.base is not None:
            raise InvalidRequest(f"'{base}' is itself an adapter; give its base model.",
                                 param="base")  # fmt: skip
        if parent.format != "gguf" or parent.path is None:
            raise InvalidRequest(f"'{base}' is not a GGUF model: adapters need one.",
                                 param="base")  # fmt: skip
        path = path.expanduser().resolve()
        if not path.is_file():
            raise InvalidRequest(f"{path} is not a file.", param="adapter")
        info = read_gguf_info(path)
        meta = info.metadata
        if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
            raise InvalidRequest(f"{path.name} is not a LoRA adapter GGUF (general.type "
                                 "'adapter', adapter.type 'lora').", param="adapter")  # fmt: skip
        if parent.architecture and info.architecture != parent.architecture:
            raise InvalidRequest(
                f"{path.name} adapts a '{info.architecture}' model, but '{base}' is "
                f"'{parent.architecture}'.",
                param="adapter",
            )
        record = ModelRecord(
            name=name, engine=parent.engine, format="gguf", path=str(path),
            sha256=sha256_file(path), size_bytes=path.stat().st_size, quantization=None,
            architecture=info.architecture, context_length=parent.context_length,
            license=license if license != "unknown" else (info.license or "unknown"),
            origin=Origin(kind="file", path=str(path)), capabilities=parent.capabilities,
            description=description or info.name or "", base=base, owner=owner,
            lineage=lineage,
        )  # fmt: skip
        self._save(record)
        return record

    def register_adapter(self, spec: AdapterSpec) -> ModelRecord:
        """:meth:`add_adapter` from a spec (the platform's and the workers' way in)."""
        return self.add_adapter(
            spec.path, name=spec.name, base=spec.base, license=spec.license,
            description=spec.description, owner=spec.owner, lineage=dict(spec.lineage),
            replace=spec.replace,
        )  # fmt: skip

    def remove(self, name: str) -> None:
        """Forget a model (its files are left where they are); not a base with adapters."""
        adapters = [r.name for r in self.records() if r.base == name]
        if adapters:
            raise InvalidRequest(f"'{name}' is the base of {', '.join(adapters)}: remove "
                                 "those adapters first.", param="name")  # fmt: skip
        if not self.db.delete_model(name):
            raise ModelNotFound(name)

    def remove_owned(self, owner: str) -> int:
        """Forget every model a tenant owns (made from its data); how many there were."""
        owned = [r for r in self.records() if r.owner == owner]
        # Adapters before the bases they adapt.
        for record in sorted(owned, key=lambda r: r.base is None):
            self.db.delete_model(record.name)
        return len(owned)

    def _check_new_name(self, name: str, replace: bool) -> None:
        if not NAME_RE.fullmatch(name):
            raise InvalidRequest(
                "A model name is 1-128 characters: letters, digits and . _ : - "
                "(starting with a letter or digit).",
                param="name",
            )
        if find_bundled(name) is not None:
            raise InvalidRequest(f"'{name}' is the name of a bundled model.", param="name")
        if not replace and any(r.name == name for r in self.records()):
            raise InvalidRequest(f"A model named '{name}' already exists.", param="name")

    def _save(self, record: ModelRecord, keep_created: bool = False) -> None:
        if keep_created:
            old = next((r for r in self.records() if r.name == record.name), None)
            if old is not None:
                record = record.model_copy(update={"created": old.created})
        self.db.upsert_model(record.name, record.engine, record.sha256,
                             dumps(record.model_dump(mode="json")))  # fmt: skip

    # -- integrity ---------------------------------------------------------

    def verify_record(self, record: ModelRecord) -> None:
        """Re-hash a model's files; raise unless every one matches its record
        (see :func:`verify_files`)."""
        verify_files(record)

    def verify_all(self, names: Sequence[str] | None = None) -> list[VerifyResult]:
        """Re-hash every model (or those in ``names``); one result each.

        Chunked bundled weights not yet joined are joined first, so that what
        is verified is exactly what would be loaded.
        """
        results: list[VerifyResult] = []
        for record in self.records():
            if names is not None and record.name not in names:
                continue
            try:
                self.ensure_files(record)
                self.verify_record(record)
            except ModelIntegrityError as exc:
                results.append(VerifyResult(record.name, False, f"hash mismatch: {exc.path}",
                                            exc.expected, exc.actual))  # fmt: skip
            except ModelFileMissing as exc:
                results.append(VerifyResult(record.name, False, f"missing: {exc.message}"))
            else:
                detail = "no local weights" if record.path is None else "ok"
                results.append(VerifyResult(record.name, True, detail, record.sha256,
                                            record.sha256))  # fmt: skip
        return results


def _checked_capabilities(capabilities: Sequence[str]) -> tuple[Capability, ...]:
    if not capabilities:
        raise InvalidRequest("A model must declare at least one capability.",
                             param="capabilities")  # fmt: skip
    unknown = [c for c in capabilities if c not in ALL_CAPABILITIES]
    if unknown:
        raise InvalidRequest(f"Unknown capability {', '.join(unknown)[:200]} (known: "
                             f"{', '.join(ALL_CAPABILITIES)}).", param="capabilities")  # fmt: skip
    return tuple(typing.cast(Capability, c) for c in dict.fromkeys(capabilities))


def _weights_files(
    path: Path, weights_file: str | None, aux_files: tuple[str, ...]
) -> tuple[Path, list[str]]:
    """The weights file and the auxiliary files (relative to its folder) of a model at ``path``."""
    if weights_file is None:
        if not path.is_file():
            raise InvalidRequest(f"{path} is not a file.", param="path")
        return path, []
    if not path.is_dir():
        raise InvalidRequest(f"{path} is not a folder (the engine reads a model folder).",
                             param="path")  # fmt: skip
    weights = path / weights_file
    if not weights.is_file():
        raise InvalidRequest(f"{path} has no {weights_file}.", param="path")
    if aux_files:
        for rel in aux_files:
            inside = (path / rel).resolve()
            if not inside.is_relative_to(path) or not inside.is_file():
                raise InvalidRequest(f"{path} has no {rel}.", param="path")
        return weights, list(aux_files)
    others: list[str] = []
    for entry in path.iterdir():
        if entry.is_file() and entry.name != weights_file:
            others.append(entry.name)
            if len(others) > MAX_FOLDER_FILES:
                raise InvalidRequest(f"{path} holds more than {MAX_FOLDER_FILES} files; a "
                                     "model folder holds the model's files only.",
                                     param="path")  # fmt: skip
    return weights, sorted(others)


def verify_files(record: ModelRecord) -> None:
    """Re-hash a model's files; raise unless every one matches its record.

    Raises ``ModelFileMissing`` (file gone) or ``ModelIntegrityError``
    (hash differs). Records without local weights pass. A function, not only a
    method: a batch worker checks the files it loads without a catalogue.
    """
    path = record.weights_path()
    if path is None:
        return
    files = [(path, record.sha256)] + [
        (path.parent / rel, digest) for rel, digest in record.aux_files.items()
    ]
    for file, expected in files:
        if not file.is_file():
            bundled = find_bundled(record.name)
            hint = bundled.install_hint() if bundled else f"Model '{record.name}' file missing."
            log.error("model %s: file %s is missing", record.name, file)
            raise ModelFileMissing(hint, model=record.name)
        actual = sha256_file(file)
        if expected is None or actual != expected:
            raise ModelIntegrityError(
                model=record.name, path=str(file), expected=str(expected), actual=actual
            )
