"""A private ``intramuros serve`` for one bench run.

Started as a subprocess of the same Python, bound to a free loopback port
with ``--no-auth`` (allowed on loopback only), against a data dir of its
own (a temporary one unless given); stopped when the run ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from intramuros.bench.errors import ServerUnavailable


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnServer:
    """Context manager: ``with OwnServer(...) as srv: srv.base_url``."""

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        preload: list[str] | None = None,
        extra_args: list[str] | None = None,
        ready_timeout: float = 300.0,
    ) -> None:
        self._given_dir = data_dir
        self._tmp: str | None = None
        self._preload = preload or []
        self._extra = extra_args or []
        self._ready_timeout = ready_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log: Path | None = None

    @property
    def base_url(self) -> str:
        """Where the server listens."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OwnServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop()

    def start(self) -> None:
        """Start the process and wait (bounded) until ``/readyz`` answers 200."""
        if self._given_dir is not None:
            data_dir = self._given_dir
            data_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.mkdtemp(prefix="intramuros-bench-")
            data_dir = Path(self._tmp)
        self.port = free_port()
        self.log = data_dir / f"bench-server-{self.port}.log"
        cmd = [
            sys.executable, "-m", "intramuros.cli", "serve", "--host", "127.0.0.1",
            "--port", str(self.port), "--data-dir", str(data_dir), "--no-auth",
            "--preload-models", ",".join(self._preload), *self._extra,
        ]  # fmt: skip
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                          env=dict(os.environ))  # fmt: skip
        deadline = time.monotonic() + self._ready_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                tail = self._log_tail()
                self.stop()
                raise ServerUnavailable(f"the bench's server exited with code {code}: {tail}")
            try:
                if httpx.get(self.base_url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        tail = self._log_tail()
        self.stop()
        raise ServerUnavailable(f"the bench's server was not ready in "
                                f"{self._ready_timeout:.0f} s: {tail}")  # fmt: skip

    def _log_tail(self) -> str:
        if self.log is None or not self.log.exists():
            return "(no log)"
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "(empty log)"

    def stop(self) -> None:
        """Terminate the process (bounded wait, then kill) and remove a temporary data dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
