"""The ``intramuros`` command: the core's commands, and each installed workload's.

Workloads add their commands through their plug-in (``intramuros.workloads``);
every command reaches the state through the context this group gives it
(:class:`intramuros.platform.cli.CliContext`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import typing
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.table import Table

from intramuros.catalog.catalog import ALL_CAPABILITIES, Catalog
from intramuros.catalog.records import Capability
from intramuros.errors import IntramurosError, NotFound
from intramuros.gate.policy import Limits, TenantPolicy
from intramuros.gate.retention import run_retention
from intramuros.gate.tables import IMPLICIT_TENANTS
from intramuros.gate.tenants import Role, Tenants, parse_duration
from intramuros.ledger import (
    Checkpoint,
    Ledger,
    LedgerKeys,
    PublicKeys,
    VerifyReport,
    generate_key_file,
    load_checkpoint,
    rotate,
    verify_export,
)
from intramuros.offline import enforce_offline
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
from intramuros.platform.interface import Platform
from intramuros.platform.plugin import Retention, installed_workloads
from intramuros.settings import Settings
from intramuros.store.db import Database


class _Store:
    """The state of an installation, for commands that load no model."""

    def __init__(self, settings: Settings) -> None:
        self.db = Database(settings.resolved_database_url())
        self.db.migrate()
        self.ledger = Ledger(self.db, LedgerKeys.load(settings.ledger_key_file))
        self.tenants = Tenants(self.db)

    @property
    def tables(self) -> Database:
        return self.db

    @property
    def auditor(self) -> Ledger:
        return self.ledger

    def tenant_id(self, name: str) -> str:
        try:
            return self.tenants.resolve(name)
        except NotFound:
            if name in IMPLICIT_TENANTS:
                return name
            raise


class _Commands:
    """What ``intramuros`` gives its commands (a ``CliContext``): the state, opened once
    per command, and an in-process platform."""

    def __init__(self) -> None:
        self._stores: dict[tuple[str, str], _Store] = {}

    def store(self, settings: Settings) -> _Store:
        where = (settings.resolved_database_url(), str(settings.ledger_key_file))
        if where not in self._stores:
            opened = _Store(settings)
            self._stores[where] = opened
            click.get_current_context().call_on_close(opened.db.close)
        return self._stores[where]

    @contextlib.asynccontextmanager
    async def open(self, settings: Settings) -> AsyncIterator[Platform]:
        from intramuros.serving.service import InferenceService

        core = InferenceService(settings)
        try:
            await core.prepare()
            yield core
        finally:
            await core.close()


@click.group()
@click.version_option(package_name="intramuros")
@click.pass_context
def main(ctx: click.Context) -> None:
    """intramuros: an OpenAI/Mistral-compatible AI service on open models, within your walls."""
    enforce_offline()
    # Commands report their own errors in one line; `serve` sets up real logging.
    logging.basicConfig(level=logging.CRITICAL)
    ctx.obj = _Commands()


def _store(options: dict[str, Any]) -> _Store:
    """The installation's state, with the command's options as settings."""
    commands = context()
    assert isinstance(commands, _Commands)
    return commands.store(load_options(dict(options)))


# --------------------------------------------------------------------------
# serve
# --------------------------------------------------------------------------


@main.command()
@settings_options()
def serve(**options: Any) -> None:
    """Run the API server (OpenAI- and Mistral-compatible) on this machine."""
    import uvicorn

    from intramuros.api.app import create_app
    from intramuros.api.server import AppServer

    try:
        settings = load_options(options)
    except IntramurosError as exc:
        fail(exc)
        return
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    try:
        app = create_app(settings)
    except IntramurosError as exc:
        fail(exc)
        return
    if not settings.auth:
        click.echo(
            "WARNING: authentication is DISABLED (--no-auth). Every caller on this machine is "
            f"an admin of tenant 'default'. Allowed only because {settings.host} is loopback.",
            err=True,
        )
    click.echo(
        f"intramuros serving on http://{settings.host}:{settings.port} "
        f"(data dir {settings.data_dir})",
        err=True,
    )
    # loop="asyncio": uvloop would resolve and connect in C, past the egress guard.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="off",
                            log_level=settings.log_level, timeout_graceful_shutdown=5,
                            loop="asyncio")  # fmt: skip
    try:
        AppServer(config, app).run()
    except KeyboardInterrupt:
        pass
    except IntramurosError as exc:
        fail(exc)


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------


def _catalog(options: dict[str, Any]) -> Catalog:
    catalog = Catalog(_store(options).db, load_options(dict(options)))
    catalog.sync_bundled()
    return catalog


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


@main.group()
def models() -> None:
    """List, add, remove and verify models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@settings_options(*STATE_FIELDS)
