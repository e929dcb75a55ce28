"""OCR batch jobs over the API: submit file ids, poll the job, fetch the results.

A job and one item per file are rows of ``docai_jobs`` / ``docai_job_items``;
each item's result (the ``/v1/ocr`` answer) is stored encrypted with the
files' keys. A runner task in each server claims queued jobs one at a time
(an atomic status update, so several replicas never run the same job) and
reads the items in order, each one a metered call under the submitting key,
bumping a heartbeat as it goes. A job whose heartbeat is stale (its server
died) is claimed again and resumes at its first unfinished item: nothing
done is redone. One bad file fails its item, never the job.

Statuses: ``queued`` -> ``running`` -> ``completed`` (even when some items
failed: see ``request_counts``), or ``cancelling`` -> ``cancelled``, or
``failed`` (the job itself could not run, e.g. its key was revoked).

While a file is read, a watcher beats the heartbeat every second and stops
the read (between pages and OCR steps) once the job is cancelled; the file
being read stays pending. Files share the readers with ``/v1/ocr`` requests,
page by page and tenants in turn (see :mod:`intramuros.docai.fair`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from typing import Any, Protocol

import sqlalchemy as sa

from intramuros.docai import protocol as dp
from intramuros.docai.control import ReadControl
from intramuros.docai.errors import ReadCancelled, ServerStopping
from intramuros.docai.options import OcrOptions
from intramuros.docai.tables import docai_job_items, docai_jobs
from intramuros.errors import IntramurosError, NotFound
from intramuros.files.store import FileStore
from intramuros.gate.tenants import Principal
from intramuros.ledger.chain import canonical_json
from intramuros.platform.interface import Platform

log = logging.getLogger(__name__)

STALE_SECONDS = 120.0
_IDLE_POLL = 2.0
_WATCH_S = 1.0  # heartbeat and cancel check while a file is read
_AAD_PREFIX = b"intramuros-ocr-job-item/1\n"


def item_aad(job_id: str, index: int, tenant: str) -> bytes:
    """The associated data binding an item's ciphertext to its job, index and tenant."""
    return _AAD_PREFIX + canonical_json({"job": job_id, "idx": index,
                                         "tenant": tenant}).encode("utf-8")  # fmt: skip


class JobNotFound(NotFound):
    """No such job for this tenant."""

    code = "job_not_found"


class JobHost(Protocol):
    """What the runner needs of the document service that owns it."""

    @property
    def platform(self) -> Platform:
        """The platform (tables, keys)."""
        ...

    @property
    def files(self) -> FileStore:
        """The file store the jobs' inputs and results are kept in."""
        ...

    def options(self, req: dp.OCRJobRequest) -> OcrOptions:
        """A job's checked options."""
        ...

    def control(self, filename: str) -> ReadControl:
        """A new read's cancel flag and work-time budget."""
        ...

    async def process(self, who: Principal, data: bytes, *, filename: str, opts: OcrOptions,
                      source: str, control: ReadControl | None = None) -> dp.OCRResponse:
        """Read one document as a metered call of ``who``."""
        ...


