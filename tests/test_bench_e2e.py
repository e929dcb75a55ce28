"""`intramuros bench` end to end: the real CLI against a real server with the two
bundled generative models (SmolLM2 chat, Gemma 3 270M base via /v1/completions),
and its refusals of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from intramuros.bench import scorers
from intramuros.bench.suite import load_suite
from tests.conftest import Server, free_port, start_server, stop_server

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

CHAT, BASE = "smollm2-135m-instruct", "gemma-3-270m"
METERED = ("latency_ms", "ttft_ms", "cpu_seconds", "energy_joules", "cost_eur", "co2e_grams")

# One item per scorer; small max_tokens so the run stays short.
SMALL_SUITE = [
    {"id": "capital", "messages": [
        {"role": "system", "content": "Answer with one word."},
        {"role": "user", "content": "What is the capital of France?"}],
     "expected": "Paris", "scorer": "exact", "strip_punctuation": True, "max_tokens": 6},
    {"id": "greet", "prompt": "Say hello to Anna.", "expected": "hello",
     "scorer": "contains", "max_tokens": 12},
    {"id": "iso-date", "messages": [
        {"role": "user", "content": "Write the date 14 March 2025 as YYYY-MM-DD."}],
     "expected": r"\d{4}-\d{2}-\d{2}", "scorer": "regex", "max_tokens": 12},
    {"id": "sum", "messages": [
        {"role": "user", "content": "What is 12 + 30? Answer with the number only."}],
     "expected": 42, "scorer": "numeric", "tolerance": 0.5, "max_tokens": 8},
    {"id": "same", "messages": [
        {"role": "system", "content": "Answer yes or no."},
        {"role": "user", "content": "Are 'Jose Garcia' and 'José García' the same name?"}],
     "expected": "yes", "scorer": "choice", "choices": ["yes", "no"], "max_tokens": 4},
    {"id": "address", "messages": [
        {"role": "user", "content": "Extract city and zip: 12 rue de la Paix, 75002 Paris."}],
     "expected": {"city": "Paris", "zip": "75002"}, "scorer": "json_schema",
     "schema": {"type": "object", "properties": {"city": {"type": "string"},
                "zip": {"type": "string"}}, "required": ["city", "zip"]},
     "fields": ["city", "zip"],
     "response_format": {"type": "json_schema", "json_schema": {"name": "address", "schema": {
         "type": "object", "properties": {"city": {"type": "string"},
         "zip": {"type": "string"}}, "required": ["city", "zip"],
         "additionalProperties": False}}},
     "max_tokens": 40},
]  # fmt: skip


def bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "intramuros.cli", "bench", *args],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def fails_clearly(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 1, r.stdout + r.stderr
    line = r.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in r.stderr, line
    for needle in needles:
        assert needle in line, line


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Nothing preloaded: the bench's warm-up call loads each model (that is what it is for).
    server = start_server(tmp_path_factory.mktemp("bench-srv"), "--preload-models", "",
                          auth=True)  # fmt: skip
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "small.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in SMALL_SUITE))
    return path


def _png_ok(path: Path) -> None:
    from matplotlib import image
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 800 and img.size[1] > 500
    assert image.imread(str(path)).shape[2] in (3, 4)


@pytest.mark.slow
def test_bench_two_models_end_to_end(srv: Server, suite_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = bench("--base-url", srv.base_url + "/v1", "--api-key", srv.keys["user"],
              "--suite", str(suite_file), "--model", CHAT, "--model", BASE,
              "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert CHAT in r.stdout and BASE in r.stdout and "tok/s" in r.stdout
    doc = json.loads((out / "bench.json").read_text())
    assert doc["server"] == {"url": srv.base_url, "private": False}
    models = {m["id"]: m for m in doc["models"]}
    assert models[CHAT]["endpoint"] == "chat"
    assert models[BASE]["endpoint"] == "completion"  # a base model: no chat template
    assert models[BASE]["provenance"]["sha256"]
    assert doc["suites"][0]["items"] == len(SMALL_SUITE)
    items = {(i["model"], i["item"]): i for i in doc["items"]}
    assert set(items) == {(m, it["id"]) for m in (CHAT, BASE) for it in SMALL_SUITE}

    suite = {it.id: it for it in load_suite(str(suite_file)).items}
    for (model, ident), res in items.items():
        assert res["error"] is None, res
        assert res["endpoint"] == models[model]["endpoint"]
        item = suite[ident]
        # the score is the scorer's verdict on the stored answer
        want = scorers.score(item.scorer, res["answer"], item.expected, item.options)
        assert res["score"] == want.value and res["detail"] == want.detail
        usage = res["usage"]
        assert usage["prompt_tokens"] > 0
        for name in METERED:  # the server's per-call metering
            if name == "ttft_ms" and usage["completion_tokens"] == 0:
                continue  # no first token to time
            assert usage.get(name) is not None and usage[name] > 0, (name, usage)
        assert usage["energy_source"] in ("estimated", "measured-rapl", "measured-nvml")
        if usage["completion_tokens"] > 1:
            assert usage["decode_tokens_per_second"] > 0

    rows = {(s["model"], s["suite"]): s for s in doc["summary"]}
    overall = {s["model"]: s for s in doc["overall"]}
    for model in (CHAT, BASE):
        mine = [i for i in doc["items"] if i["model"] == model]
        row = rows[(model, "small")]
        assert row["items"] == len(SMALL_SUITE) and row["errors"] == 0
        assert row["quality"] == pytest.approx(sum(i["score"] for i in mine) / len(mine))
        tokens = sum(i["usage"]["prompt_tokens"] + i["usage"]["completion_tokens"]
                     for i in mine)  # fmt: skip
        joules = sum(i["usage"]["energy_joules"] for i in mine)
        assert row["joules_per_token"] == pytest.approx(joules / tokens)
        euros = sum(i["usage"]["cost_eur"] for i in mine)
        assert row["eur_per_million_tokens"] == pytest.approx(euros / tokens * 1e6)
        assert row["gco2e_per_million_tokens"] > 0 and row["ttft_ms"] > 0
        assert row["tokens_per_second"] > 0
        assert overall[model]["quality"] == pytest.approx(row["quality"])
    _png_ok(out / "bench.png")


@pytest.mark.slow
def test_bench_starts_and_stops_its_own_server(suite_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "own"
    r = bench("--suite", str(suite_file), "--model", CHAT, "--limit", "2", "--out", str(out),
              "--data-dir", str(tmp_path / "data"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "bench.json").read_text())
    assert doc["server"]["private"] is True and len(doc["items"]) == 2
    assert doc["server"]["url"].startswith("http://127.0.0.1:")  # its own server, on loopback
    assert all(i["usage"]["energy_joules"] > 0 for i in doc["items"])
    with pytest.raises(httpx.TransportError):  # stopped when the run ended
        httpx.get(doc["server"]["url"] + "/healthz", timeout=2)
    _png_ok(out / "bench.png")


def test_bad_input_is_refused_clearly(srv: Server, suite_file: Path, tmp_path: Path) -> None:
    url, key = srv.base_url, srv.keys["user"]
    fails_clearly(bench("--suite", "no-such-suite"), "unknown suite 'no-such-suite'",
                  "invoice_fields")  # fmt: skip
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(SMALL_SUITE[0]) + "\n{oops\n")
    fails_clearly(bench("--suite", str(broken)), "broken.jsonl line 2", "not valid JSON")
    common = ["--suite", str(suite_file), "--out", str(tmp_path / "o")]
    fails_clearly(bench("--base-url", url, "--api-key", key, "--model", "gpt-17", *common),
                  "unknown model(s) gpt-17", CHAT)  # fmt: skip
    fails_clearly(bench("--base-url", url, "--api-key", key, "--model", "all-minilm-l6-v2",
                        *common), "cannot generate text")  # fmt: skip
    fails_clearly(bench("--base-url", url, "--api-key", "im_bogus_key", *common), "API key")
    fails_clearly(bench("--base-url", "localhost:8000", *common), "--base-url must be")
    dead = f"http://127.0.0.1:{free_port()}"
    fails_clearly(bench("--base-url", dead, *common), f"cannot reach the server at {dead}")
    fails_clearly(bench("--base-url", url, "--data-dir", str(tmp_path), *common), "--data-dir")
    r = bench("--limit", "0", *common)
    assert r.returncode == 2 and "--limit" in r.stderr  # click's own usage error
    assert srv.proc.poll() is None  # the server took all that and goes on
