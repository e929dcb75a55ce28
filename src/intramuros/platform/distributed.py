"""Where batch work runs: local worker processes, or a Ray cluster (:class:`BatchWorkers`).

A workload's batch command runs its per-item function in spawned local
processes by default; given a Ray address (``--ray-address`` or the
``ray_address`` setting) it runs the same function as Ray tasks instead
(:class:`RayExecutor`, a ``concurrent.futures.Executor``), so results, per-item
errors, the retry of a lost worker's item and resumability stay the batch's
own. Each cluster node needs this package installed with the same extras (the
function is imported there by name, not shipped).

Ray is an extra (``pip install 'intramuros[ray]'``), imported only here and
only when asked. Connecting never starts a cluster (``ray.init`` with an
address joins one) and turns Ray's usage reporting off: nothing leaves the
walls but the work sent to the cluster the operator named.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from intramuros.errors import ConfigError

RAY_EXTRA_HINT = "Batch work on Ray needs the `ray` extra: pip install 'intramuros[ray]'."


# How long the cluster's address may take to accept a connection: Ray itself waits
# minutes for an address where nothing listens.
CONNECT_SECONDS = 5.0


def check_reachable(address: str) -> None:
    """``ConfigError`` unless something accepts connections at ``address``
    (``host:port`` or ``ray://host:port``; ``auto`` is left to Ray)."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://").rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"A Ray address is host:port or ray://host:port, not {address!r}.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"Cannot reach the Ray cluster at {address}: {reason}.") from None


class WorkerLost(Exception):
    """The worker running an item died (a crashed process, a lost node): try it again."""


class RayExecutor(Executor):
    """Runs submitted functions as Ray tasks on the cluster at ``address``."""

    def __init__(self, address: str, *, cpus_per_task: float = 1.0) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(RAY_EXTRA_HINT) from None
        self._ray = ray
        self._cpus = cpus_per_task
        self._remotes: dict[Callable[..., Any], Any] = {}
        # Ray would otherwise report usage statistics to its makers.
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        self._owned = not ray.is_initialized()
        if self._owned:
            check_reachable(address)
            try:
                ray.init(address=address, namespace="intramuros", log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False)  # fmt: skip
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"Cannot join the Ray cluster at {address}: {exc}") from None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        remote = self._remotes.get(fn)
        if remote is None:
            # No retries by Ray: the batch decides (a crashed worker's item is tried once more).
            remote = self._ray.remote(num_cpus=self._cpus, max_retries=0)(fn)
            self._remotes[fn] = remote
        inner = remote.remote(*args, **kwargs).future()
        outer: Future[Any] = Future()

        def done(f: Future[Any]) -> None:
            exc = f.exception()
            if exc is None:
                outer.set_result(f.result())
            elif isinstance(exc, self._ray.exceptions.RayTaskError):
                outer.set_exception(exc.as_instanceof_cause())
            elif isinstance(exc, self._ray.exceptions.RayError):
                outer.set_exception(WorkerLost(f"{type(exc).__name__}: {exc}"))
            else:
                outer.set_exception(exc)

        inner.add_done_callback(done)
        return outer

    def share(self, value: Any) -> Any:
        """``value`` in the cluster's object store, once: pass the result to many tasks
        (a large read-only input such as a screening index) instead of sending it each time."""
        return self._ray.put(value)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
            self._owned = False


class BatchWorkers:
    """Where a batch command's items run: spawned local processes (``workers`` of them)
    or, with ``address``, Ray tasks on that cluster.

    :meth:`submit` gives a future that already carries the batch's one retry: an
    item whose worker died (a crashed process, a lost node) is sent once more,
    locally to a fresh pool; a second loss ends the future with ``WorkerLost``. A
    task's own exception comes back as itself.
    """

    def __init__(self, workers: int, address: str | None = None) -> None:
        self.remote = address is not None
        self._make: Callable[[], RayExecutor | ProcessPoolExecutor] = (
            (lambda: RayExecutor(address)) if address is not None
            else (lambda: _spawn_pool(workers)))  # fmt: skip
        self._executor = self._make()
        self._lock = threading.Lock()

    def share(self, value: Any) -> Any:
        """``value`` as tasks should receive it: put once in a cluster's object store."""
        executor = self._executor
        return executor.share(value) if isinstance(executor, RayExecutor) else value

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        outer: Future[Any] = Future()

        def attempt(retries: int) -> None:
            executor = self._executor
            try:
                inner = executor.submit(fn, *args)
            except BrokenProcessPool as exc:  # broken before this item was even sent
                inner = Future()
                inner.set_exception(exc)

            def done(f: Future[Any]) -> None:
                if f.cancelled():
                    outer.cancel()
                    return
                exc = f.exception()
                if exc is None:
                    outer.set_result(f.result())
                elif isinstance(exc, BrokenProcessPool | WorkerLost):
                    self._renew(executor)
                    if retries:
                        attempt(retries - 1)
                    else:
                        outer.set_exception(WorkerLost(str(exc) or "the worker process died"))
                else:
                    outer.set_exception(exc)

            inner.add_done_callback(done)

        attempt(1)
        return outer

    def _renew(self, broken: RayExecutor | ProcessPoolExecutor) -> None:
        """A new local pool in place of one whose process died (a cluster stays)."""
        if not isinstance(broken, ProcessPoolExecutor):
            return
        with self._lock:
            if self._executor is broken:
                broken.shutdown(wait=False, cancel_futures=True)
                self._executor = self._make()

    def close(self) -> None:
        """Stop the workers (waits for the items in hand), or leave the cluster."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def _spawn_pool(workers: int) -> ProcessPoolExecutor:
    """Spawned processes (a fork of a threaded process is unsafe), hub libraries offline."""
    from intramuros.offline import enforce_offline

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=enforce_offline)  # fmt: skip
