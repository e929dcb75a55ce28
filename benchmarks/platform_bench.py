"""The platform's own cost, measured side by side (run by ``serving.py --part platform``).

1. Added latency: a 1-token chat completion through the gateway (an
   ``openai-upstream`` model) against calling the same upstream directly,
   through a bare Python proxy (the floor: forwarding and nothing else), and
   through LiteLLM's proxy when ``litellm`` is installed; sequential calls on
   keep-alive connections, the paths interleaved call by call.
2. Streams while another process holds the database's write lock for 2 s:
   the longest gap between two tokens of running streams (fake engine, a token
   every 10 ms), while short calls finish (and are recorded) meanwhile.
3. ``/v1/kyc/screen`` over HTTP: screenings per second with 1 and 4 clients
   (the sanctions lists of ../shared/data).

The upstream is a minimal OpenAI-compatible server (Starlette on uvicorn, one
fixed token), so that what is measured is what sits in front of it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SANCTIONS = ROOT.parent / "shared" / "data" / "sanctions"
LITELLM_KEY = "sk-bench-" + os.urandom(16).hex()

UPSTREAM = r'''
import json, sys, time
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

def chunk(model, delta, finish=None, usage=None):
    return "data: " + json.dumps({
        "id": "chatcmpl-up", "object": "chat.completion.chunk", "created": int(time.time()),
        "model": model, "usage": usage,
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }) + "\n\n"

async def chat(request):
    body = await request.json()
    model = body.get("model", "up")
    if body.get("stream"):
        usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
        events = [chunk(model, {"role": "assistant", "content": "Hi"}),
                  chunk(model, {}, "length")]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk(model, {}, usage=usage))
        events.append("data: [DONE]\n\n")
        return StreamingResponse(iter(events), media_type="text/event-stream")
    return JSONResponse({
        "id": "chatcmpl-up", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "up"),
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant", "content": "Hi"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    })

async def models(request):
    return JSONResponse({"object": "list", "data": [
        {"id": "up", "object": "model", "created": 0, "owned_by": "bench"}]})

app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                        Route("/v1/models", models)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False)
'''


# The floor of any Python proxy on this machine: Starlette on uvicorn (httptools), the
# body forwarded as is with httpx's async client, the answer handed back; no key, no
# validation, no record. What the gateway adds beyond this row is its own work.
BARE_PROXY = r'''
import sys, httpx, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

upstream = httpx.AsyncClient(base_url=sys.argv[2])

async def chat(request):
    r = await upstream.post("/chat/completions", content=await request.body(),
                            headers={"content-type": "application/json"})
    return Response(r.content, status_code=r.status_code, media_type="application/json")

app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, loop="asyncio")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    """Wait until something listens on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in time")


@contextmanager
def process(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        yield
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def cli(data_dir: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "intramuros.cli", *args, "--data-dir",
                           str(data_dir)], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"intramuros {' '.join(args)}: {done.stderr}")
    return done.stdout


@contextmanager
def gateway(data_dir: Path, *flags: str) -> Iterator[tuple[str, str]]:
    """``intramuros serve`` on ``data_dir`` with a user key: (base URL, key)."""
    cli(data_dir, "tenants", "create", "acme")
    key = cli(data_dir, "keys", "create", "--tenant", "acme").strip()
    port = free_port()
    cmd = [sys.executable, "-m", "intramuros.cli", "serve", "--port", str(port),
           "--data-dir", str(data_dir), "--log-level", "warning", *flags]
    with process(cmd, data_dir / "server.log"):
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/readyz")
        yield base, key


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1. added latency -----------------------------------------------------------------


