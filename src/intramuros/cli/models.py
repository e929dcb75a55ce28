"""``intramuros models``: list, add, remove and verify the catalogue's models."""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from intramuros.catalog.catalog import ALL_CAPABILITIES
from intramuros.catalog.records import Capability
from intramuros.cli.store import audit, auditable, catalog_for
from intramuros.errors import IntramurosError
from intramuros.platform.cli import STATE_FIELDS, console, error, fail, settings_options


def _capabilities(value: str | None) -> tuple[Capability, ...] | None:
    if not value:
        return None
    caps = tuple(c.strip() for c in value.split(",") if c.strip())
    bad = [c for c in caps if c not in ALL_CAPABILITIES]
    if bad:
        raise click.BadParameter(
            f"unknown capability {', '.join(bad)} (known: {', '.join(ALL_CAPABILITIES)})"
        )
    return typing.cast(tuple[Capability, ...], caps)


@click.group("models")
def models() -> None:
    """List, add, remove and verify models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@settings_options(*STATE_FIELDS)
def models_list(as_json: bool, **options: Any) -> None:
    """Print the catalogue with each model's provenance."""
    try:
        records = catalog_for(options).records()
    except IntramurosError as exc:
        fail(exc)
        return
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return
    table = Table(title="intramuros models")
    for col in ("name", "engine", "format", "quant", "ctx", "size", "licence", "origin",
                "capabilities", "sha256"):  # fmt: skip
        table.add_column(col, overflow="fold")
    for r in records:
        origin = r.origin
        where = (f"{origin.package}=={origin.version}" if origin.kind == "package"
                 else origin.path or origin.url or "")  # fmt: skip
        size = f"{r.size_bytes / 1e6:.1f} MB" if r.size_bytes else "-"
        fmt = r.format if r.base is None else f"lora on {r.base}"
        made = f"{origin.kind}: {where}"
        if r.lineage:
            # A fine-tuned model: its job and the sha256 of its base and data.
            made = (f"fine-tuned by {r.lineage.get('job')}: base "
                    f"{str(r.lineage.get('base_sha256'))[:12]}, data "
                    f"{str(r.lineage.get('training_sha256'))[:12]}, seed {r.lineage.get('seed')}")
        table.add_row(r.name, r.engine, fmt, r.quantization or "-", str(r.context_length),
                      size, r.license, made, ",".join(r.capabilities),
                      (r.sha256 or "-")[:16])  # fmt: skip
    console.print(table)


@models.command("add")
@click.argument("path", type=click.Path(path_type=Path), required=False)
@click.option("--name", required=True, help="Model id clients will use.")
@click.option(
    "--engine",
    default=None,
    help="Engine plug-in that runs it (`intramuros models engines` lists them and their "
    "options). Default: from PATH (a GGUF file: llamacpp; a CTranslate2 Whisper folder: whisper).",
)
@click.option(
    "--option",
    "engine_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the engine (with --engine; repeatable).",
)
@click.option("--license", "license_", default="unknown", help="Licence of the weights.")
@click.option(
    "--capabilities",
    default=None,
    help=f"Comma-separated, of: {', '.join(ALL_CAPABILITIES)}. Default: from the file, or all "
    "the engine serves.",
)
@click.option(
    "--context-length",
    type=click.IntRange(min=16),
    default=None,
    help="Context window to record. Default: from the file, else 4096.",
)
@click.option("--replace", is_flag=True, help="Replace a model of the same name.")
@settings_options(*STATE_FIELDS)
def models_add(path: Path | None, name: str, engine: str | None, engine_options: tuple[str, ...],
               license_: str, capabilities: str | None, context_length: int | None,
               replace: bool, **options: Any) -> None:  # fmt: skip
    """Add a model: a GGUF file or Whisper folder, or a model of any installed engine plug-in.

    Files are hashed and their provenance recorded. With --engine NAME, the
    model is checked against what that engine declares (its options, whether
    it reads a PATH, what it serves); hosts in its URL options are the ones the
    server's egress guard lets it reach.
    """
    from intramuros.engines.registry import new_model, parse_option_pairs

    if engine is None and engine_options:
        raise click.UsageError("--option needs --engine.")
    if engine is None and path is None:
        raise click.UsageError("give the model's PATH, or --engine NAME for a model of an engine "
                               "plug-in.")  # fmt: skip
    try:
        auditable(options)
        catalog = catalog_for(options)
        caps = _capabilities(capabilities)
        if engine is None:
            assert path is not None
            record = catalog.add_file(
                path, name=name, license=license_, capabilities=caps,
                context_length=context_length, replace=replace,
            )  # fmt: skip
        else:
            plan = new_model(engine, parse_option_pairs(engine_options), caps,
                             has_path=path is not None)  # fmt: skip
            record = catalog.add_model(
                name=name, engine=plan.engine, capabilities=plan.capabilities, path=path,
                weights_file=plan.weights_file, aux_files=plan.aux_files, format=plan.format,
                options=plan.options, context_length=context_length or 4096, license=license_,
                origin_url=plan.origin_url, replace=replace,
            )  # fmt: skip
        audit(options, "model_add", None, model=record.name, engine=record.engine,
               sha256=record.sha256, license=record.license, origin=record.origin.model_dump(),
               engine_options=record.options)  # fmt: skip
    except IntramurosError as exc:
        fail(exc)
        return
    if record.sha256 is None:
        console.print(f"added [bold]{record.name}[/] (engine {record.engine}, "
                      f"{record.origin.kind}: {record.origin.url or 'no weights'})",
                      highlight=False)  # fmt: skip
        return
    console.print(f"added [bold]{record.name}[/] sha256 {record.sha256} "
                  f"({record.architecture}, {record.quantization}, ctx {record.context_length})",
                  highlight=False)  # fmt: skip


