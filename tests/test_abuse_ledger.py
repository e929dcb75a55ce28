"""Forging the ledger as a database writer would, on real SQLite and real PostgreSQL.

The attacker here can run any SQL against the ledger's tables (a database
administrator, a stolen database password, a restored backup) but does not
hold the ledger key, which lives on the gateway host only. Each forgery is
done the careful way: every hash recomputed with the published formula, so
the chain still links. Verification with the key must name the first forged
record; a third party holding only signed checkpoints and the public keys must
refuse forged or altered checkpoints and exports.

The first tests use only what the ledger offered before records were keyed,
so that they run (and fail) against that code too.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from intramuros.ledger import (
    Checkpoint,
    Ledger,
    LedgerEntry,
    LedgerKeys,
    rotate,
    verify_export,
)
from intramuros.ledger.chain import GENESIS_HASH, body_hash, record_hash
from intramuros.store.db import Database
from tests.conftest import open_db, steps_before

FIELDS = ("seq", "ts", "kind", "tenant", "key_id", "subject", "data", "content_digest")


def call(ledger: Ledger, n: int, *, tenant: str = "acme", subject: str = "u1",
         content: bool = False) -> LedgerEntry:  # fmt: skip
    return ledger.append(
        "model_call", tenant=tenant, key_id="key-1", subject=subject,
        data={"route": "/v1/chat/completions", "model": "smollm2", "n": n, "status": 200},
        content={"prompt": [f"question {n}"], "output": f"answer {n}"} if content else None,
    )  # fmt: skip


def fill(ledger: Ledger, n: int = 6, *, content: bool = False) -> None:
    for i in range(n):
        call(ledger, i, content=content)


def rows(db: Database) -> list[dict[str, Any]]:
    with db.begin() as conn:
        result = conn.execute(sa.text("SELECT * FROM ledger_records ORDER BY seq"))
        return [dict(r) for r in result.mappings()]


ADMIN_GRANT = '{"action":"key_create","role":"admin"}'


def forge_tail(db: Database, *, kind: str = "admin", data: str = ADMIN_GRANT, **extra: Any) -> int:
    """Append a record with a correctly computed hash, linked to the head; return its seq.

    ``extra`` sets more columns as they are stored (a MAC, say).
    """
    head = rows(db)[-1]
    fields = {
        "seq": head["seq"] + 1, "ts": time.time(), "kind": kind, "tenant": None,
        "key_id": None, "subject": None, "data": data, "content_digest": None,
    }  # fmt: skip
    values = {**fields, "prev_hash": head["hash"], **extra}
    values["hash"] = record_hash(head["hash"], body_hash(fields))
    columns = ", ".join(values)
    with db.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO ledger_records ({columns}) VALUES "
                    f"({', '.join(':' + c for c in values)})"),
            values,
        )  # fmt: skip
    return int(fields["seq"])


def rewrite_and_rehash(db: Database, seq: int, data: str) -> None:
    """Edit record ``seq`` and recompute its hash and every hash after it."""
    prev = GENESIS_HASH
    with db.begin() as conn:
        for row in rows(db):
            fields = {name: row[name] for name in FIELDS}
            if row["seq"] == seq:
                fields["data"] = data
            new = record_hash(prev, body_hash(fields))
            conn.execute(
                sa.text("UPDATE ledger_records SET data = :d, prev_hash = :p, hash = :h "
                        "WHERE seq = :s"),
                {"d": fields["data"], "p": prev, "h": new, "s": row["seq"]},
            )  # fmt: skip
            prev = new


def outcome(report: Any) -> tuple[bool, int | None, str | None]:
    return report.ok, report.first_bad_seq, report.reason


# --------------------------------------------------------------------------
# The four forgeries, each with the key holder's verification
# --------------------------------------------------------------------------


def test_a_record_appended_at_the_tail_fails(ledger: Ledger, db: Database) -> None:
    fill(ledger)
    forged = forge_tail(db)
    assert outcome(ledger.verify()) == (False, forged, "unauthenticated")


def test_a_tail_append_fails_against_a_checkpoint_too(ledger: Ledger, db: Database) -> None:
    fill(ledger)
    checkpoint = Checkpoint.from_json(ledger.checkpoint().to_json())  # kept elsewhere
    forged = forge_tail(db)
    assert outcome(ledger.verify(checkpoint)) == (False, forged, "unauthenticated")


def test_a_rewrite_rehashing_every_later_record_fails(ledger: Ledger, db: Database) -> None:
    fill(ledger)
    rewrite_and_rehash(db, 2, '{"route":"/v1/chat/completions","status":403}')
    report = ledger.verify()
    assert outcome(report) == (False, 2, "forged"), report.detail
    assert report.checked == 1


def test_a_content_row_deleted_without_tombstone_fails(ledger: Ledger, db: Database) -> None:
    fill(ledger, content=True)
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM ledger_content WHERE seq = 3"))
    report = ledger.verify()
    assert outcome(report) == (False, 3, "content_deleted"), report.detail


def test_content_under_an_unknown_key_version_fails(ledger: Ledger, db: Database) -> None:
    fill(ledger, content=True)
    with db.begin() as conn:
        conn.execute(
            sa.text("UPDATE ledger_content SET key_version = 'v999', ciphertext = :c "
                    "WHERE seq = 2"),
            {"c": secrets.token_bytes(64)},
        )  # fmt: skip
    report = ledger.verify()
    assert outcome(report) == (False, 2, "unknown_key_version"), report.detail


FORGERIES = ["tail append", "rewrite and rehash", "content deleted", "unknown key version"]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_the_cli_exits_1_naming_the_forged_record(tmp_path: Path, key_file: Path,
                                                 forgery: str) -> None:  # fmt: skip
    data_dir = tmp_path / "data"
    db = open_db(f"sqlite:///{data_dir / 'intramuros.db'}")
    ledger = Ledger(db, LedgerKeys.from_file(key_file))
    fill(ledger, content=True)
    if forgery == "tail append":
        bad = forge_tail(db)
    elif forgery == "rewrite and rehash":
        bad = 2
        rewrite_and_rehash(db, bad, '{"status":403}')
    else:
        bad = 3
        statement = (
            "DELETE FROM ledger_content WHERE seq = 3" if forgery == "content deleted" else
            "UPDATE ledger_content SET key_version = 'v999', ciphertext = x'00ff' WHERE seq = 3"
        )  # fmt: skip
        with db.begin() as conn:
            conn.execute(sa.text(statement))
    db.close()
    r = subprocess.run(
        [sys.executable, "-m", "intramuros.cli", "ledger", "verify", "--data-dir", str(data_dir),
         "--ledger-key-file", str(key_file)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"FAILED at record {bad}:" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(r.stdout)["first_bad_seq"] == bad


# --------------------------------------------------------------------------
# Variants of the tail append that need the keyed schema
# --------------------------------------------------------------------------


def test_a_tail_append_with_a_borrowed_or_foreign_mac_fails(ledger: Ledger, db: Database) -> None:
    fill(ledger)
    head = rows(db)[-1]
    forged = forge_tail(db, mac_version=head["mac_version"], mac=head["mac"])
    assert outcome(ledger.verify()) == (False, forged, "forged")
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE ledger_records SET mac_version = 'v999' WHERE seq = :s"),
                     {"s": forged})  # fmt: skip
    assert outcome(ledger.verify()) == (False, forged, "unknown_key_version")
    # A chain stripped of every MAC links, but is not authenticated any more.
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE ledger_records SET mac_version = NULL, mac = NULL"))
    report = ledger.verify()
    assert report.ok and not report.authenticated and report.legacy_records == forged


def test_the_cli_without_the_key_does_not_pass_a_forgery(tmp_path: Path, key_file: Path) -> None:
    data_dir = tmp_path / "data"
    db = open_db(f"sqlite:///{data_dir / 'intramuros.db'}")
    fill(Ledger(db, LedgerKeys.from_file(key_file)))
    forge_tail(db, mac_version="v1", mac="0" * 64)  # a MAC only the key can check
    db.close()

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "intramuros.cli", "ledger", "verify",
             "--data-dir", str(data_dir), *extra],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    r = verify()
    assert r.returncode == 3, r.stderr  # links, but nothing proves who wrote it
    assert json.loads(r.stdout)["authenticated"] is False and "--allow-unauthenticated" in r.stderr
    assert verify("--allow-unauthenticated").returncode == 0
    r = verify("--ledger-key-file", str(key_file))
    assert r.returncode == 1 and "FAILED at record 7: forged" in r.stderr


# --------------------------------------------------------------------------
# Erasure bookkeeping
# --------------------------------------------------------------------------


def test_tombstones_account_for_erased_content(ledger: Ledger, db: Database) -> None:
    for i in range(4):
        call(ledger, i, subject="alice" if i < 2 else "bob", content=True)
    call(ledger, 4, tenant="globex", content=True)
    with db.begin() as conn:  # what a backup of the database still holds
        query = sa.text("SELECT * FROM ledger_content WHERE seq = 1")
        backup = dict(conn.execute(query).mappings().one())
    assert ledger.erase_subject("acme", "alice", actor="dpo") == 2
    assert ledger.shred_tenant("globex", actor="cli:root") == 1
    report = ledger.verify()
    assert report.ok and report.authenticated and report.content_checked == 2
    tomb = ledger.records(kind="tenant_erasure")
    assert [(t.tenant, t.data["seqs"]) for t in tomb] == [("globex", [5])]
    # Erased content put back from the backup is refused, at the erasure it undoes...
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO ledger_content (seq, key_version, nonce, ciphertext) "
                             "VALUES (:seq, :key_version, :nonce, :ciphertext)"),
                     backup)  # fmt: skip
    erasure = ledger.records(kind="erasure")[0].seq
    assert outcome(ledger.verify()) == (False, erasure, "content_mismatch")
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM ledger_content WHERE seq = 1"))
    assert ledger.verify().ok
    # ... and a tombstone forged to cover a deletion is itself a forgery.
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM ledger_content WHERE seq = 4"))
    assert outcome(ledger.verify()) == (False, 4, "content_deleted")
    forged = forge_tail(db, kind="erasure", data='{"actor":"dpo","count":1,"seqs":[4]}')
    assert outcome(ledger.verify()) == (False, forged, "unauthenticated")


def test_an_erasure_during_verification_is_not_a_deletion(
    ledger: Ledger, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from intramuros.ledger import ledger as ledger_module

    for i in range(5):
        call(ledger, i, subject="alice", content=True)
    real = ledger_module.DbSource

    class EraseOnce(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # After the head was read: the tombstone lands beyond the walk's range.
            ledger.erase_subject("acme", "alice", actor="dpo")

    monkeypatch.setattr(ledger_module, "DbSource", EraseOnce)
    report = ledger.verify()
    assert report.ok and report.authenticated, report.detail
    assert report.head_seq == 6  # the walk went on to the tombstone


# --------------------------------------------------------------------------
# Signed checkpoints and what a third party can check
# --------------------------------------------------------------------------


def _altered(checkpoint: Checkpoint, **changes: Any) -> Checkpoint:
    doc = json.loads(checkpoint.to_json())
    doc.update(changes)
    return Checkpoint.from_json(json.dumps(doc))


def test_forged_or_altered_checkpoints_are_refused(ledger: Ledger, db: Database,
                                                  tmp_path: Path) -> None:  # fmt: skip
    from intramuros.ledger import PublicKeys
    from intramuros.ledger.signing import checkpoint_message

    fill(ledger)
    good = ledger.checkpoint()
    assert good.signed and good.key_version == "v1" and good.seq == 6
    report = ledger.verify(good)
    assert report.ok and report.authenticated and report.checkpoint_signed is True
    public = PublicKeys.from_json(ledger.public_keys().to_json())  # all a third party holds
    export = ledger.export(tmp_path / "export")
    assert verify_export(export, checkpoint=good, public_keys=public).ok

    sig = base64.b64decode(good.signature or "")
    flipped = base64.b64encode(bytes([sig[0] ^ 1]) + sig[1:]).decode()
    # The right head and shape, signed by another installation's key named "v1".
    other_keys = LedgerKeys({"v1": secrets.token_bytes(32)}, "v1")
    _, other_signature = other_keys.sign(checkpoint_message(good))
    forged_elsewhere = _altered(good, signature=other_signature)
    cases = {
        "tampered signature": _altered(good, signature=flipped),
        "garbage signature": _altered(good, signature="bm90IGEgc2lnbmF0dXJl"),
        "altered seq": _altered(good, seq=5),
        "altered hash": _altered(good, hash=rows(db)[4]["hash"]),
        "altered ts": _altered(good, ts=good.ts + 86400),
        "other key": forged_elsewhere,
        "unknown version": _altered(good, key_version="v9"),
    }
    for name, bad in cases.items():
        expected = "unknown_key_version" if name == "unknown version" else "bad_signature"
        report = ledger.verify(bad)
        assert (report.ok, report.reason) == (False, expected), name
        report = verify_export(export, checkpoint=bad, public_keys=public)
        assert (report.ok, report.reason) == (False, expected), name
    # An old, unsigned checkpoint still detects truncation, with a warning.
    unsigned = Checkpoint(seq=good.seq, hash=good.hash, ts=good.ts)
    report = ledger.verify(unsigned)
    assert report.ok and report.checkpoint_signed is False and report.warnings
    # Malformed checkpoints are refused at parsing, naming the parameter.
    from intramuros.errors import InvalidRequest

    for text in ('{"seq":1,"hash":"%s","ts":1,"signature":"x"}' % ("a" * 64), "[]", "{"):
        with pytest.raises(InvalidRequest) as exc:
            Checkpoint.from_json(text)
        assert exc.value.param == "checkpoint"


def test_a_forged_head_is_never_signed(ledger: Ledger, db: Database, tmp_path: Path) -> None:
    from intramuros.ledger import LedgerIntegrityError

    fill(ledger)
    forge_tail(db, mac_version="v1", mac="ab" * 32)
    with pytest.raises(LedgerIntegrityError, match="record 7"):
        ledger.checkpoint()
    with pytest.raises(LedgerIntegrityError, match="record 7"):
        ledger.export(tmp_path / "export")
    assert not (tmp_path / "export" / "records.jsonl").exists()


def test_an_export_is_verified_with_the_public_key_only(ledger: Ledger, db: Database,
                                                       tmp_path: Path) -> None:  # fmt: skip
    from intramuros.ledger import PublicKeys, load_checkpoint

    for i in range(6):
        call(ledger, i, tenant="acme" if i % 2 == 0 else "globex")
    kept = Checkpoint.from_json(ledger.checkpoint().to_json())
    public = PublicKeys.from_json(ledger.public_keys().to_json())
    out = ledger.export(tmp_path / "acme", tenant="acme")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["signature"]["key_version"] == "v1" and manifest["signed_head"]["seq"] == 5
    report = verify_export(out, checkpoint=load_checkpoint((out / "manifest.json").read_text()),
                           public_keys=public)  # fmt: skip
    assert report.ok and report.authenticated and report.checkpoint_signed is True
    full = ledger.export(tmp_path / "full")
    report = verify_export(full, checkpoint=kept, public_keys=public)
    assert report.ok and report.authenticated and report.checkpoint_signed is True
    assert not verify_export(full).authenticated  # no public keys: linkage only
    # Another installation's public key does not vouch for this export.
    other = LedgerKeys({"v1": secrets.token_bytes(32)}, "v1").public_keys()
    assert verify_export(out, public_keys=other).reason == "bad_signature"

    # An export edited and re-hashed consistently no longer matches its signature.
    lines = (full / "records.jsonl").read_text().splitlines()
    doc = json.loads(lines[1])
    doc["data"] = doc["data"].replace('"status":200', '"status":500')
    fields = {name: doc[name] for name in FIELDS}
    doc["hash"] = record_hash(json.loads(lines[0])["hash"], body_hash(fields))
    lines[1] = json.dumps(doc)
    (full / "records.jsonl").write_text("".join(line + "\n" for line in lines))
    assert verify_export(full, public_keys=public).reason == "edited"
    # Re-signing is impossible without the key; stripping the signature is refused.
    stripped = json.loads((out / "manifest.json").read_text())
    del stripped["signature"]
    (out / "manifest.json").write_text(json.dumps(stripped))
    assert verify_export(out, public_keys=public).reason == "unauthenticated"
    stripped["signature"] = {"key_version": "v1", "value": manifest["signature"]["value"]}
    stripped["matched"] = 99
    (out / "manifest.json").write_text(json.dumps(stripped))
    assert verify_export(out, public_keys=public).reason == "bad_signature"


def test_the_cli_third_party_path(tmp_path: Path, key_file: Path) -> None:
    data_dir = tmp_path / "data"
    db = open_db(f"sqlite:///{data_dir / 'intramuros.db'}")
    fill(Ledger(db, LedgerKeys.from_file(key_file)))
    db.close()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "intramuros.cli", "ledger", *args],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    state = ("--data-dir", str(data_dir), "--ledger-key-file", str(key_file))
    checkpoint = tmp_path / "head.json"
    checkpoint.write_text(cli("checkpoint", *state).stdout)
    public = tmp_path / "public.json"
    public.write_text(cli("public-key", "--ledger-key-file", str(key_file)).stdout)
    assert cli("export", *state, "--out", str(tmp_path / "out")).returncode == 0
    ok = cli("verify-export", str(tmp_path / "out"), "--public-keys", str(public),
             "--checkpoint", str(checkpoint))  # fmt: skip
    assert ok.returncode == 0 and json.loads(ok.stdout)["authenticated"] is True, ok.stderr
    doc = json.loads(checkpoint.read_text())
    doc["seq"] -= 1
    checkpoint.write_text(json.dumps(doc))
    bad = cli("verify-export", str(tmp_path / "out"), "--public-keys", str(public),
              "--checkpoint", str(checkpoint))  # fmt: skip
    assert bad.returncode == 1 and "bad_signature" in bad.stderr
    assert cli("verify-export", str(tmp_path / "out")).returncode == 3


# --------------------------------------------------------------------------
# Rotation and records from before the chain was keyed
# --------------------------------------------------------------------------


def test_rotation_keeps_old_records_and_checkpoints_verifiable(db: Database,
                                                              key_file: Path) -> None:  # fmt: skip
    ledger = Ledger(db, LedgerKeys.from_file(key_file))
    fill(ledger, 3, content=True)
    old_checkpoint = ledger.checkpoint()
    rotate(key_file)
    ledger = Ledger(db, LedgerKeys.from_file(key_file))
    call(ledger, 3, content=True)
    assert [r["mac_version"] for r in rows(db)] == ["v1", "v1", "v1", "v2"]
    new_checkpoint = ledger.checkpoint()
    assert new_checkpoint.key_version == "v2"
    for checkpoint in (old_checkpoint, new_checkpoint):
        report = ledger.verify(checkpoint)
        assert report.ok and report.authenticated and report.checkpoint_signed, report.detail
    assert report.macs_checked == 4 and report.content_checked == 4
    assert ledger.public_keys().versions == ["v1", "v2"]
    # Dropping an old version from the key file is not a silent "unchecked".
    doc = json.loads(key_file.read_text())
    del doc["keys"]["v1"]
    key_file.write_text(json.dumps(doc))
    report = Ledger(db, LedgerKeys.from_file(key_file)).verify()
    assert outcome(report) == (False, 1, "unknown_key_version")


def _old_schema(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Database:
    """A database as the code before keyed records left it: migrations up to 9."""
    database = Database(db_url)
    assert ("ledger", 2) not in database.migrate(steps_before(10))
    assert "mac" not in {c["name"] for c in sa.inspect(database.engine).get_columns(
        "ledger_records")}  # fmt: skip
    return database


def _legacy_append(db: Database, keys: LedgerKeys, n: int, *, content: bool) -> None:
    """Append as that code did: the same hash chain, no MAC column to fill."""
    from intramuros.ledger import content_aad

    for i in range(n):
        with db.begin() as conn:
            last = "SELECT seq, hash FROM ledger_records ORDER BY seq DESC LIMIT 1"
            head = conn.execute(sa.text(last)).first()
            seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
            plaintext = json.dumps({"prompt": [f"old {i}"]}).encode() if content else None
            fields = {
                "seq": seq, "ts": time.time(), "kind": "model_call", "tenant": "acme",
                "key_id": "k", "subject": "u1", "data": json.dumps({"n": i}),
                "content_digest": keys.digest(plaintext) if plaintext else None,
            }  # fmt: skip
            conn.execute(
                sa.text("INSERT INTO ledger_records (seq, ts, kind, tenant, key_id, subject, "
                        "data, content_digest, prev_hash, hash) VALUES (:seq, :ts, :kind, "
                        ":tenant, :key_id, :subject, :data, :content_digest, :p, :h)"),
                {**fields, "p": prev, "h": record_hash(prev, body_hash(fields))},
            )  # fmt: skip
            if plaintext is not None:
                version, nonce, ciphertext = keys.encrypt(plaintext, content_aad(seq, "acme"))
                conn.execute(sa.text("INSERT INTO ledger_content VALUES (:s, :v, :n, :c)"),
                             {"s": seq, "v": version, "n": nonce, "c": ciphertext})  # fmt: skip


def test_records_from_before_the_keyed_chain_stay_valid_as_its_prefix(
    db_url: str, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = LedgerKeys.from_file(key_file)
    old = _old_schema(db_url, monkeypatch)
    _legacy_append(old, keys, 4, content=True)
    old.close()
    db = open_db(db_url)  # migration 10 adds the MAC columns
    try:
        ledger = Ledger(db, keys)
        report = ledger.verify()
        # Links, but nothing authenticates a chain with no MAC yet.
        assert report.ok and not report.authenticated and report.legacy_records == 4
        assert report.content_checked == 4 and report.warnings
        call(ledger, 4)  # the first keyed record seals the prefix
        report = ledger.verify()
        assert report.ok and report.authenticated and report.legacy_records == 4
        assert report.macs_checked == 1
        # Keyless appends are refused from now on; a forged unMAC'd tail fails.
        forged = forge_tail(db)
        assert outcome(ledger.verify()) == (False, forged, "unauthenticated")
        with db.begin() as conn:
            conn.execute(sa.text("DELETE FROM ledger_records WHERE seq = :s"), {"s": forged})
        # Editing a legacy record now breaks the chain the first MAC covers.
        rewrite_and_rehash(db, 2, '{"n":99}')
        assert outcome(ledger.verify()) == (False, 5, "forged")
    finally:
        db.close()


def test_a_checkpoint_seals_an_unkeyed_head(db_url: str, key_file: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    keys = LedgerKeys.from_file(key_file)
    old = _old_schema(db_url, monkeypatch)
    _legacy_append(old, keys, 3, content=False)
    old.close()
    db = open_db(db_url)
    try:
        ledger = Ledger(db, keys)
        checkpoint = ledger.checkpoint()
        assert checkpoint.seq == 4 and checkpoint.signed
        assert ledger.records(kind="seal")[0].data == {"sealed_through": 3}
        report = ledger.verify(checkpoint)
        assert report.ok and report.authenticated and report.checkpoint_signed
    finally:
        db.close()


def test_hostile_manifests_and_key_documents_are_refused_cleanly(
    ledger: Ledger, tmp_path: Path
) -> None:
    from intramuros.errors import InvalidRequest
    from intramuros.ledger import PublicKeys

    fill(ledger, 2)
    public = ledger.public_keys()
    good = json.loads((ledger.export(tmp_path / "good") / "manifest.json").read_text())
    far_ahead = {**good["signed_head"], "seq": 10**30}
    variants: dict[str, dict[str, Any]] = {
        "signature not an object": {**good, "signature": "abc"},
        "signature of the wrong types": {**good, "signature": {"key_version": [1], "value": 5}},
        "signed head a list": {**good, "signed_head": [1, 2]},
        "signed head missing": {k: v for k, v in good.items() if k != "signed_head"},
        "signed head far ahead": {**good, "signed_head": far_ahead},
        "counts of the wrong type": {**good, "count": "2"},
    }
    for n, (name, manifest) in enumerate(variants.items()):
        out = ledger.export(tmp_path / f"v{n}")
        (out / "manifest.json").write_text(json.dumps(manifest))
        report = verify_export(out, public_keys=public)
        assert not report.ok and not report.authenticated, name
        assert report.reason in {"malformed", "bad_signature", "unknown_key_version"}, name
    fmt = '{"format": "intramuros-ledger-public-keys/1", "keys": %s}'
    for text in ("{}", "[", fmt % '{"v1": "AAAA"}', fmt % '{"../v1": "%s"}' % ("A" * 43 + "="),
                 fmt % '{"v1": "not base64!"}', fmt % "{}"):
        with pytest.raises(InvalidRequest) as exc:
            PublicKeys.from_json(text)
        assert exc.value.param == "public_keys", text


def test_without_the_key_nothing_is_erased_unrecorded(ledger: Ledger, db: Database) -> None:
    from intramuros.ledger import LedgerKeyRequired

    fill(ledger, 3, content=True)
    keyless = Ledger(db, None)
    with pytest.raises(LedgerKeyRequired, match="--ledger-key-file"):
        keyless.erase_subject("acme", "u1", actor="dpo")
    with pytest.raises(LedgerKeyRequired):
        keyless.shred_tenant("acme", actor="cli:root")
    with db.begin() as conn:  # the deletions rolled back with the refused tombstone
        assert conn.execute(sa.text("SELECT count(*) FROM ledger_content")).scalar_one() == 3
    report = ledger.verify()
    assert report.ok and report.authenticated and report.checked == 3
