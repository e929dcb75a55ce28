"""Per-call metering: counters, wrap-around, apportioning, prices; then real calls through a server.

The arithmetic is tested with known inputs (fake clocks, a fake powercap tree
the test builds). The end-to-end tests run real models: usage, the ledger,
/metrics and GET /v1/usage must all show non-zero, labelled energy and cost.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from intramuros.errors import ConfigError
from intramuros.meter.energy import (
    CallEnergy,
    EnergyMeter,
    RaplSource,
    open_sources,
    shares,
    wrapped_delta,
)
from intramuros.meter.price import GRID_PRESETS, PriceModel, grid_intensity
from intramuros.settings import load_settings
from tests.conftest import CHAT_MODEL, EMBED_MODEL, Server, start_server, stop_server

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

# -- counters ------------------------------------------------------------------


def make_zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def test_wrapped_delta() -> None:
    assert wrapped_delta(100, 250, 1000) == 150
    assert wrapped_delta(900, 100, 1000) == 200  # wrapped once: 100 to the top, 100 after
    assert wrapped_delta(5, 5, 1000) == 0


def test_rapl_sums_packages_handles_wrap_and_skips_subzones(tmp_path: Path) -> None:
    pkg0 = make_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000, 10_000_000)
    pkg1 = make_zone(tmp_path, "intel-rapl:1", "package-1", 9_500_000, 10_000_000)
    make_zone(tmp_path, "intel-rapl:0:0", "core", 0, 10_000_000)  # inside package 0
    make_zone(tmp_path, "intel-rapl:2", "psys", 0, 10_000_000)  # the whole platform
    source = RaplSource(tmp_path)
    assert [z.path.name for z in source.zones] == ["intel-rapl:0", "intel-rapl:1"]
    assert source.joules() == 0.0
    (pkg0 / "energy_uj").write_text("3000000\n")  # +2 J
    (pkg1 / "energy_uj").write_text("500000\n")  # wrapped: +0.5 J to the top, +0.5 J after
    assert source.joules() == pytest.approx(3.0)
    (pkg0 / "energy_uj").write_text("3500000\n")
    assert source.joules() == pytest.approx(3.5)


def test_amd_zone_names_are_read(tmp_path: Path) -> None:
    make_zone(tmp_path, "amd-rapl:0", "package-0", 10, 1000)
    assert RaplSource(tmp_path).label == "measured-rapl"


def test_no_readable_zone(tmp_path: Path) -> None:
    zone = make_zone(tmp_path, "intel-rapl:0", "package-0", 10, 1000)
    (zone / "energy_uj").unlink()  # as when the file is root-only: unreadable
    with pytest.raises(FileNotFoundError):
        RaplSource(tmp_path)
    assert all(s.label != "measured-rapl" for s in open_sources("auto", tmp_path))
    with pytest.raises(FileNotFoundError):
        open_sources("rapl", tmp_path)


def test_estimate_mode_opens_no_counter(tmp_path: Path) -> None:
    make_zone(tmp_path, "intel-rapl:0", "package-0", 10, 1000)
    assert open_sources("estimate", tmp_path) == []


# -- apportioning ----------------------------------------------------------------


class Clock:
    """A hand-driven clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeCounter:
    """A counter the test advances."""

    label = "measured-rapl"

    def __init__(self) -> None:
        self.total = 0.0

    def joules(self) -> float:
        return self.total


def test_overlapping_calls_share_each_interval() -> None:
    cpu, wall, counter = Clock(), Clock(), FakeCounter()
    meter = EnergyMeter([counter], watts_per_core=99.0, cpu_clock=cpu, wall_clock=wall)
    a, b = CallEnergy(), CallEnergy()
    counter.total, cpu.now, wall.now = 5.0, 1.0, 1.0  # before any call: idle, nobody's
    meter.start(a)
    counter.total, cpu.now, wall.now = 15.0, 2.0, 2.0  # a alone: 10 J, 1 s CPU, 1 s wall
    meter.start(b)
    counter.total, cpu.now, wall.now = 35.0, 4.0, 3.0  # both: 20 J, 2 s CPU, 1 s wall
    meter.stop(a)
    counter.total, cpu.now, wall.now = 41.0, 5.0, 4.0  # b alone: 6 J
    meter.stop(b)
    counter.total = 100.0  # after: nobody's
    meter.stop(b)  # idempotent
    assert a.joules == pytest.approx(10 + 10)
    assert b.joules == pytest.approx(10 + 6)
    assert a.cpu_seconds == pytest.approx(1 + 1)
    assert b.cpu_seconds == pytest.approx(1 + 1)
    assert a.machine_seconds == pytest.approx(1.5)
    assert b.machine_seconds == pytest.approx(1.5)
    assert a.source == b.source == "measured-rapl"


