"""The server's side of training: start the worker process when there is work.

Training never runs in the server: a separate process
(``python -m intramuros.forge.worker``) takes the queued jobs one at a time,
at a lower CPU priority. One worker per data dir: it holds
``forge/worker.lock`` (an ``flock``) while it lives, so a second one (another
server's, or ``intramuros forge work``) steps aside. The lock also says
whether a worker is alive, even one this server did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from intramuros.forge.jobs import Jobs
from intramuros.forge.settings import ForgeSettings
from intramuros.forge.workdir import forge_root
from intramuros.settings import Settings, section

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
SETTINGS_ENV = "INTRAMUROS_FORGE_WORKER_SETTINGS"
# The settings a worker needs to open the same installation (the rest comes from the
# same environment and configuration file).
PASSED = ("data_dir", "database_url", "config", "ledger_key_file", "files_key_file")


def lock_path(data_dir: Path) -> Path:
    return forge_root(data_dir) / "worker.lock"


def worker_alive(data_dir: Path) -> bool:
    """Whether some process holds the worker lock of ``data_dir``."""
    path = lock_path(data_dir)
    if not path.exists():
        return False
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def worker_environment(settings: Settings, *, linger: bool = True) -> dict[str, str]:
    """The environment of a worker process for this installation (without ``linger``, it
    exits as soon as no job is left)."""
    passed: dict[str, Any] = {}
    for name in PASSED:
        value = getattr(settings, name, None)
        if value is not None:
            passed[name] = str(value)
    forge = section(settings, ForgeSettings)
    for name in ForgeSettings.model_fields:
        passed[name] = getattr(forge, name)
    if not linger:
        passed["forge_worker_idle_seconds"] = 0
    return {**os.environ, SETTINGS_ENV: json.dumps(passed)}


def spawn_worker(settings: Settings, *, linger: bool = True) -> subprocess.Popen[bytes]:
    """Start a worker process (it exits when no job is left, after its idle time)."""
    return subprocess.Popen(
        [sys.executable, "-m", "intramuros.forge.worker"],
        env=worker_environment(settings, linger=linger), stdin=subprocess.DEVNULL,
    )  # fmt: skip


class Supervisor:
    """Starts the worker when jobs wait and none runs; stops it with the server."""

    def __init__(self, settings: Settings, jobs: Jobs) -> None:
        self.settings = settings
        self.enabled = section(settings, ForgeSettings).forge_worker
        self.jobs = jobs
        self.process: subprocess.Popen[bytes] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run())

    def poke(self) -> None:
        """A job was queued: look now rather than at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self._tick)
            except Exception:  # the loop must outlive a database hiccup
                log.exception("the forge supervisor's check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()

    def _tick(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                return
            if self.process.returncode:
                log.warning("the forge worker exited with status %s", self.process.returncode)
            self.process = None
        if worker_alive(self.settings.data_dir) or not self.jobs.has_work(self.settings.data_dir):
            return
        self.process = spawn_worker(self.settings)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        process = self.process
        if process is not None and process.poll() is None:
            # Its job stays running and is resumed from its last checkpoint next time.
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        self.process = None
