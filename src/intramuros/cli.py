"""The ``intramuros`` command."""

from __future__ import annotations

import json
import logging
import sys
import time
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args, get_origin

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from intramuros.catalog.catalog import ALL_CAPABILITIES, Catalog
from intramuros.catalog.records import Capability
from intramuros.errors import IntramurosError
from intramuros.gate.policy import Limits, TenantPolicy
from intramuros.gate.retention import run_retention
from intramuros.gate.tenants import Role, Tenants, parse_duration
from intramuros.ledger import Checkpoint, Ledger, LedgerKeys, generate_key_file, rotate
from intramuros.offline import enforce_offline
from intramuros.settings import Settings, load_settings

if typing.TYPE_CHECKING:
    from intramuros.docai.retention import Purged

# Piped output (| grep, CI logs) must not wrap: names and hashes stay whole.
console = Console(width=None if sys.stdout.isatty() else 1000)

# Settings every command accepts (where the state lives); `serve` takes all.
_STATE_FIELDS = ("data_dir", "database_url", "config")


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for a settings field's annotation."""
    origin = get_origin(annotation)
    args = [a for a in get_args(annotation) if a is not type(None)]
    if origin in (types.UnionType, typing.Union) and len(args) == 1:
        return _click_type(args[0])
    if origin is typing.Literal:
        return click.Choice([str(a) for a in get_args(annotation)]), False
    if origin is list:
        return str, False
    if annotation is bool:
        return bool, True
    if annotation in (int, float, str):
        return annotation, False
    if annotation is Path:
        return click.Path(path_type=Path), False
    return str, False


def settings_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Click options generated from ``Settings`` fields; their help is the field's description."""
    fields = Settings.model_fields
    chosen = names or tuple(fields)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(chosen):
            info = fields[name]
            kind, is_flag = _click_type(info.annotation)
            flag = "--" + name.replace("_", "-")
            env = "INTRAMUROS_" + name.upper()
            decls = [f"{flag}/--no-{name.replace('_', '-')}"] if is_flag else [flag]
            func = click.option(
                *decls, name, type=None if is_flag else kind, default=None,
                help=f"{info.description} [env: {env}]", show_default=False,
            )(func)  # fmt: skip
        return func

    return decorate


def _settings(options: dict[str, Any]) -> Settings:
    return load_settings(**options)


def _error(message: str) -> None:
    """One line on stderr, never wrapped, then exit 1."""
    click.echo("error: " + " ".join(message.split()), err=True)
    sys.exit(1)


def _fail(exc: IntramurosError) -> None:
    _error(exc.message)


@click.group()
@click.version_option(package_name="intramuros")
def main() -> None:
    """intramuros: an OpenAI/Mistral-compatible AI service on open models, within your walls."""
    enforce_offline()
    # Commands report their own errors in one line; `serve` sets up real logging.
    logging.basicConfig(level=logging.CRITICAL)


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
        settings = _settings(options)
    except IntramurosError as exc:
        _fail(exc)
        return
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    try:
        app = create_app(settings)
    except IntramurosError as exc:
        _fail(exc)
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
        _fail(exc)


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------


def _catalog(options: dict[str, Any]) -> Catalog:
    from intramuros.store.db import Database

    settings = _settings(options)
    db = Database(settings.resolved_database_url())
    db.migrate()
    catalog = Catalog(db, settings)
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
@settings_options(*_STATE_FIELDS)
def models_list(as_json: bool, **options: Any) -> None:
    """Print the catalogue with each model's provenance."""
    try:
        records = _catalog(options).records()
    except IntramurosError as exc:
        _fail(exc)
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
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Model id clients will use.")
@click.option("--license", "license_", default="unknown", help="Licence of the weights.")
@click.option(
    "--capabilities",
    default=None,
    help=f"Comma-separated, of: {', '.join(ALL_CAPABILITIES)}. Default: from the file.",
)
@click.option(
    "--context-length",
    type=click.IntRange(min=16),
    default=None,
    help="Context window to record. Default: from the file.",
)
@click.option("--replace", is_flag=True, help="Replace a model of the same name.")
@settings_options(*_STATE_FIELDS)
def models_add(path: Path, name: str, license_: str, capabilities: str | None,
               context_length: int | None, replace: bool, **options: Any) -> None:  # fmt: skip
    """Add a GGUF file: hashes it and records its provenance."""
    try:
        record = _catalog(options).add_file(
            path, name=name, license=license_, capabilities=_capabilities(capabilities),
            context_length=context_length, replace=replace,
        )  # fmt: skip
        _audit(options, "model_add", None, model=record.name, sha256=record.sha256,
               license=record.license, origin=record.origin.model_dump())
    except IntramurosError as exc:
        _fail(exc)
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
@settings_options(*_STATE_FIELDS)
def models_add_upstream(name: str, base_url: str, upstream_model: str | None, capabilities: str,
                        context_length: int, license_: str, api_key_env: str | None,
                        replace: bool, **options: Any) -> None:  # fmt: skip
    """Serve a model from an OpenAI-compatible server (vLLM, TGI, llama-server...)."""
    try:
        record = _catalog(options).add_upstream(
            name=name, base_url=base_url, upstream_model=upstream_model,
            capabilities=_capabilities(capabilities) or ("chat", "completion"),
            context_length=context_length, license=license_, api_key_env=api_key_env,
            replace=replace,
        )  # fmt: skip
        _audit(options, "model_add_upstream", None, model=record.name, base_url=base_url)
    except IntramurosError as exc:
        _fail(exc)
        return
    console.print(f"added upstream model [bold]{record.name}[/] -> {base_url}", highlight=False)