def models_list(as_json: bool, **options: Any) -> None:
    """Print the catalogue with each model's provenance."""
    try:
        records = _catalog(options).records()
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
        table.add_row(r.name, r.engine, r.format, r.quantization or "-", str(r.context_length),
                      size, r.license, f"{origin.kind}: {where}", ",".join(r.capabilities),
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
        _auditable(options)
        catalog = _catalog(options)
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
        _audit(options, "model_add", None, model=record.name, engine=record.engine,
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
    "--base-url", required=True, help="The upstream's OpenAI base URL, e.g. http://h:8000/v1."
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
def models_add_upstream(name: str, base_url: str, upstream_model: str | None, capabilities: str,
                        context_length: int, license_: str, api_key_env: str | None,
                        replace: bool, **options: Any) -> None:  # fmt: skip
    """Serve a model from an OpenAI-compatible server (vLLM, TGI, llama-server...).

    The same as `models add --engine openai-upstream --option base_url=...`.
    """
    from intramuros.engines.registry import new_model

    given = {"base_url": base_url, "upstream_model": upstream_model or name}
    if api_key_env:
        given["api_key_env"] = api_key_env
    try:
        _auditable(options)
        catalog = _catalog(options)
        plan = new_model("openai-upstream", given,
                         _capabilities(capabilities) or ("chat", "completion"), has_path=False)
        record = catalog.add_model(
            name=name, engine=plan.engine, capabilities=plan.capabilities, format=plan.format,
            options=plan.options, context_length=context_length, license=license_,
            origin_url=base_url, replace=replace,
        )  # fmt: skip
        _audit(options, "model_add_upstream", None, model=record.name, base_url=base_url)
    except IntramurosError as exc:
        fail(exc)
        return
    console.print(f"added upstream model [bold]{record.name}[/] -> {base_url}", highlight=False)


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
        _auditable(options)
        catalog = _catalog(options)
        if catalog.get(name).bundled:
            error(f"'{name}' is bundled; uninstall its package instead.")
        catalog.remove(name)
        _audit(options, "model_remove", None, model=name)
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
        catalog = _catalog(options)
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


# --------------------------------------------------------------------------
# tenants, keys, usage
# --------------------------------------------------------------------------


def _tenants(options: dict[str, Any]) -> Tenants:
    return _store(options).tenants


def _policy_from(options: dict[str, Any], base: TenantPolicy | None = None) -> TenantPolicy:
    """Build a policy from the policy flags; unset flags keep ``base``'s values."""
    data = (base or TenantPolicy()).model_dump()
    if options.pop("store_content", None) is not None:
        data["store_content"] = True
    if options.pop("no_store_content", None):
        data["store_content"] = False
    for name in ("retention_days",):
        value = options.pop(name, None)
        if value is not None:
            data[name] = value
    pii_default = options.pop("pii_default", None)
    if pii_default:
        data["pii_default"] = pii_default
    for item in options.pop("pii", None) or ():
        category, _, action = item.partition("=")
        data["pii"][category.strip()] = action.strip()
    for limit in ("rpm", "tpm", "monthly_tokens"):
        value = options.pop(limit, None)
        if value is not None:
            data["limits"][limit] = value
    try:
        return TenantPolicy.model_validate(data)
    except ValidationError as exc:
        raise click.BadParameter(exc.errors()[0]["msg"]) from None


_POLICY_OPTIONS = [
    click.option("--store-content", is_flag=True, default=None,
                 help="Keep prompt and output text in the ledger (encrypted)."),
    click.option("--no-store-content", is_flag=True, default=None, help="Keep no text."),
    click.option("--retention-days", type=click.IntRange(min=1), default=None,
                 help="Days stored text is kept."),
    click.option("--pii-default", type=click.Choice(["allow", "redact-in-logs", "pseudonymise",
                                                      "block"]), default=None,
                 help="Action for personal-data categories not listed with --pii."),
    click.option("--pii", multiple=True, metavar="CATEGORY=ACTION",
                 help="Per-category action, e.g. --pii iban=block --pii email=pseudonymise."),
    click.option("--rpm", type=click.IntRange(min=1), default=None, help="Requests per minute."),
    click.option("--tpm", type=click.IntRange(min=1), default=None, help="Tokens per minute."),
    click.option("--monthly-tokens", type=click.IntRange(min=1), default=None,
                 help="Tokens per calendar month."),
]  # fmt: skip


def policy_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The tenant-policy flags."""
    for option in reversed(_POLICY_OPTIONS):
        func = option(func)
    return func


@main.group("tenants")
def tenants_group() -> None:
    """Create, list and delete tenants; set their policies."""


@tenants_group.command("create")
@click.argument("name")
@policy_options
@settings_options(*STATE_FIELDS)
def tenants_create(name: str, **options: Any) -> None:
    """Create a tenant (a department, a client organisation)."""
    try:
        policy = _policy_from(options)  # pops the policy flags first
        _auditable(options)
        store = _tenants(options)
        info = store.create(name, policy)
        _audit(options, "tenant_create", info.id, name=name, policy=policy.model_dump())
    except IntramurosError as exc:
        fail(exc)
        return
    console.print(f"created tenant {name} (id {info.id})", highlight=False)


@tenants_group.command("policy")
@click.argument("name")
@policy_options
@settings_options(*STATE_FIELDS)
def tenants_policy(name: str, **options: Any) -> None:
    """Show a tenant's policy, or change it with the flags."""
    try:
        flags = {k: options.pop(k) for k in list(options) if k not in STATE_FIELDS}
        _auditable(options)
        store = _tenants(options)
        tenant = store.get(name)
        policy = _policy_from(flags, tenant.policy)
        store.set_policy(tenant.id, policy)
        _audit(options, "tenant_policy", tenant.id, policy=policy.model_dump())
    except IntramurosError as exc:
        fail(exc)
        return
    click.echo(policy.model_dump_json(indent=2))


@tenants_group.command("list")
@settings_options(*STATE_FIELDS)
def tenants_list(**options: Any) -> None:
    """List tenants: name, id (what records store), policy."""
    try:
        for tenant in _tenants(options).all():
            click.echo(f"{tenant.name}\t{tenant.id}\t{tenant.policy.model_dump_json()}")
    except IntramurosError as exc:
        fail(exc)


@tenants_group.command("delete")
@click.argument("name")
@settings_options(*STATE_FIELDS)
def tenants_delete(name: str, **options: Any) -> None:
    """Delete a tenant and everything it stored: keys, files, jobs, cases, records.

    The ledger keeps its records (their stored content is erased, with a
    tombstone), and the tenant's id is never given again: a new tenant of the
    same name starts empty.
    """
    from intramuros.serving.tenancy import delete_tenant, purge_context

    try:
        settings = load_options(dict(options))
        store = _tenants(dict(options))
        ledger = _ledger(options)
        ledger.require_appendable()
        ctx = purge_context(settings, store.db, ledger, actor())
        tomb, counts = delete_tenant(ctx, store, name)
    except IntramurosError as exc:
        fail(exc)
        return
    done = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    console.print(f"deleted tenant {name} (id {tomb.id}, never reused): {done or 'no data'}",
                  highlight=False)


@main.group("keys")
def keys_group() -> None:
    """Create, list and revoke API keys."""


@keys_group.command("create")
@click.option("--tenant", required=True, help="Tenant the key belongs to.")
@click.option("--role", type=click.Choice(["user", "admin", "operator"]), default="user",
              show_default=True,
              help="user: calls models; admin: manages its own tenant; operator: manages "
                   "every tenant (made only here, on the machine).")
@click.option("--expires", default=None, help="Lifetime, e.g. 90d, 12h, 30m.")
@click.option("--models", default=None, help="Comma-separated models the key may use.")
@click.option("--rpm", type=click.IntRange(min=1), default=None, help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), default=None, help="Tokens per minute.")
@click.option("--monthly-tokens", type=click.IntRange(min=1), default=None,
              help="Tokens per calendar month.")
@settings_options(*STATE_FIELDS)
def keys_create(tenant: str, role: str, expires: str | None, models: str | None,
                rpm: int | None, tpm: int | None, monthly_tokens: int | None,
                **options: Any) -> None:  # fmt: skip
    """Create a key and print it once; only its hash is stored."""
    try:
        _auditable(options)
        store = _tenants(options)
        tenant_id = store.resolve(tenant)
        key, info = store.create_key(
            tenant_id, role=typing.cast(Role, role),
            expires_in=parse_duration(expires) if expires else None,
            models=tuple(m.strip() for m in models.split(",") if m.strip()) if models else None,
            limits=Limits(rpm=rpm, tpm=tpm, monthly_tokens=monthly_tokens),
        )  # fmt: skip
        _audit(options, "key_create", tenant_id, key_id=info.id, role=role)
    except IntramurosError as exc:
        fail(exc)
        return
    click.echo(key)
    click.echo(f"key id {info.id}, tenant {tenant}, role {info.role}: store the key now, "
               "it cannot be shown again", err=True)  # fmt: skip


@keys_group.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@settings_options(*STATE_FIELDS)
def keys_list(tenant: str | None, **options: Any) -> None:
    """List keys (never their secrets)."""
    try:
        store = _tenants(options)
        keys = store.keys(store.resolve(tenant) if tenant else None)
    except IntramurosError as exc:
        fail(exc)
        return
    table = Table(title="API keys")
    for col in ("id", "tenant", "role", "state", "expires", "models"):
        table.add_column(col)
    now = time.time()
    for k in keys:
        state = "revoked" if k.revoked_at else (
            "expired" if k.expires_at and k.expires_at <= now else "active")  # fmt: skip
        expires = time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.expires_at)) if k.expires_at \
            else "never"  # fmt: skip
        table.add_row(k.id, k.tenant_name or k.tenant, k.role, state, expires,
                      ",".join(k.models or ["*"]))
    console.print(table)


