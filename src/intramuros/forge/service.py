"""The fine-tuning jobs API, as the server runs it (:class:`ForgeService`).

A job's life: created (``validating_files``), its files checked and
tokenised on the base model's lane (a few seconds, in the lane's thread),
then ``queued`` (or ``validated``, waiting for its start, under Mistral's
``auto_start: false``), ``running`` in the training worker process (never in
the server), ``succeeded`` (the adapter registered as a model of the
tenant), ``failed`` or ``cancelled``. The server starts the worker when there
is work (:mod:`intramuros.forge.supervisor`); the queue is the database, so
nothing is lost to a restart.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import secrets
import time
from functools import partial
from typing import Any

from sqlalchemy.engine import Connection

from intramuros.bench.suite import bundled_suites
from intramuros.errors import IntramurosError, InvalidRequest, RateLimited
from intramuros.files.errors import FileNotFound
from intramuros.files.store import FileStore
from intramuros.forge import data as checks
from intramuros.forge import protocol as p
from intramuros.forge.export import ARCHITECTURES
from intramuros.forge.jobs import FINISHED_STATES, JobRow, Jobs, model_name
from intramuros.forge.render import render_job
from intramuros.forge.settings import ForgeSettings
from intramuros.forge.supervisor import Supervisor
from intramuros.forge.workdir import job_dir, write_examples
from intramuros.gate.tenants import Principal
from intramuros.platform.interface import Platform
from intramuros.settings import section

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 3
DEFAULT_BATCH = 8
BASE_LEARNING_RATE = 2e-4
# Loading the base and the two evaluations, in seconds (measured for SmolLM2-135M).
LOAD_SECONDS = 40.0


class ForgeService:
    """Jobs over HTTP: create, list, get, cancel, start, events, checkpoints."""

    name = "forge"
    body_limits: dict[str, int] = {}

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.settings = section(platform.settings, ForgeSettings)
        self.jobs = Jobs(platform.tables)
        self.supervisor = Supervisor(platform.settings, self.jobs)
        self._files: FileStore | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def files(self) -> FileStore:
        if self._files is None:
            self._files = FileStore.from_settings(self.platform.settings, self.platform.tables)
        return self._files

    async def checked(self) -> None:
        """Return once every data check under way has ended."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def start(self) -> None:
        # A job whose check a stopped server cut short is checked again.
        for row in await asyncio.to_thread(self._unchecked):
            self._check_later(row)
        self.supervisor.start()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        await self.supervisor.close()

    def _unchecked(self) -> list[JobRow]:
        return [r for r in self._all_validating() if r.status == "validating_files"]

    def _all_validating(self) -> list[JobRow]:
        import sqlalchemy as sa

        from intramuros.forge.tables import forge_jobs

        with self.platform.tables.begin() as conn:
            ids = [r[0] for r in conn.execute(sa.select(forge_jobs.c.id).where(
                forge_jobs.c.status == "validating_files"))]  # fmt: skip
        return [self.jobs.get(None, i) for i in ids]

    # -- create --------------------------------------------------------------------

    async def create(self, req: p.CreateJob, who: Principal) -> dict[str, Any]:
        """Check what can be checked at once, store the job, check its data next."""
        training, validation, weights = _files_of(req)
        base = await self.platform.model_record(req.model)
        if base.base is not None or base.format != "gguf" or base.engine != "llamacpp":
            raise InvalidRequest(
                f"'{req.model}' cannot be fine-tuned here: a base GGUF model of the llama.cpp "
                "engine is needed (not an adapter, an upstream or another engine's model).",
                param="model",
            )
        if base.owner not in (None, who.tenant):
            raise InvalidRequest(f"Model '{req.model}' does not exist.", param="model")
        if base.architecture not in ARCHITECTURES:
            raise InvalidRequest(
                f"The trainer cannot fine-tune a '{base.architecture}' model ('{req.model}'); "
                f"it knows {', '.join(sorted(ARCHITECTURES))}.",
                param="model",
            )
        suites = bundled_suites() if req.suite is not None else {}
        if req.suite is not None and req.suite not in suites:
            raise InvalidRequest(
                f"'{req.suite[:100]}' is not a bench suite of this installation; one of "
                f"{', '.join(sorted(suites))}.",
                param="suite",
            )
        hp = _hyperparameters(req)
        seq_len = hp.seq_len or self.settings.forge_seq_len
        if seq_len > base.context_length:
            raise InvalidRequest(
                f"seq_len {seq_len} is beyond '{req.model}''s context of "
                f"{base.context_length} tokens.",
                param="hyperparameters.seq_len",
            )
        del weights  # one file each: Mistral's weights only mix several, which we refuse
        files = await asyncio.to_thread(self._file_records, who.tenant, training, validation)
        now = time.time()
        job_id = _new_id()
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        row = {
            "id": job_id, "tenant": who.tenant, "key_id": who.key_id,
            "status": "validating_files", "dialect": "mistral" if req.mistral else "openai",
            "model": req.model, "base_sha256": base.sha256 or "", "suffix": req.suffix,
            "training_file": training, "validation_file": validation,
            "training_sha256": files[0], "validation_sha256": files[1],
            "requested": hp.model_dump(exclude_none=True), "hyper": None, "seed": seed,
            "metadata": req.metadata, "merge": req.merge,
            "auto_start": req.auto_start is not False, "created_at": now, "modified_at": now,
            "cancel_requested": False, "attempts": 0, "suite": req.suite,
        }  # fmt: skip
        await asyncio.to_thread(self.jobs.create, row, partial(self._check_limits, who.tenant))
        await asyncio.to_thread(self.jobs.event, job_id, "Validating training file: "
                                + training)  # fmt: skip
        await self.platform.audit_event(
            "fine_tune", tenant=who.tenant, key_id=who.key_id, subject=None,
            data={"action": "create", "job": job_id, "model": req.model,
                  "base_sha256": base.sha256, "training_sha256": files[0],
                  "validation_sha256": files[1], "seed": seed},
        )  # fmt: skip
        stored = await asyncio.to_thread(self.jobs.get, who.tenant, job_id)
        self._check_later(stored)
        return render_job(stored)

    def _file_records(self, tenant: str, training: str,
                      validation: str | None) -> tuple[str, str | None]:  # fmt: skip
        """The files' sha256, after checking they are the tenant's fine-tuning files."""
        out: list[str | None] = []
        for file_id, param in ((training, "training_file"), (validation, "validation_file")):
            if file_id is None:
                out.append(None)
                continue
            try:
                record = self.files.get(tenant, file_id, param=param)
            except FileNotFound:
                raise InvalidRequest(f"File '{file_id[:64]}' does not exist.",
                                     param=param) from None  # fmt: skip
            if record.purpose != "fine-tune":
                raise InvalidRequest(
                    f"File '{file_id}' was uploaded for '{record.purpose}'; fine-tuning "
                    "needs purpose 'fine-tune'.",
                    param=param,
                )
            if record.bytes == 0:
                raise InvalidRequest(f"File '{file_id}' is empty.", param=param)
            out.append(record.sha256)
        assert out[0] is not None
        return out[0], out[1]

    def _check_limits(self, tenant: str, conn: Connection) -> None:
        limit = self.settings.forge_max_active_jobs
        if self.jobs.active_count(conn, tenant) >= limit:
            raise RateLimited(f"This tenant has {limit} fine-tuning jobs not yet finished; "
                              "wait for one, or cancel one.", retry_after=60)  # fmt: skip
        monthly = self.settings.forge_monthly_trained_tokens
        if monthly and self.jobs.tokens_since(conn, tenant, _month_start()) >= monthly:
            raise RateLimited(f"This tenant has used its {monthly:,} fine-tuning tokens of "
                              "the month.", retry_after=3600)  # fmt: skip

    # -- the data check -------------------------------------------------------------------

    def _check_later(self, row: JobRow) -> None:
        task = asyncio.create_task(self._check(row))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, row: JobRow) -> None:
        try:
            await self._validate(row)
        except asyncio.CancelledError:
            raise
        except IntramurosError as exc:
            await self._fail(row, "invalid_file", str(exc), getattr(exc, "param", None))
        except Exception as exc:  # a bug must fail the job, never leave it validating
            log.exception("checking the files of %s failed", row.id)
            await self._fail(row, "server_error", f"The data check failed: {type(exc).__name__}.",
                             None)  # fmt: skip

    async def _validate(self, row: JobRow) -> None:
        seq_len = int(row.requested.get("seq_len") or self.settings.forge_seq_len)
        lane = await self.platform.lane(row.model)
        engine = lane.engine
        sets: dict[str, list[tuple[list[int], list[bool]]]] = {}
        tasks: list[dict[str, Any]] = []
        reports: dict[str, checks.Report] = {}
        for name, file_id in (("training", row.training_file), ("validation", row.validation_file)):
            if file_id is None:
                continue
            _record, raw = await asyncio.to_thread(self.files.read, row.tenant, file_id)
            report = checks.Report()
            chats = await asyncio.to_thread(checks.parse_file, raw, report)
            if name == "validation":
                tasks = [c.task for c in chats if c.task is not None]

            def tokenise(cancel: Any, chats: list[checks.Chat] = chats,
                         report: checks.Report = report) -> Any:  # fmt: skip
                yield checks.tokenise(chats, lambda ex: engine.chat_training_tokens(
                    checks.chat_params(ex)), seq_len, report)  # fmt: skip

            async for examples in lane.stream(tokenise):
                sets[name] = examples
            reports[name] = report
            if not report.ok:
                await asyncio.to_thread(self.jobs.update, row.id, report=_reports(reports))
                param = "training_file" if name == "training" else "validation_file"
                raise InvalidRequest(f"The {name} file has problems. {report.summary()}",
                                     param=param)  # fmt: skip
        hyper = resolve(row, reports["training"], seq_len)
        report = reports["training"]
        report.estimated_seconds = checks.estimate_seconds(
            report, hyper["n_epochs"], self.settings.forge_tokens_per_second, LOAD_SECONDS)
        planned = report.trained_tokens * hyper["n_epochs"]
        folder = job_dir(self.platform.settings.data_dir, row.tenant, row.id)
        await asyncio.to_thread(write_examples, folder, sets, tasks)
        wire = _reports(reports) | {"planned_tokens": planned}
        status = "queued" if row.auto_start else "validated"
        moved = await asyncio.to_thread(
            self.jobs.update, row.id, when=("validating_files",), status=status, hyper=hyper,
            report=wire, estimated_finish=time.time() + (report.estimated_seconds or 0),
        )  # fmt: skip
        if moved:
            await asyncio.to_thread(
                self.jobs.event, row.id,
                f"Files validated: {report.examples} examples, {report.tokens} tokens "
                f"({len(report.too_long)} cut to {seq_len}); about "
                f"{math.ceil((report.estimated_seconds or 0) / 60)} min to train.",
                data=wire)  # fmt: skip
            if status == "queued":
                self.supervisor.poke()

    async def _fail(self, row: JobRow, code: str, message: str, param: str | None) -> None:
        now = time.time()
        moved = await asyncio.to_thread(
            self.jobs.update, row.id, when=("validating_files",), status="failed",
            finished_at=now, error={"code": code, "message": message, "param": param},
        )  # fmt: skip
        if moved:
            await asyncio.to_thread(self.jobs.event, row.id, message, level="error")
            await self.platform.audit_event(
                "fine_tune", tenant=row.tenant, key_id=row.key_id, subject=None,
                data={"action": "failed", "job": row.id, "code": code})  # fmt: skip

    # -- reads and changes ----------------------------------------------------------------

    async def get(self, who: Principal, job_id: str) -> dict[str, Any]:
        return render_job(await asyncio.to_thread(self.jobs.get, who.tenant, job_id))

    async def list(self, who: Principal, after: str | None, limit: int,
                   status: str | None) -> dict[str, Any]:  # fmt: skip
        wanted = p.FROM_MISTRAL.get(status, status) if status else None
        rows, more = await asyncio.to_thread(self.jobs.page, who.tenant, after, limit, wanted)
        return {"object": "list", "data": [render_job(r) for r in rows], "has_more": more,
                "total": len(rows)}  # fmt: skip

    async def cancel(self, who: Principal, job_id: str) -> dict[str, Any]:
        row = await asyncio.to_thread(self.jobs.get, who.tenant, job_id)
        if row.status in FINISHED_STATES:
            raise InvalidRequest(f"Job {job_id} has already {row.status}: it cannot be "
                                 "cancelled.", param="fine_tuning_job_id")  # fmt: skip
        now = time.time()
        # Not yet running: cancelled at once. Running: the worker stops before its next step.
        done = await asyncio.to_thread(
            self.jobs.update, job_id, when=("validating_files", "validated", "queued"),
            status="cancelled", finished_at=now, cancel_requested=True)  # fmt: skip
        if not done:
            await asyncio.to_thread(self.jobs.update, job_id, when=("running",),
                                    cancel_requested=True)  # fmt: skip
        await asyncio.to_thread(self.jobs.event, job_id, "Cancellation requested.")
        await self.platform.audit_event(
            "fine_tune", tenant=who.tenant, key_id=who.key_id, subject=None,
            data={"action": "cancel", "job": job_id})  # fmt: skip
        return render_job(await asyncio.to_thread(self.jobs.get, who.tenant, job_id))

    async def start_job(self, who: Principal, job_id: str) -> dict[str, Any]:
        """Mistral's ``POST /jobs/{id}/start`` for a job made with ``auto_start: false``."""
        row = await asyncio.to_thread(self.jobs.get, who.tenant, job_id)
        if row.status != "validated":
            raise InvalidRequest(f"Job {job_id} is {row.status}; only a validated job that "
                                 "waits for its start can be started.",
                                 param="fine_tuning_job_id")  # fmt: skip
        await asyncio.to_thread(self.jobs.update, job_id, when=("validated",), status="queued",
                                auto_start=True)  # fmt: skip
        self.supervisor.poke()
        return render_job(await asyncio.to_thread(self.jobs.get, who.tenant, job_id))

    async def events(self, who: Principal, job_id: str, after: str | None,
                     limit: int) -> dict[str, Any]:  # fmt: skip
        await asyncio.to_thread(self.jobs.get, who.tenant, job_id)
        events, more = await asyncio.to_thread(self.jobs.events, job_id, after, limit)
        return {"object": "list", "data": [e.model_dump() for e in events], "has_more": more}

    async def checkpoints(self, who: Principal, job_id: str, after: str | None,
                          limit: int) -> dict[str, Any]:  # fmt: skip
        row = await asyncio.to_thread(self.jobs.get, who.tenant, job_id)
        rows, more = await asyncio.to_thread(self.jobs.checkpoints, job_id, after, limit)
        data = [p.Checkpoint(
            id=r["id"], created_at=int(r["created_at"]), fine_tuning_job_id=job_id,
            fine_tuned_model_checkpoint=f"{model_name(row)}:ckpt-step-{r['step']}",
            step_number=r["step"], metrics=r["metrics"]).model_dump()
            for r in rows]  # fmt: skip
        return {"object": "list", "data": data, "has_more": more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}  # fmt: skip