@models.command("remove")
@click.argument("name")
@settings_options(*_STATE_FIELDS)
def models_remove(name: str, **options: Any) -> None:
    """Forget a model you added (its file stays where it is)."""
    try:
        catalog = _catalog(options)
        if catalog.get(name).bundled:
            _error(f"'{name}' is bundled; uninstall its package instead.")
        catalog.remove(name)
        _audit(options, "model_remove", None, model=name)
    except IntramurosError as exc:
        _fail(exc)
        return
    console.print(f"removed {name}")


@models.command("verify")
@click.argument("names", nargs=-1)
@settings_options(*_STATE_FIELDS)
def models_verify(names: tuple[str, ...], **options: Any) -> None:
    """Re-hash every model's files against the catalogue. Exit 1 on any mismatch."""
    try:
        catalog = _catalog(options)
        unknown = set(names) - {r.name for r in catalog.records()}
        if unknown:
            _error(f"unknown model(s): {', '.join(sorted(unknown))}")
        results = catalog.verify_all(names or None)
    except IntramurosError as exc:
        _fail(exc)
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
    from intramuros.store.db import Database

    settings = _settings(options)
    db = Database(settings.resolved_database_url())
    db.migrate()
    return Tenants(db)


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
@settings_options(*_STATE_FIELDS)
def tenants_create(name: str, **options: Any) -> None:
    """Create a tenant (a department, a client organisation)."""
    try:
        policy = _policy_from(options)  # pops the policy flags first
        store = _tenants(options)
        store.create(name, policy)
        _audit(options, "tenant_create", name, policy=policy.model_dump())
    except IntramurosError as exc:
        _fail(exc)
        return
    console.print(f"created tenant {name}", highlight=False)


@tenants_group.command("policy")
@click.argument("name")
@policy_options
@settings_options(*_STATE_FIELDS)
def tenants_policy(name: str, **options: Any) -> None:
    """Show a tenant's policy, or change it with the flags."""
    try:
        flags = {k: options.pop(k) for k in list(options) if k not in _STATE_FIELDS}
        store = _tenants(options)
        policy = _policy_from(flags, store.policy(name))
        store.set_policy(name, policy)
        _audit(options, "tenant_policy", name, policy=policy.model_dump())
    except IntramurosError as exc:
        _fail(exc)
        return
    click.echo(policy.model_dump_json(indent=2))


@tenants_group.command("list")
@settings_options(*_STATE_FIELDS)
def tenants_list(**options: Any) -> None:
    """List tenants."""
    try:
        store = _tenants(options)
        for name in store.names():
            click.echo(f"{name}\t{store.policy(name).model_dump_json()}")
    except IntramurosError as exc:
        _fail(exc)


@tenants_group.command("delete")
@click.argument("name")
@settings_options(*_STATE_FIELDS)
def tenants_delete(name: str, **options: Any) -> None:
    """Delete a tenant and revoke its keys (its ledger records stay)."""
    try:
        _tenants(options).delete(name)
        _audit(options, "tenant_delete", name)
    except IntramurosError as exc:
        _fail(exc)
        return
    console.print(f"deleted tenant {name}")


@main.group("keys")
def keys_group() -> None:
    """Create, list and revoke API keys."""