@keys_group.command("revoke")
@click.argument("key_id")
@settings_options(*STATE_FIELDS)
def keys_revoke(key_id: str, **options: Any) -> None:
    """Revoke a key at once."""
    try:
        _auditable(options)
        store = _tenants(options)
        key = store.key(key_id)
        store.revoke(key_id)
        _audit(options, "key_revoke", key.tenant, key_id=key_id)
    except IntramurosError as exc:
        fail(exc)
        return
    console.print(f"revoked {key_id}")


@main.command("usage")
@click.option("--tenant", default=None, help="Only this tenant.")
@click.option("--since", default=None, help="From this day (YYYY-MM-DD).")
@click.option("--until", default=None, help="Up to this day (YYYY-MM-DD).")
@settings_options(*STATE_FIELDS)
def usage_cmd(tenant: str | None, since: str | None, until: str | None, **options: Any) -> None:
    """Token, request, energy, cost and CO2e totals by tenant, model and day."""
    from intramuros.gate.quotas import usage_report

    try:
        store = _tenants(options)
        rows = usage_report(store.db, tenant=store.resolve(tenant) if tenant else None,
                            since=since, until=until)
    except IntramurosError as exc:
        fail(exc)
        return
    table = Table(title="usage")
    for col in ("day", "tenant", "model", "requests", "prompt", "completion", "total",
                "energy J", "cost EUR", "gCO2e"):  # fmt: skip
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["day"]), str(r["tenant"]), str(r["model"]), str(r["requests"]),
                      str(r["prompt_tokens"]), str(r["completion_tokens"]),
                      str(r["total_tokens"]), f"{r['energy_joules']:.3f}",
                      f"{r['cost_eur']:.6f}", f"{r['co2e_grams']:.4f}")  # fmt: skip
    console.print(table)


