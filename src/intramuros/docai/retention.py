"""Documents past their time: expired files, and files and OCR jobs past retention.

A file uploaded with ``expires_after`` disappears for clients at its
``expires_at`` and is deleted by the next purge. A tenant with a retention
period (``retention_days`` in its policy) also loses every file and finished
OCR job (with its encrypted results) older than that period: documents are
personal data as much as prompts are. Each purge that removed something
appends a ``file`` record to the ledger naming the ids, the reason and who
ran it, so an auditor sees what went and why.

The server runs this on the retention schedule (``purge_interval_seconds``);
``intramuros purge`` runs it at once. :func:`purge_tenant` deletes every file
and job of a deleted tenant (the workload's purge hook, see :mod:`intramuros.docai.plugin`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa

from intramuros.docai.tables import docai_job_items, docai_jobs
from intramuros.files.store import FileStore
from intramuros.gate.policy import TenantPolicy
from intramuros.platform.interface import Auditor
from intramuros.platform.plugin import TenantPurge

# Jobs still queued or running are left for a later purge: their runner owns them.
_FINISHED = ("completed", "cancelled", "failed")
# Ids named per ledger record, so that one record stays a reasonable size.
_IDS_PER_RECORD = 500


@dataclass
class Purged:
    """What one tenant lost in a purge."""

    files: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)


def purge_documents(
    policies: Mapping[str, TenantPolicy],
    store: FileStore,
    ledger: Auditor,
    *,
    actor: str,
    tenant: str | None = None,
    now: float | None = None,
) -> dict[str, Purged]:
    """Purge expired files (every tenant, or ``tenant``) and whatever is past retention
    under each tenant's policy (``policies``, by tenant id).

    Returns what was removed, by tenant (tenants that lost nothing are absent).
    """
    moment = time.time() if now is None else now
    done: dict[str, Purged] = {}
    for name, ids in store.purge(tenant=tenant, now=moment).items():
        done.setdefault(name, Purged()).files.extend(ids)
        _ledger(ledger, name, actor, "expired", files=ids)
    for name in [tenant] if tenant else sorted(policies):
        policy = policies.get(name)
        days = policy.retention_days if policy is not None else None
        if days is None:
            continue
        cutoff = moment - days * 86400
        old_files = store.purge(tenant=name, created_before=cutoff, now=moment).get(name, [])
        old_jobs = _purge_jobs(store, name, cutoff)
        if old_files or old_jobs:
            purged = done.setdefault(name, Purged())
            purged.files.extend(old_files)
            purged.jobs.extend(old_jobs)
            _ledger(ledger, name, actor, "retention", files=old_files, jobs=old_jobs,
                    older_than=cutoff)  # fmt: skip
    return done


def _purge_jobs(store: FileStore, tenant: str, cutoff: float) -> list[str]:
    """Delete ``tenant``'s finished OCR jobs created before ``cutoff``, items first."""
    due = sa.and_(docai_jobs.c.tenant == tenant, docai_jobs.c.created_at < cutoff,
                  docai_jobs.c.status.in_(_FINISHED))  # fmt: skip
    with store.db.begin() as conn:
        ids = [r[0] for r in conn.execute(sa.select(docai_jobs.c.id).where(due))]
        for start in range(0, len(ids), _IDS_PER_RECORD):
            chunk = ids[start:start + _IDS_PER_RECORD]
            conn.execute(docai_job_items.delete().where(docai_job_items.c.job_id.in_(chunk)))
            conn.execute(docai_jobs.delete().where(docai_jobs.c.id.in_(chunk)))
    return ids


def _ledger(
    ledger: Auditor, tenant: str, actor: str, reason: str, *, files: list[str],
    jobs: list[str] | None = None, older_than: float | None = None,
) -> None:  # fmt: skip
    jobs = jobs or []
    extra = {} if older_than is None else {"older_than": older_than}
    for start in range(0, max(len(files), len(jobs)), _IDS_PER_RECORD):
        ledger.append("file", tenant=tenant, key_id=None, subject=None, data={
            "action": "file_purge", "reason": reason, "actor": actor,
            "file_ids": files[start:start + _IDS_PER_RECORD],
            "job_ids": jobs[start:start + _IDS_PER_RECORD], **extra,
        })  # fmt: skip


def purge_tenant(ctx: TenantPurge, tenant: str) -> dict[str, int]:
    """Delete every file (rows and ciphertexts) and every OCR job of a deleted tenant."""
    store = FileStore.from_settings(ctx.settings, ctx.tables)
    gone = store.purge(tenant=tenant, created_before=time.time() + 1).get(tenant, [])
    with ctx.tables.begin() as conn:
        ids = [r[0] for r in conn.execute(
            sa.select(docai_jobs.c.id).where(docai_jobs.c.tenant == tenant))]
        for start in range(0, len(ids), _IDS_PER_RECORD):
            chunk = ids[start:start + _IDS_PER_RECORD]
            conn.execute(docai_job_items.delete().where(docai_job_items.c.job_id.in_(chunk)))
            conn.execute(docai_jobs.delete().where(docai_jobs.c.id.in_(chunk)))
    # Whatever else lies in the tenant's directory (a write cut short) goes with it.
    shutil.rmtree(store.root / tenant, ignore_errors=True)
    _ledger(ctx.auditor, tenant, ctx.actor, "tenant_deleted", files=gone, jobs=ids)
    return {"files": len(gone), "ocr_jobs": len(ids)}
