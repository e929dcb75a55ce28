"""A fair share of the document readers: slots handed out page by page, tenants in turn.

Reading is CPU-bound, so the server reads ``docai_concurrency`` pages at
once. A first-come-first-served queue of whole documents would let one
tenant's thousand-page scan hold every slot for an hour while a colleague's
one-page letter waits behind it. Here every unit of work (opening a
document, reading one page) takes a slot and gives it back, and when a slot
frees up it goes to the next *tenant* in turn that is waiting (round robin),
then to that tenant's oldest waiter. A long document therefore advances one
page per round while others are served in between, and a tenant with many
documents queued gets the same share as a tenant with one.

Runs on the event loop (no locks): waiting is an ``await``, never a blocked
thread, so any number of documents may wait without taking a thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress


class FairSlots:
    """``slots`` units of work at once; waiting tenants are served round robin."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self._free = slots
        # Tenants with waiters, in turn order (a dict keeps insertion order): the
        # first is served next, then moves to the back if it still has waiters.
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}

    def waiting(self) -> dict[str, int]:
        """How many units each tenant has waiting (for metrics and tests)."""
        return {tenant: len(queue) for tenant, queue in self._queues.items()}

    async def acquire(self, tenant: str) -> None:
        """Wait for a slot on behalf of ``tenant``."""
        if self._free > 0 and not self._queues:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(tenant, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as the waiter gave up: pass the slot on
            else:
                self._forget(tenant, waiter)
            raise

    def _forget(self, tenant: str, waiter: asyncio.Future[None]) -> None:
        queue = self._queues.get(tenant)
        if queue is None:
            return
        with suppress(ValueError):
            queue.remove(waiter)
        if not queue:
            del self._queues[tenant]

    def release(self) -> None:
        """Give a slot back: to the next tenant in turn that waits, else to the pool."""
        while self._queues:
            tenant = next(iter(self._queues))
            queue = self._queues.pop(tenant)
            waiter = queue.popleft()
            if queue:
                self._queues[tenant] = queue  # to the back of the turn order
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    @asynccontextmanager
    async def turn(self, tenant: str) -> AsyncIterator[None]:
        """Hold one slot for ``tenant`` for the duration of the block."""
        await self.acquire(tenant)
        try:
            yield
        finally:
            self.release()