# --------------------------------------------------------------------------
# ledger, erasure, retention
# --------------------------------------------------------------------------


def _ledger(options: dict[str, Any]) -> Ledger:
    return _store(options).ledger


def _audit(options: dict[str, Any], action: str, tenant: str | None, **details: Any) -> None:
    """Append an admin action to the ledger."""
    _ledger(options).append("admin", tenant=tenant, key_id=None, subject=None,
                            data={"action": action, "actor": actor(), **details})  # fmt: skip


def _tenant_or_deleted(store: Tenants, value: str) -> str:
    """The id of the live tenant named ``value``, or ``value`` if it is a deleted tenant's id.

    A deleted tenant's records stay in the ledger under its id, for auditors.
    """
    try:
        return store.resolve(value)
    except IntramurosError:
        if any(t.id == value for t in store.tombstones()):
            return value
        raise


def _auditable(options: dict[str, Any]) -> None:
    """Refuse an admin action now if its ledger record would be refused after it.

    A keyed ledger takes no record without the key: check before acting, so
    that nothing is done off the record.
    """
    _ledger(dict(options)).require_appendable()


@main.group("ledger")
def ledger_group() -> None:
    """Verify, checkpoint and export the tamper-evident ledger; manage its key."""


# `ledger verify` and `ledger verify-export` exit with this when the records
# link but nothing proves who wrote them (no key, or no signature checked).
_UNAUTHENTICATED_EXIT = 3


