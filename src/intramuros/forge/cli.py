"""The ``intramuros forge`` commands: check data, fine-tune, follow, cancel, export.

``forge run`` does what the API does (the files stored for the tenant, the
job created, checked and trained by the worker process) and follows the
job with a progress bar; the other commands read and change jobs in the
database, so they work beside a running server.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from intramuros.errors import IntramurosError, NotFound
from intramuros.forge import data as checks
from intramuros.forge import protocol as p
from intramuros.forge.jobs import FINISHED_STATES, Jobs
from intramuros.forge.render import render_job
from intramuros.forge.settings import ForgeSettings
from intramuros.forge.workdir import ADAPTER, MERGED, job_dir
from intramuros.gate.tenants import Principal
from intramuros.platform.cli import (
    STATE_FIELDS,
    actor,
    console,
    context,
    error,
    fail,
    load_options,
    settings_options,
)
from intramuros.settings import Settings, section

_state = settings_options(*STATE_FIELDS)
_tenant = click.option("--tenant", default="default", show_default=True,
                       help="The tenant the job belongs to.")  # fmt: skip


@click.group(name="forge")
def group() -> None:
    """Fine-tune open models on your own data, inside your walls."""


@group.command("validate")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--base", default="smollm2-135m-instruct", show_default=True,
              help="The model whose tokenizer and template the data is read with.")  # fmt: skip
@click.option("--seq-len", type=int, default=None, help="Sequence length (default: setting).")
@click.option("--epochs", type=int, default=3, show_default=True,
              help="Epochs, for the duration estimate.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_state
def validate(path: Path, base: str, seq_len: int | None, epochs: int, as_json: bool,
             **options: Any) -> None:  # fmt: skip
    """Check a chat JSONL file as a job would, and print the report."""
    settings = load_options(options)
    forge = section(settings, ForgeSettings)
    seq = seq_len or forge.forge_seq_len
    try:
        raw = path.read_bytes()
    except OSError as exc:
        error(f"{path}: {exc.strerror}")
    report = checks.Report()
    chats = checks.parse_file(raw, report)

    async def tokenise() -> None:
        async with context().open(settings) as platform:
            lane = await platform.lane(base)
            engine = lane.engine

            def work(cancel: Any) -> Any:
                yield checks.tokenise(chats, lambda ex: engine.chat_training_tokens(
                    checks.chat_params(ex)), seq, report)  # fmt: skip

            async for _ in lane.stream(work):
                pass

    try:
        if chats:
            asyncio.run(tokenise())
    except IntramurosError as exc:
        fail(exc)
    report.estimated_seconds = checks.estimate_seconds(
        report, epochs, forge.forge_tokens_per_second, 40.0)
    if as_json:
        click.echo(json.dumps(report.to_wire(), indent=2))
    else:
        _print_report(path, report)
    if not report.ok:
        raise SystemExit(1)


def _print_report(path: Path, report: checks.Report) -> None:
    verdict = "[green]ok[/]" if report.ok else "[red]not trainable[/]"
    console.print(f"{path}: {verdict}: {report.examples} examples, {report.tokens} tokens "
                  f"({report.trained_tokens} learnt), longest {report.max_tokens}",
                  highlight=False)  # fmt: skip
    for problem in report.problems:
        console.print(f"  line {problem.line}, {problem.field}: {problem.message}",
                      highlight=False, markup=False)  # fmt: skip
    if report.problem_count > len(report.problems):
        console.print(f"  ... and {report.problem_count - len(report.problems)} more")
    if report.too_long:
        lines = ", ".join(str(n) for n in report.too_long[:20])
        console.print(f"  {len(report.too_long)} longer than {report.seq_len} tokens "
                      f"(cut): lines {lines}", highlight=False)  # fmt: skip
    if report.ok and report.estimated_seconds is not None:
        console.print(f"  estimated training time here: {report.estimated_seconds / 60:.1f} min",
                      highlight=False)  # fmt: skip


@group.command("run")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--base", required=True, help="The model to fine-tune (a GGUF of the catalogue).")
@click.option("--suffix", default=None, help="Part of the new model's name.")
@click.option("--validation", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="A validation file (evaluated before and after).")  # fmt: skip
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--learning-rate-multiplier", type=float, default=None)
@click.option("--steps", type=int, default=None, help="Stop after this many steps.")
@click.option("--seq-len", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--suite", default=None,
              help="A bench suite to score the base and the new model on (its name).")
@click.option("--merge", is_flag=True,
              help="Also write and register a standalone GGUF (the adapter merged in).")
@click.option("--json", "as_json", is_flag=True, help="Print the finished job as JSON.")
@_tenant
@_state
def run(path: Path, base: str, suffix: str | None, validation: Path | None,
        epochs: int | None, batch_size: int | None, learning_rate_multiplier: float | None,
        steps: int | None, seq_len: int | None, seed: int | None, suite: str | None,
        merge: bool, as_json: bool, tenant: str, **options: Any) -> None:  # fmt: skip
    """Fine-tune BASE on PATH (chat JSONL); the model is served when the job succeeds."""
    settings = load_options(options)
    hyper = {k: v for k, v in {"n_epochs": epochs, "batch_size": batch_size,
                               "learning_rate_multiplier": learning_rate_multiplier,
                               "training_steps": steps, "seq_len": seq_len}.items()
             if v is not None}  # fmt: skip
    try:
        extra = {"suite": suite, "merge": merge}
        job = asyncio.run(_create(settings, tenant, path, validation, base, suffix, hyper, seed,
                                  extra))  # fmt: skip
    except IntramurosError as exc:
        fail(exc)
    except ValueError as exc:
        error(str(exc))
    job_id = job["id"]
    console.print(f"job {job_id} created ({job['status']})", highlight=False)
    finished = _follow(settings, job["organization_id"], job_id)
    if as_json:
        click.echo(json.dumps(finished, indent=2))
    elif finished["status"] == "succeeded":
        console.print(f"[green]succeeded[/]: {finished['fine_tuned_model']} "
                      f"({finished['trained_tokens']} tokens trained)", highlight=False)
        evaluation = (finished.get("intramuros") or {}).get("evaluation") or {}
        if evaluation.get("before") and evaluation.get("after"):
            console.print(f"validation loss {evaluation['before']['loss']:.4f} -> "
                          f"{evaluation['after']['loss']:.4f} ({evaluation['verdict']})",
                          highlight=False)  # fmt: skip
        task = evaluation.get("task")
        if task:
            console.print(f"task score on {task['source']} ({task['items']} items): "
                          f"{task['before']:.3f} -> {task['after']:.3f} "
                          f"({evaluation['task_verdict']})", highlight=False)  # fmt: skip
    else:
        message = (finished.get("error") or {}).get("message") or finished["status"]
        error(f"job {job_id} {finished['status']}: {message}")
    if finished["status"] != "succeeded":
        raise SystemExit(1)


async def _create(settings: Settings, tenant: str, path: Path, validation: Path | None,
                  base: str, suffix: str | None, hyper: dict[str, Any],
                  seed: int | None, extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    from intramuros.forge.service import ForgeService

    async with context().open(settings) as platform:
        tenant_id = await asyncio.to_thread(platform.tenant_id, tenant)
        who = Principal(tenant=tenant_id, key_id=None, role="admin", tenant_name=tenant)
        service = ForgeService(platform)
        ids: list[str | None] = []
        for file in (path, validation):
            if file is None:
                ids.append(None)
                continue
            record = await asyncio.to_thread(
                service.files.put, tenant_id, file.read_bytes(), filename=file.name,
                purpose="fine-tune", mime_type="application/jsonl")  # fmt: skip
            ids.append(record.id)
        req = p.CreateJob.model_validate({
            "model": base, "training_file": ids[0], "validation_file": ids[1],
            "suffix": suffix, "seed": seed,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
            **extra,
        })  # fmt: skip
        job = await service.create(req, who)
        await service.checked()  # the data check runs as a task of the service
        await platform.audit_event("admin", tenant=tenant_id, key_id=None, subject=None,
                                   data={"action": "forge_run", "actor": actor(),
                                         "job": job["id"]})  # fmt: skip
        return job


def _follow(settings: Settings, tenant: str, job_id: str) -> dict[str, Any]:
    """Start a worker if none runs, and show the job's progress until it ends."""
    from intramuros.forge.supervisor import spawn_worker, worker_alive

    jobs = Jobs(context().store(settings).tables)
    process = None
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn())  # fmt: skip
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("checking", total=None, info="")
            seen = 0.0
            while True:
                row = jobs.get(tenant, job_id)
                if row.status in FINISHED_STATES:
                    return render_job(row)
                if row.status == "queued" and not worker_alive(settings.data_dir) and (
                        process is None or process.poll() is not None):  # fmt: skip
                    process = spawn_worker(settings, linger=False)
                step = _last_step(jobs, job_id, seen)
                if step is not None:
                    seen = step["at"]
                    bar.update(task, description="training", total=step["total_steps"],
                               completed=step["step"], info=f"loss {step['train_loss']:.4f}")
                else:
                    bar.update(task, description=row.status)
                time.sleep(0.5)
    except KeyboardInterrupt:
        console.print(f"stopped following; the job goes on (`intramuros forge cancel {job_id}`)")
        raise SystemExit(130) from None
    finally:
        if process is not None and process.poll() is None:
            process.wait()


