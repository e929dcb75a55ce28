"""Processes the tests start: each in a process group of its own, ended whole, and checked for.

A command started under a prefix (``strace -f ...``) is a tree: stopping the
first process leaves the others running, reparented to init, holding memory
and ports. So every process the tests start goes through :func:`spawn`, in a
new session (its own process group), and :func:`end` signals the whole
group and waits until the group is empty. :func:`survivors` lists what is
still alive at the end of the run: the conftest fails the run if it is not
empty.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Process groups started by this test process (pgid == the leader's pid).
_GROUPS: set[int] = set()
# The test being set up or run (set by the conftest): starting a process, a server or a
# real model is for tests marked slow.
running: list[Any] = []


def require_slow(what: str) -> None:
    """Fail the running test unless it is marked ``slow`` (it is about to start ``what``)."""
    import pytest

    if running and running[0].get_closest_marker("slow") is None:
        pytest.fail(f"{running[0].nodeid} starts {what} but is not marked slow: "
                    "`pytest -m 'not slow'` starts no model, no server and no command "
                    "process", pytrace=False)  # fmt: skip


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(cmd, **kwargs)`` in a new session, remembered for :func:`end`."""
    require_slow(f"a process ({' '.join(str(c) for c in cmd[:4])[:80]})")
    proc: subprocess.Popen[Any] = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    _GROUPS.add(proc.pid)
    return proc


def group_alive(pgid: int) -> bool:
    """True while any process of group ``pgid`` is alive (zombies included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def end(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """Stop ``proc`` and every process of its group: SIGTERM, then SIGKILL after ``timeout``.

    Returns once the leader is reaped and no process of the group is left.
    """
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_alive(pgid) or proc.poll() is None:
        _signal_group(pgid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
    _GROUPS.discard(pgid)


@dataclass(frozen=True)
class Survivor:
    """A process still alive that the tests started."""

    pid: int
    why: str
    cmdline: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.why}): {self.cmdline[:300]}"


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, pgid)`` of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[2])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()  # fmt: skip
    except OSError:
        return ""


def survivors(tmp_root: Path) -> list[Survivor]:
    """Live processes the tests started: descendants of this process, members of a group
    :func:`spawn` made, and any ``intramuros ... serve`` whose data dir is under ``tmp_root``
    (wherever it was reparented). Zombies (exited, not yet reaped) are not counted."""
    me = os.getpid()
    table: dict[int, tuple[str, int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            table[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (_state, ppid, _pgid) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, str] = {}
    stack = list(children.get(me, []))
    while stack:
        pid = stack.pop()
        found.setdefault(pid, "a child of the test process")
        stack.extend(children.get(pid, []))
    for pid, (_state, _ppid, pgid) in table.items():
        if pgid in _GROUPS and pid != me:
            found.setdefault(pid, f"in process group {pgid} started by the tests")
    root = str(tmp_root)
    for pid in table:
        cmd = _cmdline(pid)
        if pid != me and "intramuros" in cmd and " serve" in cmd and root in cmd:
            found.setdefault(pid, "a server on a test data dir")
    return [Survivor(pid, why, _cmdline(pid)) for pid, why in sorted(found.items())
            if table[pid][0] != "Z"]  # fmt: skip


def kill_all(found: list[Survivor]) -> None:
    """SIGKILL each survivor (after a failed check, so that nothing lingers past the run)."""
    for survivor in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(survivor.pid, signal.SIGKILL)
