"""``intramuros forge``: validate with line numbers, run to a served model (no server),
list, show, events, export; the exported adapter loads in llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli
from tests.helpers import run_cli

pytestmark = pytest.mark.slow

BASE = "smollm2-135m-instruct"


def _line(i: int) -> str:
    return json.dumps({"messages": [
        {"role": "user", "content": f"Ticket {i}: printer jammed on floor {i % 5}."},
        {"role": "assistant", "content": "Category: hardware."},
    ]})  # fmt: skip


def test_validate_reports_every_problem_by_line(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join([_line(1), "{oops", json.dumps({"messages": [
        {"role": "user", "content": "x"}]}), _line(2)]) + "\n")  # fmt: skip
    r = run_cli("forge", "validate", str(data), "--seq-len", "16", data_dir=tmp_path / "d")
    assert r.returncode == 1
    assert "line 2, line: The line is not valid JSON" in r.stdout
    assert "line 3, messages: No assistant message" in r.stdout
    good = tmp_path / "good.jsonl"
    long_answer = json.dumps({"messages": [{"role": "user", "content": "Explain."},
                                           {"role": "assistant", "content": "word " * 200}]})
    good.write_text("\n".join([*(_line(i) for i in range(5)), long_answer]) + "\n")
    r = run_cli("forge", "validate", str(good), "--seq-len", "96", "--json",
                data_dir=tmp_path / "d")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] and report["examples"] == 6 and report["trained_tokens"] > 0
    assert report["too_long"] == [6] and report["max_tokens"] > 200
    assert report["estimated_seconds"] > 0
    # A sequence length that leaves no answer token of any line: nothing to learn.
    r = run_cli("forge", "validate", str(good), "--seq-len", "16", data_dir=tmp_path / "d")
    assert r.returncode == 1 and "nothing to learn" in r.stdout
    r = run_cli("forge", "validate", str(tmp_path / "missing.jsonl"), data_dir=tmp_path / "d")
    assert r.returncode != 0


def test_run_serves_the_model_and_export_writes_a_loadable_adapter(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(_line(i) for i in range(8)) + "\n")
    r = run_cli("forge", "run", str(train), "--base", BASE, "--suffix", "tickets",
                "--steps", "2", "--batch-size", "4", "--seed", "5", "--json",
                data_dir=data_dir, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr + r.stdout
    job = json.loads(r.stdout[r.stdout.index("{"):])
    assert job["status"] == "succeeded" and job["seed"] == 5
    name = job["fine_tuned_model"]
    assert name == f"ft:{BASE}:tickets:{job['id']}"
    listed = cli(data_dir, "forge", "list")
    assert job["id"] in listed and "succeeded" in listed
    shown = json.loads(cli(data_dir, "forge", "show", job["id"]))
    assert shown["intramuros"]["lineage"]["seed"] == 5
    events = cli(data_dir, "forge", "events", job["id"])
    assert "Step 2/2" in events and "Job succeeded" in events
    models = json.loads(cli(data_dir, "models", "list", "--json"))
    record = next(m for m in models if m["name"] == name)
    assert record["base"] == BASE and record["lineage"]["job"] == job["id"]
    assert "fine-tuned by " + job["id"] in cli(data_dir, "models", "list")
    out = tmp_path / "export"
    cli(data_dir, "forge", "export", job["id"], "--out", str(out))
    adapter = next(out.glob("*.gguf"))
    lineage = json.loads(next(out.glob("*.lineage.json")).read_text())
    import hashlib

    assert hashlib.sha256(adapter.read_bytes()).hexdigest() == lineage["adapter_sha256"]
    assert lineage["adapter_sha256"] == record["sha256"]
    # The file is a llama.cpp LoRA adapter of the base: `models add-adapter` takes it.
    cli(data_dir, "models", "add-adapter", "tickets-copy", "--base", BASE, "--adapter",
        str(adapter))  # fmt: skip
    # Another tenant's view: not found; a running job's export: refused.
    r = run_cli("forge", "show", job["id"], "--tenant", "nobody", data_dir=data_dir)
    assert r.returncode != 0
