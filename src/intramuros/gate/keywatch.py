"""Keys with calls in flight, so that revoking a key ends its streams at the next token.

Authentication checks a key once, when a request arrives; a stream may then
run for minutes. Every call registers its key here while it runs. A key
revoked by this process (``DELETE /v1/admin/keys/...``) is marked at once; a
key revoked elsewhere (the command line, another replica, a deleted tenant)
is found by a poll of the keys in flight, every ``interval`` seconds, one
query for all of them. The call checks :meth:`KeyWatch.revoked` before each
token and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from intramuros.errors import AuthenticationError, IntramurosError
from intramuros.gate.tenants import Tenants

log = logging.getLogger(__name__)


class KeyRevoked(AuthenticationError):
    """The call's key was revoked (or expired, or its tenant deleted) while it ran."""

    code = "api_key_revoked"

    def __init__(self) -> None:
        super().__init__("The API key was revoked while this call ran; the answer was stopped.")


class KeyWatch:
    """Which keys in flight are revoked; see the module docstring."""

    def __init__(self, tenants: Tenants, interval: float = 0.5) -> None:
        self.tenants = tenants
        self.interval = interval
        self._watched: Counter[str] = Counter()
        self._revoked: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def watch(self, key_id: str | None) -> None:
        """A call with ``key_id`` starts (no-op for key-less calls)."""
        if key_id is not None:
            self._watched[key_id] += 1

    def unwatch(self, key_id: str | None) -> None:
        """A call with ``key_id`` ends."""
        if key_id is not None and self._watched[key_id] > 0:
            self._watched[key_id] -= 1
            if not self._watched[key_id]:
                del self._watched[key_id]
                self._revoked.discard(key_id)

    def mark_revoked(self, key_id: str) -> None:
        """This process revoked ``key_id``: its calls stop at their next token."""
        if key_id in self._watched:
            self._revoked.add(key_id)

    def check(self, key_id: str | None) -> None:
        """Raise :class:`KeyRevoked` if ``key_id`` has been revoked since its call began."""
        if key_id is not None and key_id in self._revoked:
            raise KeyRevoked()

    async def start(self) -> None:
        """Start polling."""
        self._task = asyncio.create_task(self._poll())

    async def close(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            watched = list(self._watched)
            if not watched:
                continue
            try:
                active = await asyncio.to_thread(self.tenants.active_keys, watched)
            except IntramurosError as exc:  # a database hiccup: try again next time
                log.warning("could not re-check keys in flight: %s", exc.message)
                continue
            self._revoked.update(k for k in watched if k not in active and k in self._watched)