def test_estimate_is_cpu_time_times_watts() -> None:
    cpu, wall = Clock(), Clock()
    meter = EnergyMeter([], watts_per_core=4.0, cpu_clock=cpu, wall_clock=wall)
    call = CallEnergy()
    meter.start(call)
    cpu.now, wall.now = 2.5, 1.0
    meter.stop(call)
    assert call.source == "estimated"
    assert call.joules == pytest.approx(10.0)
    assert call.cpu_seconds == pytest.approx(2.5)


def test_shares() -> None:
    assert shares([]) == []
    assert shares([3.0, 1.0]) == [0.75, 0.25]
    assert shares([3.0, None]) == [0.5, 0.5]  # one call's threads unknown: equal
    assert shares([0.0, 0.0]) == [0.5, 0.5]


def test_thread_cpu_weights_follow_real_work() -> None:
    """Two calls on two threads, one busy and one asleep: the busy one gets the energy."""
    counter = FakeCounter()
    wall = Clock()
    meter = EnergyMeter([counter], watts_per_core=1.0, wall_clock=wall)
    busy, idle = CallEnergy(), CallEnergy()
    ready = threading.Barrier(3)
    done = threading.Barrier(3)
    settled = threading.Barrier(3)  # threads stay alive until the meter has read their clocks

    def work(call: CallEnergy, spin: bool) -> None:
        call.attach_current_thread()
        meter.start(call)
        ready.wait()
        end = time.thread_time() + 0.2
        while spin and time.thread_time() < end:
            pass
        if not spin:
            time.sleep(0.2)
        done.wait()
        settled.wait()

    threads = [threading.Thread(target=work, args=(busy, True)),
               threading.Thread(target=work, args=(idle, False))]  # fmt: skip
    for t in threads:
        t.start()
    ready.wait()
    done.wait()
    counter.total = 100.0
    meter.stop(busy)  # settles the shared interval by thread CPU
    meter.stop(idle)
    settled.wait()
    for t in threads:
        t.join()
    assert busy.joules > 90.0
    assert busy.joules + idle.joules == pytest.approx(100.0)


# -- prices ----------------------------------------------------------------------


def test_price_model_arithmetic() -> None:
    model = PriceModel(hardware_eur=8766.0, lifetime_years=1.0, utilisation=0.5,
                       electricity_eur_per_kwh=0.25, grid_gco2e_per_kwh=100.0)  # fmt: skip
    assert model.hardware_eur_per_hour == pytest.approx(2.0)
    # 1 h of machine time and 3.6 MJ (1 kWh): 2 EUR hardware + 0.25 EUR power.
    assert model.cost_eur(3.6e6, 3600.0) == pytest.approx(2.25)
    assert model.co2e_grams(3.6e6) == pytest.approx(100.0)
    assert model.cost_eur(0.0, 0.0) == 0.0


def test_grid_presets_and_numbers() -> None:
    assert grid_intensity("eu") == GRID_PRESETS["eu"] == 264.0
    assert grid_intensity("FR") == 60.0
    assert grid_intensity("12.5") == 12.5
    for bad in ("mars", "-1", ""):
        with pytest.raises(ValueError):
            grid_intensity(bad)


@pytest.mark.parametrize(
    "overrides",
    [{"grid_intensity": "mars"}, {"watts_per_core": 0}, {"hardware_utilisation": 1.5},
     {"hardware_lifetime_years": -1}, {"energy_source": "solar"}],
)  # fmt: skip
def test_bad_price_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        load_settings(**overrides)


def test_settings_build_the_price_model() -> None:
    settings = load_settings(grid_intensity="fr", electricity_eur_per_kwh=0.1)
    prices = PriceModel.from_settings(settings)
    assert prices.grid_gco2e_per_kwh == 60.0
    assert prices.electricity_eur_per_kwh == 0.1


# -- real calls ------------------------------------------------------------------

METERING = ("energy_joules", "cost_eur", "co2e_grams", "cpu_seconds", "latency_ms")


def _check_usage(usage: dict[str, object], source: str) -> None:
    for key in METERING:
        value = usage.get(key)
        assert isinstance(value, float) and value > 0, (key, usage)
    assert usage["energy_source"] == source