@models.command("add-upstream")
@click.argument("name")
@click.option(
    "--base-url",
    "base_urls",
    required=True,
    multiple=True,
    help="The upstream's OpenAI base URL, e.g. http://h:8000/v1. Repeat it for a pool of "
    "upstreams serving the same model (balanced, with failover).",
)
@click.option("--upstream-model", default=None, help="Model name at the upstream (default: NAME).")
@click.option(
    "--capabilities",
    default="chat,completion",
    show_default=True,
    help=f"Comma-separated, of: {', '.join(ALL_CAPABILITIES)}.",
)
@click.option("--context-length", type=click.IntRange(min=16), default=4096, show_default=True)
@click.option("--license", "license_", default="unknown", help="Licence of the upstream's weights.")
@click.option(
    "--api-key-env", default=None, help="Environment variable holding the upstream's key."
)
@click.option("--replace", is_flag=True, help="Replace a model of the same name.")
@settings_options(*STATE_FIELDS)
def models_add_upstream(name: str, base_urls: tuple[str, ...], upstream_model: str | None,
                        capabilities: str,
                        context_length: int, license_: str, api_key_env: str | None,
                        replace: bool, **options: Any) -> None:  # fmt: skip
    """Serve a model from an OpenAI-compatible server (vLLM, TGI, llama-server...).

    The same as `models add --engine openai-upstream --option base_url=...`.
    """
    from intramuros.engines.registry import new_model

    base_url = base_urls[0]
    given: dict[str, Any] = {"base_url": base_url, "upstream_model": upstream_model or name}
    if len(base_urls) > 1:
        given["base_urls"] = list(base_urls[1:])
    if api_key_env:
        given["api_key_env"] = api_key_env
    try:
        auditable(options)
        catalog = catalog_for(options)
        plan = new_model("openai-upstream", given,
                         _capabilities(capabilities) or ("chat", "completion"), has_path=False)
        record = catalog.add_model(
            name=name, engine=plan.engine, capabilities=plan.capabilities, format=plan.format,
            options=plan.options, context_length=context_length, license=license_,
            origin_url=base_url, replace=replace,
        )  # fmt: skip
        audit(options, "model_add_upstream", None, model=record.name, base_url=base_url,
              base_urls=list(base_urls[1:]))  # fmt: skip
    except IntramurosError as exc:
        fail(exc)
        return
    console.print(f"added upstream model [bold]{record.name}[/] -> {', '.join(base_urls)}",
                  highlight=False)  # fmt: skip