def _files_of(req: p.CreateJob) -> tuple[str, str | None, list[float]]:
    """(training file, validation file, weights) from either dialect."""
    if req.training_files is not None:
        if req.training_file is not None:
            raise InvalidRequest("Give training_file or training_files, not both.",
                                 param="training_files")  # fmt: skip
        if len(req.training_files) != 1:
            raise InvalidRequest("One training file per job here (join the files into one; "
                                 "weights between files are not offered).",
                                 param="training_files")  # fmt: skip
        training = req.training_files[0].file_id
        weights = [req.training_files[0].weight]
    elif req.training_file is not None:
        training, weights = req.training_file, [1.0]
    else:
        raise InvalidRequest("Missing required parameter: 'training_file'.",
                             param="training_file")  # fmt: skip
    validation = req.validation_file
    if req.validation_files:
        if validation is not None or len(req.validation_files) != 1:
            raise InvalidRequest("One validation file per job.", param="validation_files")
        validation = req.validation_files[0]
    return training, validation, weights


def _hyperparameters(req: p.CreateJob) -> p.Hyperparameters:
    if req.method is not None and req.hyperparameters is not None:
        raise InvalidRequest("Give method.supervised.hyperparameters or hyperparameters, "
                             "not both.", param="hyperparameters")  # fmt: skip
    if req.method is not None:
        return req.method.supervised.hyperparameters
    return req.hyperparameters or p.Hyperparameters()