def _last_step(jobs: Jobs, job_id: str, seen: float) -> dict[str, Any] | None:
    events, _ = jobs.events(job_id, None, 10)
    for event in events:
        if event.type == "metrics" and event.data and event.created_at >= seen:
            return event.data | {"at": float(event.created_at)}
    return None


def _tenant_jobs(options: dict[str, Any], tenant: str) -> tuple[Jobs, str]:
    store = context().store(load_options(options))
    return Jobs(store.tables), store.tenant_id(tenant)


@group.command("list")
@click.option("--json", "as_json", is_flag=True)
@_tenant
@_state
def list_jobs(as_json: bool, tenant: str, **options: Any) -> None:
    """The tenant's jobs, newest first."""
    try:
        jobs, tenant_id = _tenant_jobs(options, tenant)
        rows, _ = jobs.page(tenant_id, None, 100)
    except IntramurosError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps([render_job(r) for r in rows], indent=2))
        return
    for row in rows:
        console.print(f"{row.id}  {row.status:<16} {row.model}  "
                      f"{row.fine_tuned_model or ''}", highlight=False)  # fmt: skip


@group.command("show")
@click.argument("job_id")
@_tenant
@_state
def show(job_id: str, tenant: str, **options: Any) -> None:
    """One job, as JSON (evaluation and lineage under ``intramuros``)."""
    try:
        jobs, tenant_id = _tenant_jobs(options, tenant)
        click.echo(json.dumps(render_job(jobs.get(tenant_id, job_id)), indent=2))
    except IntramurosError as exc:
        fail(exc)


