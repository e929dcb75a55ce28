"""`intramuros embed`: bulk embeddings of a JSONL file with the bundled embeddings model:
the vectors are the model's, bad lines are errors that do not stop the run, a killed
run resumes without redoing or losing lines, and the run is in the ledger."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHAT_MODEL, EMBED_MODEL, cli
from tests.helpers import run_cli

# Real models and command processes: the slow tier.
pytestmark = pytest.mark.slow

TEXTS = [
    "The bank opens at nine.",
    "Le guichet ferme à midi.",
    "Die Überweisung ist eingegangen.",
    "A loan needs two signatures.",
    "Cards are blocked after three wrong codes.",
    "Ελληνικά κείμενα επίσης.",
    "An IBAN has up to 34 characters.",
    "Transfers above 10,000 EUR are reviewed.",
    "日本語のテキストも埋め込まれる。",
    "The branch in Lyon moved.",
    "Savings accounts pay interest monthly.",
]


def write_input(path: Path) -> list[str]:
    """Good lines with bad ones among them; the ids of the good ones, in order."""
    lines: list[str] = []
    ids: list[str] = []
    for i, text in enumerate(TEXTS):
        lines.append(json.dumps({"id": f"t{i}", "text": text}, ensure_ascii=False))
        ids.append(f"t{i}")
        if i == 2:
            lines.append('{"id": "broken", "text": ')  # not JSON
            lines.append(json.dumps({"text": "no id here"}))
            lines.append(json.dumps({"id": "t0", "text": "a duplicate id"}))
            lines.append(json.dumps({"id": "empty", "text": "   "}))
            lines.append(json.dumps({"id": True, "text": "a boolean id"}))
            lines.append("[1, 2, 3]")
            lines.append("")  # blank lines are skipped, not errors
        if i == 5:
            lines.append(json.dumps({"id": "huge", "text": "x" * 100_001}))
            lines.append(json.dumps({"id": 42, "text": "an integer id is kept as text"}))
            ids.append("42")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ids


def read_output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def error_codes(out: Path) -> list[tuple[int, str | None, str]]:
    errors = out.with_name(out.name + ".errors.jsonl").read_text(encoding="utf-8")
    return [(e["line"], e["id"], e["code"]) for e in map(json.loads, errors.splitlines())]


EXPECTED_ERRORS = [(4, None, "invalid_line"), (5, None, "invalid_line"),
                   (6, "t0", "duplicate_id"), (7, "empty", "invalid_line"),
                   (8, None, "invalid_line"), (9, None, "invalid_line"),
                   (14, "huge", "invalid_line")]  # fmt: skip


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embed_a_file_resume_and_ledger(tmp_path: Path) -> None:
    data, source, out = tmp_path / "data", tmp_path / "in.jsonl", tmp_path / "out" / "v.jsonl"
    ids = write_input(source)
    r = run_cli("embed", str(source), "--out", str(out), "--model", EMBED_MODEL, "--workers",
                "2", "--batch-size", "3", data_dir=data, timeout=600)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr  # the bad lines
    assert f"{len(ids)} text(s) embedded" in r.stdout and "7 failed" in r.stdout, r.stdout
    assert "see" in r.stderr and "v.jsonl.errors.jsonl" in r.stderr
    rows = read_output(out)
    assert [row["id"] for row in rows] == ids  # input order
    assert {len(row["embedding"]) for row in rows} == {384}
    assert error_codes(out) == EXPECTED_ERRORS

    # The vectors are the model's: the same as /v1/embeddings through the in-process gate
    # would give, checked here by meaning (a text is nearest to itself re-embedded).
    again = tmp_path / "again.jsonl"
    again.write_text(json.dumps({"id": "q", "text": TEXTS[1]}) + "\n", encoding="utf-8")
    r = run_cli("embed", str(again), "--out", str(tmp_path / "q.jsonl"), "--model", EMBED_MODEL,
                data_dir=data, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    [q] = read_output(tmp_path / "q.jsonl")
    by_id = {row["id"]: row["embedding"] for row in rows}
    assert cosine(q["embedding"], by_id["t1"]) > 0.9999  # batched as alone
    nearest = max(by_id, key=lambda k: cosine(q["embedding"], by_id[k]))
    assert nearest == "t1"

    # A run killed while writing: the last line half there. The next run cuts it off,
    # skips what is done and writes the rest once.
    kept = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(kept[:4]) + kept[4][: len(kept[4]) // 2], encoding="utf-8")
    r = run_cli("embed", str(source), "--out", str(out), "--model", EMBED_MODEL, data_dir=data,
                timeout=600)  # fmt: skip
    assert r.returncode == 1 and "4 already done" in r.stdout, r.stdout
    assert f"{len(ids) - 4} text(s) embedded" in r.stdout
    resumed = read_output(out)
    assert [row["id"] for row in resumed] == ids
    for old, new in zip(rows, resumed, strict=True):  # other chunks: float rounding only
        assert max(abs(a - b) for a, b in zip(old["embedding"], new["embedding"],
                                              strict=True)) < 1e-5  # fmt: skip

    # Each run is an admin record of the ledger: model, its digest, the input's digest.
    cli(data, "ledger", "export", "--out", str(tmp_path / "export"))
    records = [json.loads(line) for line in
               (tmp_path / "export" / "records.jsonl").read_text().splitlines()]  # fmt: skip
    datas = [json.loads(r["data"]) for r in records]  # each record's data as it was hashed
    runs = [d for d in datas if d.get("action") == "embed_batch"]
    assert len(runs) == 3 and runs[0]["model"] == EMBED_MODEL and len(runs[0]["sha256"]) == 64
    assert runs[0]["embedded"] == len(ids) and runs[0]["failed"] == 7 and runs[0]["tokens"] > 0
    assert runs[2]["embedded"] == len(ids) - 4


def test_embed_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    data, source = tmp_path / "data", tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "text": "hello"}) + "\n", encoding="utf-8")
    for args, message in (
        (("--model", CHAT_MODEL), f"Model '{CHAT_MODEL}' does not do embeddings"),
        (("--model", "no-such-model"), "no-such-model"),
        (("--model", EMBED_MODEL, "--batch-size", "0"), "--batch-size"),
        (("--model", EMBED_MODEL, "--workers", "1000"), "--workers"),
    ):
        r = run_cli("embed", str(source), "--out", str(tmp_path / "o.jsonl"), *args,
                    data_dir=data, timeout=120)  # fmt: skip
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "o.jsonl").exists()
    r = run_cli("embed", str(source), "--out", str(source), "--model", EMBED_MODEL,
                data_dir=data, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "must differ from SOURCE" in r.stderr
    assert source.read_text(encoding="utf-8").count("\n") == 1  # untouched

    # Binary garbage, a line far over the limit, one nested past the parser's depth:
    # errors per line, no crash, no output.
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(b"\xff\xfe\x00garbage\n" + b"{" * 500_000 + b"\n" + b"[" * 100_000 + b"\n"
                     + b"\x00" * 100 + b"\n")
    r = run_cli("embed", str(junk), "--out", str(tmp_path / "j.jsonl"), "--model", EMBED_MODEL,
                data_dir=data, timeout=300)  # fmt: skip
    assert r.returncode == 1 and "4 failed" in r.stdout, r.stdout + r.stderr
    assert [code for _, _, code in error_codes(tmp_path / "j.jsonl")] == ["invalid_line"] * 4
    assert (tmp_path / "j.jsonl").read_text() == ""


def test_an_altered_model_stops_the_run_with_its_reason(tmp_path: Path) -> None:
    from tests.conftest import bundled_file
    from tests.test_provenance import flip_byte

    data, source = tmp_path / "data", tmp_path / "in.jsonl"
    write_input(source)
    folder = tmp_path / "mini"
    shutil.copytree(bundled_file(EMBED_MODEL).parent, folder)
    cli(data, "models", "add", str(folder), "--name", "my-mini", "--engine", "minilm",
        "--license", "Apache-2.0")  # fmt: skip
    weights = folder / "model.safetensors"
    flip_byte(weights, weights.stat().st_size // 2)

    out = tmp_path / "o.jsonl"
    r = run_cli("embed", str(source), "--out", str(out), "--model", "my-mini", data_dir=data,
                timeout=300)  # fmt: skip
    assert r.returncode == 1 and "Refusing to load model 'my-mini'" in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error:") and not out.exists()

    # A worker's own check (its node's copy altered after the command's check): the run
    # stops with the reason rather than failing every line one by one. In a process of
    # its own (a spawned pool leaves multiprocessing's resource tracker running until its
    # parent ends).
    [row] = [m for m in json.loads(cli(data, "models", "list", "--json")) if m["name"] == "my-mini"]
    script = WORKER_CHECK.format(record=json.dumps(row), data=str(data), source=str(source),
                                 out=str(out))  # fmt: skip
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("EngineUnavailable: Refusing to load model 'my-mini'"), r.stdout
    assert out.read_text() == ""


WORKER_CHECK = """
import json
from pathlib import Path
from intramuros.catalog.records import ModelRecord
from intramuros.errors import EngineUnavailable
from intramuros.platform.distributed import BatchWorkers
from intramuros.serving.bulk_embed import run_embed
from intramuros.settings import load_settings
record = ModelRecord.model_validate(json.loads({record!r}))
workers = BatchWorkers(1)
try:
    run_embed(record, load_settings(data_dir={data!r}), Path({source!r}), Path({out!r}),
              workers, batch_size=2)
    print("no error")
except EngineUnavailable as exc:
    print("EngineUnavailable:", exc.message)
finally:
    workers.close()
"""
