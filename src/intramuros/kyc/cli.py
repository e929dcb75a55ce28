"""The ``intramuros kyc`` commands: list import and status, screening files, re-screening.

Customer CSV for ``kyc screen`` (header row; only ``name`` is required):
``customer_id, name, type, birth_date, nationality, country, gender, identifiers``
with identifiers as ``kind:number`` pairs separated by ``|``.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from intramuros.errors import IntramurosError
from intramuros.kyc.settings import KycSettings
from intramuros.kyc.workflow import KycWorkflow
from intramuros.platform.cli import (
    STATE_FIELDS,
    CliStore,
    actor,
    context,
    error,
    load_options,
    settings_options,
)
from intramuros.platform.interface import Auditor
from intramuros.settings import section

CUSTOMER_HEADER = ("customer_id", "name", "type", "birth_date", "nationality", "country",
                   "gender", "identifiers")  # fmt: skip
RESULT_HEADER = ("line", "customer_id", "name", "top_score", "alert", "case_id", "matches",
                 "best_list", "best_source_id", "best_name")  # fmt: skip


_state_options = settings_options(*STATE_FIELDS)


@dataclass(frozen=True)
class _Session:
    """A command's workflow over the installation's tables and ledger, and its tenants."""

    flow: KycWorkflow
    store: CliStore

    @property
    def ledger(self) -> Auditor:
        return self.store.auditor


def _session(options: dict[str, Any]) -> _Session:
    settings = load_options(options)
    store = context().store(settings)
    return _Session(KycWorkflow(store.tables, store.auditor, section(settings, KycSettings)),
                    store)  # fmt: skip


@click.group("kyc")
def group() -> None:
    """KYC screening: sanctions and PEP lists, screening, cases."""


@group.group("lists")
def lists_group() -> None:
    """Import lists and show their status."""


@lists_group.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", required=True,
              type=click.Choice(["ofac", "un", "opensanctions-ftm", "opensanctions-senzing",
                                 "eu", "csv"]),
              help="The list's file format.")  # fmt: skip
@click.option("--list", "list_name", required=True, help="Name of the list (replaced if loaded).")
@_state_options
def lists_import(path: Path, fmt: str, list_name: str, **options: Any) -> None:
    """Import a list file (or OFAC folder); replaces the list atomically."""
    from intramuros.kyc.importers import parse_list

    name = list_name.strip()
    if not name or len(name) > 100 or not all(ch.isalnum() or ch in "-_." for ch in name):
        error("--list must be 1-100 letters, digits, '-', '_' or '.'")
    started = time.perf_counter()
    try:
        result = parse_list(path, fmt, name)
        session = _session(options)
        version = session.flow.store.import_list(result, name, fmt, str(path.resolve()))
        session.ledger.append("admin", tenant=None, key_id=None, subject=None, data={
            "action": "kyc_list_import", "actor": actor(), "list": name, "format": fmt,
            "version": version, "sha256": result.sha256, "entities": len(result.entities),
            "skipped": len(result.errors)})  # fmt: skip
    except IntramurosError as exc:
        error(exc.message)
        return
    for problem in result.errors:
        click.echo(f"skipped: {problem}", err=True)
    click.echo(f"imported list {name} version {version}: {len(result.entities)} entities, "
               f"{len(result.errors)} row(s) skipped, list date {result.list_date or '-'}, "
               f"sha256 {result.sha256} ({time.perf_counter() - started:.1f}s)")  # fmt: skip


@lists_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@_state_options
def lists_status(as_json: bool, **options: Any) -> None:
    """Show each list's active version: counts, list date, file sha256."""
    import json

    try:
        rows = _session(options).flow.store.status()
    except IntramurosError as exc:
        error(exc.message)
        return
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no list imported")
    for r in rows:
        click.echo(f"{r.name}\tversion {r.version}\t{r.format}\t{r.entities} entities\t"
                   f"{r.errors} skipped\tlist date {r.list_date or '-'}\tsha256 {r.sha256}")


