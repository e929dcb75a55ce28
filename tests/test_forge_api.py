"""Fine-tuning jobs end to end: the official ``openai`` client, Mistral's spellings over
HTTP, a worker killed mid-job, another tenant, bad files; the real bundled 135M model
trained for a few steps by the real worker process."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Server, start_server, stop_server
from tests.helpers import check_error

pytestmark = pytest.mark.slow

BASE = "smollm2-135m-instruct"
SYSTEM = "You convert city names to depot codes."
CITIES = ["Lyon", "Turin", "Ghent", "Porto", "Basel", "Graz", "Split", "Brno",
          "Cork", "Malmo", "Tartu", "Kaunas", "Varna", "Pecs", "Nitra", "Ohrid"]  # fmt: skip


def _line(city: str) -> str:
    return json.dumps({"messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Depot code for {city}?"},
        {"role": "assistant", "content": f"ZQX-{city.upper()}-7"},
    ]})  # fmt: skip


TRAIN = "\n".join(_line(c) for c in CITIES).encode()
VALID = "\n".join(_line(c) for c in CITIES[:4]).encode()


@pytest.fixture(scope="module")
def forge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("forge"), "--forge-checkpoint-every", "2",
                       "--forge-max-active-jobs", "3", auth=True)  # fmt: skip
    yield srv
    stop_server(srv)


def _upload(srv: Server, data: bytes, who: str = "user", purpose: str = "fine-tune") -> str:
    client = srv.openai(who)
    created = client.files.create(file=("train.jsonl", io.BytesIO(data)),
                                  purpose=purpose)  # type: ignore[arg-type]
    return str(created.id)


def _wait(srv: Server, job_id: str, who: str = "user", timeout: float = 420,
          until: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
          ) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = srv.http.get(f"/v1/fine_tuning/jobs/{job_id}",
                                           headers=srv.headers(who)).json()  # fmt: skip
        if job["status"] in until:
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def _chat(srv: Server, model: str, who: str = "user") -> str:
    answer = srv.openai(who).chat.completions.create(
        model=model, temperature=0, max_tokens=12,
        messages=[{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": "Depot code for Lyon?"}])  # fmt: skip
    return answer.choices[0].message.content or ""


def test_the_openai_client_fine_tunes_and_the_model_answers_at_once(forge: Server) -> None:
    client = forge.openai("user")
    training, validation = _upload(forge, TRAIN), _upload(forge, VALID)
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=training, validation_file=validation, suffix="depots",
        seed=11, method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 10}}},
    )  # fmt: skip
    assert job.status == "validating_files" and job.model == BASE and job.seed == 11
    done = _wait(forge, job.id)
    assert done["status"] == "succeeded", done
    name = done["fine_tuned_model"]
    assert name == f"ft:{BASE}:depots:{job.id}"
    assert done["trained_tokens"] > 0 and done["finished_at"] >= done["created_at"]
    assert done["hyperparameters"] == {"n_epochs": 3, "batch_size": 4,
                                       "learning_rate_multiplier": 10.0}  # fmt: skip
    evaluation = done["intramuros"]["evaluation"]
    assert evaluation["after"]["loss"] < evaluation["before"]["loss"], evaluation
    # The client's own calls: retrieve, list, events, checkpoints.
    again = client.fine_tuning.jobs.retrieve(job.id)
    assert again.fine_tuned_model == name and again.status == "succeeded"
    assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=10).data]
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    steps = [e for e in events if e.type == "metrics"]
    assert len(steps) == 12 and steps[0].data["step"] == 12  # newest first  # type: ignore[index]
    assert any("succeeded" in e.message for e in events)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints][:3] == [12, 10, 8]
    assert checkpoints[0].fine_tuned_model_checkpoint.startswith(name)
    # The result file: the loss per step, a file of the tenant.
    results = client.files.content(done["result_files"][0]).text.splitlines()
    assert results[0] == "step,train_loss" and len(results) == 13
    # Served at once, with its lineage, and it answers differently from its base.
    card = next(m for m in client.models.list().data if m.id == name)
    lineage = card.model_extra["intramuros"]["lineage"]  # type: ignore[index]
    assert lineage["base"] == BASE and lineage["seed"] == 11
    assert lineage["training_file"] == training and len(lineage["training_sha256"]) == 64
    assert lineage["adapter_sha256"] == card.model_extra["intramuros"]["sha256"]  # type: ignore[index]
    assert set(lineage["libraries"]) >= {"torch", "transformers", "peft"}
    tuned, base = _chat(forge, name), _chat(forge, BASE)
    assert tuned != base and "ZQX" in tuned, (tuned, base)
    # Another tenant sees neither the job nor the model.
    other = forge.openai("other")
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    assert job.id not in [j.id for j in other.fine_tuning.jobs.list().data]
    assert name not in [m.id for m in other.models.list().data]
    r = forge.http.post("/v1/chat/completions", headers=forge.headers("other"), json={
        "model": name, "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    check_error(r, 404, "model_not_found")
    r = forge.http.post(f"/v1/fine_tuning/jobs/{job.id}/cancel", headers=forge.headers("other"))
    check_error(r, 404)
    # A finished job cannot be cancelled.
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)
    # The ledger has the job's life, with the lineage; the chain verifies.
    ledger = forge.http.get("/v1/admin/ledger", params={"limit": 1000},
                            headers=forge.headers("operator")).json()["data"]  # fmt: skip
    actions = [(e["data"]["action"], e["data"].get("job")) for e in ledger
               if e["kind"] == "fine_tune"]  # fmt: skip
    assert ("create", job.id) in actions and ("succeeded", job.id) in actions
    made = next(e for e in ledger if e["kind"] == "fine_tune"
                and e["data"]["action"] == "succeeded" and e["data"]["job"] == job.id)  # fmt: skip
    assert made["data"]["lineage"]["adapter_sha256"] == lineage["adapter_sha256"]
    verify = forge.http.get("/v1/admin/ledger/verify", headers=forge.headers("operator")).json()
    assert verify["ok"] is True, verify


def test_mistral_spellings_auto_start_false_then_start(forge: Server) -> None:
    training = _upload(forge, TRAIN)
    http = forge.client("user")
    r = http.post("/v1/fine_tuning/jobs", json={
        "model": BASE, "training_files": [{"file_id": training, "weight": 1}],
        "hyperparameters": {"training_steps": 2, "learning_rate": 0.0001, "seq_len": 64},
        "auto_start": False, "suffix": "mistral"})  # fmt: skip
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["object"] == "job" and job["status"] == "VALIDATING" and job["auto_start"] is False
    waiting = _wait(forge, job["id"], until=("VALIDATED", "FAILED"))
    assert waiting["status"] == "VALIDATED", waiting
    assert waiting["training_files"] == [training]
    time.sleep(2.5)  # a job waiting for its start is not run
    assert http.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["status"] == "VALIDATED"
    started = http.post(f"/v1/fine_tuning/jobs/{job['id']}/start").json()
    assert started["status"] in ("QUEUED", "RUNNING")
    done = _wait(forge, job["id"], until=("SUCCESS", "FAILED", "CANCELLED"))
    assert done["status"] == "SUCCESS", done
    assert done["hyperparameters"]["training_steps"] == 2
    assert done["fine_tuned_model"] == f"ft:{BASE}:mistral:{job['id']}"
    listed = http.get("/v1/fine_tuning/jobs", params={"status": "SUCCESS"}).json()["data"]
    assert job["id"] in [j["id"] for j in listed]
    r = http.post(f"/v1/fine_tuning/jobs/{job['id']}/start")
    check_error(r, 400, param="fine_tuning_job_id")


def test_a_scored_validation_file_and_a_merged_gguf(forge: Server) -> None:
    """The validation lines name a scorer: the base and the fine-tuned model are scored
    on them as served; ``merge`` also registers a standalone GGUF, kept to the tenant."""
    scored = "\n".join(json.dumps(json.loads(_line(c)) | {
        "scorer": "contains", "expected": f"ZQX-{c.upper()}", "max_tokens": 12})
        for c in CITIES[:4]).encode()  # fmt: skip
    client = forge.openai("user")
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=_upload(forge, TRAIN), validation_file=_upload(forge, scored),
        suffix="merged", seed=11, method={"type": "supervised", "supervised": {
            "hyperparameters": {"n_epochs": 3, "batch_size": 4,
                                "learning_rate_multiplier": 10}}},
        extra_body={"merge": True},
    )  # fmt: skip
    done = _wait(forge, job.id)
    assert done["status"] == "succeeded", done
    evaluation = done["intramuros"]["evaluation"]
    task = evaluation["task"]
    assert task["source"] == "validation_file" and task["items"] == 4, task
    # The base has never seen a depot code; the fine-tuned model writes them.
    assert task["before"] == 0 and task["after"] >= 0.5, task
    assert evaluation["task_verdict"] == "better than its base on validation_file"
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any(m.startswith("Task score on validation_file (4 items)") for m in events), events
    # The merged model: served on its own, with the same lineage, to this tenant only.
    name = done["fine_tuned_model"]
    merged = f"{name}:merged"
    cards = forge.http.get("/v1/models", headers=forge.headers("user")).json()["data"]
    card = next(m for m in cards if m["id"] == merged)
    assert card["intramuros"]["lineage"]["job"] == job.id
    assert card["intramuros"]["lineage"]["metrics"]["task"]["after"] == task["after"]
    assert "ZQX" in _chat(forge, merged), _chat(forge, merged)
    made = done["intramuros"]["files"]
    assert made["merged"]["model"] == merged and made["adapter"]["model"] == name
    assert made["merged"]["sha256"] == card["intramuros"]["sha256"]
    assert merged not in [m.id for m in forge.openai("other").models.list().data]
    r = forge.http.post("/v1/chat/completions", headers=forge.headers("other"), json={
        "model": merged, "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    check_error(r, 404, "model_not_found")
    folder = forge.data_dir / "forge" / done["organization_id"] / job.id
    assert (folder / "merged.gguf").is_file() and (folder / "adapter.gguf").is_file()


def _worker_pid(srv: Server) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"intramuros.forge.worker" in cmd and str(srv.data_dir).encode() in environ:
            return int(entry.name)
    return None


def test_a_killed_worker_resumes_from_its_checkpoint(forge: Server) -> None:
    client = forge.openai("user")
    training = _upload(forge, TRAIN)
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=training, seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 4, "batch_size": 4}}})  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if client.fine_tuning.jobs.checkpoints.list(job.id).data:
            break
        time.sleep(0.5)
    pid = _worker_pid(forge)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    done = _wait(forge, job.id)
    assert done["status"] == "succeeded", done
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any("Resuming from the last checkpoint" in m for m in messages)
    steps = sorted({e.data["step"] for e in client.fine_tuning.jobs.list_events(  # type: ignore[index]
        job.id, limit=100).data if e.type == "metrics"})  # fmt: skip
    assert steps[-1] == 16


def test_bad_input_is_refused_with_the_line_and_field(forge: Server) -> None:
    http = forge.client("user")

    def create(**body: Any) -> httpx.Response:
        return http.post("/v1/fine_tuning/jobs", json={"model": BASE, **body})

    good = _upload(forge, TRAIN)
    check_error(create(training_file=_upload(forge, TRAIN, purpose="batch")), 400,
                param="training_file", contains=("fine-tune",))  # fmt: skip
    other = _upload(forge, TRAIN, who="other")
    check_error(create(training_file=other), 400, param="training_file")
    check_error(create(training_file="file-" + "0" * 24), 400, param="training_file")
    check_error(http.post("/v1/fine_tuning/jobs", json={"model": "no-such-model",
                                                        "training_file": good}), 404)
    check_error(create(training_file=good, hyperparameters={"seq_len": 32768}), 400,
                param="hyperparameters.seq_len")  # fmt: skip
    check_error(create(training_file=good, method={"type": "dpo"}), 400)
    check_error(create(model="gemma-3-270m", training_file=good), 400, param="model",
                contains=("'gemma3'",))  # fmt: skip
    check_error(create(training_file=good, suffix="../../etc"), 400)
    check_error(create(training_file=good, hyperparameters={"n_epochs": 10**9}), 400)
    check_error(create(training_file=good, suite="../../etc/passwd"), 400, param="suite")
    check_error(create(training_file=good, suite="x" * 101), 400)
    check_error(create(), 400, param="training_file")
    check_error(http.get("/v1/fine_tuning/jobs/ftjob-nope"), 404)
    check_error(http.get("/v1/fine_tuning/jobs/" + "x" * 65), 400)
    # A malformed file fails the job at validating_files, every problem listed by line.
    bad = b"\n".join([
        _line("Lyon").encode(), b"{not json", json.dumps({"messages": []}).encode(),
        json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(),
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(),
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {
                        "name": "nope", "arguments": "{bad"}}]}],
                    "tools": [{"type": "function", "function": {"name": "lookup"}}]}).encode(),
    ])  # fmt: skip
    job = create(training_file=_upload(forge, bad)).json()
    failed = _wait(forge, job["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "invalid_file" and failed["error"]["param"] == "training_file"
    assert "Line 2" in failed["error"]["message"], failed["error"]
    problems = failed["intramuros"]["report"]["training"]["problems"]
    where = {(p["line"], p["field"]) for p in problems}
    assert {(2, "line"), (3, "messages"), (4, "messages[0].role"), (5, "messages"),
            (6, "messages[1].tool_calls[0].function.name"),
            (6, "messages[1].tool_calls[0].function.arguments")} <= where, problems
    # A validation line whose scorer is wrong fails the job, by line and field.
    scored = _line("Lyon").encode() + b"\n" + json.dumps(
        json.loads(_line("Graz")) | {"scorer": "regex", "expected": "(open"}).encode()
    job = create(training_file=good, validation_file=_upload(forge, scored)).json()
    failed = _wait(forge, job["id"])
    assert failed["error"]["param"] == "validation_file", failed["error"]
    problems = failed["intramuros"]["report"]["validation"]["problems"]
    assert [(p["line"], p["field"]) for p in problems] == [(2, "scorer")], problems
    # Two tenants' limits: at most three unfinished jobs each (this server's setting).
    ids = [create(training_file=good, auto_start=False).json()["id"] for _ in range(3)]
    check_error(create(training_file=good), 429)
    for job_id in ids:
        cancelled = http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").json()
        assert cancelled["status"] == "CANCELLED"
    check_error(http.post(f"/v1/fine_tuning/jobs/{ids[0]}/cancel"), 400)
