"""Batch work on a real Ray cluster (``ray start --head`` on this machine): docai batch
and kyc rescreen give the same results as the local worker pool; lost workers, a
cluster that is not there and a missing extra give clear outcomes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from intramuros.errors import ConfigError
from intramuros.kyc.importers import ImportResult, parse_list
from intramuros.kyc.model import Entity, Name
from intramuros.kyc.workflow import KycWorkflow, match_remotely, match_subjects
from intramuros.ledger import Ledger
from intramuros.platform.distributed import BatchWorkers, RayExecutor, WorkerLost
from intramuros.settings import load_settings
from intramuros.store.db import Database
from tests.conftest import EMBED_MODEL, free_port
from tests.helpers import run_cli
from tests.test_docai_batch import _corpus
from tests.test_kyc_store import DATA

# A cluster of processes: the slow tier.
pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A one-node Ray cluster with two CPUs, stopped (with its workers) afterwards."""
    port = free_port()
    started = subprocess.run(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats"], env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=ENV, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def executor(ray_address: str) -> Iterator[RayExecutor]:
    ex = RayExecutor(ray_address)
    yield ex
    ex.shutdown()


@pytest.fixture(scope="module")
def workers(ray_address: str, executor: RayExecutor) -> Iterator[BatchWorkers]:
    batch = BatchWorkers(1, ray_address)  # joins the cluster the executor fixture joined
    yield batch
    batch.close()


def _outputs(out: Path) -> dict[str, Any]:
    """Every output of a batch: markdown as text, JSON parsed."""
    found: dict[str, Any] = {}
    for path in sorted(out.rglob("*")):
        rel = str(path.relative_to(out))
        if path.suffix == ".md":
            found[rel] = path.read_text(encoding="utf-8")
        elif path.suffix == ".json":
            found[rel] = json.loads(path.read_text(encoding="utf-8"))
    return found


def _errors(out: Path) -> list[tuple[str, str]]:
    lines = (out / "errors.jsonl").read_text(encoding="utf-8").splitlines()
    return [(e["file"], e["code"]) for e in map(json.loads, lines)]


def test_docai_batch_on_ray_equals_the_local_pool(ray_address: str, tmp_path: Path) -> None:
    src, data = tmp_path / "in", tmp_path / "data"
    names = _corpus(src)
    local, remote = tmp_path / "local", tmp_path / "ray"
    r = run_cli("docai", "batch", str(src), "--out", str(local), "--workers", "2",
                data_dir=data, timeout=600)  # fmt: skip
    assert r.returncode == 1 and "1 failed" in r.stdout, r.stdout + r.stderr  # the broken PDF
    r = run_cli("docai", "batch", str(src), "--out", str(remote), "--workers", "2",
                "--ray-address", ray_address, data_dir=data, timeout=600)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{len(names)} document(s)" in r.stdout and "1 failed" in r.stdout
    got, expected = _outputs(remote), _outputs(local)
    assert set(got) == {f"{n}{ext}" for n in names for ext in (".md", ".json")}
    assert got == expected  # text, pages, boxes, digests, sizes: all the same
    assert _errors(remote) == _errors(local) == [("c-broken.pdf", _errors(local)[0][1])]

    # Resumable as locally: a second run on the cluster skips what is done.
    before = {p: p.stat().st_mtime_ns for p in remote.rglob("*.json")}
    again = run_cli("docai", "batch", str(src), "--out", str(remote), "--ray-address",
                    ray_address, data_dir=data, timeout=600)  # fmt: skip
    assert f"skipping {len(names)} document(s)" in again.stderr.replace("\n", " ")
    assert {p: p.stat().st_mtime_ns for p in remote.rglob("*.json")} == before

    # The settings' variable works as the flag does.
    env_run = run_cli("docai", "batch", str(src), "--out", str(remote), data_dir=data,
                      env={"INTRAMUROS_RAY_ADDRESS": "127.0.0.1:1"}, timeout=120)  # fmt: skip
    assert env_run.returncode == 1
    assert "Cannot reach the Ray cluster at 127.0.0.1:1" in env_run.stderr


def test_a_cluster_that_is_not_there_is_a_clear_error_fast(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    port = free_port()  # nothing listens there
    for args in (
        ("docai", "batch", str(src), "--out", str(tmp_path / "out"), "--ray-address",
         f"127.0.0.1:{port}"),
        ("kyc", "rescreen", "--tenant", "default", "--ray-address", f"ray://127.0.0.1:{port}"),
        ("docai", "batch", str(src), "--out", str(tmp_path / "out"), "--ray-address", "nonsense"),
        ("docai", "batch", str(src), "--out", str(tmp_path / "out"), "--ray-address",
         "localhost:notaport"),
    ):  # fmt: skip
        started = time.monotonic()
        r = run_cli(*args, data_dir=tmp_path / "data", timeout=120)
        assert r.returncode == 1, r.stdout + r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and "Ray" in last and "Traceback" not in r.stderr, last
        assert time.monotonic() - started < 30  # Ray itself would wait minutes


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'intramuros\[ray\]'"):
        RayExecutor("127.0.0.1:1")


def test_a_lost_worker_and_a_failing_task_are_told_apart(executor: RayExecutor) -> None:
    def crash() -> None:
        os._exit(3)  # the worker process dies under the task

    def fail(text: str) -> None:
        raise ValueError(text)

    def double(x: int) -> int:
        return 2 * x

    with pytest.raises(WorkerLost):
        executor.submit(crash).result(timeout=120)
    with pytest.raises(ValueError, match="bad row 7"):
        executor.submit(fail, "bad row 7").result(timeout=120)
    # The cluster goes on after both.
    assert [f.result(timeout=120) for f in [executor.submit(double, i) for i in range(5)]] == [
        0, 2, 4, 6, 8]  # fmt: skip


def test_batch_workers_send_a_lost_item_once_more_then_give_up(workers: BatchWorkers) -> None:
    def crash() -> None:
        os._exit(3)

    with pytest.raises(WorkerLost):  # on the cluster: lost, sent again, lost again
        workers.submit(crash).result(timeout=240)
    assert workers.submit(_double_it, 21).result(timeout=120) == 42


# In a process of its own: a spawned pool leaves multiprocessing's resource tracker
# running until its parent ends, which the test session would see as a survivor.
LOCAL_RETRY = """
import functools, os
from intramuros.platform.distributed import BatchWorkers, WorkerLost
local = BatchWorkers(1)
try:
    try:
        local.submit(functools.partial(os._exit, 3)).result(timeout=240)
    except WorkerLost:
        print("lost")
    print(local.submit(abs, -5).result(timeout=120))
    try:
        local.submit(int, "not a number").result(timeout=120)
    except ValueError:
        print("own error")
finally:
    local.close()
"""


def test_local_batch_workers_replace_a_dead_pool() -> None:
    # The pool whose process died is replaced, for the retry and for what follows.
    r = subprocess.run([sys.executable, "-c", LOCAL_RETRY], capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["lost", "5", "own", "error"]


def _double_it(x: int) -> int:
    return 2 * x


def _person(source_id: str, name: str) -> Entity:
    return Entity("watch", source_id, "person", [Name(name)])


def _without_timings(found: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "took_ms"} for item in found or []]


@pytest.fixture()
def flow(tmp_path: Path) -> Iterator[KycWorkflow]:
    url = f"sqlite:///{tmp_path / 'intramuros.db'}"
    db = Database(url)
    db.migrate()
    settings = load_settings(data_dir=tmp_path, database_url=url, kyc_refresh_seconds=0)
    yield KycWorkflow(db, Ledger(db, None), settings)
    db.close()


def test_kyc_rescreen_on_ray_equals_local(flow: KycWorkflow, workers: BatchWorkers) -> None:
    un = parse_list(DATA / "un" / "UN_consolidated.xml", "un", "un")
    flow.store.import_list(un, "un", "un", "un.xml")
    listed = [e.names[0].value for e in un.entities[:300]]
    customers = [{"customer_id": f"c{i}", "name": name} for i, name in enumerate(listed)]
    customers += [{"customer_id": f"n{i}", "name": f"Newname{i} Customerova"} for i in range(150)]
    for tenant in ("acme", "globex"):
        flow.screen(tenant, None, customers)

    # The matching itself: every score and field equal, in order, across chunks.
    flow.screener.refresh(force=True)
    index = flow.screener.index
    here = match_subjects(index, customers, 0.9, 0.8, None, 10)
    there = match_remotely(workers, index, customers, 0.9, 0.8)
    assert here[0] == there[0] and len(there[1] or []) == len(customers)
    assert _without_timings(there[1]) == _without_timings(here[1])
    assert sum(1 for item in there[1] or [] if item["matches"]) >= 250

    # A new list: the same cases are opened by a local and a Ray rescreen.
    flow.store.import_list(ImportResult(
        entities=[_person(f"w{i}", f"Newname{i} Customerova") for i in range(0, 150, 3)],
        files={"w.csv": "0" * 64}, list_date="2026-12-07"), "watch", "csv", "w.csv")  # fmt: skip
    at_home = flow.rescreen("acme", None)
    on_ray = flow.rescreen("globex", None, workers=workers)
    assert at_home["customers"] == on_ray["customers"] == len(customers)
    assert at_home["cases_opened"] == on_ray["cases_opened"] >= 50

    def opened(tenant: str, ids: list[str]) -> set[str]:
        return {flow.cases.get(tenant, c)["customer_id"] for c in ids}

    assert opened("acme", at_home["case_ids"]) == opened("globex", on_ray["case_ids"])
    assert flow.rescreen("globex", None, workers=workers)["cases_opened"] == 0


def test_kyc_rescreen_command_on_ray(ray_address: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    csv = tmp_path / "watch.csv"
    csv.write_text("id,name\nw1,Ivan Testovsky\nw2,Maria Exampleva\n", encoding="utf-8")
    people = tmp_path / "customers.csv"
    people.write_text("customer_id,name\nc1,Ivan Testovsky\nc2,Olga Newcomer\n", encoding="utf-8")
    for args in (("tenants", "create", "acme"),
                 ("kyc", "lists", "import", str(csv), "--format", "csv", "--list", "watch"),
                 ("kyc", "screen", str(people), "--out", str(tmp_path / "r.csv"), "--tenant",
                  "acme")):  # fmt: skip
        r = run_cli(*args, data_dir=data, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    csv.write_text("id,name\nw1,Ivan Testovsky\nw3,Olga Newcomer\n", encoding="utf-8")
    r = run_cli("kyc", "lists", "import", str(csv), "--format", "csv", "--list", "watch",
                data_dir=data, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli("kyc", "rescreen", "--tenant", "acme", "--ray-address", ray_address,
                data_dir=data, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "re-screened 2 customers" in r.stdout and "1 case(s) opened" in r.stdout, r.stdout


def test_bulk_embeddings_on_ray_equal_local(ray_address: str, tmp_path: Path) -> None:
    from tests.test_embed_batch import EXPECTED_ERRORS, error_codes, read_output, write_input

    data, source = tmp_path / "data", tmp_path / "in.jsonl"
    ids = write_input(source)
    outputs = {}
    for where, extra in (("local", ("--workers", "2")), ("ray", ("--ray-address", ray_address))):
        out = tmp_path / f"{where}.jsonl"
        r = run_cli("embed", str(source), "--out", str(out), "--model", EMBED_MODEL,
                    "--batch-size", "4", *extra, data_dir=data, timeout=600)  # fmt: skip
        assert r.returncode == 1 and f"{len(ids)} text(s) embedded" in r.stdout, r.stdout
        assert error_codes(out) == EXPECTED_ERRORS
        outputs[where] = read_output(out)
    assert [row["id"] for row in outputs["ray"]] == ids
    for here, there in zip(outputs["local"], outputs["ray"], strict=True):
        assert here["id"] == there["id"]
        assert max(abs(a - b) for a, b in zip(here["embedding"], there["embedding"],
                                              strict=True)) < 1e-6  # fmt: skip
