"""A training run's checkpoints on disk: each one a directory written whole or not at all.

``step-N/`` is complete once its ``state.json`` is there (written last, inside a
temporary directory that is fsynced and renamed): a crash at any point leaves
the previous checkpoints and, at worst, a temporary directory that the next
start removes. The random generators' states ride along, so a resumed run
draws what the uninterrupted one would have.
"""

from __future__ import annotations

import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

STATE = "state.json"  # written last: a checkpoint without it is not one
STATE_VERSION = 1


def rng_state() -> dict[str, Any]:
    """Python's and numpy's generator states, as JSON."""
    import numpy as np

    version, internal, gauss = random.getstate()
    numpy_state: Any = np.random.get_state(legacy=True)
    name, keys, pos, has_gauss, cached = numpy_state
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
    }


def torch_rng() -> dict[str, Any]:
    """PyTorch's generator states: dropout draws from them."""
    import torch

    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], torch_state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch_state["cpu"])
    if "cuda" in torch_state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(torch_state["cuda"])


def step_of(path: Path) -> int | None:
    """N for a complete ``step-N`` directory, else None."""
    prefix, _, number = path.name.partition("-")
    if prefix != "step" or not number.isdigit() or not (path / STATE).is_file():
        return None
    return int(number)


def complete(checkpoints: Path) -> list[tuple[int, Path]]:
    found = ((step_of(p), p) for p in checkpoints.iterdir() if p.is_dir())
    return sorted((step, p) for step, p in found if step is not None)


def latest(checkpoints: Path) -> Path | None:
    done = complete(checkpoints)
    return done[-1][1] if done else None


def prune(checkpoints: Path, keep: int) -> None:
    for _, path in complete(checkpoints)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def clear_partial(folder: Path, name: str = "") -> None:
    """Remove what a crash mid-write left in ``folder``: the temporary directories of
    :func:`save_dir` for ``name`` (any name: the checkpoints folder is ours alone)."""
    for path in folder.iterdir():
        if path.name.startswith((f".tmp-{name}", f".tmp-old-{name}")):
            shutil.rmtree(path, ignore_errors=True)


def save_dir(dest: Path, write: Any) -> None:
    """Fill a temporary directory with ``write(tmp)``, make it durable, rename it onto
    ``dest``: a crash at any point leaves either the old ``dest`` or the new one."""
    tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        fsync_tree(tmp)
        if dest.exists():
            # A directory cannot be renamed onto a non-empty one: move the old aside.
            old = dest.parent / f".tmp-old-{dest.name}-{uuid.uuid4().hex}"
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dest)
        fsync_dir(dest.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for path in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        fsync_dir(path)


def fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
