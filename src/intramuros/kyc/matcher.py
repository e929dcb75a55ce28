"""Matching in a process of its own, so that screening uses a core the server does not.

Matching a name is pure Python work (about a millisecond per subject): in the
server's threads it holds the interpreter lock the event loop and the call
recorder need, so screenings and every other call queue behind each other on
one core, and a batch of a thousand subjects slows the whole server for its
duration. The server therefore matches in ``kyc_matcher_processes`` worker
processes (one by default; 0 matches in the server's own threads). Each
worker holds its own copy of the screening index, read from the lists'
tables, refreshes it when the lists change, and answers plain matches;
cases, customers and records stay with the server.

Workers are started with ``spawn`` (a fork of a threaded server is unsafe),
install the same egress guard as the server (loopback and the database's
host only), and end with the server. A worker that dies is replaced on the
next call; the call that was running gets a 503.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from intramuros.kyc.errors import MatcherRestarted
from intramuros.kyc.screener import Screener
from intramuros.kyc.settings import KycSettings
from intramuros.kyc.store import KycStore
from intramuros.kyc.workflow import Matches, Versions, match_subjects

log = logging.getLogger(__name__)

# How often a worker checks that the server that started it is still there.
PARENT_CHECK_SECONDS = 0.5
# The worker process's screener (set by _start_worker).
_SCREENER: Screener | None = None


def _start_worker(database_url: str, interval: float) -> None:
    """Initializer of a worker process: guard egress, open the tables, build the index."""
    global _SCREENER
    from intramuros.egress import EgressPolicy, install_guard
    from intramuros.platform.worker import open_tables

    # The server handles Ctrl-C and stops its workers; a worker ignores it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A server killed outright (kill -9, out of memory) cannot stop its workers: each
    # ends by itself once its parent is gone.
    threading.Thread(target=_follow_parent, args=(os.getppid(),), daemon=True,
                     name="kyc-parent").start()  # fmt: skip
    tables = open_tables(database_url)
    host = tables.host
    install_guard(EgressPolicy(hosts=frozenset([host] if host else [])))
    # 0: check the tables before every screening; else a thread of this process checks
    # them every ``interval`` seconds and swaps in a new index while screening goes on.
    _SCREENER = Screener(KycStore(tables), interval if interval == 0 else float("inf"))
    _SCREENER.refresh(force=True)
    if interval > 0:
        threading.Thread(target=_watch, args=(_SCREENER, interval), daemon=True,
                         name="kyc-lists").start()  # fmt: skip


def _follow_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _watch(screener: Screener, interval: float) -> None:
    while True:
        time.sleep(interval)
        try:
            screener.refresh(force=True)
        except Exception:  # the database may be briefly away: screen on, retry later
            log.exception("kyc list refresh failed in a matcher process")


def _screener() -> Screener:
    if _SCREENER is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("matcher worker not initialised")
    return _SCREENER


def _match(subjects: list[dict[str, Any]], threshold: float, min_score: float,
           wanted: frozenset[str] | None, limit: int) -> Matches:  # fmt: skip
    return match_subjects(_screener().current(), subjects, threshold, min_score, wanted, limit)


def _versions() -> Versions:
    return dict(_screener().index.versions)


class MatcherPool:
    """Worker processes that match subjects against their copy of the index."""

    def __init__(self, database_url: str, settings: KycSettings, processes: int) -> None:
        self.database_url = database_url
        self.settings = settings
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.processes, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.database_url, self.settings.kyc_refresh_seconds))  # fmt: skip
        return self._pool

    async def _call(self, func: Any, *args: Any) -> Any:
        try:
            future: Future[Any] = self._executor().submit(func, *args)
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): the next call starts new ones.
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            log.error("a KYC matcher process died; starting new ones")
            raise MatcherRestarted("The KYC matcher process stopped during this screening; "
                                   "a new one is starting: retry.") from None

    async def start(self) -> None:
        """Start the workers and wait until each has built its index."""
        await asyncio.gather(*(self._call(_versions) for _ in range(self.processes)))

    async def match(self, subjects: list[dict[str, Any]], threshold: float,
                    wanted: frozenset[str] | None, limit: int) -> Matches:  # fmt: skip
        """The matches of each subject (see :func:`match_subjects`)."""
        return await self._call(_match, subjects, threshold,  # type: ignore[no-any-return]
                                min(self.settings.kyc_min_score, threshold), wanted, limit)

    async def versions(self) -> Versions:
        """The list versions a worker screens with."""
        return await self._call(_versions)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the workers (blocking: they finish the subject in hand)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
