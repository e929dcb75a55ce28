"""The ``intramuros docai`` commands: ocr, extract, batch, schemas.

``ocr`` reads one document locally. ``extract`` and ``batch --schema`` fill a
JSON schema with the chat model through an in-process gate: the calls are
metered and written to the ledger of the data dir, under ``--tenant``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Any

import click

from intramuros.docai.settings import DocaiSettings
from intramuros.errors import IntramurosError
from intramuros.gate.tenants import Principal
from intramuros.platform.cli import STATE_FIELDS, CliContext, context, error, settings_options
from intramuros.platform.interface import Platform
from intramuros.settings import Settings, load_settings, section

_ENGINES = ("auto", "rapidocr", "tesseract", "none")
_MODEL_OF = {"auto": "intramuros-ocr", "rapidocr": "rapidocr", "tesseract": "tesseract",
             "none": "text-layer"}  # fmt: skip
_settings_options = settings_options(*STATE_FIELDS, "n_ctx", "docai_max_pages",
                                     "docai_max_pixels", "docai_extract_model")  # fmt: skip
_batch_options = settings_options("ray_address")


def bundled_schemas() -> list[str]:
    """Names of the example schemas shipped with the package."""
    folder = resources.files("intramuros.docai").joinpath("schemas")
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir()
                  if p.name.endswith(".json"))  # fmt: skip


def load_schema(value: str) -> tuple[dict[str, Any], str]:
    """A schema file, or the name of a bundled one (``invoice``, ``identity_document``)."""
    from intramuros.docai.extract import check_schema

    path = Path(value)
    if path.is_file():
        text, name = path.read_text(encoding="utf-8"), path.stem
    elif value in bundled_schemas():
        text = resources.files("intramuros.docai").joinpath("schemas", f"{value}.json") \
            .read_text(encoding="utf-8")  # fmt: skip
        name = value
    else:
        known = ", ".join(bundled_schemas())
        raise click.BadParameter(f"no schema file {value} (bundled: {known})",
                                 param_hint="--schema")
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{value} is not JSON: {exc}", param_hint="--schema") from None
    try:
        return check_schema(schema, "--schema"), name
    except IntramurosError as exc:
        raise click.BadParameter(exc.message, param_hint="--schema") from None


def _reader_args(engine: str, languages: str | None, pages: str | None,
                 settings: Settings) -> dict[str, Any]:  # fmt: skip
    from intramuros.docai.batch import language_list, parse_pages

    config = section(settings, DocaiSettings)
    try:
        page_list = parse_pages(pages, config.docai_max_pages)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--pages") from None
    return {"ocr": engine, "languages": language_list(languages), "pages": page_list,
            "max_pages": config.docai_max_pages,
            "max_pixels": config.docai_max_pixels}  # fmt: skip


def _load_settings(options: dict[str, Any]) -> Settings:
    return load_settings(**options, preload_models=[])


class _Gate:
    """The platform in this process, for the chat calls of extraction (metered, ledgered)."""

    def __init__(self, ctx: CliContext, settings: Settings, tenant: str) -> None:
        self.opening = ctx.open(settings)
        self.model = section(settings, DocaiSettings).docai_extract_model
        self.who = Principal(tenant=tenant, key_id=None, role="admin")
        self._platform: Platform | None = None

    async def __aenter__(self) -> _Gate:
        platform = await self.opening.__aenter__()
        try:
            # Records are kept under the tenant's id, not its name.
            tenant_id = await asyncio.to_thread(platform.tenant_id, self.who.tenant)
        except BaseException as exc:
            await self.opening.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self.who = dataclasses.replace(self.who, tenant=tenant_id, tenant_name=self.who.tenant)
        self._platform = platform
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.opening.__aexit__(*exc)

    async def extract(self, result: Any, schema: dict[str, Any], name: str) -> dict[str, Any]:
        from intramuros.docai.extract import extract

        assert self._platform is not None
        found = await extract(self._platform, self.who, [p.markdown for p in result.pages],
                              schema, model=self.model, name=name)  # fmt: skip
        return found.to_json()


@click.group("docai")
def group() -> None:
    """Documents to markdown and to schema-checked JSON, on this machine."""


@group.command("schemas")
def schemas_cmd() -> None:
    """List the bundled example schemas (usable as --schema NAME)."""
    for name in bundled_schemas():
        click.echo(name)


_tenant_option = click.option("--tenant", default="default", show_default=True,
                              help="Tenant the extraction calls are metered to.")  # fmt: skip
_engine_option = click.option("--engine", type=click.Choice(_ENGINES), default="auto",
                              show_default=True,
                              help="OCR engine for pages without a usable text layer.")  # fmt: skip
_lang_option = click.option("--languages", default=None,
                            help="Tesseract languages, e.g. eng,fra or ell+grc.")  # fmt: skip
_pages_option = click.option("--pages", default=None, help="0-based pages, e.g. 0,2,5-7.")


@group.command("ocr")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_engine_option
@_lang_option
@_pages_option
@click.option("--json", "as_json", is_flag=True, help="Print the /v1/ocr JSON answer.")
@_settings_options
def ocr_cmd(file: Path, engine: str, languages: str | None, pages: str | None, as_json: bool,
            **options: Any) -> None:  # fmt: skip
    """Read FILE (PDF or image) and print its markdown."""
    from intramuros.docai import pipeline
    from intramuros.docai.batch import page_markdown
    from intramuros.docai.sources import to_response

    try:
        settings = _load_settings(options)
        args = _reader_args(engine, languages, pages, settings)
        result = pipeline.read_document(file.read_bytes(), filename=file.name, **args)
    except IntramurosError as exc:
        error(exc.message)
    if as_json:
        response = to_response(result, _MODEL_OF[engine], include_images=False)
        click.echo(response.model_dump_json(indent=2))
    else:
        click.echo(page_markdown(result))


@group.command("extract")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--schema", "schema_ref", required=True,
              help="JSON schema file, or a bundled schema name (see `docai schemas`).")
@_engine_option
@_lang_option
@_pages_option
@_tenant_option
@_settings_options
def extract_cmd(file: Path, schema_ref: str, engine: str, languages: str | None,
                pages: str | None, tenant: str, **options: Any) -> None:  # fmt: skip
    """Fill a JSON schema from FILE; prints {"fields", "pages", "model", "usage", "document"}.

    "pages" maps each leaf field (e.g. "seller.name", "line_items[0].amount") to
    the 0-based page its value was found on, or null if not found verbatim.
    """
    import hashlib

    from intramuros.docai import pipeline

    schema, name = load_schema(schema_ref)
    ctx = context()
    try:
        settings = _load_settings(options)
        args = _reader_args(engine, languages, pages, settings)
        data = file.read_bytes()
        result = pipeline.read_document(data, filename=file.name, **args)

        async def run() -> dict[str, Any]:
            async with _Gate(ctx, settings, tenant) as gate:
                return await gate.extract(result, schema, name)

        out = asyncio.run(run())
    except IntramurosError as exc:
        error(exc.message)
    out["document"] = {"filename": file.name, "sha256": hashlib.sha256(data).hexdigest(),
                       "pages": [p.index for p in result.pages],
                       "methods": [p.method for p in result.pages]}  # fmt: skip
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))


@group.command("batch")
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for one .md and one .json per input, and errors.jsonl.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes reading documents (with --ray-address: documents in "
                   "flight on the cluster are twice this).")
@click.option("--schema", "schema_ref", default=None,
              help="Also fill this JSON schema (file or bundled name) for every document.")
@_engine_option
@_lang_option
@_pages_option
@_tenant_option
@_settings_options
@_batch_options
def batch_cmd(input_dir: Path, out_dir: Path, workers: int, schema_ref: str | None,
              engine: str, languages: str | None, pages: str | None, tenant: str,
              **options: Any) -> None:  # fmt: skip
    """Read every document under INPUT_DIR into OUT_DIR; re-run to resume."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from intramuros.docai.batch import ERRORS_FILE, BatchOptions, run_batch

    schema, name = load_schema(schema_ref) if schema_ref else (None, "document")
    ctx = context()
    try:
        settings = _load_settings(options)
        args = _reader_args(engine, languages, pages, settings)
    except IntramurosError as exc:
        error(exc.message)
    if out_dir.resolve() == input_dir.resolve():
        raise click.BadParameter("must differ from INPUT_DIR", param_hint="--out")
    opts = BatchOptions(ocr=args["ocr"], model=_MODEL_OF[engine], languages=args["languages"],
                        pages=args["pages"], workers=workers, max_pages=args["max_pages"],
                        max_pixels=args["max_pixels"], schema=schema, schema_name=name,
                        ray_address=settings.ray_address)  # fmt: skip
    console = Console(stderr=True)
    progress = Progress(TextColumn("[bold]reading"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[pages]} pages"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=console)  # fmt: skip
    task = progress.add_task("reading", total=None, pages=0)

    def started(todo: int, skipped: int) -> None:
        if skipped:
            console.print(f"skipping {skipped} document(s) already done")
        progress.update(task, total=todo)

    def advanced(done: int, pages_done: int) -> None:
        progress.update(task, completed=done, pages=pages_done)

    async def run() -> Any:
        if schema is None:
            return await run_batch(input_dir, out_dir, opts, on_start=started,
                                   on_progress=advanced)  # fmt: skip
        async with _Gate(ctx, settings, tenant) as gate:

            async def extractor(result: Any) -> dict[str, Any]:
                return await gate.extract(result, schema, name)

            return await run_batch(input_dir, out_dir, opts, extractor=extractor,
                                   on_start=started, on_progress=advanced)  # fmt: skip

    try:
        with progress:
            summary = asyncio.run(run())
    except IntramurosError as exc:
        error(exc.message)
    click.echo(
        f"{summary.done} document(s), {summary.pages} page(s) in {summary.seconds:.1f} s: "
        f"{summary.pages_per_second:.2f} pages/s; {summary.skipped} already done; "
        f"{summary.failed} failed"
    )
    if summary.failed:
        error(f"{summary.failed} document(s) failed; see {out_dir / ERRORS_FILE}")