@models.command("add-adapter")
@click.argument("name")
@click.option("--base", required=True, help="The model it adapts (a GGUF model of the catalogue).")
@click.option(
    "--adapter",
    "adapter",
    required=True,
    type=click.Path(path_type=Path),
    help="The llama.cpp LoRA adapter GGUF (convert_lora_to_gguf.py makes one from PEFT).",
)
@click.option("--license", "license_", default="unknown", help="Licence of the adapter.")
@click.option("--description", default="", help="What it was trained for.")
@click.option("--replace", is_flag=True, help="Replace a model of the same name.")
@settings_options(*STATE_FIELDS)
def models_add_adapter(name: str, base: str, adapter: Path, license_: str, description: str,
                       replace: bool, **options: Any) -> None:  # fmt: skip
    """Serve a LoRA adapter on a base model: requests naming NAME share the base's loaded
    weights (and its decode steps); the adapter costs its own size in memory.

    Its file is hashed and its provenance recorded like any model's. A running
    server picks it up at its first request, and lets it go within a second of
    `models remove NAME`.
    """
    try:
        auditable(options)
        catalog = catalog_for(options)
        record = catalog.add_adapter(adapter, name=name, base=base, license=license_,
                                     description=description, replace=replace)  # fmt: skip
        audit(options, "model_add_adapter", None, model=record.name, base=base,
              sha256=record.sha256, license=record.license,
              origin=record.origin.model_dump())  # fmt: skip
    except IntramurosError as exc:
        fail(exc)
        return
    console.print(f"added adapter [bold]{record.name}[/] on {base}, sha256 {record.sha256}",
                  highlight=False)  # fmt: skip


@models.command("engines")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def models_engines(as_json: bool) -> None:
    """List the engine plug-ins installed and the options each takes. Exit 1 if one is broken."""
    import dataclasses

    from intramuros.engines.registry import describe_engines

    infos = describe_engines()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(i) for i in infos], indent=2))
    else:
        for info in infos:
            if info.error is not None:
                click.echo(f"{info.name}  BROKEN  {info.error}")
                continue
            click.echo(f"{info.name}  ({info.target})  weights: {info.weights} ({info.format})  "
                       f"serves: {', '.join(info.capabilities) or '-'}")  # fmt: skip
            for opt in info.options:
                need = "required" if opt.required else f"default {opt.default or '-'}"
                click.echo(f"  --option {opt.key}=<{opt.type}>  ({need})  {opt.description}")
    if any(i.error is not None for i in infos):
        sys.exit(1)


@models.command("remove")
@click.argument("name")
@settings_options(*STATE_FIELDS)
def models_remove(name: str, **options: Any) -> None:
    """Forget a model you added (its file stays where it is)."""
    try:
        auditable(options)
        catalog = catalog_for(options)
        if catalog.get(name).bundled:
            error(f"'{name}' is bundled; uninstall its package instead.")
        catalog.remove(name)
        audit(options, "model_remove", None, model=name)
    except IntramurosError as exc:
        fail(exc)
        return
    console.print(f"removed {name}")


@models.command("verify")
@click.argument("names", nargs=-1)
@settings_options(*STATE_FIELDS)
def models_verify(names: tuple[str, ...], **options: Any) -> None:
    """Re-hash every model's files against the catalogue. Exit 1 on any mismatch."""
    try:
        catalog = catalog_for(options)
        unknown = set(names) - {r.name for r in catalog.records()}
        if unknown:
            error(f"unknown model(s): {', '.join(sorted(unknown))}")
        results = catalog.verify_all(names or None)
    except IntramurosError as exc:
        fail(exc)
        return
    table = Table(title="model verification")
    for col in ("name", "result", "detail", "sha256"):
        table.add_column(col, overflow="fold")
    for r in results:
        table.add_row(r.name, "[green]ok[/]" if r.ok else "[bold red]FAILED[/]", r.detail,
                      (r.actual or "-")[:16])  # fmt: skip
    console.print(table)
    failed = [r for r in results if not r.ok]
    for r in failed:
        # Plain lines, never wrapped: hashes must be copyable whole.
        click.echo(f"FAILED {r.name}: {r.detail}")
        if r.expected or r.actual:
            click.echo(f"  expected sha256 {r.expected}\n  actual   sha256 {r.actual}")
    if failed:
        sys.exit(1)
