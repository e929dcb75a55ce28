"""Workloads as plug-ins: what one contributes, and how the installed ones are found.

A workload is a package that declares, in the entry-point group
``intramuros.workloads``, a :class:`WorkloadPlugin`: how to build its service
from a :class:`~intramuros.platform.interface.Platform`, its HTTP routers, its
command group, and the purge of a deleted tenant's data. Its settings section
and its schema steps are declared in their own groups (``intramuros.settings``,
``intramuros.migrations``), because the settings and the database are prepared
before any workload is built. Ours (``docai``, ``kyc``, ``voice``) are
declared exactly so: default plug-ins, not special cases.

The module that holds a plug-in object must stay light to import: it names its
service, routers and commands through functions that import them when called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from intramuros.errors import ConfigError
from intramuros.gate.policy import TenantPolicy
from intramuros.platform.interface import Auditor, Platform, UnitOfWork
from intramuros.settings import Settings

if TYPE_CHECKING:
    import click
    from fastapi import APIRouter

WORKLOADS_GROUP = "intramuros.workloads"


class Workload(Protocol):
    """A workload's service: built once per app, started and closed with it."""

    name: str
    # Request-body limits (bytes) for path prefixes this workload serves, when they
    # differ from ``max_body_bytes`` (uploads): e.g. ``{"/v1/files": 100 * 2**20}``.
    body_limits: dict[str, int]

    async def start(self) -> None:
        """Prepare (its tables exist by now; load nothing heavy here)."""

    async def close(self) -> None:
        """Release what ``start`` or later calls acquired; stop work in flight."""


@dataclass(frozen=True)
class TenantPurge:
    """What a workload's purge of a deleted tenant may use, and who asked."""

    settings: Settings
    tables: UnitOfWork
    auditor: Auditor
    actor: str


@dataclass(frozen=True)
class Retention:
    """What a workload's retention purge (``intramuros purge``) may use: every live
    tenant's policy by id, and who asked."""

    settings: Settings
    tables: UnitOfWork
    auditor: Auditor
    actor: str
    policies: Mapping[str, TenantPolicy]


@dataclass(frozen=True)
class WorkloadPlugin:
    """A workload, as declared in the ``intramuros.workloads`` entry-point group.

    Attributes:
        name: the workload's name (also its service's key in the app).
        build: makes the service from the platform (once per app or command).
        routers: its FastAPI routers, mounted by the app.
        cli: its command (a click group or command), if any; the commands reach the
            platform through :func:`intramuros.platform.cli.context`.
        purge_tenant: deletes everything the workload stored for a deleted tenant;
            returns counts by kind. Idempotent: a purge cut short is run again.
        purge_expired: applies retention now (what the running service does on the
            platform's schedule through ``Platform.on_purge``), for one tenant id or
            all; returns, by tenant, counts by kind (e.g. ``{"file(s)": 2}``).
    """

    name: str
    build: Callable[[Platform], Workload]
    routers: Callable[[], Sequence[APIRouter]]
    cli: Callable[[], click.Command] | None = None
    purge_tenant: Callable[[TenantPurge, str], dict[str, int]] | None = None
    purge_expired: Callable[[Retention, str | None], dict[str, dict[str, int]]] | None = None


def installed_workloads() -> list[WorkloadPlugin]:
    """Every workload declared in the entry-point group, by name."""
    from importlib.metadata import entry_points

    found: dict[str, WorkloadPlugin] = {}
    for point in sorted(entry_points(group=WORKLOADS_GROUP), key=lambda p: p.name):
        try:
            plugin: Any = point.load()
        except Exception as exc:  # a broken plug-in: say which, never a traceback
            raise ConfigError(f"Workload '{point.name}' ({point.value}) cannot be loaded: "
                              f"{type(exc).__name__}: {exc}") from None
        if not isinstance(plugin, WorkloadPlugin):
            raise ConfigError(f"Workload '{point.name}' ({point.value}) is not a WorkloadPlugin.")
        if plugin.name in found:
            raise ConfigError(f"Two workloads are called '{plugin.name}'.")
        found[plugin.name] = plugin
    return list(found.values())
