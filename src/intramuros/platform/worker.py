"""What a workload's worker process may open of the platform: its own tables.

A workload that runs work in processes of its own (the KYC matcher) cannot
be handed the server's database object; it opens the installation's
database by URL (``settings.resolved_database_url()``), with the same
set-up as the server's, and reads or writes only its own tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection

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