@group.command("events")
@click.argument("job_id")
@click.option("--limit", type=int, default=50, show_default=True)
@_tenant
@_state
def events(job_id: str, limit: int, tenant: str, **options: Any) -> None:
    """The job's events, oldest first."""
    try:
        jobs, tenant_id = _tenant_jobs(options, tenant)
        jobs.get(tenant_id, job_id)
        found, _ = jobs.events(job_id, None, max(1, min(limit, 1000)))
    except IntramurosError as exc:
        fail(exc)
    for event in reversed(found):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event.created_at))
        console.print(f"{stamp}  {event.level:<5} {event.message}", highlight=False,
                      markup=False)  # fmt: skip


@group.command("cancel")
@click.argument("job_id")
@_tenant
@_state
def cancel(job_id: str, tenant: str, **options: Any) -> None:
    """Cancel a job: at once if not running, else before its next step."""
    settings = load_options(options)
    try:
        store = context().store(settings)
        jobs, tenant_id = Jobs(store.tables), store.tenant_id(tenant)
        row = jobs.get(tenant_id, job_id)
        if row.status in FINISHED_STATES:
            error(f"job {job_id} has already {row.status}")
        now = time.time()
        if not jobs.update(job_id, when=("validating_files", "validated", "queued"),
                           status="cancelled", finished_at=now, cancel_requested=True):
            jobs.update(job_id, when=("running",), cancel_requested=True)
        jobs.event(job_id, "Cancellation requested.")
        store.auditor.append("fine_tune", tenant=tenant_id, key_id=None, subject=None,
                             data={"action": "cancel", "job": job_id, "actor": actor()})
    except IntramurosError as exc:
        fail(exc)
    console.print(f"cancellation of {job_id} requested", highlight=False)


@group.command("export")
@click.argument("job_id")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, file_okay=False))
@_tenant
@_state
def export(job_id: str, out: Path, tenant: str, **options: Any) -> None:
    """Write a succeeded job's adapter GGUF (and merged GGUF, if made) and its lineage
    (JSON) into OUT."""
    settings = load_options(options)
    try:
        jobs, tenant_id = _tenant_jobs(options, tenant)
        row = jobs.get(tenant_id, job_id)
    except IntramurosError as exc:
        fail(exc)
    if row.status != "succeeded":
        error(f"job {job_id} is {row.status}: only a succeeded job has files to export")
    source = job_dir(settings.data_dir, tenant_id, job_id) / ADAPTER
    if not source.is_file():
        raise click.ClickException(str(NotFound(f"The adapter of {job_id} is missing.")))
    out.mkdir(parents=True, exist_ok=True)
    name = (row.fine_tuned_model or job_id).replace(":", "_")
    shutil.copyfile(source, out / f"{name}.gguf")
    written = [out / f"{name}.gguf"]
    merged = source.with_name(MERGED)
    if merged.is_file():
        shutil.copyfile(merged, out / f"{name}.merged.gguf")
        written.append(out / f"{name}.merged.gguf")
    lineage = (row.result or {}).get("lineage")
    (out / f"{name}.lineage.json").write_text(json.dumps(lineage, indent=2))
    console.print(f"wrote {', '.join(map(str, written))} and its lineage", highlight=False)


@group.command("work")
@_state
def work(**options: Any) -> None:
    """Run the training worker in the foreground until no job is left."""
    from intramuros.forge.worker import run as run_worker

    settings = load_options(options)
    done = run_worker(settings)
    console.print(f"{done} job(s) run")