@keys_group.command("create")
@click.option("--tenant", required=True, help="Tenant the key belongs to.")
@click.option("--role", type=click.Choice(["user", "admin"]), default="user", show_default=True)
@click.option("--expires", default=None, help="Lifetime, e.g. 90d, 12h, 30m.")
@click.option("--models", default=None, help="Comma-separated models the key may use.")
@click.option("--rpm", type=click.IntRange(min=1), default=None, help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), default=None, help="Tokens per minute.")
@click.option("--monthly-tokens", type=click.IntRange(min=1), default=None,
              help="Tokens per calendar month.")
@settings_options(*_STATE_FIELDS)
def keys_create(tenant: str, role: str, expires: str | None, models: str | None,
                rpm: int | None, tpm: int | None, monthly_tokens: int | None,
                **options: Any) -> None:  # fmt: skip
    """Create a key and print it once; only its hash is stored."""
    try:
        store = _tenants(options)
        key, info = store.create_key(
            tenant, role=typing.cast(Role, role),
            expires_in=parse_duration(expires) if expires else None,
            models=tuple(m.strip() for m in models.split(",") if m.strip()) if models else None,
            limits=Limits(rpm=rpm, tpm=tpm, monthly_tokens=monthly_tokens),
        )  # fmt: skip
        _audit(options, "key_create", tenant, key_id=info.id, role=role)
    except IntramurosError as exc:
        _fail(exc)
        return
    click.echo(key)
    click.echo(f"key id {info.id}, tenant {info.tenant}, role {info.role}: store the key now, "
               "it cannot be shown again", err=True)  # fmt: skip


@keys_group.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@settings_options(*_STATE_FIELDS)
def keys_list(tenant: str | None, **options: Any) -> None:
    """List keys (never their secrets)."""
    try:
        keys = _tenants(options).keys(tenant)
    except IntramurosError as exc:
        _fail(exc)
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
        table.add_row(k.id, k.tenant, k.role, state, expires, ",".join(k.models or ["*"]))
    console.print(table)


@keys_group.command("revoke")
@click.argument("key_id")
@settings_options(*_STATE_FIELDS)
def keys_revoke(key_id: str, **options: Any) -> None:
    """Revoke a key at once."""
    try:
        _tenants(options).revoke(key_id)
        _audit(options, "key_revoke", None, key_id=key_id)
    except IntramurosError as exc:
        _fail(exc)
        return
    console.print(f"revoked {key_id}")


@main.command("usage")
@click.option("--tenant", default=None, help="Only this tenant.")
@click.option("--since", default=None, help="From this day (YYYY-MM-DD).")
@click.option("--until", default=None, help="Up to this day (YYYY-MM-DD).")
@settings_options(*_STATE_FIELDS)
def usage_cmd(tenant: str | None, since: str | None, until: str | None, **options: Any) -> None:
    """Token, request, energy, cost and CO2e totals by tenant, model and day."""
    from intramuros.gate.quotas import usage_report

    try:
        rows = usage_report(_tenants(options).db, tenant=tenant, since=since, until=until)
    except IntramurosError as exc:
        _fail(exc)
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
    from intramuros.store.db import Database

    settings = _settings(options)
    db = Database(settings.resolved_database_url())
    db.migrate()
    return Ledger(db, LedgerKeys.load(settings.ledger_key_file))


def _actor() -> str:
    """Who ran an admin command: the operating-system user."""
    import getpass

    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli:unknown"


def _audit(options: dict[str, Any], action: str, tenant: str | None, **details: Any) -> None:
    """Append an admin action to the ledger."""
    _ledger(options).append("admin", tenant=tenant, key_id=None, subject=None,
                            data={"action": action, "actor": _actor(), **details})  # fmt: skip


@main.group("ledger")
def ledger_group() -> None:
    """Verify, checkpoint and export the tamper-evident ledger; manage its key."""


@ledger_group.command("verify")
@click.option("--checkpoint", "checkpoint_file", type=click.Path(path_type=Path), default=None,
              help="A checkpoint kept from `ledger checkpoint`: also detects truncation.")
@settings_options(*_STATE_FIELDS, "ledger_key_file")
def ledger_verify(checkpoint_file: Path | None, **options: Any) -> None:
    """Check the whole hash chain (and stored content); exit 1 naming the first bad record."""
    try:
        checkpoint = Checkpoint.from_json(checkpoint_file.read_text()) if checkpoint_file \
            else None  # fmt: skip
        report = _ledger(options).verify(checkpoint)
    except OSError as exc:
        _error(f"cannot read checkpoint: {exc.strerror}")
        return
    except IntramurosError as exc:
        _fail(exc)
        return
    click.echo(json.dumps(report.to_dict(), indent=2))
    if not report.ok:
        _error(f"ledger verification FAILED at record {report.first_bad_seq}: {report.reason}")