def resolve(row: JobRow, report: checks.Report, seq_len: int) -> dict[str, Any]:
    """The hyperparameters this job trains with, ``auto`` made concrete for its data."""
    asked = row.requested
    n = max(report.examples, 1)
    batch = asked.get("batch_size", "auto")
    batch = min(DEFAULT_BATCH, n) if batch == "auto" else int(batch)
    epochs_asked = asked.get("epochs") or asked.get("n_epochs", "auto")
    epochs = DEFAULT_EPOCHS if epochs_asked == "auto" else max(1, math.ceil(float(epochs_asked)))
    rate = asked.get("learning_rate")
    multiplier = asked.get("learning_rate_multiplier", "auto")
    if rate is None:
        rate = BASE_LEARNING_RATE * (1.0 if multiplier == "auto" else float(multiplier))
    steps = asked.get("training_steps")
    if steps is not None:
        epochs = max(1, math.ceil(int(steps) * batch / n))
    return {"n_epochs": epochs, "batch_size": batch, "learning_rate": rate,
            "learning_rate_multiplier": rate / BASE_LEARNING_RATE, "seq_len": seq_len,
            "training_steps": steps, "lora_rank": asked.get("lora_rank", 8)}  # fmt: skip


def _reports(reports: dict[str, checks.Report]) -> dict[str, Any]:
    return {name: r.to_wire() for name, r in reports.items()}


def _new_id() -> str:
    from intramuros.forge.jobs import new_job_id

    return new_job_id()


def _month_start() -> float:
    now = time.gmtime()
    return float(calendar.timegm((now.tm_year, now.tm_mon, 1, 0, 0, 0)))

