"""``intramuros embed``: bulk embeddings of a JSONL file, locally or on a Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from intramuros.catalog.catalog import sha256_file
from intramuros.cli.store import audit, auditable, catalog_for
from intramuros.errors import IntramurosError, ModelCapabilityError
from intramuros.platform.cli import STATE_FIELDS, error, fail, load_options, settings_options


@click.command("embed")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL output, one {id, embedding} per line (appended to when resuming); "
                   "errors go beside it, in OUT.errors.jsonl.")  # fmt: skip
@click.option("--model", required=True, help="An embeddings model of the catalogue.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes embedding chunks (with --ray-address: chunks in flight "
                   "on the cluster are twice this).")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(1, 512), default=32, show_default=True,
              help="Texts per chunk sent to a worker.")
@settings_options(*STATE_FIELDS, "ray_address")
def embed_cmd(source: Path, out: Path, model: str, workers: int, batch_size: int,
              **options: Any) -> None:  # fmt: skip
    """Embed every line of SOURCE (JSONL: {"id": ..., "text": ...}) into OUT; re-run to resume."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from intramuros.platform.distributed import BatchWorkers
    from intramuros.serving.bulk_embed import errors_path, run_embed

    if out.resolve() == source.resolve():
        raise click.BadParameter("must differ from SOURCE", param_hint="--out")
    try:
        settings = load_options(options)
        catalog = catalog_for(options)
        record = catalog.get(model)
        if not record.has("embeddings"):
            raise ModelCapabilityError(f"Model '{model}' does not do embeddings.", param="model")
        catalog.ensure_files(record)
        catalog.verify_record(record)  # here first; each worker checks its own copy too
        auditable(options)
        address = settings.ray_address
        pool = BatchWorkers(workers, address)
    except IntramurosError as exc:
        fail(exc)
        return
    console = Console(stderr=True)
    progress = Progress(TextColumn("[bold]embedding"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)  # fmt: skip
    task = progress.add_task("embedding", total=None)
    try:
        with progress:
            summary = run_embed(record, settings, source, out, pool, batch_size=batch_size,
                                in_flight=2 * workers,
                                on_progress=lambda n: progress.update(task, completed=n))
    except OSError as exc:
        error(f"{exc.filename or out}: {exc.strerror}")
    except IntramurosError as exc:
        fail(exc)
    finally:
        pool.close()
    try:
        audit(options, "embed_batch", None, model=record.name, sha256=record.sha256,
              source=str(source), source_sha256=sha256_file(source), embedded=summary.done,
              failed=summary.failed, tokens=summary.tokens, ray=bool(address))  # fmt: skip
    except IntramurosError as exc:
        fail(exc)
    click.echo(
        f"{summary.done} text(s) embedded in {summary.seconds:.1f} s "
        f"({summary.per_second:.1f}/s, {summary.tokens} tokens); "
        f"{summary.skipped} already done; {summary.failed} failed"
    )
    if summary.failed:
        error(f"{summary.failed} line(s) failed; see {errors_path(out)}")