@ledger_group.command("checkpoint")
@settings_options(*_STATE_FIELDS, "ledger_key_file")
def ledger_checkpoint(**options: Any) -> None:
    """Print the head of the chain, to keep somewhere the database's admins cannot write."""
    try:
        click.echo(_ledger(options).checkpoint().to_json())
    except IntramurosError as exc:
        _fail(exc)


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
@click.option("--tenant", default=None, help="Only this tenant's records (others redacted).")
@click.option("--since", default=None, help="From this ISO date/time (UTC).")
@click.option("--until", default=None, help="Before this ISO date/time (UTC).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Directory for records.jsonl and manifest.json.")
@settings_options(*_STATE_FIELDS, "ledger_key_file")
def ledger_export(tenant: str | None, since: str | None, until: str | None, out_dir: Path,
                  **options: Any) -> None:  # fmt: skip
    """Write records as JSON lines for an auditor, with a manifest of the chain hashes."""
    try:
        ledger = _ledger(options)
        path = ledger.export(out_dir, tenant=tenant, since=_when(since, "--since"),
                             until=_when(until, "--until"))  # fmt: skip
        _audit(options, "ledger_export", tenant, since=since, until=until)
    except IntramurosError as exc:
        _fail(exc)
        return
    click.echo(f"exported to {path}")


@ledger_group.command("keygen")
@click.argument("path", type=click.Path(path_type=Path))
def ledger_keygen(path: Path) -> None:
    """Create a ledger key file (mode 0600). Keep it off the database host's backups."""
    try:
        generate_key_file(path)
    except IntramurosError as exc:
        _fail(exc)
        return
    click.echo(f"created {path}; start the server with --ledger-key-file {path}")


@ledger_group.command("rotate")
@click.argument("path", type=click.Path(path_type=Path))
def ledger_rotate(path: Path) -> None:
    """Add a new key version and make it current; old versions still decrypt."""
    try:
        keys = rotate(path)
    except IntramurosError as exc:
        _fail(exc)
        return
    click.echo(f"current key version is now {keys.current}")


@main.command("erase")
@click.option("--tenant", required=True, help="Tenant of the subject.")
@click.option("--subject", required=True, help="End-user id the client passed (user/metadata).")
@settings_options(*_STATE_FIELDS, "ledger_key_file")
def erase(tenant: str, subject: str, **options: Any) -> None:
    """Delete a subject's stored content everywhere; the ledger keeps a tombstone."""
    try:
        count = _ledger(options).erase_subject(tenant, subject, actor=_actor())
    except IntramurosError as exc:
        _fail(exc)
        return
    click.echo(f"erased stored content of {count} record(s) of subject {subject!r} in {tenant}")


@main.command("purge")
@click.option("--tenant", default=None, help="Only this tenant (default: every tenant).")
@settings_options(*_STATE_FIELDS, "ledger_key_file", "files_key_file")
def purge(tenant: str | None, **options: Any) -> None:
    """Apply retention now: stored text, files and OCR jobs past each tenant's period.

    Expired files (``expires_after``) of every tenant are deleted too.
    """
    try:
        store = _tenants(dict(options))
        ledger = _ledger(options)
        done = run_retention(store, ledger, actor=_actor(), tenant=tenant)
        documents = _purge_documents(options, store, ledger, tenant)
    except IntramurosError as exc:
        _fail(exc)
        return
    for name, count in done.items():
        click.echo(f"{name}: purged {count} record(s)")
    for name, gone in documents.items():
        click.echo(f"{name}: deleted {len(gone.files)} file(s), {len(gone.jobs)} OCR job(s)")


def _purge_documents(
    options: dict[str, Any], tenants: Tenants, ledger: Ledger, tenant: str | None
) -> dict[str, Purged]:
    from intramuros.docai.retention import purge_documents
    from intramuros.files.store import FileStore

    settings = _settings(options)
    files = FileStore.from_settings(settings, ledger.db)
    return purge_documents(tenants, files, ledger, actor=_actor(), tenant=tenant)


# --------------------------------------------------------------------------
# workloads and tools: each area owns its command group in its own module
# --------------------------------------------------------------------------


def _add_area_commands() -> None:
    from intramuros.bench.cli import bench
    from intramuros.docai.cli import group as docai_group
    from intramuros.kyc.cli import group as kyc_group
    from intramuros.voice.cli import transcribe

    for command in (docai_group, kyc_group, transcribe, bench):
        main.add_command(command)


_add_area_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
