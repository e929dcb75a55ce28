"""Writing a file all or nothing, the one way the project does it.

A temporary file beside the target, created with its final mode from the first
byte (``os.open``'s mode, not a later chmod, so a private file is never
readable by others even for an instant), written, fsynced, then renamed over
the target, or linked to it when the target must not already exist. A crash
leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def write_atomic(
    path: Path, data: bytes, *, mode: int = 0o600, dir_mode: int = 0o700, exclusive: bool = False
) -> None:
    """Write ``data`` to ``path`` all or nothing.

    ``mode`` is the new file's (the umask still applies); missing parent
    directories are created with ``dir_mode``. With ``exclusive``, raises
    ``FileExistsError`` instead of replacing a file that is already there.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if the file appeared meanwhile: never clobber
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """A temporary path beside ``dest`` to write a file at, renamed onto ``dest`` (after an
    fsync) when the block succeeds: ``dest`` is the whole file or untouched, and nothing
    is left behind on any error."""
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(8)}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            tmp.unlink()