def _read_customers(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """Valid rows (line, subject) and problems ``file:line: message``."""
    from pydantic import ValidationError

    from intramuros.kyc.protocol import SubjectIn

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise click.ClickException(f"{path.name} is not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "name" not in fields:
        raise click.ClickException(f"{path.name}:1: header needs a 'name' column "
                                   f"(columns: {', '.join(CUSTOMER_HEADER)})")  # fmt: skip
    reader.fieldnames = fields
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[str] = []
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(f"{path.name}:{line}: unreadable CSV: {exc}")
            continue
        if None in row:
            problems.append(f"{path.name}:{line}: more fields than the header")
            continue
        data: dict[str, Any] = {k: v.strip() for k, v in row.items()
                                if k in CUSTOMER_HEADER and v and v.strip()}  # fmt: skip
        ids = data.pop("identifiers", "")
        pairs = [p.partition(":") for p in ids.split("|") if p.strip()]
        data["identifiers"] = [{"type": k.strip(), "value": v.strip()} for k, _, v in pairs]
        if "type" in data:
            data["type"] = data["type"].lower()
        try:
            rows.append((line, SubjectIn.model_validate(data).model_dump(exclude_none=True)))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "row"
            problems.append(f"{path.name}:{line}: {where}: {first['msg']}")
    return rows, problems


@group.command("screen")
@click.argument("path", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="Results CSV to write.")  # fmt: skip
@click.option("--tenant", required=True, help="Tenant the customers belong to.")
@click.option("--limit", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Matches kept per customer.")  # fmt: skip
@_state_options
def screen(path: Path, out: Path, tenant: str, limit: int, **options: Any) -> None:
    """Screen a customers CSV; write results; store customers for re-screening."""
    from rich.progress import Progress

    try:
        rows, problems = _read_customers(path)
        session = _session(options)
        flow = session.flow
        if not flow.store.status():
            error("no list imported: run `intramuros kyc lists import` first")
        tenant = session.store.tenant_id(tenant)
    except IntramurosError as exc:
        error(exc.message)
    for problem in problems:
        click.echo(f"skipped: {problem}", err=True)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with Progress(transient=True) as bar:
        task = bar.add_task("screening", total=len(rows))
        for start in range(0, len(rows), 500):
            chunk = rows[start:start + 500]

            def advance(n: int, s: int = start) -> None:
                bar.update(task, completed=s + n)

            results += flow.screen(tenant, None, [d for _l, d in chunk], limit=limit,
                                   route="kyc screen", progress=advance)  # fmt: skip
    elapsed = max(time.perf_counter() - started, 1e-9)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(RESULT_HEADER)
        for (line, data), r in zip(rows, results, strict=True):
            best = r["matches"][0] if r["matches"] else None
            writer.writerow([line, data.get("customer_id", ""), data["name"],
                             best["score"] if best else 0.0,
                             bool(best and best["alert"]), r["case_id"] or "", len(r["matches"]),
                             best["list"] if best else "", best["source_id"] if best else "",
                             best["name"] if best else ""])  # fmt: skip
    cases = sum(1 for r in results if r["case_id"])
    click.echo(f"screened {len(results)} customers in {elapsed:.2f}s "
               f"({len(results) / elapsed:.0f}/s), {cases} case(s) opened, "
               f"{len(problems)} row(s) skipped; results in {out}")  # fmt: skip


@group.command("rescreen")
@click.option("--tenant", required=True, help="Tenant whose stored customers to screen again.")
@_state_options
@settings_options("ray_address")
def rescreen(tenant: str, **options: Any) -> None:
    """Screen stored customers again; open cases only for new or changed hits."""
    from intramuros.platform.distributed import BatchWorkers

    workers = None
    try:
        session = _session(options)
        tenant = session.store.tenant_id(tenant)
        address = load_options(options).ray_address
        # Locally the matching runs in this process, as it always has; Ray when asked.
        workers = BatchWorkers(1, address) if address else None
        started = time.perf_counter()
        summary = session.flow.rescreen(tenant, None, workers=workers)
    except IntramurosError as exc:
        error(exc.message)
        return
    finally:
        if workers is not None:
            workers.close()
    click.echo(f"re-screened {summary['customers']} customers in "
               f"{time.perf_counter() - started:.2f}s: {summary['cases_opened']} case(s) opened")
    for case_id in summary["case_ids"]:
        click.echo(case_id)


@group.command("threshold")
@click.option("--tenant", required=True, help="Tenant.")
@click.argument("value", type=click.FloatRange(0.0, 1.0, min_open=True), required=False)
@_state_options
def threshold(tenant: str, value: float | None, **options: Any) -> None:
    """Show or set a tenant's alert threshold."""
    try:
        session = _session(options)
        flow = session.flow
        tenant = session.store.tenant_id(tenant)
        if value is not None:
            flow.set_threshold(tenant, value)
            session.ledger.append("admin", tenant=tenant, key_id=None, subject=None, data={
                "action": "kyc_threshold", "actor": actor(), "threshold": value})
        click.echo(f"{tenant}\t{flow.threshold_for(tenant)}")
    except IntramurosError as exc:
        error(exc.message)
