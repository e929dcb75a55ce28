"""What a workload's worker process may open of the platform: its own tables.

A workload that runs work in processes of its own (the KYC matcher) cannot
be handed the server's database object; it opens the installation's
database by URL (``settings.resolved_database_url()``), with the same
set-up as the server's, and reads or writes only its own tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from intramuros.catalog.records import AdapterSpec, ModelRecord
from intramuros.platform.interface import Auditor, UnitOfWork
from intramuros.settings import Settings
from intramuros.store.db import Database


class WorkerTables:
    """A workload's tables in a worker process (a :class:`UnitOfWork`)."""

    def __init__(self, database_url: str) -> None:
        self._db = Database(database_url)

    @property
    def host(self) -> str | None:
        """The database server's host (None for SQLite): the one place a worker may reach."""
        return self._db.engine.url.host

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction (database failures surface as ``ServerError``)."""
        with self._db.begin() as conn:
            yield conn

    def close(self) -> None:
        """Close the database's connections."""
        self._db.engine.dispose()


def open_tables(database_url: str) -> WorkerTables:
    """The installation's database, for a worker process's own tables."""
    return WorkerTables(database_url)


class WorkerInstallation:
    """What a workload's long-running worker process (the training worker) may open of
    its installation: its own tables, the ledger to record what it did, and the
    catalogue, to register the adapter it made."""

    def __init__(self, settings: Settings) -> None:
        from intramuros.ledger import Ledger, LedgerKeys

        self.settings = settings
        self._db = Database(settings.resolved_database_url())
        self._db.migrate()
        self._ledger = Ledger(self._db, LedgerKeys.load(settings.ledger_key_file))

    @property
    def tables(self) -> UnitOfWork:
        """The workload's tables."""
        return self._db

    @property
    def auditor(self) -> Auditor:
        """The installation's ledger."""
        return self._ledger

    def model_record(self, name: str) -> ModelRecord:
        """A catalogue record (``ModelNotFound`` if there is none)."""
        from intramuros.catalog.catalog import Catalog

        return Catalog(self._db, self.settings).get(name)

    def add_adapter(self, adapter: AdapterSpec) -> ModelRecord:
        """Register a LoRA adapter GGUF (as ``Platform.add_adapter``)."""
        from intramuros.catalog.catalog import Catalog

        return Catalog(self._db, self.settings).register_adapter(adapter)

    def add_merged(self, path: Path, *, name: str, license: str, owner: str | None,
                   lineage: dict[str, Any]) -> ModelRecord:  # fmt: skip
        """Register a standalone GGUF made from a model of the catalogue (an adapter
        merged into its base), kept to ``owner``, with its lineage."""
        from intramuros.catalog.catalog import Catalog

        return Catalog(self._db, self.settings).add_file(
            path, name=name, license=license, owner=owner, lineage=lineage, replace=True)

    def forget_model(self, name: str) -> bool:
        """Take a model this worker registered out of the catalogue; whether it was there."""
        from intramuros.catalog.catalog import Catalog
        from intramuros.errors import ModelNotFound

        try:
            Catalog(self._db, self.settings).remove(name)
        except ModelNotFound:
            return False
        return True

    def close(self) -> None:
        """Close the database's connections."""
        self._db.close()
