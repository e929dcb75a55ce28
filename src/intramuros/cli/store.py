"""What every ``intramuros`` command shares: the installation's state and the ledger.

The group in :mod:`intramuros.cli` gives each command a :class:`Commands`; the
helpers here open the state from a command's options through it, once per
command, and record admin actions in the ledger.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import click

from intramuros.catalog.catalog import Catalog
from intramuros.gate.tenants import Tenants
from intramuros.ledger import Ledger, LedgerKeys
from intramuros.platform.cli import actor, context, load_options
from intramuros.platform.interface import Platform
from intramuros.settings import Settings
from intramuros.store.db import Database


class Store:
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
        return self.tenants.resolve_or_implicit(name)


class Commands:
    """What ``intramuros`` gives its commands (a ``CliContext``): the state, opened once
    per command, and an in-process platform."""

    def __init__(self) -> None:
        self._stores: dict[tuple[str, str], Store] = {}

    def store(self, settings: Settings) -> Store:
        where = (settings.resolved_database_url(), str(settings.ledger_key_file))
        if where not in self._stores:
            opened = Store(settings)
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


def store_for(options: dict[str, Any]) -> Store:
    """The installation's state, with the command's options as settings."""
    commands = context()
    assert isinstance(commands, Commands)
    return commands.store(load_options(dict(options)))


def tenants_for(options: dict[str, Any]) -> Tenants:
    return store_for(options).tenants


def ledger_for(options: dict[str, Any]) -> Ledger:
    return store_for(options).ledger


def catalog_for(options: dict[str, Any]) -> Catalog:
    catalog = Catalog(store_for(options).db, load_options(dict(options)))
    catalog.sync_bundled()
    return catalog


def audit(options: dict[str, Any], action: str, tenant: str | None, **details: Any) -> None:
    """Append an admin action to the ledger."""
    ledger_for(options).append("admin", tenant=tenant, key_id=None, subject=None,
                               data={"action": action, "actor": actor(), **details})  # fmt: skip


def auditable(options: dict[str, Any]) -> None:
    """Refuse an admin action now if its ledger record would be refused after it.

    A keyed ledger takes no record without the key: check before acting, so
    that nothing is done off the record.
    """
    ledger_for(dict(options)).require_appendable()
