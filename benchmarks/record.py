"""Shared by the benchmark scripts: describe the machine, append a result to RESULTS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine(extra: str = "") -> str:
    """CPU model, cores, memory, Python and OS of this machine (plus ``extra``)."""
    cpu = platform.processor() or platform.machine()
    mem = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{mem}; Python {platform.python_version()}; "
            f"{platform.system()} {platform.release()}{extra}")


def append_result(script: str, text: str, extra: str = "") -> None:
    """Append one result block, with date, commit and machine, to benchmarks/RESULTS.md."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    with (ROOT / "benchmarks" / "RESULTS.md").open("a") as fh:
        fh.write(f"\n## {script}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
                 f"commit {commit or 'unknown'}\n\nMachine: {machine(extra)}\n\n```\n{text}```\n")