def _ledger_report(report: VerifyReport, allow_unauthenticated: bool, what: str) -> None:
    """Print a verification report; exit 1 on tampering, 3 when it is not authenticated."""
    click.echo(json.dumps(report.to_dict(), indent=2))
    for warning in report.warnings:
        click.echo("warning: " + warning, err=True)
    if not report.ok:
        where = f" at record {report.first_bad_seq}" if report.first_bad_seq is not None else ""
        error(f"{what} verification FAILED{where}: {report.reason}: {report.detail}")
    if not report.authenticated and not allow_unauthenticated:
        click.echo(
            f"error: the {what} links, but it is not authenticated, so anyone able to write it "
            "could have written it; see the warnings. Pass --allow-unauthenticated to accept "
            "a check of linkage only.",
            err=True,
        )
        sys.exit(_UNAUTHENTICATED_EXIT)


def _ledger_checkpoint_file(path: Path | None) -> Checkpoint | None:
    if path is None:
        return None
    from intramuros.errors import InvalidRequest

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read checkpoint {path}: {exc}", param="checkpoint") from None
    return load_checkpoint(text)


_ALLOW_UNAUTHENTICATED_HELP = (
    "Exit 0 when the records link but cannot be authenticated (no ledger key or public "
    "keys given, or no record MAC'd yet). Default: exit 3."
)


@ledger_group.command("verify")
@click.option("--checkpoint", "checkpoint_file", type=click.Path(path_type=Path), default=None,
              help="A checkpoint kept from `ledger checkpoint` (or an export's manifest.json): "
                   "also detects truncation; a signed one's signature is checked.")
@click.option("--allow-unauthenticated", is_flag=True, help=_ALLOW_UNAUTHENTICATED_HELP)
@settings_options(*STATE_FIELDS, "ledger_key_file")
def ledger_verify(checkpoint_file: Path | None, allow_unauthenticated: bool,
                  **options: Any) -> None:  # fmt: skip
    """Check the chain, every record's MAC and stored content; name the first bad record.

    Exit 0: verified and authenticated with the ledger key. Exit 1: tampering
    found (the first bad record and why) or an error. Exit 3: the records
    link, but without the ledger key nothing proves who wrote them.
    """
    try:
        checkpoint = _ledger_checkpoint_file(checkpoint_file)
        report = _ledger(options).verify(checkpoint)
    except IntramurosError as exc:
        fail(exc)
        return
    _ledger_report(report, allow_unauthenticated, "ledger")


