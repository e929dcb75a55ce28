"""The KYC workload as a plug-in (entry point ``intramuros.workloads: kyc``).

Light to import: the service, routes and commands load when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from intramuros.kyc.store import purge_tenant
from intramuros.platform.plugin import Workload, WorkloadPlugin

if TYPE_CHECKING:
    import click
    from fastapi import APIRouter

    from intramuros.platform.interface import Platform


def _build(platform: Platform) -> Workload:
    from intramuros.kyc.service import KycService

    return KycService(platform)


def _routers() -> Sequence[APIRouter]:
    from intramuros.kyc.routes import router

    return [router]


def _cli() -> click.Command:
    from intramuros.kyc.cli import group

    return group


plugin = WorkloadPlugin(name="kyc", build=_build, routers=_routers, cli=_cli,
                        purge_tenant=purge_tenant)  # fmt: skip
