"""The fine-tuning workload as a plug-in (entry point ``intramuros.workloads: forge``).

Light to import: the service, routes and commands load when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from intramuros.platform.plugin import TenantPurge, Workload, WorkloadPlugin

if TYPE_CHECKING:
    import click
    from fastapi import APIRouter

    from intramuros.platform.interface import Platform


def _build(platform: Platform) -> Workload:
    from intramuros.forge.service import ForgeService

    return ForgeService(platform)


def _routers() -> Sequence[APIRouter]:
    from intramuros.forge.routes import router

    return [router]


def _cli() -> click.Command:
    from intramuros.forge.cli import group

    return group


def purge_tenant(ctx: TenantPurge, tenant: str) -> dict[str, int]:
    """A deleted tenant's jobs, their events, checkpoints and files (its fine-tuned
    models go with the core's purge of the models it owns)."""
    from intramuros.forge.jobs import Jobs
    from intramuros.forge.workdir import remove_tenant

    with ctx.tables.begin() as conn:
        count = Jobs(ctx.tables).delete_tenant(conn, tenant)
    remove_tenant(ctx.settings.data_dir, tenant)
    return {"fine-tuning job(s)": count}


plugin = WorkloadPlugin(name="forge", build=_build, routers=_routers, cli=_cli,
                        purge_tenant=purge_tenant)  # fmt: skip
