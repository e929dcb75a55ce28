"""Metric labels a caller cannot multiply (fast tier, the app in-process).

Every model label on ``/metrics`` is a series per route and status, kept in
memory for the life of the process. A request naming a model that does not
exist must not add one: otherwise one key sending made-up names grows the
server's memory and its ``/metrics`` answer without bound.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from intramuros.meter.metrics import MAX_MODEL_LABELS, OTHER_MODEL, Metrics
from tests.inprocess import FAKE_CHAT, InProcessApp, serve_in_process


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    with serve_in_process(tmp_path_factory.mktemp("labels")) as app:
        yield app


def test_made_up_model_names_add_no_series(running: InProcessApp) -> None:
    user = running.client("user")
    names = ["junk-" + secrets.token_hex(6) for _ in range(40)]
    for name in names:
        r = user.post("/v1/chat/completions", json={
            "model": name, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 404
    ok = user.post("/v1/chat/completions", json={
        "model": FAKE_CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert ok.status_code == 200
    text = running.client("operator").get("/metrics").text
    assert not any(name in text for name in names)
    requests = [line for line in text.splitlines() if line.startswith("intramuros_requests_total{")]
    # The refusals are still counted, under the one label for unknown models.
    assert any(f'model="{OTHER_MODEL}"' in line and 'status="404"' in line for line in requests)
    assert any(f'model="{FAKE_CHAT}"' in line and 'status="200"' in line for line in requests)


def test_a_model_once_reached_keeps_its_label_for_its_failures() -> None:
    metrics = Metrics()
    assert metrics.model_label("m", reached=False) == OTHER_MODEL
    assert metrics.model_label("m", reached=True) == "m"
    assert metrics.model_label("m", reached=False) == "m"


def test_model_labels_are_bounded() -> None:
    metrics = Metrics()
    for i in range(MAX_MODEL_LABELS):
        assert metrics.model_label(f"m{i}", reached=True) == f"m{i}"
    assert metrics.model_label("one-too-many", reached=True) == OTHER_MODEL


def test_call_series_are_looked_up_once_and_count_where_labels_would() -> None:
    metrics = Metrics()
    first = metrics.call_series("/v1/x", "m", 200, "estimated")
    assert metrics.call_series("/v1/x", "m", 200, "estimated") is first
    first.requests.inc()
    assert metrics.requests.labels("/v1/x", "m", "200")._value.get() == 1.0
