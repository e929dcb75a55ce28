"""The Files API on a real server, with the official openai and mistralai clients.

Tenant-scoped, encrypted at rest, sha256 recorded, size-limited; every
malformed upload gets a 4xx naming the problem and the server goes on.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from intramuros.files.tables import files as files_table
from intramuros.store.db import Database
from tests.conftest import Server, cli, start_server, stop_server
from tests.helpers import check_error

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

LIMIT = 200_000


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A short purge interval lets a test watch the server's own schedule delete a file.
    server = start_server(tmp_path_factory.mktemp("files"), "--preload-models", "",
                          "--files-max-bytes", str(LIMIT), "--purge-interval-seconds", "10",
                          auth=True)  # fmt: skip
    yield server
    stop_server(server)


def _client(srv: Server, who: str = "user") -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url + "/v1", api_key=srv.keys[who], max_retries=0,
                         timeout=60)  # fmt: skip


@pytest.fixture()
def http(srv: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.base_url, headers=srv.headers(), timeout=60) as client:
        yield client


def test_openai_client_round_trip(srv: Server, tmp_path: Path) -> None:
    client = _client(srv)
    payload = os.urandom(5000) + b"\x00end"
    src = tmp_path / "scan 1.pdf"
    src.write_bytes(payload)
    with src.open("rb") as fh:
        created = client.files.create(file=fh, purpose="user_data")
    assert created.id.startswith("file-") and created.object == "file"
    assert created.bytes == len(payload) and created.filename == "scan 1.pdf"
    assert created.purpose == "user_data"
    extra = created.model_extra or {}
    assert extra["sha256"] == hashlib.sha256(payload).hexdigest()

    got = client.files.retrieve(created.id)
    assert (got.id, got.bytes, got.filename) == (created.id, created.bytes, created.filename)
    assert client.files.content(created.id).content == payload
    assert created.id in [f.id for f in client.files.list()]
    assert created.id in [f.id for f in client.files.list(purpose="user_data")]
    assert created.id not in [f.id for f in client.files.list(purpose="batch")]

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)


def test_stored_encrypted_with_a_private_key(srv: Server) -> None:
    client = _client(srv)
    secret = b"CONFIDENTIAL-MARKER-" + os.urandom(8).hex().encode()
    created = client.files.create(file=("memo.txt", secret), purpose="assistants")
    blobs = list((srv.data_dir / "files").rglob(f"{created.id}.bin"))
    assert len(blobs) == 1
    assert secret not in blobs[0].read_bytes()
    assert stat.S_IMODE(blobs[0].stat().st_mode) == 0o600
    key = srv.data_dir / "files.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # The database holds no plaintext either.
    assert secret not in (srv.data_dir / "intramuros.db").read_bytes()
    assert client.files.content(created.id).content == secret


def test_tenant_isolation(srv: Server) -> None:
    acme, globex = _client(srv, "user"), _client(srv, "other")
    mine = acme.files.create(file=("a.txt", b"acme only"), purpose="assistants")
    assert mine.id not in [f.id for f in globex.files.list()]
    for call in (globex.files.retrieve, globex.files.content, globex.files.delete):
        with pytest.raises(openai.NotFoundError) as err:
            call(mine.id)
        assert err.value.response.json()["error"]["code"] == "file_not_found"
    # Same answer as an id that never existed.
    with pytest.raises(openai.NotFoundError) as missing:
        globex.files.retrieve("file-" + "0" * 24)
    assert missing.value.response.json()["error"]["code"] == "file_not_found"
    assert acme.files.content(mine.id).content == b"acme only"


def test_cursor_paging(srv: Server, http: httpx.Client) -> None:
    client = _client(srv)
    ids = [client.files.create(file=(f"p{i}.txt", b"x" * (i + 1)), purpose="batch").id
           for i in range(3)]  # fmt: skip
    first = http.get("/v1/files", params={"purpose": "batch", "limit": 2}).json()
    assert first["object"] == "list" and first["has_more"] is True and first["total"] >= 3
    assert [f["id"] for f in first["data"]] == ids[::-1][:2]
    rest = http.get("/v1/files", params={"purpose": "batch", "limit": 2,
                                         "after": first["last_id"]}).json()  # fmt: skip
    assert ids[0] in [f["id"] for f in rest["data"]]
    # The SDK's auto-pagination walks all pages.
    assert set(ids) <= {f.id for f in client.files.list(purpose="batch", limit=1)}
    # Mistral's page/page_size.
    page = http.get("/v1/files", params={"purpose": "batch", "page": 1, "page_size": 1}).json()
    assert [f["id"] for f in page["data"]] == [ids[1]]


def test_mistral_client(srv: Server) -> None:
    from mistralai.client import Mistral

    with Mistral(api_key=srv.keys["user"], server_url=srv.base_url) as client:
        up = client.files.upload(file={"file_name": "doc.pdf", "content": b"%PDF-1.4 tiny"},
                                 purpose="ocr")  # fmt: skip
        assert up.id.startswith("file-") and up.purpose == "ocr"
        assert client.files.retrieve(file_id=up.id).filename == "doc.pdf"
        assert client.files.download(file_id=up.id).read() == b"%PDF-1.4 tiny"
        assert up.id in [f.id for f in client.files.list().data]
        assert client.files.delete(file_id=up.id).deleted is True


def test_bad_uploads(srv: Server, http: httpx.Client) -> None:
    files = {"file": ("a.txt", b"abc")}
    check_error(http.post("/v1/files", data={"purpose": "nope"}, files=files), 400,
                param="purpose")  # fmt: skip
    check_error(http.post("/v1/files", files=files), 400, param="purpose")
    check_error(http.post("/v1/files", data={"purpose": "ocr"}, files={"x": ("a", b"a")}), 400,
                param="x")  # fmt: skip
    text_field = {"purpose": (None, "ocr"), "file": (None, "just text")}
    check_error(http.post("/v1/files", files=text_field), 400, param="file")
    check_error(http.post("/v1/files", data={"purpose": "ocr"}), 400, "invalid_upload")
    check_error(http.post("/v1/files", json={"purpose": "ocr"}), 400, "invalid_upload")
    broken = http.post("/v1/files", content=b"--zz\r\nContent-Disposition: form-data; name=",
                       headers={"content-type": "multipart/form-data; boundary=zz"})  # fmt: skip
    check_error(broken, 400, "invalid_upload")
    no_boundary = http.post("/v1/files", content=b"garbage",
                            headers={"content-type": "multipart/form-data"})  # fmt: skip
    check_error(no_boundary, 400, "invalid_upload")
    # Over the limit: the file itself, and a body past the declared limit.
    big = http.post("/v1/files", data={"purpose": "ocr"}, files={"file": ("b", b"x" * (LIMIT + 1))})
    check_error(big, 413, "file_too_large")
    huge = http.post("/v1/files", data={"purpose": "ocr"},
                     files={"file": ("b", b"x" * (LIMIT + 2 * 1024 * 1024))})  # fmt: skip
    check_error(huge, 413, "payload_too_large")
    # Unauthenticated: 401, nothing stored.
    anon = httpx.post(srv.base_url + "/v1/files", data={"purpose": "ocr"}, files=files)
    assert anon.status_code == 401
    # The server is fine afterwards.
    assert http.post("/v1/files", data={"purpose": "ocr"}, files=files).status_code == 200


def test_hostile_names_and_ids(srv: Server, http: httpx.Client) -> None:
    r = http.post("/v1/files", data={"purpose": "ocr"},
                  files={"file": ("../../../etc/passwd", b"root:x")})  # fmt: skip
    assert r.status_code == 200
    assert r.json()["filename"] == "passwd"
    assert not (srv.data_dir.parent / "etc").exists()
    r = http.post("/v1/files", data={"purpose": "ocr"},
                  files={"file": ("..\\..\\win.ini\x00.txt", b"w")})  # fmt: skip
    assert r.status_code == 200 and "/" not in r.json()["filename"] and "\\" not in r.json()[
        "filename"]  # fmt: skip
    cd = http.get(f"/v1/files/{r.json()['id']}/content").headers["content-disposition"]
    assert cd.startswith("attachment;")
    # Line breaks and non-ASCII in a name cannot split or break the download's headers.
    r = http.post("/v1/files", data={"purpose": "ocr"},
                  files={"file": ("na\u00efve\r\nX-Evil: 1 \u65e5\u672c.pdf", b"n")})  # fmt: skip
    assert r.status_code == 200
    got = http.get(f"/v1/files/{r.json()['id']}/content")
    assert got.status_code == 200 and got.content == b"n" and "x-evil" not in got.headers
    cd = got.headers["content-disposition"]
    assert "\r" not in cd and "\n" not in cd and cd.isascii()
    assert "filename*=UTF-8''" in cd and "%E6%97%A5" in cd
    for bad in ("..%2F..%2Fetc%2Fpasswd", "file-../../x", "file-" + "g" * 24, "x" * 500):
        assert http.get(f"/v1/files/{bad}").status_code == 404
        assert http.get(f"/v1/files/{bad}/content").status_code == 404
        assert http.delete(f"/v1/files/{bad}").status_code == 404
    assert "limit" in check_error(http.get("/v1/files", params={"limit": 0}), 400)["param"]
    assert "order" in check_error(http.get("/v1/files", params={"order": "x"}), 400)["param"]
    assert http.get("/v1/files", params={"after": "file-" + "0" * 24}).status_code == 404


def _set(srv: Server, file_id: str, **values: float) -> None:
    """Move a stored file in time (the test's stand-in for days passing)."""
    db = Database(f"sqlite:///{srv.data_dir / 'intramuros.db'}")
    try:
        with db.begin() as conn:
            conn.execute(files_table.update().where(files_table.c.id == file_id).values(**values))
    finally:
        db.close()


def _blob_gone(srv: Server, file_id: str) -> bool:
    return not list((srv.data_dir / "files").rglob(f"{file_id}.bin"))


def test_expiry_and_bad_expiry(srv: Server, http: httpx.Client) -> None:
    client = _client(srv)
    up = client.files.create(file=("e.txt", b"expiring"), purpose="ocr",
                             expires_after={"anchor": "created_at", "seconds": 3600})  # fmt: skip
    assert up.expires_at == up.created_at + 3600
    assert client.files.retrieve(up.id).expires_at == up.expires_at
    plain = client.files.create(file=("p.txt", b"plain"), purpose="ocr")
    assert plain.expires_at is None
    for fields, param in (
        ({"expires_after[seconds]": "59"}, "expires_after[seconds]"),
        ({"expires_after[seconds]": "2592001"}, "expires_after[seconds]"),
        ({"expires_after[seconds]": "1e4"}, "expires_after[seconds]"),
        ({"expires_after[seconds]": "-3600"}, "expires_after[seconds]"),
        ({"expires_after[seconds]": "\u0663\u0666\u0660\u0660"}, "expires_after[seconds]"),
        ({"expires_after[anchor]": "created_at"}, "expires_after[seconds]"),
        ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"},
         "expires_after[anchor]"),
    ):  # fmt: skip
        r = http.post("/v1/files", data={"purpose": "ocr", **fields},
                      files={"file": ("x.txt", b"x")})  # fmt: skip
        assert check_error(r, 400)["param"] == param, fields
    # Its time passes: gone for the client at once, and the server's schedule deletes it.
    _set(srv, up.id, expires_at=time.time() - 1)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(up.id)
    assert up.id not in {f.id for f in client.files.list()}
    deadline = time.monotonic() + 60
    while not _blob_gone(srv, up.id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _blob_gone(srv, up.id)
    assert client.files.retrieve(plain.id).id == plain.id


def test_retention_deletes_old_files(srv: Server) -> None:
    # Runs last in this module: it gives acme a retention period.
    client = _client(srv)
    old = client.files.create(file=("old.txt", b"old"), purpose="ocr")
    new = client.files.create(file=("new.txt", b"new"), purpose="ocr")
    theirs = _client(srv, "other").files.create(file=("g.txt", b"g"), purpose="ocr")
    _set(srv, old.id, created_at=time.time() - 40 * 86400)
    _set(srv, theirs.id, created_at=time.time() - 40 * 86400)
    cli(srv.data_dir, "tenants", "policy", "acme", "--retention-days", "30")
    out = cli(srv.data_dir, "purge", "--tenant", "acme")
    assert "acme: deleted 1 file(s), 0 OCR job(s)" in out
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(old.id)
    assert _blob_gone(srv, old.id) and not _blob_gone(srv, new.id)
    assert client.files.content(new.id).content == b"new"
    # globex has no retention period: its old file stays.
    assert _client(srv, "other").files.content(theirs.id).content == b"g"
    rows = httpx.get(srv.base_url + "/v1/admin/ledger?limit=1000",
                     headers=srv.headers("admin"), timeout=30).json()["data"]  # fmt: skip
    purges = [r for r in rows if r["kind"] == "file" and r["data"]["action"] == "file_purge"]
    assert any(r["data"]["reason"] == "retention" and r["data"]["file_ids"] == [old.id]
               and r["data"]["actor"].startswith("cli:") for r in purges)  # fmt: skip