def test_chat_usage_ledger_metrics_and_usage_report(server: Server) -> None:
    headers = server.headers()
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        r = client.post("/v1/chat/completions", headers=headers, json={
            "model": CHAT_MODEL, "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": "Count to five."}],
        })  # fmt: skip
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        _check_usage(usage, "estimated")
        assert usage["completion_tokens"] > 0
        assert usage["decode_tokens_per_second"] > 0
        assert 0 <= usage["queue_ms"] <= usage["ttft_ms"] <= usage["latency_ms"]

        ledger = client.get("/v1/admin/ledger", headers=server.headers("admin"),
                            params={"limit": 1000}).json()["data"]  # fmt: skip
        mine = [rec for rec in ledger if rec["kind"] == "model_call"
                and rec["data"].get("route") == "/v1/chat/completions"
                and rec["data"].get("energy_joules") == usage["energy_joules"]]  # fmt: skip
        assert mine, "the call's ledger record carries its energy"
        assert mine[0]["data"]["cost_eur"] == usage["cost_eur"]
        assert mine[0]["data"]["energy_source"] == "estimated"

        metrics = client.get("/metrics").text
        series = f'intramuros_energy_joules_total{{model="{CHAT_MODEL}",source="estimated"}}'
        line = next(x for x in metrics.splitlines() if x.startswith(series))
        assert float(line.split()[-1]) >= usage["energy_joules"]
        assert f'intramuros_cost_eur_total{{model="{CHAT_MODEL}"}}' in metrics

        rows = client.get("/v1/usage", headers=headers).json()["data"]
        row = next(x for x in rows if x["model"] == CHAT_MODEL)
        assert row["energy_joules"] >= usage["energy_joules"] - 1e-6
        assert row["cost_eur"] > 0 and row["co2e_grams"] > 0


def test_stream_and_embeddings_are_metered(server: Server) -> None:
    import openai

    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.keys["user"],
                           max_retries=0, timeout=120)  # fmt: skip
    try:
        chunks = list(client.chat.completions.create(
            model=CHAT_MODEL, max_tokens=8, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Hello"}],
        ))  # fmt: skip
        last = chunks[-1]
        assert last.usage is not None
        _check_usage(last.usage.model_dump(), "estimated")
        emb = client.embeddings.create(model=EMBED_MODEL, input=["metered text"])
        _check_usage(emb.usage.model_dump(), "estimated")
    finally:
        client.close()


def test_measured_path_on_a_fake_powercap_tree(tmp_path: Path) -> None:
    """A server reading a powercap tree whose counter a thread advances (and wraps)."""
    root = tmp_path / "powercap"
    # The counter wraps every 500 ticks (about 5 s): more often than reads come, a whole
    # wrap would be invisible, as with real RAPL (the unit tests cover wrap-around).
    zone = make_zone(root, "intel-rapl:0", "package-0", 0, 50_000_000)
    stop = threading.Event()
    added = [0.0]  # joules the counter has gained so far

    def burn() -> None:
        value = 0
        while not stop.is_set():
            value = (value + 100_000) % 50_000_000  # 0.1 J a tick
            (zone / "energy_uj.tmp").write_text(f"{value}\n")
            (zone / "energy_uj.tmp").replace(zone / "energy_uj")
            added[0] += 0.1
            time.sleep(0.01)

    ticker = threading.Thread(target=burn, daemon=True)
    ticker.start()
    # A huge watts-per-core: were the estimate used instead, it would be far off the counter.
    srv = start_server(tmp_path / "data", "--preload-models", CHAT_MODEL,
                       "--energy-source", "rapl", "--powercap-root", str(root),
                       "--watts-per-core", "1000")  # fmt: skip
    try:
        before = added[0]
        r = httpx.post(srv.base_url + "/v1/chat/completions", timeout=120, json={
            "model": CHAT_MODEL, "max_tokens": 48, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell me about Paris."}],
        })  # fmt: skip
        after = added[0]
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        _check_usage(usage, "measured-rapl")
        # What the counter gained while the call ran (one tick of slack at each end);
        # not CPU seconds x 1000 W.
        assert usage["energy_joules"] <= after - before + 0.2 + 1e-9
        assert usage["energy_joules"] < usage["cpu_seconds"] * 1000 / 2
    finally:
        stop.set()
        stop_server(srv)
        ticker.join()


def test_required_counter_missing_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="energy_source=rapl"):
        start_server(tmp_path / "data", "--preload-models", "", "--energy-source", "rapl",
                     "--powercap-root", str(tmp_path / "nothing-here"))  # fmt: skip


def test_nvml_counter_in_millijoules(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML's total-energy counters (mJ per GPU), read through a stand-in for pynvml."""
    import sys
    import types

    readings = {0: 1_000, 1: 5_000}
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    fake.nvmlDeviceGetTotalEnergyConsumption = lambda h: readings[h]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sources = open_sources("nvml")
    assert [s.label for s in sources] == ["measured-nvml"]
    readings[0] += 1_500
    readings[1] += 500
    assert sources[0].joules() == pytest.approx(2.0)
