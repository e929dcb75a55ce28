"""The `intramuros docai` commands: batch (resumable after a kill), extract, ocr, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import cli
from tests.helpers import invoke, run_cli
from tests.test_docai_docs import INVOICE_LINES, make_pdf, make_png

ID_LINES = [
    "REPUBLIQUE FRANCAISE",
    "CARTE NATIONALE D'IDENTITE",
    "Surname: MARTIN",
    "Given names: Claire Louise",
    "Sex: F",
    "Nationality: French",
    "Date of birth: 14.07.1990",
    "Place of birth: Lyon",
    "Document number: X4RTBPFW4",
    "Date of expiry: 01.03.2031",
]


def _cmd(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "intramuros.cli", "docai", *args, "--data-dir", str(data_dir)]


def _corpus(root: Path) -> list[str]:
    """Scans first (slow, so a kill lands mid-run), then born-digital PDFs, one bad file."""
    names: list[str] = []
    for i in range(5):
        rel = f"a-scans/scan-{i:02d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(make_png([f"Receipt number R-{1000 + i}", "Paid in cash"]))
        names.append(rel)
    for i in range(4):
        rel = f"b-pdf/nested/letter-{i}.pdf"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(make_pdf([[f"Letter reference L-{2000 + i}",
                                            "Dear Sir or Madam,", "we confirm your order.",
                                            "Yours faithfully"]]))  # fmt: skip
        names.append(rel)
    (root / "c-broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <<")
    (root / "notes.txt").write_text("not a document")
    (root / ".hidden.pdf").write_bytes(b"%PDF-1.4")
    return names


def _outputs(out: Path) -> dict[str, tuple[int, int]]:
    """Finished outputs: relative json path -> (inode, mtime_ns)."""
    found = {}
    for path in out.rglob("*.json"):
        json.loads(path.read_text())  # every visible output is whole
        st = path.stat()
        found[str(path.relative_to(out))] = (st.st_ino, st.st_mtime_ns)
    return found


@pytest.mark.slow
def test_batch_resumes_after_a_kill(tmp_path: Path) -> None:
    src, out, data = tmp_path / "in", tmp_path / "out", tmp_path / "data"
    names = _corpus(src)
    proc = subprocess.Popen(_cmd(data, "batch", str(src), "--out", str(out), "--workers", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 180
    try:
        while len(list(out.rglob("*.json"))) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    before = _outputs(out)
    assert 2 <= len(before) < len(names), "the kill did not land mid-batch"

    r = run_cli("docai", "batch", str(src), "--out", str(out), "--workers", "2", data_dir=data,
                timeout=300)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr  # the broken file
    assert f"skipping {len(before)} document(s) already done" in r.stderr.replace("\n", " ")
    assert "pages/s" in r.stdout and f"{len(names) - len(before)} document(s)" in r.stdout
    after = _outputs(out)
    assert set(after) == {f"{n}.json" for n in names}
    for rel, ident in before.items():
        assert after[rel] == ident, f"{rel} was redone"
    for i, rel in enumerate(names):
        doc = json.loads((out / f"{rel}.json").read_text())
        assert doc["source"]["path"] == rel
        md = (out / f"{rel}.md").read_text()
        assert md.startswith("<!-- page 0 -->")
        expected = f"R-{1000 + i}" if i < 5 else f"L-{2000 + i - 5}"
        assert expected in md.replace(" ", ""), (rel, md)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["file"] for e in errors] == ["c-broken.pdf"]
    assert errors[0]["code"] and errors[0]["message"]
    assert not (out / "notes.txt.json").exists() and not (out / ".hidden.pdf.json").exists()

    # A third run redoes nothing that is done; only the broken file is tried again.
    again = run_cli("docai", "batch", str(src), "--out", str(out), data_dir=data, timeout=300)
    assert f"skipping {len(names)} document(s)" in again.stderr.replace("\n", " ")
    assert _outputs(out) == after
    assert len((out / "errors.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_extract_identity_document(tmp_path: Path) -> None:
    doc = tmp_path / "id-card.pdf"
    doc.write_bytes(make_pdf([ID_LINES]))
    # The calls are metered to a tenant that must exist (records are kept under its id).
    r = run_cli("docai", "extract", str(doc), "--schema", "identity_document", "--n-ctx", "4096",
                "--tenant", "acme", data_dir=tmp_path / "data", timeout=300)  # fmt: skip
    assert r.returncode == 1 and "No tenant 'acme'" in r.stderr
    cli(tmp_path / "data", "tenants", "create", "acme")
    r = run_cli("docai", "extract", str(doc), "--schema", "identity_document", "--n-ctx", "4096",
                "--tenant", "acme", data_dir=tmp_path / "data", timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    from intramuros.docai.cli import load_schema

    schema, _name = load_schema("identity_document")
    jsonschema.validate(out["fields"], schema)
    fields = out["fields"]
    assert fields["surname"] == "MARTIN"
    assert fields["document_number"] == "X4RTBPFW4"
    assert fields["date_of_birth"] == "14.07.1990"
    assert out["pages"]["surname"] == 0 and out["pages"]["document_number"] == 0
    assert out["document"]["methods"] == ["text-layer"]
    assert out["usage"]["completion_tokens"] > 0
    # The chat call went through the gate: ledgered under the tenant.
    from intramuros.ledger import Ledger
    from intramuros.store.db import Database

    db = Database(f"sqlite:///{tmp_path / 'data' / 'intramuros.db'}")
    try:
        calls = [e for e in Ledger(db, None).records("acme") if e.kind == "model_call"]
    finally:
        db.close()
    assert calls and calls[-1].data["route"] == "/v1/chat/completions"


def test_ocr_command_and_bad_input(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(make_pdf([INVOICE_LINES]))
    r = invoke("docai", "ocr", str(pdf), *data)
    assert r.exit_code == 0 and "INV-2026-0042" in r.stdout, r.output
    r = invoke("docai", "ocr", str(pdf), "--json", "--engine", "none", *data)
    body = json.loads(r.stdout)
    assert body["model"] == "text-layer" and body["pages"][0]["method"] == "text-layer"
    assert invoke("docai", "schemas").stdout.split() == ["identity_document", "invoice"]

    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 truncated")
    r = invoke("docai", "ocr", str(broken), *data)
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "broken.pdf" in r.stderr
    r = invoke("docai", "ocr", str(pdf), "--pages", "x-1", *data)
    assert r.exit_code == 2 and "--pages" in r.stderr
    assert invoke("docai", "ocr", str(tmp_path / "missing.pdf"), *data).exit_code == 2
    for schema in ("no-such-schema", str(broken)):
        r = invoke("docai", "extract", str(pdf), "--schema", schema, *data)
        assert r.exit_code == 2 and "--schema" in r.stderr, r.stderr
    not_object = tmp_path / "s.json"
    not_object.write_text('{"type": "string"}')
    r = invoke("docai", "extract", str(pdf), "--schema", str(not_object), *data)
    assert r.exit_code == 2 and "object" in r.stderr
    r = invoke("docai", "batch", str(tmp_path), "--out", str(tmp_path), *data)
    assert r.exit_code == 2 and "--out" in r.stderr
    r = invoke("docai", "batch", str(tmp_path), "--out", str(tmp_path / "o"), "--workers", "0",
               *data)  # fmt: skip
    assert r.exit_code == 2 and "--workers" in r.stderr


@pytest.mark.parametrize("text", ["0,2,5-7", "3", "1-1"])
def test_page_ranges(text: str) -> None:
    from intramuros.docai.batch import parse_pages

    expected = {"0,2,5-7": [0, 2, 5, 6, 7], "3": [3], "1-1": [1]}[text]
    assert parse_pages(text) == expected


def test_discover_skips_hidden_unknown_and_the_output_dir(tmp_path: Path) -> None:
    from intramuros.docai.batch import discover, output_paths

    for rel in ("a.pdf", "sub/b.PNG", ".git/c.pdf", ".d.pdf", "e.docx", "out/f.pdf.md",
                "out/g.pdf"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert discover(tmp_path, tmp_path / "out") == [Path("a.pdf"), Path("sub/b.PNG")]
    md, js = output_paths(tmp_path / "out", Path("sub/b.PNG"))
    assert (md.name, js.name, md.parent) == ("b.PNG.md", "b.PNG.json", tmp_path / "out" / "sub")
