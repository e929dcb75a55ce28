"""Where a job keeps its files: ``<data-dir>/forge/<tenant>/<job>/``.

``examples.json`` (the tokenised data the check produced; the worker trains
on it, so the worker needs no tokenizer and trains on exactly what was
checked), ``checkpoints/`` (the trainer's), ``adapter.gguf`` (the export) and, on request,
``merged.gguf`` (the adapter merged into its base).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from intramuros.fsutil import write_atomic

EXAMPLES = "examples.json"
ADAPTER = "adapter.gguf"
MERGED = "merged.gguf"


def forge_root(data_dir: Path) -> Path:
    return data_dir / "forge"


def job_dir(data_dir: Path, tenant: str, job_id: str) -> Path:
    # Only ids we minted and tenants the gate resolved ever become paths.
    return forge_root(data_dir) / tenant / job_id


def write_examples(folder: Path, sets: dict[str, list[tuple[list[int], list[bool]]]],
                   tasks: list[dict[str, Any]] | None = None) -> None:  # fmt: skip
    """The tokenised sets (``training``, maybe ``validation``) and the validation file's
    scored tasks (bench items), written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    body: dict[str, Any] = {
        name: [{"ids": ids, "train": [int(m) for m in mask]} for ids, mask in examples]
        for name, examples in sets.items()}  # fmt: skip
    if tasks:
        body["tasks"] = tasks
    write_atomic(folder / EXAMPLES, json.dumps(body, separators=(",", ":")).encode())


def read_examples(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """``training``, ``validation`` (token ids and masks) and ``tasks`` (bench items)."""
    data: dict[str, list[dict[str, Any]]] = json.loads((folder / EXAMPLES).read_text())
    return data


def remove_tenant(data_dir: Path, tenant: str) -> None:
    shutil.rmtree(forge_root(data_dir) / tenant, ignore_errors=True)
