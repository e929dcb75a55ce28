"""``intramuros tenants``, ``keys`` and ``usage``: who may call, with what policy, and
how much they used."""

from __future__ import annotations

import time
import typing
from collections.abc import Callable
from typing import Any

import click
from pydantic import ValidationError
from rich.table import Table

from intramuros.cli.store import audit, auditable, ledger_for, tenants_for
from intramuros.errors import IntramurosError
from intramuros.gate.policy import Limits, TenantPolicy
from intramuros.gate.tenants import Role, parse_duration
from intramuros.platform.cli import (
    STATE_FIELDS,
    actor,
    console,
    fail,
    load_options,
    settings_options,
)


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


@click.group("tenants")
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
        auditable(options)
        store = tenants_for(options)
        info = store.create(name, policy)
        audit(options, "tenant_create", info.id, name=name, policy=policy.model_dump())
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
        auditable(options)
        store = tenants_for(options)
        tenant = store.get(name)
        policy = _policy_from(flags, tenant.policy)
        store.set_policy(tenant.id, policy)
        audit(options, "tenant_policy", tenant.id, policy=policy.model_dump())
    except IntramurosError as exc:
        fail(exc)
        return
    click.echo(policy.model_dump_json(indent=2))


@tenants_group.command("list")
@settings_options(*STATE_FIELDS)
def tenants_list(**options: Any) -> None:
    """List tenants: name, id (what records store), policy."""
    try:
        for tenant in tenants_for(options).all():
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
        store = tenants_for(dict(options))
        ledger = ledger_for(options)
        ledger.require_appendable()
        ctx = purge_context(settings, store.db, ledger, actor())
        tomb, counts = delete_tenant(ctx, store, name)
    except IntramurosError as exc:
        fail(exc)
        return
    done = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    console.print(f"deleted tenant {name} (id {tomb.id}, never reused): {done or 'no data'}",
                  highlight=False)


@click.group("keys")
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
        auditable(options)
        store = tenants_for(options)
        tenant_id = store.resolve(tenant)
        key, info = store.create_key(
            tenant_id, role=typing.cast(Role, role),
            expires_in=parse_duration(expires) if expires else None,
            models=tuple(m.strip() for m in models.split(",") if m.strip()) if models else None,
            limits=Limits(rpm=rpm, tpm=tpm, monthly_tokens=monthly_tokens),
        )  # fmt: skip
        audit(options, "key_create", tenant_id, key_id=info.id, role=role)
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
        store = tenants_for(options)
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
        auditable(options)
        store = tenants_for(options)
        key = store.key(key_id)
        store.revoke(key_id)
        audit(options, "key_revoke", key.tenant, key_id=key_id)
    except IntramurosError as exc:
        fail(exc)
        return
    console.print(f"revoked {key_id}")


@click.command("usage")
@click.option("--tenant", default=None, help="Only this tenant.")
@click.option("--since", default=None, help="From this day (YYYY-MM-DD).")
@click.option("--until", default=None, help="Up to this day (YYYY-MM-DD).")
@settings_options(*STATE_FIELDS)
def usage_cmd(tenant: str | None, since: str | None, until: str | None, **options: Any) -> None:
    """Token, request, energy, cost and CO2e totals by tenant, model and day."""
    from intramuros.gate.quotas import usage_report

    try:
        store = tenants_for(options)
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
