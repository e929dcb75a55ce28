"""Provenance: weights are hashed on load; a tampered file is refused, loudly."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from intramuros.catalog.bundled import BUNDLED
from intramuros.catalog.catalog import Catalog, sha256_file
from intramuros.catalog.gguf import read_gguf_info
from intramuros.errors import InvalidRequest, ModelFileMissing, ModelIntegrityError
from intramuros.settings import Settings
from intramuros.store.db import Database
from tests.conftest import CHAT_MODEL, Server, bundled_file, start_server, stop_server
from tests.helpers import run_cli

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

SMOL = bundled_file(CHAT_MODEL)


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture(scope="module")
def prov_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("prov")
    weights = data / "weights"
    weights.mkdir()
    for name in ("good.gguf", "tampered.gguf"):
        shutil.copy(SMOL, weights / name)
    for name in ("good", "tampered"):
        r = run_cli("models", "add", str(weights / f"{name}.gguf"), "--name", f"my-{name}",
                    "--license", "Apache-2.0", data_dir=data)  # fmt: skip
        assert r.returncode == 0, r.stderr
    # Changed after it was catalogued: one byte in the middle of the weights.
    flip_byte(weights / "tampered.gguf", SMOL.stat().st_size // 2)
    srv = start_server(data, "--preload-models", CHAT_MODEL)
    yield srv
    stop_server(srv)


def test_bundled_hashes_are_the_packages_files() -> None:
    for bundled in BUNDLED:
        if bundled.assembled_name is not None or not bundled.installed():
            continue
        path = bundled.package_path()
        assert path is not None and sha256_file(path) == bundled.sha256, bundled.name
        for rel, digest in bundled.aux_files.items():
            assert sha256_file(path.parent / rel) == digest, (bundled.name, rel)


def say_hi(server: Server, model: str) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/chat/completions", timeout=120, json={
        "model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})


def test_added_model_serves(prov_server: Server) -> None:
    r = say_hi(prov_server, "my-good")
    assert r.status_code == 200, r.text
    card = httpx.get(prov_server.base_url + "/v1/models/my-good").json()
    assert card["intramuros"]["origin"]["kind"] == "file"
    assert card["intramuros"]["sha256"] == sha256_file(SMOL)


def test_tampered_model_is_refused(prov_server: Server) -> None:
    r = say_hi(prov_server, "my-tampered")
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "model_integrity_error"
    assert "my-tampered" in err["message"]
    assert "/" not in err["message"], "no file paths to HTTP callers"
    log = prov_server.log_text()
    assert "tampered.gguf" in log and sha256_file(SMOL) in log
    # still refused the second time (never half-loaded), and others still serve
    assert say_hi(prov_server, "my-tampered").status_code == 503
    assert say_hi(prov_server, CHAT_MODEL).status_code == 200


def test_verify_command_names_file_and_hashes(prov_server: Server) -> None:
    r = run_cli("models", "verify", data_dir=prov_server.data_dir)
    assert r.returncode == 1
    tampered = prov_server.data_dir / "weights" / "tampered.gguf"
    lines = r.stdout.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.startswith("FAILED my-tampered"))
    assert str(tampered) in lines[failed]
    assert lines[failed + 1].split() == ["expected", "sha256", sha256_file(SMOL)]
    assert lines[failed + 2].split() == ["actual", "sha256", sha256_file(tampered)]
    assert not any(line.startswith("FAILED my-good") for line in lines)
    ok = run_cli("models", "verify", "my-good", CHAT_MODEL, data_dir=prov_server.data_dir)
    assert ok.returncode == 0, ok.stdout


def test_verify_record_in_process(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    catalog = Catalog(db, Settings(data_dir=tmp_path))
    copy = tmp_path / "m.gguf"
    shutil.copy(SMOL, copy)
    record = catalog.add_file(copy, name="m", license="Apache-2.0")
    assert record.sha256 == hashlib.sha256(copy.read_bytes()).hexdigest()
    catalog.verify_record(record)
    flip_byte(copy, 1000)
    with pytest.raises(ModelIntegrityError) as exc:
        catalog.verify_record(record)
    assert exc.value.path == str(copy) and exc.value.expected == record.sha256
    assert exc.value.actual == sha256_file(copy) != record.sha256
    copy.unlink()
    with pytest.raises(ModelFileMissing):
        catalog.verify_record(record)


def test_gguf_header_reader(tmp_path: Path) -> None:
    info = read_gguf_info(SMOL)
    assert (info.architecture, info.context_length, info.quantization) == ("llama", 8192, "Q4_1")
    assert info.has_chat_template and info.license == "apache-2.0"
    for name, data in {
        "empty.gguf": b"",
        "text.gguf": b"hello world, not a model",
        "truncated.gguf": SMOL.read_bytes()[:5000],
        "huge-count.gguf": b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little")
        + (2**62).to_bytes(8, "little"),
    }.items():  # fmt: skip
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(InvalidRequest) as exc:
            read_gguf_info(bad)
        assert exc.value.param == "path"
