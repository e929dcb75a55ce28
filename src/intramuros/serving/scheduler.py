"""Per-model lanes: arrival order, a bounded waiting line, work off the event loop.

Each loaded model gets one :class:`Lane`: at most ``concurrency`` calls run on
its engine at once, each in the lane's own worker threads (so inference never
blocks the event loop); the rest wait in arrival order, and once
``queue_limit`` are waiting, newcomers get ``QueueFull`` (429) at once. A
call's slot is given back only when its worker thread has really stopped, so
a client that disconnects frees the model as soon as the engine notices the
cancel flag (between two tokens), and not before.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from intramuros.errors import QueueFull

T = TypeVar("T")

_END = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Lane(Generic[T]):
    """The waiting line and worker threads of one model."""

    def __init__(
        self,
        model: str,
        *,
        concurrency: int,
        queue_limit: int,
        retry_after: int = 1,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self.model = model
        self.concurrency = concurrency
        self.queue_limit = queue_limit
        self.retry_after = retry_after
        self._slots = asyncio.Semaphore(concurrency)
        self._waiting = 0
        self._running = 0
        self._on_depth = on_depth
        self._executor = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix=f"lane-{model}"
        )

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot."""
        return self._waiting

    @property
    def running(self) -> int:
        """Calls running on the engine now."""
        return self._running

    def _report(self) -> None:
        if self._on_depth is not None:
            self._on_depth(self._waiting)

    async def _acquire(self) -> None:
        if self._slots.locked() and self._waiting >= self.queue_limit:
            raise QueueFull(self.model, limit=self.queue_limit, retry_after=self.retry_after)
        self._waiting += 1
        self._report()
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            self._report()
        self._running += 1

    def _release(self, _: Any = None) -> None:
        self._running -= 1
        self._slots.release()

    async def stream(
        self, work: Callable[[threading.Event], Iterator[T]]
    ) -> AsyncGenerator[T, None]:
        """Run ``work(cancel)`` in a worker thread and yield what it yields.

        Leaving the iteration early (client gone, error) sets ``cancel``; the
        slot is released when the worker thread returns.
        """
        await self._acquire()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # loop closed during shutdown: nobody is listening
                cancel.set()

        def run() -> None:
            items = work(cancel)
            try:
                for item in items:
                    put(item)
                    if cancel.is_set():
                        break
            except BaseException as exc:  # handed to the awaiting side, re-raised there
                put(_Failure(exc))
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
                put(_END)

        try:
            future = loop.run_in_executor(self._executor, run)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._release)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            cancel.set()

    async def call(self, work: Callable[[], T]) -> T:
        """Run ``work()`` in a worker thread, in turn, and return its result."""
        await self._acquire()
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, work)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._release)
        return await asyncio.shield(future)

    def shutdown(self) -> None:
        """Stop taking work; running calls finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)
