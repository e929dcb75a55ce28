"""Energy per call: measured from hardware counters where the machine has them, else estimated.

Sources, best first:

- ``measured-rapl``: Linux powercap RAPL zones (``/sys/class/powercap/intel-rapl:N``,
  which AMD's RAPL driver also uses, and ``amd-rapl:N`` where a kernel names them
  so). Only top-level zones (packages; ``psys`` where present would double-count
  and is skipped) are summed; their ``energy_uj`` counters wrap at
  ``max_energy_range_uj``, which is handled.
- ``measured-nvml``: NVIDIA GPUs' total-energy counters through NVML
  (``nvidia-ml-py``), added to the RAPL figure when both exist.
- ``estimated``: the CPU time the process spent, times a configured figure of
  watts per busy core.

Apportioning: the meter keeps the set of running calls. At every start or stop
of a call it reads the counters (and the process CPU time) and shares the
energy, CPU time and wall time since the previous reading among the calls that
ran in that interval, in proportion to each call's own CPU time in it (the CPU
clocks of the threads the call ran on). When some call in the interval ran on a
thread we cannot see (a workload's own pool), the interval is shared equally.
Energy spent while no call runs belongs to no call (it is idle power, part of
the hardware's hourly cost instead).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

POWERCAP_ROOT = Path("/sys/class/powercap")
_TOP_ZONE = re.compile(r"^(intel|amd)-rapl:\d+$")


class CounterSource(Protocol):
    """A hardware energy counter: total joules since it was opened, never decreasing."""

    label: str

    def joules(self) -> float:
        """Energy since the source was opened (wrap-around already handled)."""
        ...


@dataclass
class _Zone:
    path: Path
    max_range_uj: int
    last_uj: int


def wrapped_delta(previous: int, current: int, max_range: int) -> int:
    """Microjoules between two readings of a counter that wraps to 0 after ``max_range``.

    A reading lower than the previous one means the counter wrapped once (RAPL
    counters wrap every few minutes to hours; readings are far more frequent).
    """
    if current >= previous:
        return current - previous
    return max_range - previous + current


class RaplSource:
    """Package energy from powercap RAPL zones (``energy_uj``)."""

    label = "measured-rapl"

    def __init__(self, root: Path = POWERCAP_ROOT) -> None:
        self.zones: list[_Zone] = []
        for path in sorted(root.glob("*-rapl:*")) if root.is_dir() else []:
            if not _TOP_ZONE.match(path.name):
                continue  # sub-zones (core, uncore, dram) are inside their package
            name = _read(path / "name") or ""
            if name.startswith("psys"):
                continue  # the whole platform: it already contains the packages
            raw = _read(path / "energy_uj")
            max_range = _read(path / "max_energy_range_uj")
            if raw is None or max_range is None or not raw.isdigit() or not max_range.isdigit():
                continue
            self.zones.append(_Zone(path, int(max_range), int(raw)))
        if not self.zones:
            raise FileNotFoundError(f"no readable RAPL package zone under {root}")
        self._total_uj = 0

    def joules(self) -> float:
        """Energy of all packages since opening, in joules."""
        for zone in self.zones:
            raw = _read(zone.path / "energy_uj")
            if raw is None or not raw.isdigit():
                continue  # a transient read failure loses nothing: next read catches up
            current = int(raw)
            self._total_uj += wrapped_delta(zone.last_uj, current, zone.max_range_uj)
            zone.last_uj = current
        return self._total_uj / 1e6


class NvmlSource:
    """GPU energy from NVML's total-energy counters (millijoules since driver load)."""

    label = "measured-nvml"

    def __init__(self) -> None:
        import pynvml  # type: ignore[import-not-found]  # nvidia-ml-py, only on GPU hosts

        pynvml.nvmlInit()
        self._nvml = pynvml
        count = pynvml.nvmlDeviceGetCount()
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        if not self._handles:
            raise FileNotFoundError("NVML reports no GPU")
        self._start = self._read_mj()

    def _read_mj(self) -> int:
        return sum(int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self._handles)

    def joules(self) -> float:
        """Energy of all GPUs since opening, in joules."""
        return (self._read_mj() - self._start) / 1e3


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:  # missing, or root-only (energy_uj is 0400 on patched kernels)
        return None


