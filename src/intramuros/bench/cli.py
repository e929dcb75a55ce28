"""The ``intramuros bench`` command: task suites against models, on this machine."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import platform
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from intramuros.bench.errors import BenchError
from intramuros.errors import IntramurosError

DEFAULT_OUT = "bench-results"


def _error(message: str) -> None:
    click.echo("error: " + " ".join(message.split()), err=True)
    sys.exit(1)


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}"}  # fmt: skip


def _record(markdown: str, note: str) -> Path:
    """Append the table to benchmarks/RESULTS.md with benchmarks/record.py (source checkout)."""
    import intramuros

    script = Path(intramuros.__file__).resolve().parents[2] / "benchmarks" / "record.py"
    if not script.is_file():
        raise BenchError("--record needs a source checkout (benchmarks/record.py not found)")
    spec = importlib.util.spec_from_file_location("_intramuros_record", script)
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.append_result("intramuros bench", markdown, extra=f"; {note}" if note else "")
    return script.parent / "RESULTS.md"


@click.command("bench")
@click.option("--suite", "suites", multiple=True, metavar="NAME_OR_PATH",
              help="A bundled suite's name or a JSONL file; repeatable. Default: every "
                   "bundled suite.")
@click.option("--model", "models", multiple=True, metavar="MODEL",
              help="Model id to bench; repeatable. Default: every text model the server lists.")
@click.option("--base-url", default=None, metavar="URL",
              help="Bench an existing server (e.g. http://127.0.0.1:8000). Default: start a "
                   "private one on a free loopback port.")
@click.option("--api-key", default=None, envvar="INTRAMUROS_API_KEY", metavar="KEY",
              help="API key for --base-url [env: INTRAMUROS_API_KEY].")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Data dir of the private server (default: a temporary one, removed after).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path(DEFAULT_OUT),
              show_default=True, help="Folder for bench.json and bench.png.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N items of each suite.")
@click.option("--timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Seconds to wait for one answer.")
@click.option("--note", default="", help="Free text kept with the results (e.g. machine was "
              "shared).")
@click.option("--record", is_flag=True,
              help="Append the table to benchmarks/RESULTS.md (source checkout).")
def bench(suites: tuple[str, ...], models: tuple[str, ...], base_url: str | None,
          api_key: str | None, data_dir: Path | None, out_dir: Path, limit: int | None,
          timeout: float, note: str, record: bool) -> None:  # fmt: skip
    """Run task suites against models: quality, speed, energy, cost and CO2 per model.

    Prints a table, writes OUT/bench.json (every item's answer, score and
    metering) and OUT/bench.png (one panel per metric, models side by side).
    """
    try:
        _run(suites, models, base_url, api_key, data_dir, out_dir, limit, timeout, note, record)
    except IntramurosError as exc:
        _error(exc.message)


def _run(suite_names: tuple[str, ...], model_ids: tuple[str, ...], base_url: str | None,
         api_key: str | None, data_dir: Path | None, out_dir: Path, limit: int | None,
         timeout: float, note: str, record: bool) -> None:  # fmt: skip
    from intramuros.bench.chart import pyplot, write_chart
    from intramuros.bench.client import BenchClient, normalise_base_url
    from intramuros.bench.report import markdown_table, rich_table, summarise, write_json
    from intramuros.bench.runner import SEED, run_bench
    from intramuros.bench.server import OwnServer
    from intramuros.bench.suite import Suite, bundled_suites, load_suite

    if base_url is not None and data_dir is not None:
        raise BenchError("--data-dir is for the private server; it cannot go with --base-url")
    if base_url is not None:
        normalise_base_url(base_url)  # a malformed URL fails before anything runs
    names = list(dict.fromkeys(suite_names)) or sorted(bundled_suites())
    loaded = [load_suite(n) for n in names]
    if limit is not None:
        loaded = [Suite(s.name, s.path, s.sha256, s.items[:limit]) for s in loaded]
    if len({s.name for s in loaded}) != len(loaded):
        raise BenchError("two suites have the same name (file stem)")
    pyplot()  # the chart's dependency is checked before a long run, not after
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchError(f"--out {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    err = Console(stderr=True)
    started = dt.datetime.now(dt.UTC)

    with ExitStack() as stack:
        if base_url is None:
            err.print("starting a private intramuros server...")
            own = stack.enter_context(OwnServer(data_dir))
            url, key = own.base_url, None
        else:
            url, key = base_url, api_key
        client = stack.enter_context(BenchClient(url, key, timeout=timeout))
        url = client.base_url
        listed = client.models()
        if model_ids:
            unknown = [m for m in model_ids if m not in listed]
            if unknown:
                raise BenchError(f"unknown model(s) {', '.join(unknown)}; the server has "
                                 f"{', '.join(sorted(listed)) or 'none'}")  # fmt: skip
            chosen = [listed[m] for m in dict.fromkeys(model_ids)]
            mute = [m.id for m in chosen if m.endpoint is None]
            if mute:
                raise BenchError(f"model(s) {', '.join(mute)} cannot generate text "
                                 "(no chat or completion capability)")  # fmt: skip
        else:
            chosen = [m for m in listed.values() if m.endpoint is not None]
            if not chosen:
                raise BenchError("the server lists no model that can generate text")
        total = len(chosen) * sum(len(s.items) for s in loaded)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=err, transient=False)  # fmt: skip
        with progress:
            task = progress.add_task("warming up", total=total)

            def advance(label: str) -> None:
                progress.update(task, advance=1, description=label)

            results = run_bench(client, chosen, loaded, on_item=advance)
    finished = dt.datetime.now(dt.UTC)

    summaries = summarise(results)
    machine = _machine()
    subtitle = (f"{machine['cpu']}, {machine['cores']} cores; {finished:%Y-%m-%d}"
                + (f"; {note}" if note else ""))  # fmt: skip
    meta = {
        "tool": "intramuros bench", "version": 1, "seed": SEED,
        "started": started.isoformat(), "finished": finished.isoformat(),
        "server": {"url": url, "private": base_url is None}, "machine": machine, "note": note,
        "models": [{"id": m.id, "endpoint": m.endpoint, "capabilities": list(m.capabilities),
                    "provenance": m.meta} for m in chosen],
        "suites": [{"name": s.name, "path": s.path, "sha256": s.sha256, "items": len(s.items)}
                   for s in loaded],
    }  # fmt: skip
    json_path, png_path = out_dir / "bench.json", out_dir / "bench.png"
    write_json(json_path, meta=meta, summaries=summaries, results=results)
    write_chart(png_path, summaries, subtitle)
    Console(width=None if sys.stdout.isatty() else 200).print(rich_table(summaries))
    click.echo(f"wrote {json_path} and {png_path}")
    if record:
        click.echo(f"appended to {_record(markdown_table(summaries), note)}")
    if results and all(r.error is not None for r in results):
        raise BenchError(f"every call failed; first error: {results[0].error}")
