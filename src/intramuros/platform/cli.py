"""What the command line offers every command, ours and the workloads': options made from
the settings, one-line errors, the acting user, and an in-process platform.

A workload contributes its command through its plug-in
(:class:`~intramuros.platform.plugin.WorkloadPlugin`), given a :class:`CliContext`:
commands that need models, the ledger or the database get them from
``context.open(settings)``, an in-process platform, never by building the core
themselves.
"""

from __future__ import annotations

import getpass
import sys
import types
import typing
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, NoReturn, Protocol, get_args, get_origin

import click
from rich.console import Console

from intramuros.errors import IntramurosError
from intramuros.platform.interface import Auditor, Platform, UnitOfWork
from intramuros.settings import Settings, load_settings, settings_class

# Piped output (| grep, CI logs) must not wrap: names and hashes stay whole.
console = Console(width=None if sys.stdout.isatty() else 1000)

# Settings every command accepts (where the state lives, and the ledger key that
# records written there need); `serve` takes all.
STATE_FIELDS = ("data_dir", "database_url", "config", "ledger_key_file")


class CliStore(Protocol):
    """The state a command reads and writes without models: tables, ledger, tenants."""

    @property
    def tables(self) -> UnitOfWork:
        """The database (migrated), for a workload's own tables."""
        ...

    @property
    def auditor(self) -> Auditor:
        """The ledger (it refuses to append to a keyed chain without the key)."""
        ...

    def tenant_id(self, name: str) -> str:
        """The id of the live tenant called ``name`` (``NotFound`` if none)."""
        ...


class CliContext(Protocol):
    """What the ``intramuros`` command gives every command, as click's context object.

    A command gets it with :func:`context`.
    """

    def store(self, settings: Settings) -> CliStore:
        """The database and the ledger, for commands that need no model."""
        ...

    def open(self, settings: Settings) -> AbstractAsyncContextManager[Platform]:
        """The platform in this process: database migrated, catalogue ready, no server."""
        ...


def context() -> CliContext:
    """The running ``intramuros`` command's context (set by its main group)."""
    found: Any = click.get_current_context().obj
    if found is None:
        raise click.UsageError("this command runs under `intramuros`")
    context_object: CliContext = found
    return context_object


def click_type(annotation: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for a settings field's annotation."""
    origin = get_origin(annotation)
    args = [a for a in get_args(annotation) if a is not type(None)]
    if origin in (types.UnionType, typing.Union) and len(args) == 1:
        return click_type(args[0])
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
    """Click options made from settings fields (every section's; default: all of them).

    Each option's help is the field's description, with its environment variable.
    """
    fields = settings_class().model_fields
    chosen = tuple(dict.fromkeys(names)) or tuple(fields)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(chosen):
            info = fields[name]
            kind, is_flag = click_type(info.annotation)
            flag = "--" + name.replace("_", "-")
            env = "INTRAMUROS_" + name.upper()
            decls = [f"{flag}/--no-{name.replace('_', '-')}"] if is_flag else [flag]
            func = click.option(
                *decls, name, type=None if is_flag else kind, default=None,
                help=f"{info.description} [env: {env}]", show_default=False,
            )(func)  # fmt: skip
        return func

    return decorate


def load_options(options: dict[str, Any]) -> Settings:
    """The settings, with the command's options as the highest-priority source."""
    return load_settings(**options)


def error(message: str) -> NoReturn:
    """One line on stderr, never wrapped, then exit 1."""
    click.echo("error: " + " ".join(message.split()), err=True)
    sys.exit(1)


def fail(exc: IntramurosError) -> NoReturn:
    """An error of ours, in one line, then exit 1."""
    error(exc.message)


def actor() -> str:
    """Who ran a command: the operating-system user."""
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli:unknown"