def added_latency(tmp: Path, calls: int) -> list[tuple[str, float, float, float]]:
    """Rows (path, p50 ms, p90 ms, added p50 ms) for a 1-token chat completion."""
    up_port = free_port()
    up_url = f"http://127.0.0.1:{up_port}/v1"
    with process([sys.executable, "-c", UPSTREAM, str(up_port)], tmp / "upstream.log"):
        wait_http(up_url + "/models")
        data = tmp / "gw"
        cli(data, "models", "add-upstream", "up", "--base-url", up_url,
            "--upstream-model", "up", "--capabilities", "chat")
        bare_port = free_port()
        with gateway(data, "--preload-models", "up") as (base, key), litellm(tmp, up_url) as lite, \
                process([sys.executable, "-c", BARE_PROXY, str(bare_port), up_url],
                        tmp / "bare.log"):  # fmt: skip
            bare = f"http://127.0.0.1:{bare_port}/v1"
            wait_port(bare_port)
            paths: dict[str, tuple[httpx.Client, str]] = {
                "upstream directly": (httpx.Client(base_url=up_url), "up"),
                "bare Python proxy": (httpx.Client(base_url=bare), "up"),
                "intramuros gateway": (httpx.Client(
                    base_url=base + "/v1", headers={"Authorization": f"Bearer {key}"}), "up"),
            }
            if lite is not None:
                paths["LiteLLM proxy"] = (httpx.Client(
                    base_url=lite, headers={"Authorization": f"Bearer {LITELLM_KEY}"}), "up")
            times: dict[str, list[float]] = {name: [] for name in paths}
            body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1}
            for i in range(calls + 50):
                for name, (client, model) in paths.items():
                    t0 = time.perf_counter()
                    r = client.post("/chat/completions", json={**body, "model": model})
                    elapsed = time.perf_counter() - t0
                    if r.status_code != 200:
                        raise RuntimeError(f"{name}: {r.status_code} {r.text[:300]}")
                    if i >= 50:  # warm-up
                        times[name].append(elapsed * 1000)
            for client, _ in paths.values():
                client.close()
    base_p50 = statistics.median(times["upstream directly"])
    return [(name, statistics.median(t), percentile(t, 0.9), statistics.median(t) - base_p50)
            for name, t in times.items()]


@contextmanager
def litellm(tmp: Path, up_url: str) -> Iterator[str | None]:
    """LiteLLM's proxy in front of the same upstream, if ``litellm`` is installed (on the
    PATH, or where ``LITELLM_BIN`` says: it may live in a virtual environment of its own)."""
    exe = os.environ.get("LITELLM_BIN") or shutil.which("litellm")
    if exe is None:
        yield None
        return
    port = free_port()
    config = tmp / "litellm.yaml"
    config.write_text(json.dumps({"model_list": [{"model_name": "up", "litellm_params": {
        "model": "openai/up", "api_base": up_url, "api_key": "none"}}]}))
    cmd = [exe, "--config", str(config), "--port", str(port), "--host", "127.0.0.1"]
    # Authenticated, as the gateway is: its master key on every call.
    env = {"LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_TELEMETRY": "False"}
    with process(cmd, tmp / "litellm.log", env=env):
        wait_http(f"http://127.0.0.1:{port}/health/liveliness")
        yield f"http://127.0.0.1:{port}/v1"


# -- 2. streams under a held write lock -----------------------------------------------