@ledger_group.command("verify-export")
@click.argument("path", type=click.Path(path_type=Path, file_okay=False))
@click.option("--public-keys", "public_keys_file", type=click.Path(path_type=Path), default=None,
              help="The ledger's public keys (from `ledger public-key`): the export's "
                   "signature, and a signed checkpoint's, must verify.")
@click.option("--checkpoint", "checkpoint_file", type=click.Path(path_type=Path), default=None,
              help="A checkpoint you kept: the export's record at its seq must match it.")
@click.option("--allow-unauthenticated", is_flag=True, help=_ALLOW_UNAUTHENTICATED_HELP)
def ledger_verify_export(path: Path, public_keys_file: Path | None, checkpoint_file: Path | None,
                         allow_unauthenticated: bool) -> None:  # fmt: skip
    """Check an export with neither the database nor a secret: what an auditor runs."""
    try:
        checkpoint = _ledger_checkpoint_file(checkpoint_file)
        public_keys = PublicKeys.from_file(public_keys_file) if public_keys_file else None
    except IntramurosError as exc:
        fail(exc)
        return
    report = verify_export(path, checkpoint=checkpoint, public_keys=public_keys)
    _ledger_report(report, allow_unauthenticated, "export")


@ledger_group.command("checkpoint")
@settings_options(*STATE_FIELDS, "ledger_key_file")
def ledger_checkpoint(**options: Any) -> None:
    """Print the head of the chain, signed with the ledger key.

    Keep it where the database's writers cannot reach, or hand it to a third
    party along with `ledger public-key`.
    """
    try:
        checkpoint = _ledger(options).checkpoint()
    except IntramurosError as exc:
        fail(exc)
        return
    click.echo(checkpoint.to_json())
    if not checkpoint.signed:
        click.echo("warning: no ledger key loaded: this checkpoint is unsigned, so it proves "
                   "nothing to anyone but whoever keeps it.", err=True)  # fmt: skip


@ledger_group.command("public-key")
@settings_options("config", "ledger_key_file")
def ledger_public_key(**options: Any) -> None:
    """Print the public keys that check signed checkpoints and exports (every key version).

    They are not secret: give them to auditors, with checkpoints, over a
    channel the database's administrators do not control.
    """
    try:
        keys = LedgerKeys.load(load_options(options).ledger_key_file)
    except IntramurosError as exc:
        fail(exc)
        return
    if keys is None:
        error("no ledger key is configured: pass --ledger-key-file or set INTRAMUROS_LEDGER_KEY.")
        return
    click.echo(keys.public_keys().to_json())


def _when(value: str | None, param: str) -> float | None:
    import datetime as dt

    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{param}: use an ISO date or time, e.g. 2026-11-01") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


@ledger_group.command("export")
@click.option("--tenant", default=None,
              help="Only this tenant's records (others redacted): a tenant's name, or the id "
                   "of a deleted one.")
@click.option("--since", default=None, help="From this ISO date/time (UTC).")
@click.option("--until", default=None, help="Before this ISO date/time (UTC).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Directory for records.jsonl and manifest.json.")
@settings_options(*STATE_FIELDS, "ledger_key_file")
def ledger_export(tenant: str | None, since: str | None, until: str | None, out_dir: Path,
                  **options: Any) -> None:  # fmt: skip
    """Write records as JSON lines for an auditor, with a manifest signed with the ledger key."""
    try:
        ledger = _ledger(options)
        ledger.require_appendable()  # the export is recorded: refuse before writing it
        if tenant is not None:
            tenant = _tenant_or_deleted(_tenants(dict(options)), tenant)
        path = ledger.export(out_dir, tenant=tenant, since=_when(since, "--since"),
                             until=_when(until, "--until"))  # fmt: skip
        _audit(options, "ledger_export", tenant, since=since, until=until)
    except IntramurosError as exc:
        fail(exc)
        return
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    signature = manifest.get("signature")
    if signature:
        click.echo(f"exported to {path} (signed with key version {signature['key_version']})")
    else:
        click.echo(f"exported to {path} (unsigned: no ledger key, or no record MAC'd yet)")


