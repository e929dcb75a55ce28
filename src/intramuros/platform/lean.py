"""Marking a route as lean: served without FastAPI's per-request machinery on success.

Model calls and screenings are the platform's hottest routes, and on a small
machine FastAPI's dependency solving, routing and exception layers cost as
much processor time per call as the gateway's own work. A route marked
``@lean`` keeps its FastAPI declaration (OpenAPI, and every refused request);
the app's lean dispatcher (``intramuros.api.lean``) serves the well-formed
requests itself, calling the same endpoint function.

A lean endpoint takes only: its JSON body (one pydantic model), the
``Request``, a ``Response`` (for headers; ignored when the endpoint returns a
response of its own), and dependencies that take only the request (``who:
Principal = Depends(principal)``); it returns a starlette ``Response``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])
MARK = "__intramuros_lean__"


def lean(endpoint: _F) -> _F:
    """Mark ``endpoint`` for the lean dispatcher (place it under the route decorator)."""
    setattr(endpoint, MARK, True)
    return endpoint


def is_lean(endpoint: Callable[..., Any]) -> bool:
    """Whether ``endpoint`` was marked with :func:`lean`."""
    return bool(getattr(endpoint, MARK, False))
