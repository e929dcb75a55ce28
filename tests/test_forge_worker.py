"""The training worker's bookkeeping around the trainer (a stand-in trainer: fast): the disk
filling mid-job, two workers racing, a cancel between steps, a dead worker's job."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from intramuros.forge import train as trainer
from intramuros.forge.jobs import Jobs, new_job_id, worker_id
from intramuros.forge.settings import ForgeSettings
from intramuros.forge.workdir import ADAPTER, job_dir, write_examples
from intramuros.forge.worker import run_job, worker_lock
from intramuros.platform.worker import WorkerInstallation
from intramuros.settings import load_settings, section

BASE = "smollm2-135m-instruct"


@pytest.fixture()
def home(tmp_path: Path) -> Iterator[WorkerInstallation]:
    from intramuros.catalog.catalog import Catalog
    from intramuros.store.db import Database

    settings = load_settings(data_dir=tmp_path)
    db = Database(settings.resolved_database_url())
    db.migrate()
    Catalog(db, settings).sync_bundled()
    db.close()
    installed = WorkerInstallation(settings)
    yield installed
    installed.close()


def _job(home: WorkerInstallation, status: str = "running", **extra: Any) -> str:
    base = home.model_record(BASE)
    job_id, now = new_job_id(), time.time()
    Jobs(home.tables).create({
        "id": job_id, "tenant": "default", "key_id": None, "status": status,
        "dialect": "openai", "model": BASE, "base_sha256": base.sha256, "suffix": "t",
        "training_file": "file-x", "validation_file": None, "training_sha256": "0" * 64,
        "validation_sha256": None, "requested": {}, "seed": 1, "metadata": None,
        "merge": False, "auto_start": True, "created_at": now, "modified_at": now,
        "cancel_requested": False, "attempts": 1, "worker": worker_id(), "heartbeat": now,
        "hyper": {"n_epochs": 1, "batch_size": 2, "learning_rate": 1e-4, "seq_len": 32,
                  "training_steps": None, "lora_rank": 4},
        **extra,
    }, admit=lambda conn: None)  # fmt: skip
    write_examples(job_dir(home.settings.data_dir, "default", job_id),
                   {"training": [([1, 2, 3], [False, True, True])]})  # fmt: skip
    return job_id


def _forge(home: WorkerInstallation) -> ForgeSettings:
    return section(home.settings, ForgeSettings)


def test_the_disk_filling_fails_the_job_and_registers_nothing(
    home: WorkerInstallation, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()

    def trained(*_: Any, **__: Any) -> trainer.TrainResult:
        return trainer.TrainResult(adapter_dir=adapter_dir, steps=1, trained_tokens=2,
                                   train_loss=1.0, before=None, after=None)  # fmt: skip

    def full(*_: Any, **__: Any) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(trainer, "train", trained)
    monkeypatch.setattr("intramuros.forge.export.export_lora_gguf", full)
    jobs = Jobs(home.tables)
    job_id = _job(home)
    run_job(home, jobs, jobs.get(None, job_id), _forge(home))
    row = jobs.get(None, job_id)
    assert row.status == "failed" and row.error is not None
    assert "No space left on device" in row.error["message"]
    assert row.fine_tuned_model is None
    names = [r.name for r in _records(home)]
    assert not any(n.startswith("ft:") for n in names), names
    assert not (job_dir(home.settings.data_dir, "default", job_id) / ADAPTER).exists()
    entries = home.auditor.records(kind="fine_tune")  # type: ignore[attr-defined]
    assert any(e.kind == "fine_tune" and e.data["action"] == "failed" for e in entries)


def _records(home: WorkerInstallation) -> list[Any]:
    from intramuros.catalog.catalog import Catalog

    return Catalog(home._db, home.settings).records()  # type: ignore[attr-defined]


def test_a_cancel_between_steps_ends_the_job_cancelled(
    home: WorkerInstallation, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = Jobs(home.tables)
    job_id = _job(home)
    seen: list[bool] = []

    def stopping(base: Path, examples: Any, validation: Any, hyper: Any, work: Path,
                 progress: Any) -> Any:  # fmt: skip
        seen.append(progress.should_stop())
        jobs.update(job_id, cancel_requested=True)
        seen.append(progress.should_stop())
        raise trainer.Cancelled()

    monkeypatch.setattr(trainer, "train", stopping)
    run_job(home, jobs, jobs.get(None, job_id), _forge(home))
    assert seen == [False, True]
    assert jobs.get(None, job_id).status == "cancelled"


def test_an_altered_base_fails_the_job_by_name(home: WorkerInstallation) -> None:
    jobs = Jobs(home.tables)
    job_id = _job(home, base_sha256="f" * 64)
    run_job(home, jobs, jobs.get(None, job_id), _forge(home))
    row = jobs.get(None, job_id)
    assert row.status == "failed" and row.error is not None
    assert row.error["code"] == "model_changed" and BASE in row.error["message"]


def test_two_workers_race_for_one_job_and_one_lock(home: WorkerInstallation) -> None:
    jobs = Jobs(home.tables)
    job_id = _job(home, status="queued", attempts=0, worker=None, heartbeat=None)
    row = jobs.next_runnable(time.time() - 60)
    assert row is not None and row.id == job_id
    assert jobs.claim(row, "host:1") is True
    assert jobs.claim(row, "host:2") is False  # the same snapshot: the row has moved on
    assert jobs.get(None, job_id).worker == "host:1"
    with worker_lock(home.settings.data_dir) as first, \
            worker_lock(home.settings.data_dir) as second:  # fmt: skip
        assert first is True and second is False


def test_a_dead_workers_job_is_taken_over(home: WorkerInstallation) -> None:
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    jobs = Jobs(home.tables)
    dead = f"{socket.gethostname()[:40]}:{gone.stdout.strip()}"
    job_id = _job(home, worker=dead)
    assert jobs.next_runnable(time.time() - 60).id == job_id  # type: ignore[union-attr]
    jobs.update(job_id, worker=worker_id())  # alive and reporting: not taken
    assert jobs.next_runnable(time.time() - 60) is None
    jobs.update(job_id, heartbeat=time.time() - 120)  # silent too long: taken
    assert jobs.next_runnable(time.time() - 60) is not None