def stream_gaps(tmp: Path, streams: int = 2) -> dict[str, float]:
    """The longest token gaps of running streams, before and while a process holds the lock."""
    data = tmp / "gaps"
    # A fake model runs one call at a time: one model per stream, one for the short calls.
    names = [f"fake-{i}" for i in range(streams + 1)]
    for name in names:
        cli(data, "models", "add", "--engine", "fake", "--name", name, "--option",
            "token_delay=0.01", "--option", "reply_tokens=800", "--capabilities", "chat",
            "--context-length", "4096")
    db = data / "intramuros.db"
    with gateway(data, "--preload-models", ",".join(names)) as (base, key):
        headers = {"Authorization": f"Bearer {key}"}
        arrivals: list[list[float]] = [[] for _ in range(streams)]
        stop = threading.Event()
        finished: list[float] = []

        def streamer(slot: int) -> None:
            body = {"model": names[slot], "stream": True, "max_tokens": 800,
                    "messages": [{"role": "user", "content": f"Story {slot}"}]}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client, \
                    client.stream("POST", "/v1/chat/completions", json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {") and '"content":"' in line:
                        arrivals[slot].append(time.perf_counter())
                    if stop.is_set():
                        return

        def short_calls() -> None:
            # Calls that end (and are recorded) meanwhile: the recorder has work to do.
            body = {"model": names[-1], "max_tokens": 3,
                    "messages": [{"role": "user", "content": "Hi"}]}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                while not stop.is_set():
                    client.post("/v1/chat/completions", json=body).raise_for_status()
                    finished.append(time.perf_counter())

        threads = [threading.Thread(target=streamer, args=(i,)) for i in range(streams)]
        threads.append(threading.Thread(target=short_calls))
        for t in threads:
            t.start()
        time.sleep(2.0)
        lock_start = time.perf_counter()
        holder = sqlite3.connect(db, timeout=30, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        locked_at = time.perf_counter()
        time.sleep(2.0)
        holder.execute("COMMIT")
        lock_end = time.perf_counter()
        holder.close()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join()

    def gaps(lo: float, hi: float) -> list[float]:
        out = []
        for times in arrivals:
            out += [(b - a) * 1000 for a, b in itertools.pairwise(times) if lo <= b <= hi]
        return out

    before = gaps(0, lock_start)
    during = gaps(locked_at, lock_end)
    waits = [t for t in finished if locked_at <= t <= lock_end]
    return {"p50 gap ms before": statistics.median(before),
            "max gap ms before": max(before),
            "p50 gap ms while locked": statistics.median(during),
            "max gap ms while locked": max(during),
            "tokens while locked": float(len(during)),
            "short calls answered while locked": float(len(waits)),
            "lock wait ms": (locked_at - lock_start) * 1000}


# -- 3. KYC screening over HTTP -------------------------------------------------------


def kyc_throughput(tmp: Path, seconds: float = 10.0) -> list[tuple[int, float, float]] | None:
    """Rows (clients, screenings/s, p50 ms), or None without the sanctions lists."""
    if not (SANCTIONS / "ofac").is_dir():
        return None
    data = tmp / "kyc"
    cli(data, "kyc", "lists", "import", str(SANCTIONS / "ofac"), "--format", "ofac",
        "--list", "ofac")
    cli(data, "kyc", "lists", "import", str(SANCTIONS / "un" / "UN_consolidated.xml"),
        "--format", "un", "--list", "un")
    names = [json.loads(line)["query"]["name"] for line in
             (ROOT / "benchmarks" / "kyc_evalset.jsonl").read_text().splitlines()[:400]]
    with gateway(data, "--preload-models", "") as (base, key):
        return [_screen(base, key, names, clients, seconds) for clients in (1, 4)]


def _screen(base: str, key: str, names: list[str], clients: int,
            seconds: float) -> tuple[int, float, float]:
    counts = [0] * clients
    lat: list[float] = []
    stop = threading.Event()

    def worker(slot: int) -> None:
        with httpx.Client(base_url=base, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as client:
            i = slot
            while not stop.is_set():
                t0 = time.perf_counter()
                r = client.post("/v1/kyc/screen", json={
                    "name": names[i % len(names)], "type": "person"})
                lat.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
                counts[slot] += 1
                i += clients

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(clients)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # warm-up, not counted
    start_counts, t0 = sum(counts), time.perf_counter()
    time.sleep(seconds)
    done, elapsed = sum(counts) - start_counts, time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    return clients, done / elapsed, statistics.median(lat)


def run(tmp: Path, calls: int, table: Callable[..., Any]) -> list[Any]:
    """Every measurement; rich tables to print."""
    out = []
    print("added latency (1-token chat through an upstream) ...", flush=True)
    lat = added_latency(tmp, calls)
    t = table(title=f"1-token chat completion, {calls} sequential calls per path, interleaved")
    for col in ("path", "p50 ms", "p90 ms", "added p50 ms"):
        t.add_column(col)
    for name, p50, p90, added in lat:
        t.add_row(name, f"{p50:.2f}", f"{p90:.2f}", f"{added:+.2f}")
    if not any(name.startswith("LiteLLM") for name, *_ in lat):
        t.caption = "LiteLLM not installed here: not measured in this run"
    out.append(t)
    print("streams while another process holds the write lock 2 s ...", flush=True)
    g = stream_gaps(tmp)
    t = table(title="2 streams (fake engine, a token every 10 ms) + short calls; another "
                    "process holds BEGIN IMMEDIATE on the database for 2 s")
    t.add_column("measure")
    t.add_column("value")
    for k, v in g.items():
        t.add_row(k, f"{v:.1f}")
    out.append(t)
    print("KYC screening over HTTP ...", flush=True)
    k = kyc_throughput(tmp)
    t = table(title="/v1/kyc/screen over HTTP (OFAC + UN lists), 10 s per row")
    for col in ("clients", "screenings/s", "p50 ms"):
        t.add_column(col)
    if k is None:
        t.caption = f"{SANCTIONS} missing: not measured"
    for clients, rate, p50 in k or []:
        t.add_row(str(clients), f"{rate:.0f}", f"{p50:.1f}")
    out.append(t)
    return out
