"""The training worker: a process of its own that runs the queued jobs, one at a time.

Started by the server when a job is queued (:mod:`intramuros.forge.supervisor`)
or by ``intramuros forge work``; it lowers its CPU priority, holds the
worker lock of its data dir, and takes jobs from the database until none is
left. A job it takes over from a dead worker resumes from its last
checkpoint. Between steps it reports (event, heartbeat, estimate) and reads
whether the job was cancelled, so a cancel stops it within one step.

When a job's training is done it exports the adapter as a llama.cpp LoRA
GGUF, registers it as ``ft:<base>:<suffix>:<job>`` for the job's tenant with
its lineage, and records it in the ledger: the model answers at once.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from intramuros.catalog.records import AdapterSpec
from intramuros.errors import IntramurosError
from intramuros.files.store import FileStore
from intramuros.forge.jobs import JobRow, Jobs, model_name, worker_id
from intramuros.forge.settings import ForgeSettings
from intramuros.forge.supervisor import SETTINGS_ENV, lock_path
from intramuros.forge.workdir import ADAPTER, EXAMPLES, MERGED, job_dir, read_examples
from intramuros.platform.worker import WorkerInstallation
from intramuros.settings import Settings, load_settings, section

log = logging.getLogger("intramuros.forge.worker")


class JobFailed(Exception):
    """A job that cannot go on: its error code, message and parameter."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


@contextlib.contextmanager
def worker_lock(data_dir: Path) -> Iterator[bool]:
    """Hold the data dir's worker lock; False if another worker holds it."""
    path = lock_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _Progress:
    """What the trainer reports, written to the job's events and row."""

    def __init__(self, jobs: Jobs, row: JobRow) -> None:
        self.jobs, self.row = jobs, row
        self.losses: list[tuple[int, float]] = []
        self.beat = time.time()

    def on_step(self, step: int, total: int, loss: float, tokens_per_second: float,
                eta_seconds: float) -> None:  # fmt: skip
        now = time.time()
        self.losses.append((step, loss))
        data = {"step": step, "total_steps": total, "train_loss": round(loss, 5),
                "tokens_per_second": round(tokens_per_second, 1),
                "remaining_seconds": round(eta_seconds, 1)}  # fmt: skip
        self.jobs.event(self.row.id, f"Step {step}/{total}: training loss={loss:.4f}",
                        kind="metrics", data=data)  # fmt: skip
        self.jobs.update(self.row.id, when=("running",), heartbeat=now,
                         estimated_finish=now + eta_seconds)  # fmt: skip

    def on_checkpoint(self, step: int, path: Path, train_loss: float) -> None:
        self.jobs.checkpoint(self.row.id, step, {"step": step, "train_loss": train_loss})
        self.jobs.event(self.row.id, f"Checkpoint written at step {step}.")

    def should_stop(self) -> bool:
        """Whether the job was cancelled; also the worker's sign of life between steps (the
        task score asks between items)."""
        now = time.time()
        if now - self.beat > 10:
            self.beat = now
            self.jobs.update(self.row.id, when=("running",), heartbeat=now)
        return self.jobs.get(None, self.row.id).cancel_requested


def run(settings: Settings, *, once: bool = False) -> int:
    """Take jobs until none is left (or one, with ``once``); the number of jobs run."""
    forge = section(settings, ForgeSettings)
    with contextlib.suppress(OSError):
        os.nice(forge.forge_nice)
    with worker_lock(settings.data_dir) as mine:
        if not mine:
            log.info("another worker holds %s", lock_path(settings.data_dir))
            return 0
        home = WorkerInstallation(settings)
        jobs = Jobs(home.tables)
        done = 0
        idle_since = time.monotonic()
        try:
            me = worker_id()
            while True:
                row = jobs.next_runnable(time.time() - forge.forge_stale_seconds,
                                         lambda r: _here(settings, r))  # fmt: skip
                if row is None:
                    if time.monotonic() - idle_since >= forge.forge_worker_idle_seconds:
                        return done
                    time.sleep(1.0)
                    continue
                if not jobs.claim(row, me):
                    continue
                run_job(home, jobs, jobs.get(None, row.id), forge)
                done += 1
                idle_since = time.monotonic()
                if once:
                    return done
        finally:
            home.close()