class JobRunner:
    """Submits, lists, cancels and runs a service's OCR jobs."""

    def __init__(self, service: JobHost) -> None:
        self.service = service
        self.db = service.platform.tables
        self.worker = f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(3)}"
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._controls: dict[str, ReadControl] = {}  # running job -> its current read

    async def start(self) -> None:
        """Start the runner task (it picks up queued and orphaned jobs)."""
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        """Stop the runner; a job it was running is resumed by the next claimant."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- API side ----------------------------------------------------------------

    async def submit(self, who: Principal, req: dp.OCRJobRequest) -> dp.OCRJob:
        """Queue a job over the caller's files (every id must be theirs: else 404)."""
        opts = self.service.options(req)  # refuse bad options now, not at run time
        store = self.service.files
        for i, file_id in enumerate(req.file_ids):
            await asyncio.to_thread(store.get, who.tenant, file_id, param=f"file_ids[{i}]")
        job_id = "ocrjob-" + secrets.token_hex(12)
        options = req.model_dump(mode="json", exclude={"file_ids"}, by_alias=True,
                                 exclude_none=True)  # fmt: skip
        options["model"] = opts.model
        now = time.time()

        def insert() -> None:
            with self.db.begin() as conn:
                conn.execute(docai_jobs.insert().values(
                    id=job_id, tenant=who.tenant, key_id=who.key_id, status="queued",
                    model=opts.model, options=json.dumps(options), created_at=now,
                    total=len(req.file_ids), succeeded=0, failed=0, pages=0,
                ))  # fmt: skip
                conn.execute(docai_job_items.insert(), [
                    {"job_id": job_id, "idx": i, "file_id": f, "status": "pending", "pages": 0}
                    for i, f in enumerate(req.file_ids)
                ])  # fmt: skip

        await asyncio.to_thread(insert)
        if self._wake is not None:
            self._wake.set()
        return await self.get(who, job_id)

    def _row(self, tenant: str, job_id: str) -> Any:
        with self.db.begin() as conn:
            row = conn.execute(sa.select(docai_jobs).where(
                docai_jobs.c.id == job_id, docai_jobs.c.tenant == tenant,
            )).mappings().first()  # fmt: skip
            if row is None:
                raise JobNotFound(f"No OCR job '{job_id[:64]}'.", param="job_id")
            ids = [r[0] for r in conn.execute(
                sa.select(docai_job_items.c.file_id).where(docai_job_items.c.job_id == job_id)
                .order_by(docai_job_items.c.idx))]  # fmt: skip
        return row, ids

    async def get(self, who: Principal, job_id: str) -> dp.OCRJob:
        """One of the caller's jobs (404 for another tenant's)."""
        row, ids = await asyncio.to_thread(self._row, who.tenant, job_id)
        return _job(row, ids)

    async def list_jobs(self, who: Principal, limit: int) -> dp.OCRJobList:
        """The caller's jobs, newest first."""

        def rows() -> list[Any]:
            with self.db.begin() as conn:
                return list(conn.execute(
                    sa.select(docai_jobs).where(docai_jobs.c.tenant == who.tenant)
                    .order_by(docai_jobs.c.created_at.desc()).limit(limit + 1),
                ).mappings())  # fmt: skip

        found = await asyncio.to_thread(rows)
        jobs = [_job(r, []) for r in found[:limit]]
        return dp.OCRJobList(data=jobs, has_more=len(found) > limit)

    async def cancel(self, who: Principal, job_id: str) -> dp.OCRJob:
        """Cancel a queued job now; a running one stops reading its current file at the
        next step (the file stays pending), at once when this server runs it, else at its
        runner's next heartbeat."""

        def update() -> None:
            self._row(who.tenant, job_id)
            with self.db.begin() as conn:
                for old, new in (("queued", "cancelled"), ("running", "cancelling")):
                    conn.execute(docai_jobs.update().where(
                        docai_jobs.c.id == job_id, docai_jobs.c.status == old,
                    ).values(status=new, **({"completed_at": time.time()}
                                            if new == "cancelled" else {})))  # fmt: skip

        await asyncio.to_thread(update)
        running = self._controls.get(job_id)
        if running is not None:
            running.cancel(ReadCancelled(f"The OCR job {job_id} was cancelled."))
        return await self.get(who, job_id)

    async def results(self, who: Principal, job_id: str, *, after: int = -1,
                      limit: int = 100) -> dp.OCRJobResults:  # fmt: skip
        """The outcomes of items ``after+1 ..`` (at most ``limit``), results decrypted."""
        row, _ids = await asyncio.to_thread(self._row, who.tenant, job_id)

        def items() -> list[Any]:
            with self.db.begin() as conn:
                return list(conn.execute(
                    sa.select(docai_job_items).where(docai_job_items.c.job_id == job_id,
                                                     docai_job_items.c.idx > after)
                    .order_by(docai_job_items.c.idx).limit(limit + 1),
                ).mappings())  # fmt: skip

        out: list[dp.OCRJobResult] = []
        keys = self.service.files.keys
        found = await asyncio.to_thread(items)
        for item in found[:limit]:
            response = None
            if item["status"] == "succeeded" and item["result"] is not None:
                plain = keys.open(item["key_version"], item["nonce"], item["result"],
                                  item_aad(job_id, item["idx"], who.tenant))  # fmt: skip
                response = dp.OCRResponse.model_validate_json(plain)
            out.append(dp.OCRJobResult(
                index=item["idx"], file_id=item["file_id"], status=item["status"],
                response=response, error=json.loads(item["error"]) if item["error"] else None,
            ))  # fmt: skip
        return dp.OCRJobResults(job_id=job_id, status=row["status"], data=out,
                                has_more=len(found) > limit)  # fmt: skip

    # -- runner side ---------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                job = await asyncio.to_thread(self._claim)
                if job is not None:
                    await self._run(job)
                    continue
            except IntramurosError as exc:
                log.error("OCR job runner: %s", exc.message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("OCR job runner failed")
            assert self._wake is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _IDLE_POLL)
            self._wake.clear()

    def _claim(self) -> Any:
        """Take the oldest queued job, or a running one whose server stopped beating."""
        now = time.time()
        with self.db.begin() as conn:
            candidates = list(conn.execute(sa.select(docai_jobs).where(sa.or_(
                docai_jobs.c.status == "queued",
                sa.and_(docai_jobs.c.status.in_(("running", "cancelling")),
                        docai_jobs.c.heartbeat < now - STALE_SECONDS),
            )).order_by(docai_jobs.c.created_at).limit(5)).mappings())  # fmt: skip
        for row in candidates:
            status = "cancelling" if row["status"] == "cancelling" else "running"
            with self.db.begin() as conn:
                query = docai_jobs.update().where(
                    docai_jobs.c.id == row["id"], docai_jobs.c.status == row["status"])
                if row["heartbeat"] is None:
                    query = query.where(docai_jobs.c.heartbeat.is_(None))
                else:
                    query = query.where(docai_jobs.c.heartbeat == row["heartbeat"])
                claimed = conn.execute(query.values(
                    status=status, worker=self.worker, heartbeat=now,
                    started_at=row["started_at"] or now)).rowcount  # fmt: skip
            if claimed:
                return row
        return None

    def _principal(self, tenant: str, key_id: str | None) -> Principal | None:
        """The submitting key as it is now (None if revoked or expired)."""
        return self.service.platform.key_principal(tenant, key_id)

    def _set(self, job_id: str, **values: Any) -> str:
        """Update the job (and its heartbeat); return its status as stored now."""
        with self.db.begin() as conn:
            conn.execute(docai_jobs.update().where(docai_jobs.c.id == job_id).values(
                heartbeat=time.time(), **values))  # fmt: skip
            return str(conn.execute(sa.select(docai_jobs.c.status).where(
                docai_jobs.c.id == job_id)).scalar_one())  # fmt: skip

    async def _run(self, job: Any) -> None:
        job_id, tenant = job["id"], job["tenant"]
        who = await asyncio.to_thread(self._principal, tenant, job["key_id"])
        if who is None:
            await asyncio.to_thread(self._set, job_id, status="failed", completed_at=time.time(),
                                    error="The API key that submitted this job was revoked "
                                          "or has expired.")  # fmt: skip
            return
        try:
            opts = self.service.options(dp.OCRJobRequest.model_validate(
                {**json.loads(job["options"]), "file_ids": ["-"]}))  # fmt: skip
        except (IntramurosError, ValueError) as exc:  # e.g. its model was removed since
            reason = exc.message if isinstance(exc, IntramurosError) else "invalid options"
            await asyncio.to_thread(self._set, job_id, status="failed", completed_at=time.time(),
                                    error=f"The job cannot run: {reason}")  # fmt: skip
            return

        def pending() -> list[Any]:
            with self.db.begin() as conn:
                items = docai_job_items.c
                return list(conn.execute(
                    sa.select(items.idx, items.file_id)
                    .where(items.job_id == job_id, items.status == "pending")
                    .order_by(items.idx),
                ))  # fmt: skip

        for index, file_id in await asyncio.to_thread(pending):
            status = await asyncio.to_thread(self._set, job_id)
            if status == "cancelling":
                await asyncio.to_thread(self._set, job_id, status="cancelled",
                                        completed_at=time.time())  # fmt: skip
                return
            # A read stopped by the job's cancellation leaves its file pending; the
            # next turn of this loop then finds the job cancelling and ends it.
            await self._run_item(who, job_id, index, file_id, opts)
        status = await asyncio.to_thread(self._set, job_id)
        left: list[Any] = await asyncio.to_thread(pending)
        if status == "cancelling" and left:
            await asyncio.to_thread(self._set, job_id, status="cancelled",
                                    completed_at=time.time())  # fmt: skip
            return
        await asyncio.to_thread(self._finish, job_id)

    async def _watch(self, job_id: str, control: ReadControl) -> None:
        """While an item is read: beat the job's heartbeat (a long document must not look
        like a dead server's) and stop the read when the job is cancelled."""
        while not control.cancelled:
            await asyncio.sleep(_WATCH_S)
            try:
                status = await asyncio.to_thread(self._set, job_id)
            except IntramurosError as exc:  # the database is away: try again next beat
                log.warning("OCR job %s heartbeat: %s", job_id, exc.message)
                continue
            if status in ("cancelling", "cancelled"):
                control.cancel(ReadCancelled(f"The OCR job {job_id} was cancelled."))

    async def _run_item(self, who: Principal, job_id: str, index: int, file_id: str,
                        opts: Any) -> bool:  # fmt: skip
        """Read one file of a job and store its outcome; False when the read was stopped
        (the job cancelled, the server stopping): the item stays pending."""
        store = self.service.files
        values: dict[str, Any]
        control = self.service.control(file_id)
        self._controls[job_id] = control
        watch = asyncio.create_task(self._watch(job_id, control))
        try:
            record, data = await asyncio.to_thread(store.read, who.tenant, file_id)
            control.filename = record.filename
            response = await self.service.process(who, data, filename=record.filename,
                                                  opts=opts, source="job",
                                                  control=control)  # fmt: skip
            plain = response.model_dump_json().encode("utf-8")
            version, nonce, ciphertext = store.keys.seal(plain, item_aad(job_id, index,
                                                                         who.tenant))  # fmt: skip
            values = {"status": "succeeded", "pages": len(response.pages),
                      "key_version": version, "nonce": nonce, "result": ciphertext}  # fmt: skip
        except (ReadCancelled, ServerStopping):
            return False
        except IntramurosError as exc:
            error = {"code": exc.code, "message": exc.message, "param": exc.param,
                     "type": exc.type}  # fmt: skip
            values = {"status": "failed", "error": json.dumps(error)}
        except Exception as exc:
            log.exception("OCR job %s item %d failed", job_id, index)
            values = {"status": "failed", "error": json.dumps(
                {"code": "internal_error", "message": type(exc).__name__})}  # fmt: skip
        finally:
            watch.cancel()
            if self._controls.get(job_id) is control:
                del self._controls[job_id]

        def store_item() -> None:
            with self.db.begin() as conn:
                conn.execute(docai_job_items.update().where(
                    docai_job_items.c.job_id == job_id, docai_job_items.c.idx == index,
                ).values(completed_at=time.time(), **values))  # fmt: skip
                ok = values["status"] == "succeeded"
                conn.execute(docai_jobs.update().where(docai_jobs.c.id == job_id).values(
                    heartbeat=time.time(),
                    succeeded=docai_jobs.c.succeeded + (1 if ok else 0),
                    failed=docai_jobs.c.failed + (0 if ok else 1),
                    pages=docai_jobs.c.pages + int(values.get("pages", 0)),
                ))  # fmt: skip

        await asyncio.to_thread(store_item)
        return True

    def _finish(self, job_id: str) -> None:
        with self.db.begin() as conn:
            conn.execute(docai_jobs.update().where(
                docai_jobs.c.id == job_id, docai_jobs.c.status.in_(("running", "cancelling")),
            ).values(status="completed", completed_at=time.time(),
                     heartbeat=time.time()))  # fmt: skip


def _job(row: Any, file_ids: list[str]) -> dp.OCRJob:
    options = json.loads(row["options"])
    done = int(row["succeeded"]) + int(row["failed"])
    return dp.OCRJob(
        id=row["id"], status=row["status"], model=row["model"], file_ids=file_ids,
        created_at=int(row["created_at"]),
        started_at=int(row["started_at"]) if row["started_at"] else None,
        completed_at=int(row["completed_at"]) if row["completed_at"] else None,
        request_counts=dp.RequestCounts(total=int(row["total"]), completed=done,
                                        succeeded=int(row["succeeded"]),
                                        failed=int(row["failed"])),
        pages_processed=int(row["pages"]), error=row["error"], metadata=options.get("metadata"),
    )  # fmt: skip
