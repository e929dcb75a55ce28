"""The tamper-evident ledger on real SQLite and real PostgreSQL.

Every tamper is done the way an insider with database access would do it:
plain SQL against the tables, bypassing the ledger.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from intramuros.errors import ConfigError, InvalidRequest, NotFound
from intramuros.ledger import (
    GENESIS_HASH,
    Checkpoint,
    Ledger,
    LedgerEntry,
    LedgerKeyError,
    LedgerKeyMissing,
    LedgerKeyRequired,
    LedgerKeys,
    generate_key_file,
    rotate,
    verify_export,
)
from intramuros.ledger.chain import body_hash, record_hash
from intramuros.store.db import Database
from tests.conftest import PG_ADMIN

MARKER = "ZEBRA-MARKER-7f3c1d"  # a plaintext that must never appear in the database file


def sql(db: Database, statement: str, **params: Any) -> Any:
    with db.begin() as conn:
        return conn.execute(sa.text(statement), params)


def call(
    ledger: Ledger, n: int, *, tenant: str = "acme", subject: str | None = "u1", **kw: Any
) -> LedgerEntry:
    return ledger.append(
        "model_call",
        tenant=tenant,
        key_id="key-1",
        subject=subject,
        data={"route": "/v1/chat/completions", "model": "smollm2", "n": n, "status": 200},
        **kw,
    )


def sqlite_bytes(db: Database) -> bytes:
    """The database file and its write-ahead log, as they are on disk."""
    path = Path(db.url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


# --------------------------------------------------------------------------
# Appending and verifying
# --------------------------------------------------------------------------


def test_append_chains_and_verifies(ledger: Ledger) -> None:
    assert ledger.verify().ok and ledger.verify().checked == 0
    assert ledger.checkpoint().seq == 0 and ledger.checkpoint().hash == GENESIS_HASH
    entries = [call(ledger, i, tenant="acme" if i % 2 else "globex") for i in range(5)]
    admin = ledger.append("admin", data={"action": "models add", "name": "big"})
    assert [e.seq for e in [*entries, admin]] == [1, 2, 3, 4, 5, 6]
    assert entries[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    # The hash is exactly the documented formula, so auditors can recompute it.
    e = entries[2]
    assert e.hash == record_hash(e.prev_hash, body_hash(e.hashed_fields()))
    assert admin.tenant is None and admin.data == {"action": "models add", "name": "big"}

    stored = ledger.records()
    assert [r.hash for r in stored] == [e.hash for e in [*entries, admin]]
    assert stored[1].data["n"] == 1 and not stored[1].has_content
    assert [r.seq for r in ledger.records("acme")] == [2, 4]
    assert [r.seq for r in ledger.records(kind="admin")] == [6]
    assert [r.seq for r in ledger.records(since=entries[3].ts)] == [4, 5, 6]
    assert [r.seq for r in ledger.records(until=entries[1].ts)] == [1]
    assert [r.seq for r in ledger.records(after_seq=4, limit=1)] == [5]

    report = ledger.verify()
    assert report.ok and report.checked == 6 and report.first_bad_seq is None
    assert (report.head_seq, report.head_hash) == (6, admin.hash)
    # Every record is MAC'd under the current key version, and verified.
    assert all(e.mac_version == "v1" and e.mac for e in [*entries, admin])
    assert report.authenticated and report.macs_checked == 6 and report.legacy_records == 0
    checkpoint = ledger.checkpoint()
    assert (checkpoint.seq, checkpoint.hash) == (6, admin.hash)
    assert Checkpoint.from_json(checkpoint.to_json()) == checkpoint
    assert ledger.verify(checkpoint).ok
    call(ledger, 7)
    assert ledger.verify(checkpoint).ok  # the chain grew past the checkpoint: fine


def test_bad_input_is_refused(ledger: Ledger) -> None:
    with pytest.raises(InvalidRequest) as exc:
        ledger.append("model_call", data={"x": float("nan")})
    assert exc.value.param == "data"
    with pytest.raises(InvalidRequest):
        ledger.append("model_call", data={"x": object()})
    with pytest.raises(InvalidRequest):
        ledger.append("", data={})
    with pytest.raises(InvalidRequest):
        ledger.append("model_call", tenant="x" * 201, data={})
    with pytest.raises(InvalidRequest):
        Checkpoint.from_json('{"seq": 1}')
    with pytest.raises(NotFound):
        ledger.read_content(99)
    assert ledger.verify().ok and ledger.verify().checked == 0


# --------------------------------------------------------------------------
# Tampering with the records
# --------------------------------------------------------------------------


def _edit_data(db: Database) -> None:
    sql(db, "UPDATE ledger_records SET data = :d WHERE seq = 3", d='{"status":500}')


def _edit_ts(db: Database) -> None:
    sql(db, "UPDATE ledger_records SET ts = ts + 1 WHERE seq = 4")


def _delete_middle(db: Database) -> None:
    sql(db, "DELETE FROM ledger_records WHERE seq = 3")


def _delete_first(db: Database) -> None:
    sql(db, "DELETE FROM ledger_records WHERE seq = 1")


def _delete_and_renumber(db: Database) -> None:
    sql(db, "DELETE FROM ledger_records WHERE seq = 3")
    # Two steps: primary keys are checked row by row, so no in-place shift.
    sql(db, "UPDATE ledger_records SET seq = seq + 1000 WHERE seq > 3")
    sql(db, "UPDATE ledger_records SET seq = seq - 1001 WHERE seq > 1000")


def _insert_forged(db: Database) -> None:
    # Shift records 4.. up by one, then forge a record 4 that links to record 3
    # and carries a correctly recomputed hash.
    with db.begin() as conn:
        prev = conn.execute(sa.text("SELECT hash FROM ledger_records WHERE seq = 3")).scalar_one()
    sql(db, "UPDATE ledger_records SET seq = seq + 1000 WHERE seq >= 4")
    sql(db, "UPDATE ledger_records SET seq = seq - 999 WHERE seq > 1000")
    fields = {
        "seq": 4,
        "ts": time.time(),
        "kind": "admin",
        "tenant": None,
        "key_id": None,
        "subject": None,
        "data": '{"action":"grant admin"}',
        "content_digest": None,
    }
    forged = record_hash(prev, body_hash(fields))
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ledger_records (seq, ts, kind, tenant, key_id, subject, data, "
                "content_digest, prev_hash, hash) VALUES (:seq, :ts, :kind, :tenant, :key_id, "
                ":subject, :data, :content_digest, :prev, :hash)"
            ),
            {**fields, "prev": prev, "hash": forged},
        )


def _swap(db: Database) -> None:
    sql(db, "UPDATE ledger_records SET seq = -3 WHERE seq = 3")
    sql(db, "UPDATE ledger_records SET seq = 3 WHERE seq = 4")
    sql(db, "UPDATE ledger_records SET seq = 4 WHERE seq = -3")


def _edit_and_rehash(db: Database) -> None:
    # Edit record 2 and recompute its hash, but not the records after it.
    with db.begin() as conn:
        row = conn.execute(sa.text("SELECT * FROM ledger_records WHERE seq = 2")).mappings().one()
        fields = {
            name: row[name]
            for name in (
                "seq",
                "ts",
                "kind",
                "tenant",
                "key_id",
                "subject",
                "data",
                "content_digest",
            )
        }
        fields["data"] = '{"status":200,"model":"other"}'
        conn.execute(
            sa.text("UPDATE ledger_records SET data = :data, hash = :hash WHERE seq = 2"),
            {"data": fields["data"], "hash": record_hash(row["prev_hash"], body_hash(fields))},
        )


def _edit_prev_hash_of_first(db: Database) -> None:
    sql(db, "UPDATE ledger_records SET prev_hash = :h WHERE seq = 1", h="1" * 64)


TAMPERS: dict[str, tuple[Callable[[Database], None], int, str]] = {
    "edit data": (_edit_data, 3, "edited"),
    "edit ts": (_edit_ts, 4, "edited"),
    "edit and rehash one record": (_edit_and_rehash, 2, "edited"),
    "edit prev_hash of the first": (_edit_prev_hash_of_first, 1, "edited"),
    "delete middle": (_delete_middle, 3, "deleted"),
    "delete first": (_delete_first, 1, "deleted"),
    "delete and renumber": (_delete_and_renumber, 3, "deleted"),
    "insert forged record": (_insert_forged, 4, "inserted"),
    "swap two records": (_swap, 3, "reordered"),
}


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_tampering_is_detected(ledger: Ledger, db: Database, tamper: str) -> None:
    for i in range(6):
        call(ledger, i)
    assert ledger.verify().ok
    change, first_bad, reason = TAMPERS[tamper]
    change(db)
    report = ledger.verify()
    assert not report.ok
    assert (report.first_bad_seq, report.reason) == (first_bad, reason), report.detail
    assert report.checked == first_bad - 1


def test_truncation_is_detected_against_a_checkpoint(ledger: Ledger, db: Database) -> None:
    for i in range(6):
        call(ledger, i)
    checkpoint = Checkpoint.from_json(ledger.checkpoint().to_json())  # as kept elsewhere
    sql(db, "DELETE FROM ledger_records WHERE seq > 4")
    assert ledger.verify().ok  # nothing inside the chain shows it...
    report = ledger.verify(checkpoint)  # ...only the checkpoint does
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 5, "truncated")


def test_wholesale_rewrite_is_detected_against_a_checkpoint(ledger: Ledger, db: Database) -> None:
    for i in range(5):
        call(ledger, i)
    checkpoint = ledger.checkpoint()
    # Edit record 2 and recompute every hash after it: internally consistent again.
    with db.begin() as conn:
        rows = conn.execute(sa.text("SELECT * FROM ledger_records ORDER BY seq")).mappings().all()
        prev = GENESIS_HASH
        for row in rows:
            fields = {
                name: row[name]
                for name in (
                    "seq",
                    "ts",
                    "kind",
                    "tenant",
                    "key_id",
                    "subject",
                    "data",
                    "content_digest",
                )
            }
            if row["seq"] == 2:
                fields["data"] = '{"status":403}'
            new_hash = record_hash(prev, body_hash(fields))
            conn.execute(
                sa.text(
                    "UPDATE ledger_records SET data = :d, prev_hash = :p, hash = :h WHERE seq = :s"
                ),
                {"d": fields["data"], "p": prev, "h": new_hash, "s": row["seq"]},
            )
            prev = new_hash
    # With the key, the first rewritten record's MAC gives it away.
    report = ledger.verify()
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 2, "forged")
    # Without it, the chain links again; only the checkpoint kept elsewhere shows it.
    keyless = Ledger(db, None)
    assert keyless.verify().ok and not keyless.verify().authenticated
    report = keyless.verify(checkpoint)
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 5, "checkpoint_mismatch")


# --------------------------------------------------------------------------
# Encrypted content
# --------------------------------------------------------------------------


def content(i: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": f"{MARKER} question {i}"}],
        "answer": f"{MARKER} answer {i}",
    }


def test_content_is_encrypted_and_readable_with_the_key(ledger: Ledger, db: Database) -> None:
    entries = [call(ledger, i, content=content(i)) for i in range(3)]
    plain = call(ledger, 3)
    assert all(e.has_content and e.content_digest for e in entries)
    assert plain.content_digest is None
    for i, e in enumerate(entries):
        assert ledger.read_content(e.seq) == content(i)
    assert ledger.read_content(plain.seq) is None
    # The digest proves the content without revealing it: keyed, so not a plain hash.
    raw = json.dumps(content(0), sort_keys=True, separators=(",", ":")).encode()
    assert entries[0].content_digest != hashlib.sha256(raw).hexdigest()
    assert ledger.content_matches(entries[0].seq, content(0))
    assert not ledger.content_matches(entries[0].seq, content(1))
    # Nowhere in the stored rows, nor in the file on disk.
    with db.begin() as conn:
        blobs = conn.execute(sa.text("SELECT ciphertext FROM ledger_content")).scalars().all()
        texts = conn.execute(sa.text("SELECT data FROM ledger_records")).scalars().all()
    assert len(blobs) == 3
    assert not any(MARKER.encode() in bytes(b) for b in blobs)
    assert not any(MARKER in t for t in texts)
    if db.engine.dialect.name == "sqlite":
        on_disk = sqlite_bytes(db)
        assert MARKER.encode() not in on_disk
        assert bytes(blobs[0]) in on_disk  # the check above looked at the right bytes
    report = ledger.verify()
    assert report.ok and report.content_checked == 3 and report.content_unchecked == 0


def test_content_tampering_is_detected(ledger: Ledger, db: Database) -> None:
    for i in range(5):
        call(ledger, i, content=content(i))
    # Record 4 gets record 2's (perfectly valid) ciphertext.
    sql(
        db,
        "UPDATE ledger_content SET key_version = src.key_version, nonce = src.nonce, "
        "ciphertext = src.ciphertext FROM (SELECT key_version, nonce, ciphertext FROM "
        "ledger_content WHERE seq = 2) AS src WHERE ledger_content.seq = 4",
    )
    report = ledger.verify()
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 4, "content_mismatch")
    with pytest.raises(LedgerKeyError):
        ledger.read_content(4)
    assert ledger.read_content(2) == content(1)


def test_edited_ciphertext_is_detected(ledger: Ledger, db: Database) -> None:
    for i in range(3):
        call(ledger, i, content=content(i))
    with db.begin() as conn:
        blob = bytearray(
            conn.execute(
                sa.text("SELECT ciphertext FROM ledger_content WHERE seq = 2")
            ).scalar_one()
        )
        blob[0] ^= 1
        conn.execute(
            sa.text("UPDATE ledger_content SET ciphertext = :c WHERE seq = 2"), {"c": bytes(blob)}
        )
    report = ledger.verify()
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 2, "content_mismatch")


def test_wrong_or_missing_key(db: Database, key_file: Path, tmp_path: Path) -> None:
    ledger = Ledger(db, LedgerKeys.from_file(key_file))
    entry = call(ledger, 0, content=content(0))

    # A different key under the same version name: the record's MAC fails first.
    impostor = Ledger(db, LedgerKeys({"v1": secrets.token_bytes(32)}, "v1"))
    with pytest.raises(LedgerKeyError, match="not the one it was written with"):
        impostor.read_content(entry.seq)
    report = impostor.verify()
    assert (report.ok, report.reason, report.first_bad_seq) == (False, "forged", 1)
    assert "not the one it was written with" in report.detail

    # The version the record was written with is not loaded: refused, not "unchecked".
    other_version = Ledger(db, LedgerKeys({"v9": secrets.token_bytes(32)}, "v9"))
    with pytest.raises(LedgerKeyError, match="'v1', which is not loaded"):
        other_version.read_content(entry.seq)
    report = other_version.verify()
    assert (report.ok, report.reason, report.first_bad_seq) == (False, "unknown_key_version", 1)

    # Without a key: no content, and no record at all once the chain is keyed.
    keyless = Ledger(db, None)
    with pytest.raises(LedgerKeyMissing, match="no ledger key is configured"):
        call(keyless, 1, content=content(1))
    with pytest.raises(LedgerKeyRequired, match="INTRAMUROS_LEDGER_KEY"):
        call(keyless, 2)
    with pytest.raises(LedgerKeyRequired):
        keyless.require_appendable()
    with pytest.raises(LedgerKeyMissing):
        keyless.read_content(entry.seq)
    report = keyless.verify()  # linkage only: ok, but not authenticated
    assert report.ok and report.checked == 1 and report.content_unchecked == 1
    assert not report.authenticated and report.macs_checked == 0
    assert ledger.verify().authenticated


def test_rotation_keeps_old_content_readable(db: Database, key_file: Path) -> None:
    ledger = Ledger(db, LedgerKeys.from_file(key_file))
    old = call(ledger, 0, content=content(0))
    rotated = rotate(key_file)
    assert rotated.current == "v2" and rotated.versions == ["v1", "v2"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    ledger = Ledger(db, LedgerKeys.from_file(key_file))
    new = call(ledger, 1, content=content(1))
    assert ledger.read_content(old.seq) == content(0)
    assert ledger.read_content(new.seq) == content(1)
    with db.begin() as conn:
        versions: dict[int, str] = dict(
            conn.execute(sa.text("SELECT seq, key_version FROM ledger_content")).all()
        )
    assert versions == {old.seq: "v1", new.seq: "v2"}
    assert ledger.verify().content_checked == 2
    assert rotate(key_file).current == "v3"


# --------------------------------------------------------------------------
# Key files and the environment
# --------------------------------------------------------------------------


def test_key_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k" / "keys.json"
    keys = generate_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.current == "v1" and "key" not in repr(keys).lower().replace("ledgerkeys", "")
    doc = json.loads(path.read_text())
    assert doc["format"] == "intramuros-ledger-keys/1" and doc["current"] == "v1"
    assert len(base64.b64decode(doc["keys"]["v1"]["key"])) == 32
    with pytest.raises(ConfigError, match="already exists"):
        generate_key_file(path)

    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        LedgerKeys.from_file(path)
    os.chmod(path, 0o600)
    path.write_text('{"format": "intramuros-ledger-keys/1", "current": "v1", "keys": {}}')
    with pytest.raises(ConfigError, match="holds no keys"):
        LedgerKeys.from_file(path)
    with pytest.raises(ConfigError, match="Cannot read"):
        LedgerKeys.from_file(tmp_path / "missing.json")

    monkeypatch.delenv("INTRAMUROS_LEDGER_KEY", raising=False)
    assert LedgerKeys.load() is None
    raw = secrets.token_bytes(32)
    monkeypatch.setenv("INTRAMUROS_LEDGER_KEY", base64.b64encode(raw).decode())
    env_keys = LedgerKeys.load()
    assert env_keys is not None and env_keys.versions == ["env"] and env_keys.current == "env"
    monkeypatch.setenv("INTRAMUROS_LEDGER_KEY", base64.b64encode(raw[:16]).decode())
    with pytest.raises(ConfigError, match="16 bytes"):
        LedgerKeys.load()
    monkeypatch.setenv("INTRAMUROS_LEDGER_KEY", "not base64!")
    with pytest.raises(ConfigError, match="not valid base64"):
        LedgerKeys.load()


# --------------------------------------------------------------------------
# Erasure and retention
# --------------------------------------------------------------------------


def test_erase_subject(ledger: Ledger, db: Database) -> None:
    alice = [call(ledger, i, subject="alice", content=content(i)) for i in range(2)]
    bob = call(ledger, 2, subject="bob", content=content(2))
    other_tenant = call(ledger, 3, tenant="globex", subject="alice", content=content(3))
    with db.begin() as conn:
        alice_blobs = [
            bytes(b)
            for b in conn.execute(
                sa.text("SELECT ciphertext FROM ledger_content WHERE seq IN (1, 2)")
            ).scalars()
        ]
    sqlite = db.engine.dialect.name == "sqlite"
    if sqlite:
        on_disk = sqlite_bytes(db)
        assert all(blob in on_disk for blob in alice_blobs)

    assert ledger.erase_subject("acme", "alice", actor="dpo@acme") == 2

    assert [ledger.read_content(e.seq) for e in alice] == [None, None]
    assert ledger.read_content(bob.seq) == content(2)
    assert ledger.read_content(other_tenant.seq) == content(3)  # same subject id, other tenant
    tomb = ledger.records(kind="erasure")
    assert len(tomb) == 1
    assert (tomb[0].tenant, tomb[0].subject) == ("acme", "alice")
    assert tomb[0].data == {"actor": "dpo@acme", "count": 2, "seqs": [1, 2]}
    # The digests stay in the chain: the chain verifies and still proves what was said.
    assert ledger.verify().ok
    assert ledger.content_matches(alice[0].seq, content(0))
    if sqlite:
        on_disk = sqlite_bytes(db)
        assert not any(blob in on_disk for blob in alice_blobs)
        assert MARKER.encode() not in on_disk
        assert Path(f"{db.url.removeprefix('sqlite:///')}-wal").stat().st_size == 0

    # A request with nothing left to erase is still on record.
    assert ledger.erase_subject("acme", "alice", actor="dpo@acme") == 0
    assert [t.data["count"] for t in ledger.records(kind="erasure")] == [2, 0]
    assert ledger.verify().ok


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_erasure_scrubs_the_postgres_table_file(ledger: Ledger, db: Database) -> None:
    # The erased rows are the newest: plain VACUUM would leave their bytes in
    # the pages' free space, which is why the ledger runs VACUUM FULL.
    for i in range(20):
        call(ledger, i, subject="bob" if i < 10 else "alice", content=content(i))
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")

    def table_file() -> bytes:
        with admin.connect() as conn:
            conn.execute(sa.text("CHECKPOINT"))  # flush shared buffers to the file
        with db.begin() as conn:
            datadir = conn.execute(sa.text("SHOW data_directory")).scalar_one()
            rel = conn.execute(
                sa.text("SELECT pg_relation_filepath('ledger_content')")
            ).scalar_one()
        path = Path(datadir, rel)
        if not os.access(path, os.R_OK):
            pytest.fail(f"cannot read PostgreSQL's data files ({path}) as this user")
        return path.read_bytes()

    try:
        with db.begin() as conn:
            blobs = [
                bytes(b)
                for b in conn.execute(
                    sa.text("SELECT ciphertext FROM ledger_content WHERE seq > 10")
                ).scalars()
            ]
        assert all(blob in table_file() for blob in blobs)
        assert ledger.erase_subject("acme", "alice", actor="dpo") == 10
        on_disk = table_file()
        assert not any(blob in on_disk for blob in blobs)
        assert ledger.verify().ok
    finally:
        admin.dispose()


def test_purge_by_age(ledger: Ledger, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    old = [call(ledger, i, content=content(i)) for i in range(3)]
    time.sleep(0.01)
    cutoff = time.time()
    time.sleep(0.01)
    new = call(ledger, 3, content=content(3))
    other = call(ledger, 4, tenant="globex", content=content(4))
    # Small batches: one tombstone per batch.
    monkeypatch.setattr("intramuros.ledger.ledger.SHRED_BATCH", 2)
    assert ledger.purge("acme", cutoff, actor="retention-job") == 3
    assert [ledger.read_content(e.seq) for e in old] == [None, None, None]
    assert ledger.read_content(new.seq) == content(3)
    assert ledger.read_content(other.seq) == content(4)
    tombs = ledger.records(kind="purge")
    assert [t.data["seqs"] for t in tombs] == [[1, 2], [3]]
    assert all(t.data["actor"] == "retention-job" and t.data["older_than"] == cutoff for t in tombs)
    assert sum(t.data["count"] for t in tombs) == 3
    report = ledger.verify()
    assert report.ok and report.content_checked == 2
    if db.engine.dialect.name == "sqlite":
        assert MARKER.encode() not in sqlite_bytes(db)


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------


def test_export_and_verify_export(ledger: Ledger, tmp_path: Path) -> None:
    for i in range(6):
        call(ledger, i, tenant="acme" if i % 2 == 0 else "globex", content=content(i))
    checkpoint = ledger.checkpoint()

    full = ledger.export(tmp_path / "full")
    manifest = json.loads((full / "manifest.json").read_text())
    assert (manifest["count"], manifest["first_seq"], manifest["last_seq"]) == (6, 1, 6)
    assert manifest["first_prev_hash"] == GENESIS_HASH and manifest["last_hash"] == checkpoint.hash
    lines = (full / "records.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert MARKER not in (full / "records.jsonl").read_text()  # content is never exported
    report = verify_export(full, checkpoint=checkpoint)
    assert report.ok and report.checked == 6 and report.head_hash == checkpoint.hash

    # One tenant: the other tenant's records in between are redacted, yet linked.
    acme = ledger.export(tmp_path / "acme", tenant="acme")
    text = (acme / "records.jsonl").read_text()
    assert "globex" not in text
    manifest = json.loads((acme / "manifest.json").read_text())
    assert (manifest["first_seq"], manifest["last_seq"], manifest["matched"]) == (1, 5, 3)
    assert verify_export(acme).ok

    since = ledger.export(tmp_path / "since", since=ledger.records()[3].ts)
    assert json.loads((since / "manifest.json").read_text())["first_seq"] == 4
    assert verify_export(since, checkpoint=checkpoint).ok
    empty = ledger.export(tmp_path / "empty", tenant="nobody")
    assert verify_export(empty).ok and verify_export(empty).checked == 0
    with pytest.raises(InvalidRequest):
        ledger.export(full)


def _rewrite(path: Path, change: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text().splitlines()
    path.write_text("".join(line + "\n" for line in change(lines)))


def test_tampered_export_is_detected(ledger: Ledger, tmp_path: Path) -> None:
    for i in range(5):
        call(ledger, i)

    def edited(lines: list[str]) -> list[str]:
        doc = json.loads(lines[2])
        doc["data"] = doc["data"].replace('"status":200', '"status":500')
        return [*lines[:2], json.dumps(doc), *lines[3:]]

    cases: dict[str, tuple[Callable[[list[str]], list[str]], int | None, str]] = {
        "edit": (edited, 3, "edited"),
        "drop a line": (lambda lines: lines[:1] + lines[2:], 2, "deleted"),
        "drop the last line": (lambda lines: lines[:-1], None, "manifest_mismatch"),
        "swap": (lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], 2, "reordered"),
        "garbage": (lambda lines: [*lines[:3], "{not json", *lines[4:]], None, "malformed"),
        "reformat": (
            lambda lines: [json.dumps(json.loads(x), indent=1).replace("\n", "") for x in lines],
            None,
            "manifest_mismatch",
        ),
    }
    for name, (change, seq, reason) in cases.items():
        out = ledger.export(tmp_path / name.replace(" ", "-"))
        assert verify_export(out).ok
        _rewrite(out / "records.jsonl", change)
        report = verify_export(out)
        assert (report.ok, report.first_bad_seq, report.reason) == (False, seq, reason), name

    out = ledger.export(tmp_path / "manifest")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["last_hash"] = "f" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert verify_export(out).reason == "manifest_mismatch"
    assert verify_export(tmp_path / "nowhere").reason == "malformed"


# --------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------


@pytest.mark.parametrize("sharing", ["one ledger", "one database object per thread"])
def test_concurrent_appends(db: Database, key_file: Path, sharing: str) -> None:
    keys = LedgerKeys.from_file(key_file)
    shared = Ledger(db, keys)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(t: int) -> None:
        own = None if sharing == "one ledger" else Database(db.url)
        ledger = shared if own is None else Ledger(own, keys)
        try:
            start.wait()
            for i in range(25):
                call(
                    ledger, t * 100 + i, tenant=f"t{t}", content=content(i) if i % 5 == 0 else None
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            if own is not None:
                own.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    records = shared.records(limit=1000)
    assert [r.seq for r in records] == list(range(1, 101))
    assert sorted(r.data["n"] for r in records) == sorted(
        t * 100 + i for t in range(4) for i in range(25)
    )
    report = shared.verify()
    assert report.ok and report.checked == 100 and report.content_checked == 20
