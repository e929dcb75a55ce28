"""The file store on SQLite and PostgreSQL: scoping, encryption, tampering, keys, names."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from intramuros.errors import ConfigError
from intramuros.files.errors import FileNotFound, FileStoreError, FileTooLarge
from intramuros.files.names import clean_mime, safe_filename, sniff_mime
from intramuros.files.store import FileStore, KeyRing
from intramuros.ledger import generate_key_file
from intramuros.settings import load_settings
from intramuros.store.db import Database

_OPEN: list[Database] = []


@pytest.fixture(autouse=True)
def _close_databases() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _store(tmp_path: Path, db_url: str, **extra: object) -> FileStore:
    settings = load_settings(data_dir=tmp_path / "data", database_url=db_url,
                        files_max_bytes=10_000, **extra)  # type: ignore[arg-type]  # fmt: skip
    db = Database(db_url)
    _OPEN.append(db)
    db.migrate()
    return FileStore.from_settings(settings, db)


def test_put_read_list_delete(tmp_path: Path, db_url: str) -> None:
    store = _store(tmp_path, db_url)
    a = store.put("acme", b"alpha", filename="a.pdf", purpose="ocr", mime_type="application/pdf")
    b = store.put("acme", b"beta", filename="b.txt", purpose="batch", mime_type="text/plain")
    store.put("globex", b"gamma", filename="g.txt", purpose="ocr", mime_type="text/plain")
    assert store.read("acme", a.id) == (a, b"alpha")
    records, more = store.list_files("acme")
    assert {r.id for r in records} == {a.id, b.id} and more is False
    assert [r.id for r in store.list_files("acme", purpose="ocr")[0]] == [a.id]
    page, more = store.list_files("acme", limit=1, order="asc")
    assert more is True
    assert store.list_files("acme", limit=1, order="asc", after=page[0].id)[0][0].id != page[0].id
    assert store.count("acme") == 2
    with pytest.raises(FileNotFound):
        store.read("globex", a.id)
    with pytest.raises(FileNotFound):
        store.delete("globex", a.id)
    store.delete("acme", a.id)
    with pytest.raises(FileNotFound):
        store.get("acme", a.id)
    assert not list(store.root.rglob(f"{a.id}.bin"))
    with pytest.raises(FileTooLarge):
        store.put("acme", b"x" * 10_001, filename="x", purpose="ocr", mime_type="text/plain")


def test_tampering_is_detected(tmp_path: Path) -> None:
    store = _store(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    a = store.put("acme", b"original", filename="a", purpose="ocr", mime_type="text/plain")
    b = store.put("acme", b"other", filename="b", purpose="ocr", mime_type="text/plain")
    path_a = next(store.root.rglob(f"{a.id}.bin"))
    path_b = next(store.root.rglob(f"{b.id}.bin"))
    blob = bytearray(path_a.read_bytes())
    blob[-1] ^= 1
    path_a.write_bytes(bytes(blob))
    with pytest.raises(FileStoreError):
        store.read("acme", a.id)
    # A ciphertext moved under another id does not decrypt there.
    path_a.write_bytes(path_b.read_bytes())
    with pytest.raises(FileStoreError):
        store.read("acme", a.id)
    path_b.unlink()
    with pytest.raises(FileStoreError):
        store.read("acme", b.id)


def test_key_choice_and_transition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTRAMUROS_LEDGER_KEY", raising=False)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    auto = _store(tmp_path, url)
    assert auto.keys.current == "files"
    assert (tmp_path / "data" / "files.key").stat().st_mode & 0o077 == 0
    old = auto.put("acme", b"before", filename="a", purpose="ocr", mime_type="text/plain")
    # A ledger key configured later encrypts new files; older ones still read.
    monkeypatch.setenv("INTRAMUROS_LEDGER_KEY", base64.b64encode(os.urandom(32)).decode())
    with_ledger = _store(tmp_path, url)
    assert with_ledger.keys.current == "ledger"
    new = with_ledger.put("acme", b"after", filename="b", purpose="ocr", mime_type="text/plain")
    assert with_ledger.read("acme", old.id)[1] == b"before"
    assert with_ledger.read("acme", new.id)[1] == b"after"
    # An explicit files key file wins.
    keyfile = tmp_path / "own.key"
    generate_key_file(keyfile)
    own = _store(tmp_path, url, files_key_file=keyfile)
    assert own.keys.current == "files"
    # Without the key a file was written with, it is refused, never returned garbled.
    monkeypatch.delenv("INTRAMUROS_LEDGER_KEY")
    with pytest.raises(FileStoreError):
        _store(tmp_path, url).read("acme", new.id)


def test_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    keyfile = tmp_path / "k.key"
    generate_key_file(keyfile)
    keyfile.chmod(0o644)
    settings = load_settings(data_dir=tmp_path, files_key_file=keyfile)
    with pytest.raises(ConfigError):
        KeyRing.from_settings(settings)


@pytest.mark.parametrize(("given", "stored"), [
    ("../../etc/passwd", "passwd"),
    ("..\\..\\boot.ini", "boot.ini"),
    ("a/b/c.pdf", "c.pdf"),
    ("..", "upload"),
    ("", "upload"),
    (None, "upload"),
    ("bad\x00name\n.pdf", "badname.pdf"),
    ("x" * 300 + ".pdf", "x" * 251 + ".pdf"),
])  # fmt: skip
def test_safe_filename(given: str | None, stored: str) -> None:
    assert safe_filename(given) == stored


def test_sniff_and_mime() -> None:
    assert sniff_mime(b"%PDF-1.7 ...") == "application/pdf"
    assert sniff_mime(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_mime(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_mime(b"hello") is None
    assert clean_mime("Image/JPG; q=1") == "image/jpeg"
    assert clean_mime("not a mime") is None


def test_expiry_hides_then_purge_deletes(tmp_path: Path, db_url: str) -> None:
    store = _store(tmp_path, db_url)
    keep = store.put("acme", b"keep", filename="k.txt", purpose="ocr", mime_type="text/plain")
    soon = store.put("acme", b"soon", filename="s.txt", purpose="ocr", mime_type="text/plain",
                     expires_after=3600)  # fmt: skip
    assert soon.expires_at is not None and soon.expires_at - soon.created_at == 3600
    assert soon.to_wire()["expires_at"] == int(soon.expires_at)
    assert keep.to_wire()["expires_at"] is None
    # Not yet due: a purge leaves both.
    assert store.purge() == {}
    assert store.count("acme") == 2
    # Past its time it is gone for clients at once, before any purge runs.
    gone = store.put("acme", b"gone", filename="g.txt", purpose="ocr", mime_type="text/plain",
                     expires_after=-1)  # fmt: skip
    with pytest.raises(FileNotFound):
        store.read("acme", gone.id)
    assert gone.id not in {r.id for r in store.list_files("acme")[0]}
    assert store.count("acme") == 2
    # A purge an hour on deletes both expired files, rows and ciphertexts, not the other.
    removed = store.purge(now=soon.created_at + 3601)
    assert sorted(removed["acme"]) == sorted([soon.id, gone.id])
    assert not list(store.root.rglob(f"{soon.id}.bin")) and not list(
        store.root.rglob(f"{gone.id}.bin"))  # fmt: skip
    assert store.read("acme", keep.id)[1] == b"keep"


def test_retention_purge_is_per_tenant(tmp_path: Path, db_url: str) -> None:
    store = _store(tmp_path, db_url)
    a = store.put("acme", b"a", filename="a.txt", purpose="ocr", mime_type="text/plain")
    g = store.put("globex", b"g", filename="g.txt", purpose="ocr", mime_type="text/plain")
    with pytest.raises(ValueError):
        store.purge(created_before=a.created_at + 1)
    assert store.purge(tenant="acme", created_before=a.created_at) == {}
    assert store.purge(tenant="acme", created_before=a.created_at + 1) == {"acme": [a.id]}
    assert store.read("globex", g.id)[1] == b"g"
