"""Documents past their time: expired files and retention of files and OCR jobs.

Real SQLite/PostgreSQL, the real ledger and tenant store; the clock is moved by
passing ``now`` (the purge's only notion of time), never by sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from intramuros.docai.retention import purge_documents
from intramuros.docai.tables import docai_job_items, docai_jobs
from intramuros.files.store import FileStore
from intramuros.gate.policy import TenantPolicy
from intramuros.gate.tenants import Tenants
from intramuros.ledger import Ledger, LedgerKeys
from intramuros.settings import load_settings
from intramuros.store.db import Database

DAY = 86400.0


@pytest.fixture()
def parts(tmp_path: Path, db_url: str) -> Iterator[tuple[Tenants, FileStore, Ledger]]:
    settings = load_settings(data_dir=tmp_path / "data", database_url=db_url)
    db = Database(db_url)
    db.migrate()
    tenants = Tenants(db)
    tenants.create("acme")
    tenants.create("globex")
    tenants.set_policy("acme", TenantPolicy(retention_days=30))
    yield tenants, FileStore.from_settings(settings, db), Ledger(db, LedgerKeys.load(None))
    db.close()


def _job(store: FileStore, tenant: str, file_id: str, status: str, created_at: float) -> str:
    job_id = f"ocrjob-{tenant}-{status}"
    with store.db.begin() as conn:
        conn.execute(docai_jobs.insert().values(
            id=job_id, tenant=tenant, status=status, model="rapidocr", options="{}",
            created_at=created_at, total=1, succeeded=1, failed=0, pages=1,
        ))
        conn.execute(docai_job_items.insert().values(
            job_id=job_id, idx=0, file_id=file_id, status="succeeded", pages=1,
            result=b"ciphertext"))
    return job_id


def _jobs(store: FileStore) -> set[str]:
    with store.db.begin() as conn:
        return {r[0] for r in conn.execute(sa.select(docai_jobs.c.id))}


def test_expiry_and_retention(parts: tuple[Tenants, FileStore, Ledger]) -> None:
    tenants, store, ledger = parts
    now = time.time()
    put = {"purpose": "ocr", "mime_type": "text/plain"}
    acme_old = store.put("acme", b"1", filename="1.txt", **put)
    globex_old = store.put("globex", b"2", filename="2.txt", **put)
    globex_exp = store.put("globex", b"3", filename="3.txt", expires_after=3600, **put)
    done_job = _job(store, "acme", acme_old.id, "completed", now)
    live_job = _job(store, "acme", acme_old.id, "running", now)
    globex_job = _job(store, "globex", globex_old.id, "completed", now)

    # Today: nothing is due.
    assert purge_documents(policies(tenants), store, ledger, actor="test", now=now + 60) == {}

    # 31 days on: acme (30-day retention) loses its file and finished job; globex has
    # no retention and keeps its file, but its expired one goes.
    done = purge_documents(policies(tenants), store, ledger, actor="test", now=now + 31 * DAY)
    assert done["acme"].files == [acme_old.id] and done["acme"].jobs == [done_job]
    assert done["globex"].files == [globex_exp.id] and done["globex"].jobs == []
    assert _jobs(store) == {live_job, globex_job}  # a running job waits for its runner
    assert store.read("globex", globex_old.id)[1] == b"2"
    assert not list(store.root.rglob(f"{acme_old.id}.bin"))
    with store.db.begin() as conn:
        items = {r[0] for r in conn.execute(sa.select(docai_job_items.c.job_id))}
    assert items == {live_job, globex_job}

    records = [r for r in ledger.records(kind="file") if r.data["action"] == "file_purge"]
    by_reason = {(r.tenant, r.data["reason"]): r.data for r in records}
    assert by_reason[("acme", "retention")]["file_ids"] == [acme_old.id]
    assert by_reason[("acme", "retention")]["job_ids"] == [done_job]
    assert by_reason[("acme", "retention")]["older_than"] == pytest.approx(now + DAY)
    assert by_reason[("globex", "expired")]["file_ids"] == [globex_exp.id]
    assert all(r.data["actor"] == "test" for r in records)

    # Once done, a second purge finds nothing and writes nothing.
    assert purge_documents(policies(tenants), store, ledger, actor="test", now=now + 31 * DAY) == {}
    assert len([r for r in ledger.records(kind="file")]) == len(records)


def test_one_tenant_only(parts: tuple[Tenants, FileStore, Ledger]) -> None:
    tenants, store, ledger = parts
    a = store.put("acme", b"a", filename="a", purpose="ocr", mime_type="text/plain",
                  expires_after=10)  # fmt: skip
    g = store.put("globex", b"g", filename="g", purpose="ocr", mime_type="text/plain",
                  expires_after=10)  # fmt: skip
    done = purge_documents(policies(tenants), store, ledger, actor="t", tenant="globex",
                           now=time.time() + 60)  # fmt: skip
    assert list(done) == ["globex"] and done["globex"].files == [g.id]
    assert store.purge(now=time.time() + 60) == {"acme": [a.id]}


def policies(tenants: Tenants) -> dict[str, TenantPolicy]:
    """Every live tenant's policy, by id, as the platform hands them to a purge."""
    return {t.id: t.policy for t in tenants.all()}
