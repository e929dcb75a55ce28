"""Small asyncio pieces that the core and every workload need alike."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TypeVar

T = TypeVar("T")


async def first(stream: AsyncGenerator[T, None]) -> T | None:
    """The first item of ``stream`` (None if it ends at once); the stream is closed if
    that fails.

    A lane's work raises what it finds at its start (a context too long, audio
    that does not decode) at its first step: awaiting that step before sending
    anything lets such errors become a proper HTTP status.
    """
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None
    except BaseException:
        await stream.aclose()
        raise
