"""A pool of OpenAI-compatible upstreams serving one model.

Each call goes to the upstream in service with the fewest calls outstanding
(ties: the one used least recently). An upstream that fails ``max_failures``
times in a row (connection refused or lost, a 5xx) is taken out of service;
a prober thread asks it ``GET /models`` every ``probe_seconds`` and puts it
back once it answers 200. When every upstream is out, calls still try the one
out longest, rather than fail without trying.

The engine decides what to retry (``engines/upstream.py``); the pool only
hands out upstreams and keeps their counts, which ``/metrics`` shows.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from intramuros.engines.base import EngineStat
from intramuros.engines.http11 import LeanHTTP

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0


@dataclass
class Member:
    """One upstream of the pool and its counts."""

    url: str
    client: httpx.Client
    # Whole JSON calls to a plain-HTTP upstream (engines/http11.py); None: httpx for all.
    lean: LeanHTTP | None = None
    outstanding: int = 0
    failures: int = 0  # in a row
    in_service: bool = True
    last_used: int = 0
    requests: int = 0
    errors: int = 0
    taken_out: int = 0

    @property
    def where(self) -> str:
        """host:port, for messages (no path, no credentials)."""
        url = httpx.URL(self.url)
        return f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"


class UpstreamPool:
    """Least-outstanding balancing, failure counting and probing over some upstreams."""

    def __init__(self, urls: list[str], make_client: Callable[[str], httpx.Client], *,
                 name: str, max_failures: int = 3, probe_seconds: float = 2.0) -> None:  # fmt: skip
        self.name = name
        self.members = [Member(url, make_client(url)) for url in urls]
        self.max_failures = max_failures
        self.probe_seconds = probe_seconds
        self.failovers = 0
        self._lock = threading.Lock()
        self._uses = itertools.count(1)
        self._closed = threading.Event()
        self._prober: threading.Thread | None = None

    # -- handing out ---------------------------------------------------------

    def pick(self, tried: set[str]) -> Member | None:
        """The member for the next attempt (counted outstanding), or None when every
        member has been tried."""
        with self._lock:
            fresh = [m for m in self.members if m.url not in tried]
            if not fresh:
                return None
            serving = [m for m in fresh if m.in_service] or fresh
            member = min(serving, key=lambda m: (m.outstanding, m.last_used))
            member.outstanding += 1
            member.requests += 1
            member.last_used = next(self._uses)
            return member

    @contextmanager
    def using(self, member: Member) -> Iterator[None]:
        """Hold ``member`` for a call; its outstanding count goes down when it ends."""
        try:
            yield
        finally:
            with self._lock:
                member.outstanding -= 1

    def succeeded(self, member: Member) -> None:
        with self._lock:
            member.failures = 0

    def failed(self, member: Member, why: str) -> None:
        """Count a failure of ``member``; take it out after ``max_failures`` in a row."""
        with self._lock:
            member.failures += 1
            member.errors += 1
            out = member.in_service and member.failures >= self.max_failures
            if out:
                member.in_service = False
                member.taken_out += 1
        if out:
            log.warning("model %s: upstream %s taken out of service after %d failures (%s)",
                        self.name, member.where, member.failures, why)  # fmt: skip
            self._start_prober()

    def failed_over(self) -> None:
        with self._lock:
            self.failovers += 1

    def any_in_service(self) -> bool:
        return any(m.in_service for m in self.members)

    # -- probing ---------------------------------------------------------------

    def probe(self, member: Member) -> bool:
        """Whether ``member`` answers ``GET /models`` with 200 now."""
        try:
            return member.client.get("models", timeout=PROBE_TIMEOUT).status_code == 200
        except httpx.HTTPError:
            return False

    def _start_prober(self) -> None:
        with self._lock:
            if self._prober is not None and self._prober.is_alive():
                return
            self._prober = threading.Thread(target=self._probe_loop, daemon=True,
                                            name=f"upstream-probe-{self.name}")  # fmt: skip
            self._prober.start()

    def _probe_loop(self) -> None:
        while not self._closed.wait(self.probe_seconds):
            out = [m for m in self.members if not m.in_service]
            if not out:
                return
            for member in out:
                if self.probe(member):
                    with self._lock:
                        member.in_service, member.failures = True, 0
                    log.info("model %s: upstream %s back in service", self.name, member.where)

    def close(self) -> None:
        self._closed.set()
        for member in self.members:
            member.client.close()
            if member.lean is not None:
                member.lean.close()

    # -- metrics -----------------------------------------------------------------

    def stats(self) -> list[EngineStat]:
        out: list[EngineStat] = [EngineStat("upstream_failovers", "counter",
                                            "Calls retried on another upstream of the pool.",
                                            self.failovers)]  # fmt: skip
        for m in self.members:
            label = (("upstream", m.where),)
            out += [
                EngineStat("upstream_in_service", "gauge", "1 while the upstream is in service.",
                           float(m.in_service), label),
                EngineStat("upstream_outstanding", "gauge", "Calls on the upstream now.",
                           m.outstanding, label),
                EngineStat("upstream_requests", "counter", "Calls sent to the upstream.",
                           m.requests, label),
                EngineStat("upstream_failures", "counter",
                           "Calls the upstream failed (connection, 5xx).", m.errors, label),
                EngineStat("upstream_taken_out", "counter",
                           "Times the upstream was taken out of service.", m.taken_out, label),
            ]  # fmt: skip
        return out
