"""Watching a server from the outside while it is attacked: /healthz latency, memory.

The poller runs in a process of its own: a poller thread in the test process
would be held up by the test's own work (building an 8 MB body holds the
interpreter), and would measure the test, not the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

_POLLER = r"""
import sys, time, httpx
url = sys.argv[1]
with httpx.Client(timeout=60) as client:
    while True:
        start = time.perf_counter()
        sent = time.time()
        try:
            ok = client.get(url).status_code == 200
        except httpx.TransportError:
            ok = False
        print(f"{sent} {time.perf_counter() - start} {int(ok)}", flush=True)
        time.sleep(0.01)
"""


class HealthWatch:
    """Polls ``/healthz`` every 10 ms from another process; :meth:`worst` is the slowest answer.

    Use as a context manager around the attack; :meth:`mark` notes the start
    and end of what should be measured.
    """

    def __init__(self, base_url: str) -> None:
        self.url = base_url + "/healthz"
        self.samples: list[tuple[float, float, bool]] = []
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> HealthWatch:
        self._proc = subprocess.Popen([sys.executable, "-c", _POLLER, self.url],
                                      stdout=subprocess.PIPE, text=True)  # fmt: skip
        # Wait for the first answer, so the window starts with the poller running.
        assert self._proc.stdout is not None
        self._first = self._proc.stdout.readline()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        assert self._proc is not None and self._proc.stdout is not None
        time.sleep(0.1)  # a last sample after the attack
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=30)
        for line in [self._first, *out.splitlines()]:
            parts = line.split()
            if len(parts) == 3:
                self.samples.append((float(parts[0]), float(parts[1]), parts[2] == "1"))

    def worst(self, since: float = 0.0, until: float = float("inf")) -> float:
        """The slowest answer (seconds) to a poll sent between ``since`` and ``until``."""
        window = [(lat, ok) for sent, lat, ok in self.samples if since <= sent <= until]
        assert window, "no /healthz sample in the window"
        assert all(ok for _lat, ok in window), "/healthz failed during the window"
        return max(lat for lat, _ok in window)

    def count(self, since: float = 0.0, until: float = float("inf")) -> int:
        """How many polls were sent in the window (a frozen server answers few)."""
        return sum(1 for sent, _lat, _ok in self.samples if since <= sent <= until)


def memory(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak) of process ``pid``, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def rss_mib(pid: int) -> tuple[float, float]:
    """``(current, peak)`` resident memory of process ``pid`` in MiB (VmRSS, VmHWM)."""
    fields = memory(pid)
    return fields["VmRSS"], fields["VmHWM"]


def reset_peak(pid: int) -> float:
    """Reset the process's peak resident memory to its current one; that, in MiB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return memory(pid)["VmRSS"]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