@ledger_group.command("keygen")
@click.argument("path", type=click.Path(path_type=Path))
def ledger_keygen(path: Path) -> None:
    """Create a ledger key file (mode 0600). Keep it off the database host's backups."""
    try:
        generate_key_file(path)
    except IntramurosError as exc:
        fail(exc)
        return
    click.echo(f"created {path}; start the server with --ledger-key-file {path}")


@ledger_group.command("rotate")
@click.argument("path", type=click.Path(path_type=Path))
def ledger_rotate(path: Path) -> None:
    """Add a new key version and make it current; old versions still decrypt and verify."""
    try:
        keys = rotate(path)
    except IntramurosError as exc:
        fail(exc)
        return
    click.echo(f"current key version is now {keys.current}; old versions stay in {path}. "
               "Give auditors the new public key: `intramuros ledger public-key`.")  # fmt: skip


@main.command("erase")
@click.option("--tenant", required=True, help="Tenant of the subject.")
@click.option("--subject", required=True, help="End-user id the client passed (user/metadata).")
@settings_options(*STATE_FIELDS, "ledger_key_file")
def erase(tenant: str, subject: str, **options: Any) -> None:
    """Delete a subject's stored content everywhere; the ledger keeps a tombstone."""
    from intramuros.gate.privacy import provisional_subject, subject_digests

    try:
        tenant_id = _tenants(dict(options)).resolve(tenant)
        ledger = _ledger(options)
        # An id holding personal data was recorded as its digest (under whichever key
        # version was current): erase every form found, and never write the id itself
        # into a tombstone unless the records already hold it so.
        forms = [subject, *subject_digests(subject, ledger.keys)]
        found = [f for f in forms if ledger.records(tenant_id, subject=f, limit=1)]
        fallback = provisional_subject(subject, ledger.keys) or subject
        count = sum(ledger.erase_subject(tenant_id, form, actor=actor())
                    for form in found or [fallback])  # fmt: skip
    except IntramurosError as exc:
        fail(exc)
        return
    click.echo(f"erased stored content of {count} record(s) of subject {subject!r} in {tenant}")


@main.command("purge")
@click.option("--tenant", default=None, help="Only this tenant (default: every tenant).")
@settings_options(*STATE_FIELDS, "files_key_file")
def purge(tenant: str | None, **options: Any) -> None:
    """Apply retention now: stored text, and each workload's data (files, OCR jobs ...)
    past each tenant's period.

    Expired files (``expires_after``) of every tenant are deleted too.
    """
    try:
        settings = load_options(dict(options))
        store = _store(options)
        tenant_id = store.tenants.resolve(tenant) if tenant else None
        done = run_retention(store.tenants, store.ledger, actor=actor(), tenant=tenant_id)
        ctx = Retention(settings=settings, tables=store.db, auditor=store.ledger, actor=actor(),
                        policies={t.id: t.policy for t in store.tenants.all()})  # fmt: skip
        gone = [workload.purge_expired(ctx, tenant_id) for workload in installed_workloads()
                if workload.purge_expired is not None]  # fmt: skip
    except IntramurosError as exc:
        fail(exc)
    for name, count in done.items():
        click.echo(f"{name}: purged {count} record(s)")
    for counts in gone:
        for name, kinds in counts.items():
            click.echo(f"{name}: deleted " + ", ".join(f"{n} {kind}" for kind, n in kinds.items()))


# --------------------------------------------------------------------------
# tools, and the installed workloads' commands (each workload's plug-in names its own)
# --------------------------------------------------------------------------


def _add_commands() -> None:
    from intramuros.bench.cli import bench

    main.add_command(bench)
    try:
        workloads = installed_workloads()
    except IntramurosError as exc:  # a broken plug-in: the core's commands still work
        logging.getLogger(__name__).error("%s", exc.message)
        return
    for workload in workloads:
        if workload.cli is not None:
            main.add_command(workload.cli())


_add_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
