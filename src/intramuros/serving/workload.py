"""The interface of a workload (document AI, KYC, voice): a service beside the core one.

A workload is built once per app from the core :class:`InferenceService`, started
and closed with it, and reaches models only through the core service's public
methods (``chat``, ``begin_call`` / ``end_call``), so its calls pass the same gate:
authenticated, admitted against quotas, metered and written to the ledger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from intramuros.serving.service import InferenceService


class Workload(Protocol):
    """What the app factory needs of a workload service."""

    name: str
    # Request-body limits (bytes) for path prefixes this workload serves, when they
    # differ from ``max_body_bytes`` (uploads): e.g. ``{"/v1/files": 100 * 2**20}``.
    body_limits: dict[str, int]

    async def start(self) -> None:
        """Prepare (tables exist by now; load nothing heavy here)."""

    async def close(self) -> None:
        """Release what ``start`` or later calls acquired."""


class WorkloadFactory(Protocol):
    """Builds a workload from the core service."""

    def __call__(self, core: InferenceService) -> Workload: ...