def _here(settings: Settings, row: JobRow) -> bool:
    """Whether the job's checked data is on this machine (replicas sharing one database
    each train the jobs they checked)."""
    return (job_dir(settings.data_dir, row.tenant, row.id) / EXAMPLES).is_file()


def run_job(home: WorkerInstallation, jobs: Jobs, row: JobRow, forge: ForgeSettings) -> None:
    """Train, export, register one claimed job; its outcome is in its row."""
    resumed = row.attempts > 1
    jobs.event(row.id, "Resuming from the last checkpoint." if resumed else "Training started.")
    try:
        finish(home, jobs, row, train_job(home, jobs, row, forge), forge)
    except JobFailed as exc:
        fail(home, jobs, row, exc.code, exc.message, exc.param)
    except IntramurosError as exc:
        fail(home, jobs, row, exc.code or "invalid_request", str(exc), getattr(exc, "param", None))
    except OSError as exc:  # the disk filling during a checkpoint or the export
        fail(home, jobs, row, "server_error", f"Writing the job's files failed: {exc.strerror}.")
    except Exception as exc:
        log.exception("fine-tuning job %s failed", row.id)
        fail(home, jobs, row, "server_error", f"Training failed: {type(exc).__name__}: {exc}")


def train_job(home: WorkerInstallation, jobs: Jobs, row: JobRow,
              forge: ForgeSettings) -> dict[str, Any]:  # fmt: skip
    from intramuros.forge import train as trainer

    base = home.model_record(row.model)
    path = base.weights_path()
    if path is None or base.sha256 != row.base_sha256:
        raise JobFailed("model_changed", f"The base model '{row.model}' is not the one this job "
                        "was created on (its weights changed).", "model")  # fmt: skip
    if _sha256(path) != row.base_sha256:
        raise JobFailed("model_changed", f"The weights of '{row.model}' do not match their "
                        "recorded sha256.", "model")  # fmt: skip
    folder = job_dir(home.settings.data_dir, row.tenant, row.id)
    sets = read_examples(folder)
    hyper = row.hyper or {}
    threads = forge.forge_threads or os.cpu_count() or 1
    training = [trainer.Example(tuple(e["ids"]), tuple(bool(m) for m in e["train"]))
                for e in sets["training"]]  # fmt: skip
    validation = [trainer.Example(tuple(e["ids"]), tuple(bool(m) for m in e["train"]))
                  for e in sets.get("validation", [])]  # fmt: skip
    steps = hyper.get("training_steps")
    settings = trainer.Hyper(
        epochs=int(hyper["n_epochs"]), batch_size=int(hyper["batch_size"]),
        learning_rate=float(hyper["learning_rate"]), seq_len=int(hyper["seq_len"]),
        lora_rank=int(hyper.get("lora_rank") or 8),
        lora_alpha=float(2 * int(hyper.get("lora_rank") or 8)),
        checkpoint_every=forge.forge_checkpoint_every, threads=threads, seed=row.seed,
        max_steps=int(steps) if steps else None,
    )  # fmt: skip
    progress = _Progress(jobs, row)
    try:
        result = trainer.train(path, training, validation, settings, folder, progress)
    except trainer.Cancelled:
        raise JobFailed("cancelled", "Cancelled.") from None
    return {"result": result, "losses": progress.losses, "base_path": path,
            "versions": trainer.library_versions(), "hyper": settings,
            "tasks": sets.get("tasks", []), "progress": progress}  # fmt: skip


