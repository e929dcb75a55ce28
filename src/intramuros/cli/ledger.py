"""``intramuros ledger``, ``erase`` and ``purge``: the tamper-evident ledger, erasure
and retention."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from intramuros.cli.store import audit, ledger_for, store_for, tenants_for
from intramuros.errors import IntramurosError
from intramuros.gate.retention import run_retention
from intramuros.gate.tenants import Tenants
from intramuros.ledger import (
    Checkpoint,
    LedgerKeys,
    PublicKeys,
    VerifyReport,
    generate_key_file,
    load_checkpoint,
    rotate,
    verify_export,
)
from intramuros.platform.cli import (
    STATE_FIELDS,
    actor,
    error,
    fail,
    load_options,
    settings_options,
)
from intramuros.platform.plugin import Retention, installed_workloads


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


@click.group("ledger")
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
        report = ledger_for(options).verify(checkpoint)
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
        checkpoint = ledger_for(options).checkpoint()
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
        ledger = ledger_for(options)
        ledger.require_appendable()  # the export is recorded: refuse before writing it
        if tenant is not None:
            tenant = _tenant_or_deleted(tenants_for(dict(options)), tenant)
        path = ledger.export(out_dir, tenant=tenant, since=_when(since, "--since"),
                             until=_when(until, "--until"))  # fmt: skip
        audit(options, "ledger_export", tenant, since=since, until=until)
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


@click.command("erase")
@click.option("--tenant", required=True, help="Tenant of the subject.")
@click.option("--subject", required=True, help="End-user id the client passed (user/metadata).")
@settings_options(*STATE_FIELDS, "ledger_key_file")
def erase(tenant: str, subject: str, **options: Any) -> None:
    """Delete a subject's stored content everywhere; the ledger keeps a tombstone."""
    from intramuros.gate.privacy import provisional_subject, subject_digests

    try:
        tenant_id = tenants_for(dict(options)).resolve(tenant)
        ledger = ledger_for(options)
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


@click.command("purge")
@click.option("--tenant", default=None, help="Only this tenant (default: every tenant).")
@settings_options(*STATE_FIELDS, "files_key_file")
def purge(tenant: str | None, **options: Any) -> None:
    """Apply retention now: stored text, and each workload's data (files, OCR jobs ...)
    past each tenant's period.

    Expired files (``expires_after``) of every tenant are deleted too.
    """
    try:
        settings = load_options(dict(options))
        store = store_for(options)
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
