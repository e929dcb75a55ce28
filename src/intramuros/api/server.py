"""uvicorn's server with the app's start-up and shut-down run around it.

``intramuros serve`` runs uvicorn with its lifespan handling off and this
server in its place, so that a configuration the app refuses at start (e.g. a
route naming a model not in the catalogue) reaches the command as the
:class:`~intramuros.errors.IntramurosError` it is: one ``error:`` line and
exit 1, before the port is bound, instead of a lifespan traceback. The order
of events is uvicorn's own: the app starts before the socket opens and stops
after the last connection closed; a captured signal is re-raised only after
the app stopped.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import uvicorn


class AppServer(uvicorn.Server):
    """A uvicorn server that enters ``app``'s lifespan itself (give ``lifespan="off"``)."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.app = app
        self._stack = contextlib.AsyncExitStack()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start the app (its errors propagate), then bind and listen."""
        await self._stack.enter_async_context(self.app.router.lifespan_context(self.app))
        try:
            await super().startup(sockets=sockets)
        except BaseException:  # the port is taken, or a signal came: stop what started
            await self._stack.aclose()
            raise

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Close connections as uvicorn does, then stop the app."""
        try:
            await super().shutdown(sockets=sockets)
        finally:
            await self._stack.aclose()
