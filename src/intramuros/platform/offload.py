"""Request-derived CPU work, off the event loop and out of the default thread pool.

Tokenising a long prompt or scanning it for personal data can take seconds.
On the event loop it would freeze every other request (and ``/healthz``); in
asyncio's default thread pool, a handful of such requests would occupy every
thread that authentication and database writes also wait for. So that work
runs here: a pool of its own, as many threads as cores (the work is
CPU-bound; more threads would only share the same cores), first come first
served. A request can slow itself and those queued behind it, never the rest
of the server.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1),
                           thread_name_prefix="intramuros-cpu")  # fmt: skip


async def run_cpu(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``func(*args, **kwargs)`` in the CPU pool; the caller's context variables follow."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, func, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_POOL, call)