def finish(home: WorkerInstallation, jobs: Jobs, row: JobRow, made: dict[str, Any],
           forge: ForgeSettings) -> None:  # fmt: skip
    """Export the adapter, score it, register the model, record it: the job has succeeded."""
    from intramuros.forge.export import export_lora_gguf

    result = made["result"]
    folder = job_dir(home.settings.data_dir, row.tenant, row.id)
    name = model_name(row)
    base = home.model_record(row.model)
    adapter = export_lora_gguf(result.adapter_dir, made["base_path"], folder / ADAPTER,
                               name=name, license=base.license)  # fmt: skip
    sha = _sha256(adapter)
    evaluation = {
        "before": _metrics(result.before), "after": _metrics(result.after),
        "train_loss": result.train_loss, "steps": result.steps,
    }  # fmt: skip
    worse = (result.before is not None and result.after is not None
             and result.after.loss > result.before.loss)  # fmt: skip
    evaluation["verdict"] = (
        "worse than its base on the validation file" if worse
        else "better than its base on the validation file" if result.after is not None
        else "no validation file"
    )
    task = _task_score(home, jobs, row, base, adapter, name, made, forge)
    if task is not None:
        evaluation["task"] = task.to_wire()
        evaluation["task_verdict"] = (
            f"worse than its base on {task.source}" if task.after < task.before
            else f"as good as its base on {task.source}" if task.after == task.before
            else f"better than its base on {task.source}")  # fmt: skip
    lineage = {
        "job": row.id, "base": row.model, "base_sha256": row.base_sha256,
        "training_file": row.training_file, "training_sha256": row.training_sha256,
        "validation_file": row.validation_file, "validation_sha256": row.validation_sha256,
        "hyperparameters": row.hyper, "seed": row.seed, "metrics": evaluation,
        "libraries": made["versions"], "adapter_sha256": sha, "trained_tokens":
        result.trained_tokens,
    }  # fmt: skip
    merged = _merge(jobs, row, made["base_path"], adapter, folder, name) if row.merge else None
    results = _results_file(home, row, made["losses"], evaluation)
    home.add_adapter(AdapterSpec(
        path=adapter, name=name, base=row.model, license=base.license,
        description=f"Fine-tuned from {row.model} by job {row.id}.", owner=row.tenant,
        lineage=lineage, replace=True))  # fmt: skip
    made_files: dict[str, dict[str, str | None]] = {"adapter": {"model": name, "sha256": sha}}
    if merged is not None:
        record = home.add_merged(merged, name=f"{name}:merged", license=base.license,
                                 owner=row.tenant, lineage=lineage)  # fmt: skip
        made_files["merged"] = {"model": record.name, "sha256": record.sha256}
    now = time.time()
    with home.tables.begin() as conn:
        moved = jobs.update(
            row.id, when=("running",), conn=conn, status="succeeded", finished_at=now,
            fine_tuned_model=name, trained_tokens=result.trained_tokens, cancel_requested=False,
            result={"evaluation": evaluation, "lineage": lineage, "sha256": sha,
                    "files": made_files, "result_files": [results] if results else []},
        )  # fmt: skip
        if moved:
            jobs.event(row.id, f"Job succeeded: {name}"
                       + (f" (and {name}:merged, a standalone GGUF)." if merged else "."),
                       conn=conn)  # fmt: skip
            if worse:
                after, before = result.after.loss, result.before.loss
                jobs.event(row.id, "The fine-tuned model does worse than its base on the "
                           f"validation file (loss {after:.4f} vs {before:.4f}).",
                           level="warn", conn=conn)  # fmt: skip
            if task is not None:
                jobs.event(row.id, f"Task score on {task.source} ({task.items} items): "
                           f"{task.after:.3f} fine-tuned, {task.before:.3f} base"
                           + (": the fine-tuned model does WORSE than its base."
                              if task.after < task.before else "."),
                           level="warn" if task.after < task.before else "info",
                           data=task.to_wire(), conn=conn)  # fmt: skip
    home.auditor.append("fine_tune", tenant=row.tenant, key_id=row.key_id, subject=None,
                        data={"action": "succeeded", "job": row.id, "model": name,
                              "lineage": lineage})  # fmt: skip


