"""Prometheus metrics of one server (a registry per app, so tests stay apart)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from intramuros.engines.base import EngineStat

# What the loaded engines export: (model, its stats) for each.
EngineStats = Callable[[], Iterable[tuple[str, list[EngineStat]]]]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


# A model label is a model's name only once a call has reached that model: a request
# naming a model that does not exist is counted under OTHER_MODEL, so that a caller cannot
# grow the metrics (each series is memory, and /metrics output) with made-up names.
OTHER_MODEL = "other"
MAX_MODEL_LABELS = 1024
_MAX_CACHED_SERIES = 8192


@dataclass(frozen=True)
class CallSeries:
    """The metric series one call updates (looked up once per route, model, status and
    energy source: ``labels()`` is a lock and a tuple per metric, on every call)."""

    requests: Any
    latency: Any
    energy: Any
    cpu_seconds: Any
    cost: Any
    co2e: Any
    prompt_tokens: Any
    completion_tokens: Any
    ttft: Any
    queue_wait: Any


class Metrics:
    """The counters, histograms and gauges the gateway exports on ``/metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "intramuros_requests",
            "Requests by route, model and HTTP status.",
            ["route", "model", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "intramuros_tokens",
            "Tokens processed, by model and direction (prompt or completion).",
            ["model", "direction"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "intramuros_request_latency_seconds",
            "Time from request to last byte, by route and model.",
            ["route", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "intramuros_time_to_first_token_seconds",
            "Time from request to the first generated token, by model.",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "intramuros_queue_wait_seconds",
            "Time a request waited for its model, by model.",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "intramuros_queue_depth",
            "Requests waiting for a model now.",
            ["model"],
            registry=self.registry,
        )
        self.egress_refused = Counter(
            "intramuros_egress_refused",
            "Outbound connections or name lookups refused by the egress guard.",
            registry=self.registry,
        )
        self.ledger_failures = Counter(
            "intramuros_ledger_failures",
            "Calls whose ledger record could not be written.",
            registry=self.registry,
        )
        self.energy = Counter(
            "intramuros_energy_joules",
            "Energy of model calls (joules), by model and source (measured-rapl, estimated...).",
            ["model", "source"],
            registry=self.registry,
        )
        self.cpu_seconds = Counter(
            "intramuros_cpu_seconds",
            "Process CPU time apportioned to model calls, by model.",
            ["model"],
            registry=self.registry,
        )
        self.cost = Counter(
            "intramuros_cost_eur",
            "Cost of model calls (EUR: hardware amortisation + electricity), by model.",
            ["model"],
            registry=self.registry,
        )
        self.co2e = Counter(
            "intramuros_co2e_grams",
            "CO2-equivalent of model calls' energy (grams), by model.",
            ["model"],
            registry=self.registry,
        )
        self._model_labels: set[str] = set()
        self._series: dict[tuple[str, str, int, str], CallSeries] = {}
        self._series_lock = threading.Lock()
        self.models_loaded = Gauge(
            "intramuros_models_loaded", "Models loaded now.", registry=self.registry
        )

    def model_label(self, model: str, *, reached: bool) -> str:
        """``model`` as a label value: itself if a call has reached it (``reached``: this
        one did), else ``OTHER_MODEL``; at most ``MAX_MODEL_LABELS`` names."""
        if model in self._model_labels:
            return model
        if reached and len(self._model_labels) < MAX_MODEL_LABELS:
            with self._series_lock:
                self._model_labels.add(model)
            return model
        return OTHER_MODEL

    def call_series(self, route: str, model: str, status: int, source: str) -> CallSeries:
        """The series of a call on ``route`` with ``model`` (a label from
        :meth:`model_label`) that ended with ``status``, its energy from ``source``."""
        key = (route, model, status, source)
        found = self._series.get(key)
        if found is not None:
            return found
        series = CallSeries(
            requests=self.requests.labels(route, model, str(status)),
            latency=self.latency.labels(route, model),
            energy=self.energy.labels(model, source),
            cpu_seconds=self.cpu_seconds.labels(model), cost=self.cost.labels(model),
            co2e=self.co2e.labels(model), prompt_tokens=self.tokens.labels(model, "prompt"),
            completion_tokens=self.tokens.labels(model, "completion"),
            ttft=self.ttft.labels(model), queue_wait=self.queue_wait.labels(model),
        )  # fmt: skip
        with self._series_lock:
            if len(self._series) >= _MAX_CACHED_SERIES:
                self._series.clear()  # looked up again when next used
            self._series[key] = series
        return series

    def export_engines(self, source: EngineStats) -> None:
        """Export the loaded engines' own stats (``Engine.stats``), read at each scrape."""
        self.registry.register(_EngineCollector(source))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return bytes(generate_latest(self.registry))


class _EngineCollector(Collector):
    """``intramuros_engine_<name>{model=...}`` from each loaded engine's stats."""

    def __init__(self, source: EngineStats) -> None:
        self.source = source

    def describe(self) -> list[Metric]:
        return []  # read at each scrape: the loaded models change

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for model, stats in self.source():
            for stat in stats:
                family = families.get(stat.name)
                if family is None:
                    kind = CounterMetricFamily if stat.kind == "counter" else GaugeMetricFamily
                    family = kind(f"intramuros_engine_{stat.name}", stat.help,
                                  labels=["model", *(k for k, _ in stat.labels)])  # fmt: skip
                    families[stat.name] = family
                family.add_metric([model, *(v for _, v in stat.labels)], stat.value)
        yield from families.values()
