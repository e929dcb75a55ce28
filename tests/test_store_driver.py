"""Statements run on the driver's cursor (store/driver.py), on SQLite and PostgreSQL.

They replace SQLAlchemy's execution for the call records' statements, so they
must send what SQLAlchemy sends: the same rows, counts, types through the
columns' bind processors, literals of the statement, and driver errors as
SQLAlchemy's exceptions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from intramuros.store.driver import DriverStatement, driver_sql

META = sa.MetaData()
ITEMS = sa.Table(
    "driver_items", META,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("weight", sa.Float, nullable=True),
    sa.Column("blob", sa.LargeBinary, nullable=True),
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Column("with_default", sa.Integer, nullable=False, default=7),
)  # fmt: skip
ROW = {"name": "a", "count": 1, "weight": 0.5, "blob": b"\x00\xff", "done": True,
       "with_default": 1}  # fmt: skip
INSERT = DriverStatement(ITEMS.insert())
ADD = DriverStatement(ITEMS.update().where(ITEMS.c.name == sa.bindparam("b_name")).values(
    count=ITEMS.c.count + sa.bindparam("b_add", type_=sa.Integer)))  # fmt: skip
LAST = DriverStatement(sa.select(ITEMS.c.name, ITEMS.c.count, ITEMS.c.blob, ITEMS.c.done)
                       .order_by(ITEMS.c.name.desc()).limit(1))  # fmt: skip


@pytest.fixture
def engine(db_url: str) -> Any:
    if db_url.startswith("sqlite:///"):
        Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(db_url)
    META.create_all(engine)
    yield engine
    engine.dispose()


def rows(engine: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(ITEMS).order_by(ITEMS.c.name))]


def test_rows_counts_and_types_are_what_sqlalchemy_would_write(engine: Any) -> None:
    with engine.begin() as conn:
        assert INSERT.execute(conn, [ROW, {**ROW, "name": "b", "blob": None,
                                           "done": False}]) == 2  # fmt: skip
        assert INSERT.execute(conn, {**ROW, "name": "c"}) == 1
        assert ADD.execute(conn, {"b_name": "a", "b_add": 41}) == 1
        assert ADD.execute(conn, {"b_name": "nobody", "b_add": 1}) == 0
        name, count, blob, done = LAST.first(conn)
        assert (name, count, bytes(blob), bool(done)) == ("c", 1, b"\x00\xff", True)
    got = rows(engine)
    assert [r["name"] for r in got] == ["a", "b", "c"]
    assert got[0]["count"] == 42 and got[0]["blob"] == b"\x00\xff" and got[0]["done"] is True
    assert got[1]["blob"] is None and got[1]["done"] is False


def test_an_empty_batch_does_nothing_and_a_query_on_no_rows_is_none(engine: Any) -> None:
    with engine.begin() as conn:
        assert INSERT.execute(conn, []) == 0
        assert LAST.first(conn) is None


def test_the_statements_join_the_callers_transaction(engine: Any) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        INSERT.execute(conn, ROW)
        raise RuntimeError("rolled back")
    assert rows(engine) == []


def test_driver_errors_are_sqlalchemy_errors(engine: Any) -> None:
    with engine.begin() as conn:
        INSERT.execute(conn, ROW)
        with pytest.raises(sa.exc.IntegrityError):
            INSERT.execute(conn, ROW)  # the same primary key
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError):
        driver_sql(conn, "SELECT * FROM no_such_table")


def test_a_parameter_left_to_a_column_default_is_refused(engine: Any) -> None:
    partial = {k: v for k, v in ROW.items() if k != "with_default"}
    with engine.begin() as conn, pytest.raises(ValueError, match="with_default"):
        INSERT.execute(conn, partial)