def _merge(jobs: Jobs, row: JobRow, base_path: Path, adapter: Path, folder: Path,
           name: str) -> Path:  # fmt: skip
    """The adapter merged into its base: a standalone GGUF, beside the adapter."""
    from intramuros.forge.merge import merge_gguf

    jobs.event(row.id, "Merging the adapter into the base (a standalone GGUF).")
    return merge_gguf(base_path, adapter, folder / MERGED, name=f"{name}:merged")


def _task_score(home: WorkerInstallation, jobs: Jobs, row: JobRow, base: Any, adapter: Path,
                name: str, made: dict[str, Any], forge: ForgeSettings) -> Any:  # fmt: skip
    """The base and the fine-tuned model scored on the job's task, if it names one."""
    from intramuros.forge import evaluate

    if forge.forge_eval_items == 0:
        return None
    tasks = evaluate.tasks_for(row.suite, made["tasks"], forge.forge_eval_items)
    if tasks is None:
        return None
    jobs.event(row.id, f"Scoring the base and the fine-tuned model on {len(tasks.items)} "
               f"items of {tasks.source}.")  # fmt: skip
    tuned = base.model_copy(update={"name": name, "path": str(adapter), "base": row.model})
    try:
        return evaluate.score_models(base, tuned, home.settings, tasks,
                                     made["progress"].should_stop)  # fmt: skip
    except evaluate.Stopped:
        raise JobFailed("cancelled", "Cancelled.") from None


def fail(home: WorkerInstallation, jobs: Jobs, row: JobRow, code: str, message: str,
         param: str | None = None) -> None:  # fmt: skip
    now = time.time()
    if code == "cancelled":
        moved = jobs.update(row.id, when=("running",), status="cancelled", finished_at=now)
        if moved:
            jobs.event(row.id, "Job cancelled.")
            home.auditor.append("fine_tune", tenant=row.tenant, key_id=row.key_id,
                                subject=None, data={"action": "cancelled", "job": row.id})
        return
    error = {"code": code, "message": message[:2000], "param": param}
    moved = jobs.update(row.id, when=("running",), status="failed", finished_at=now,
                        error=error)
    if moved:
        jobs.event(row.id, message[:2000], level="error")
        home.auditor.append("fine_tune", tenant=row.tenant, key_id=row.key_id, subject=None,
                            data={"action": "failed", "job": row.id, "code": code})  # fmt: skip
    # Nothing half-made is left to be served: the adapter file goes with the failure.
    folder = job_dir(home.settings.data_dir, row.tenant, row.id)
    for made in (ADAPTER, MERGED):
        with contextlib.suppress(OSError):
            (folder / made).unlink()
    name = model_name(row)
    for registered in (f"{name}:merged", name):
        home.forget_model(registered)


def _results_file(home: WorkerInstallation, row: JobRow, losses: list[tuple[int, float]],
                  evaluation: dict[str, Any]) -> str | None:  # fmt: skip
    """OpenAI's result file: the step metrics as CSV, a file of the tenant."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["step", "train_loss"])
    writer.writerows(losses)
    try:
        store = FileStore.from_settings(home.settings, home.tables)
        record = store.put(row.tenant, out.getvalue().encode(), filename=f"{row.id}-results.csv",
                           purpose="fine-tune-results", mime_type="text/csv",
                           key_id=row.key_id)  # fmt: skip
    except (IntramurosError, OSError) as exc:
        log.warning("the results file of %s was not stored: %s", row.id, exc)
        return None
    del evaluation
    return record.id


def _metrics(metrics: Any) -> dict[str, float] | None:
    if metrics is None:
        return None
    return {"loss": round(metrics.loss, 5), "token_accuracy": round(metrics.token_accuracy, 5),
            "tokens": metrics.tokens}  # fmt: skip


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def settings_from_environment() -> Settings:
    raw = os.environ.get(SETTINGS_ENV)
    return load_settings(**(json.loads(raw) if raw else {}))


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s forge-worker %(levelname)s %(message)s")  # fmt: skip
    from intramuros.offline import enforce_offline

    enforce_offline()
    settings = settings_from_environment()
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
