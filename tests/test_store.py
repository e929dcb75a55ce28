"""The store on real SQLite and real PostgreSQL: migrations and the catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from intramuros.catalog.catalog import Catalog
from intramuros.errors import ConfigError, InvalidRequest, ModelNotFound
from intramuros.settings import Settings
from intramuros.store.db import Database, installed_migrations


def test_migrations_apply_once(db_url: str) -> None:
    db = Database(db_url)
    steps = [(m.area, m.step) for m in installed_migrations()]
    assert db.migrate() == steps
    assert db.migrate() == []
    assert sorted(db.applied_steps()) == sorted(steps)
    names = set(sa.inspect(db.engine).get_table_names())
    assert {"schema_steps", "models", "request_log", "tenants", "files", "kyc_cases"} <= names
    db.close()


def test_catalogue_round_trip(db_url: str, tmp_path: Path) -> None:
    db = Database(db_url)
    db.migrate()
    catalog = Catalog(db, Settings(data_dir=tmp_path))
    bundled = catalog.sync_bundled()
    assert {"smollm2-135m-instruct", "all-minilm-l6-v2"} <= set(bundled)
    first = catalog.get("smollm2-135m-instruct")
    catalog.sync_bundled()  # again: same record, creation time kept
    assert catalog.get("smollm2-135m-instruct") == first
    up = catalog.add_upstream(name="big-model", base_url="http://127.0.0.1:9/v1",
                              upstream_model="llama-70b")  # fmt: skip
    assert catalog.get("big-model") == up
    assert up.options == {"base_url": "http://127.0.0.1:9/v1", "upstream_model": "llama-70b"}
    with pytest.raises(InvalidRequest) as dup:
        catalog.add_upstream(name="big-model", base_url="http://127.0.0.1:9/v1")
    assert dup.value.param == "name"
    catalog.remove("big-model")
    with pytest.raises(ModelNotFound):
        catalog.get("big-model")
    with pytest.raises(ModelNotFound):
        catalog.remove("big-model")
    db.log_request(request_id="r1", ts=1.0, route="/v1/chat/completions", model="m", status=200,
                   prompt_tokens=3, completion_tokens=4, latency_ms=5.0)  # fmt: skip
    assert db.recent_requests()[0]["completion_tokens"] == 4
    db.close()


def test_bad_database_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Database("nosuchdialect://x").migrate()
    db = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(ConfigError) as exc:
        db.migrate()
    assert "Cannot prepare the database" in exc.value.message
    assert "Traceback" not in exc.value.message
