"""The ledger's database mechanics: the append lock and scrubbing erased content."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from intramuros.errors import ServerError
from intramuros.ledger.errors import LedgerScrubError
from intramuros.store.db import Database
from intramuros.store.driver import driver_sql


@contextmanager
def locked(db: Database, *, secure_delete: bool = False) -> Iterator[Connection]:
    """A write transaction that holds the ledger's append lock until it ends.

    The chain needs one writer at a time: two appends reading the same head
    would fork it. On SQLite, ``BEGIN IMMEDIATE`` takes the database's
    write lock before the head is read (a plain deferred BEGIN would only
    take it at the INSERT, after both writers read the same head; the
    loser then fails instead of waiting). On PostgreSQL, ``LOCK TABLE ...
    IN SHARE ROW EXCLUSIVE MODE``: it conflicts with itself and with every
    INSERT/UPDATE/DELETE but not with readers, is scoped to this schema's
    table, and is released at commit or rollback. ``SELECT ... FOR UPDATE``
    on the head row is not enough for an append-only table: there is no
    row to lock while it is empty, and a waiter that wakes re-reads the old
    head row, not the one just inserted after it, so both would take the
    same seq. An advisory lock would work too, but its key is per database,
    not per schema, and needs a magic number.
    """
    try:
        if db.engine.dialect.name == "sqlite":
            with db.engine.connect() as conn:
                # Autocommit at the driver so that pysqlite issues no BEGIN
                # of its own; we write BEGIN IMMEDIATE / COMMIT ourselves.
                conn.execution_options(isolation_level="AUTOCOMMIT")
                previous = None
                if secure_delete:
                    # Freed cells are overwritten with zeros, not just unlinked.
                    previous = conn.exec_driver_sql("PRAGMA secure_delete").scalar()
                    conn.exec_driver_sql("PRAGMA secure_delete=ON")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    with contextlib.suppress(SQLAlchemyError):
                        conn.exec_driver_sql("ROLLBACK")
                    raise
                conn.exec_driver_sql("COMMIT")
                if previous is not None:
                    conn.exec_driver_sql(f"PRAGMA secure_delete={int(previous)}")
        else:
            with db.engine.begin() as conn:
                conn.execute(sa.text("LOCK TABLE ledger_records IN SHARE ROW EXCLUSIVE MODE"))
                yield conn
    except SQLAlchemyError as exc:
        raise ServerError(f"Ledger database error: {type(exc).__name__}") from exc


def writer_connection(db: Database) -> Connection:
    """A connection for one writer to keep and pass to :func:`locked_on` (close it when
    done, or after an error). On SQLite it is in autocommit mode at the driver, so that
    ``locked_on`` can issue ``BEGIN IMMEDIATE`` itself."""
    try:
        conn = db.engine.connect()
        if db.engine.dialect.name == "sqlite":
            conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn
    except SQLAlchemyError as exc:
        raise ServerError(f"Ledger database error: {type(exc).__name__}") from exc


@contextmanager
def locked_on(conn: Connection) -> Iterator[Connection]:
    """As :func:`locked`, on a connection from :func:`writer_connection`: no connection
    is taken from the pool or set up for each transaction."""
    try:
        if conn.dialect.name == "sqlite":
            # On the driver's cursor: the connection is in autocommit mode at the driver,
            # and this is every call record's transaction (store/driver.py says why).
            driver_sql(conn, "BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(SQLAlchemyError):
                    driver_sql(conn, "ROLLBACK")
                raise
            driver_sql(conn, "COMMIT")
        else:
            with conn.begin():
                conn.execute(sa.text("LOCK TABLE ledger_records IN SHARE ROW EXCLUSIVE MODE"))
                yield conn
    except SQLAlchemyError as exc:
        raise ServerError(f"Ledger database error: {type(exc).__name__}") from exc


def scrub(db: Database, erased: int, *, pg_vacuum_full: bool) -> None:
    """Rewrite the database so that deleted ciphertext leaves its files on disk.

    SQLite: the DELETE ran with ``secure_delete`` (freed cells zeroed);
    ``VACUUM`` then rebuilds the file without free pages, and a TRUNCATE
    checkpoint empties the write-ahead log, which still holds the old page
    images. PostgreSQL (outside a transaction, as VACUUM must run): plain
    ``VACUUM`` only marks dead tuples' space free, and a dead tuple lying
    in what becomes a page's free gap keeps its bytes in the table file
    until reused (measured on PostgreSQL 15). ``VACUUM FULL`` rewrites the
    table into a new file and drops the old one, at the price of an
    exclusive lock on ``ledger_content`` for the rewrite (appends with
    content wait; appends without do not). Neither reaches PostgreSQL's
    WAL segments, WAL archives or backups, which keep the ciphertext until
    they are recycled.
    """
    try:
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            if db.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("VACUUM")
                busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
                if busy:
                    raise LedgerScrubError(
                        f"Erased {erased} content rows, but readers kept the write-ahead "
                        "log from being emptied; run `PRAGMA wal_checkpoint(TRUNCATE)` "
                        "when the server is idle.",
                        erased=erased,
                    )
            elif pg_vacuum_full:
                conn.exec_driver_sql("VACUUM FULL ledger_content")
            else:
                conn.exec_driver_sql("VACUUM ledger_content")
    except SQLAlchemyError as exc:
        raise LedgerScrubError(
            f"Erased {erased} content rows (recorded in the ledger), but VACUUM failed "
            f"({type(exc).__name__}); run it again before relying on the erasure on disk.",
            erased=erased,
        ) from exc