def open_sources(mode: str, powercap_root: Path = POWERCAP_ROOT) -> list[CounterSource]:
    """The hardware counters to use for ``mode`` (auto, rapl, nvml, estimate).

    ``auto`` takes every counter that can be read and falls back to the
    estimate (an empty list) when there is none; ``rapl`` and ``nvml`` insist
    on their counter and raise ``FileNotFoundError`` naming what is missing.
    """
    sources: list[CounterSource] = []
    if mode in ("auto", "rapl"):
        try:
            sources.append(RaplSource(powercap_root))
        except FileNotFoundError:
            if mode == "rapl":
                raise
    if mode in ("auto", "nvml"):
        try:
            sources.append(NvmlSource())
        except Exception as exc:  # ImportError, NVMLError: no usable GPU counter
            if mode == "nvml":
                raise FileNotFoundError(f"NVML energy counters unavailable: {exc}") from None
    return sources


@dataclass
class CallEnergy:
    """What one call used: filled in by the meter while it runs."""

    joules: float = 0.0
    cpu_seconds: float = 0.0
    machine_seconds: float = 0.0
    source: str = "estimated"
    running: bool = False
    _thread_clocks: list[int] = field(default_factory=list)
    _thread_last: dict[int, float] = field(default_factory=dict)

    def attach_current_thread(self) -> None:
        """Count the CPU time of the calling thread as this call's (call it in the worker)."""
        try:
            clock = time.pthread_getcpuclockid(threading.get_ident())
            now = time.clock_gettime(clock)
        except (AttributeError, OSError):  # not on this platform: equal shares instead
            return
        if clock not in self._thread_last:
            self._thread_clocks.append(clock)
        self._thread_last[clock] = now

    def _thread_cpu_delta(self) -> float | None:
        """CPU seconds of this call's threads since the last reading (None: unknown)."""
        if not self._thread_clocks:
            return None
        total = 0.0
        for clock in self._thread_clocks:
            try:
                now = time.clock_gettime(clock)
            except OSError:  # the thread ended: its time was read at its last event
                continue
            total += max(0.0, now - self._thread_last[clock])
            self._thread_last[clock] = now
        return total


class EnergyMeter:
    """Apportions measured (or estimated) energy among the calls running at the same time."""

    def __init__(
        self,
        sources: Sequence[CounterSource],
        *,
        watts_per_core: float,
        cpu_clock: Callable[[], float] = time.process_time,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sources = list(sources)
        self.watts_per_core = watts_per_core
        self.label = "+".join(s.label for s in self.sources) or "estimated"
        self._cpu_clock = cpu_clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._running: list[CallEnergy] = []
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        """(process CPU seconds, wall seconds, counter joules or None-as-nan)."""
        joules = sum(s.joules() for s in self.sources) if self.sources else float("nan")
        return self._cpu_clock(), self._wall_clock(), joules

    def _settle(self) -> None:
        """Share everything since the last reading among the running calls (lock held)."""
        cpu, wall, joules = self._sample()
        last_cpu, last_wall, last_joules = self._last
        self._last = (cpu, wall, joules)
        if not self._running:
            return
        d_cpu, d_wall = max(0.0, cpu - last_cpu), max(0.0, wall - last_wall)
        d_joules = (max(0.0, joules - last_joules) if self.sources
                    else d_cpu * self.watts_per_core)  # fmt: skip
        weights = [c._thread_cpu_delta() for c in self._running]
        for call, share in zip(self._running, shares(weights), strict=True):
            call.cpu_seconds += d_cpu * share
            call.joules += d_joules * share
            call.machine_seconds += d_wall * share

    def start(self, call: CallEnergy) -> None:
        """The call begins to use the machine (after any queue wait)."""
        with self._lock:
            if call.running:
                return
            self._settle()
            call.running = True
            call.source = self.label
            self._running.append(call)

    def stop(self, call: CallEnergy) -> None:
        """The call stops using the machine; its figures are final (idempotent)."""
        with self._lock:
            if not call.running:
                return
            self._settle()
            call.running = False
            self._running.remove(call)


def shares(weights: Sequence[float | None]) -> list[float]:
    """Fractions summing to 1: by weight, or equal when any weight is unknown or all are 0."""
    n = len(weights)
    if n == 0:
        return []
    known = [w for w in weights if w is not None]
    total = sum(known)
    if len(known) < n or total <= 0:
        return [1.0 / n] * n
    return [float(w) / total for w in known]
