"""The voice workload as a plug-in (entry point ``intramuros.workloads: voice``).

Light to import: the service, routes and command load when asked for. It keeps
nothing per tenant (audio is never stored), so it has no purge.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from intramuros.platform.plugin import Workload, WorkloadPlugin

if TYPE_CHECKING:
    import click
    from fastapi import APIRouter

    from intramuros.platform.interface import Platform


def _build(platform: Platform) -> Workload:
    from intramuros.voice.service import VoiceService

    return VoiceService(platform)


def _routers() -> Sequence[APIRouter]:
    from intramuros.voice.routes import router

    return [router]


def _cli() -> click.Command:
    from intramuros.voice.cli import transcribe

    return transcribe


plugin = WorkloadPlugin(name="voice", build=_build, routers=_routers, cli=_cli)
