"""The document-AI workload as a plug-in (entry point ``intramuros.workloads: docai``):
the Files API, ``/v1/ocr``, OCR batch jobs and the ``intramuros docai`` commands.

Light to import: the service, routes and commands load when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from intramuros.platform.plugin import Retention, TenantPurge, Workload, WorkloadPlugin

if TYPE_CHECKING:
    import click
    from fastapi import APIRouter

    from intramuros.platform.interface import Platform


def _build(platform: Platform) -> Workload:
    from intramuros.docai.service import DocaiService

    return DocaiService(platform)


def _routers() -> Sequence[APIRouter]:
    from intramuros.docai.files_routes import router as files
    from intramuros.docai.ocr_routes import router as ocr

    return [files, ocr]


def _cli() -> click.Command:
    from intramuros.docai.cli import group

    return group


def _purge_tenant(ctx: TenantPurge, tenant: str) -> dict[str, int]:
    from intramuros.docai.retention import purge_tenant

    return purge_tenant(ctx, tenant)


def _purge_expired(ctx: Retention, tenant: str | None) -> dict[str, dict[str, int]]:
    from intramuros.docai.retention import purge_documents
    from intramuros.files.store import FileStore

    store = FileStore.from_settings(ctx.settings, ctx.tables)
    done = purge_documents(ctx.policies, store, ctx.auditor, actor=ctx.actor, tenant=tenant)
    return {name: {"file(s)": len(gone.files), "OCR job(s)": len(gone.jobs)}
            for name, gone in done.items()}  # fmt: skip


plugin = WorkloadPlugin(name="docai", build=_build, routers=_routers, cli=_cli,
                        purge_tenant=_purge_tenant, purge_expired=_purge_expired)  # fmt: skip
