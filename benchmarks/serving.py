"""Serving benchmark: the gateway vs llama-cpp-python called directly, and concurrency.

Usage::

    python benchmarks/serving.py [--part decode|platform|all] [--runs 3]
                                 [--max-tokens 128] [--calls 500] [--no-record]

``--part decode`` (the default) measures, with the same model, prompt and
sampling settings:

1. decode tokens/s and time to first token (TTFT) calling ``llama_cpp.Llama``
   in-process (the baseline), then streaming through ``intramuros serve`` over
   HTTP with the official ``openai`` client; prints the ratios;
2. aggregate decode tokens/s with 1, 2, 4 and 8 concurrent streaming clients.

``--part platform`` measures what the platform itself costs
(``platform_bench.py``): the latency it adds to a 1-token call through an
upstream, against the upstream directly and LiteLLM's proxy when installed;
token gaps of running streams while another process holds the database's
write lock; ``/v1/kyc/screen`` throughput over HTTP.

Prints tables and appends them, with a description of the machine, to
``benchmarks/RESULTS.md``. Nothing here is asserted: numbers are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))  # also when imported by the tests
from record import append_result  # noqa: E402

MODEL = "smollm2-135m-instruct"
PROMPT = "Write a long story about a lighthouse keeper."
# Same default as the server (half the cores); BENCH_THREADS overrides both sides.
THREADS = int(os.environ.get("BENCH_THREADS") or 0) or max(1, (os.cpu_count() or 2) // 2)


def direct(max_tokens: int, runs: int) -> tuple[float, float]:
    """(decode tok/s, TTFT s) calling llama-cpp-python directly, streaming."""
    from llama_cpp import Llama
    from tests.conftest import bundled_file

    llm = Llama(
        model_path=str(bundled_file(MODEL)),
        n_ctx=2048,
        n_threads=THREADS,
        n_threads_batch=THREADS,
        n_batch=512,
        verbose=False,
    )
    rates, ttfts = [], []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        first = None
        n = 0
        for chunk in llm.create_chat_completion(
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
            seed=i,
        ):
            if chunk["choices"][0]["delta"].get("content"):
                n += 1
                if first is None:
                    first = time.perf_counter()
        end = time.perf_counter()
        if i == 0 or first is None:
            continue  # warm-up
        ttfts.append(first - t0)
        rates.append((n - 1) / (end - first) if n > 1 else 0.0)
    llm.close()
    return statistics.median(rates), statistics.median(ttfts)


def stream_once(
    client: httpx.Client, max_tokens: int, seed: int
) -> tuple[int, float, float, float]:
    """(tokens, start, first token time, end) of one streamed chat completion.

    A lean SSE reader (httpx + json), so that what is timed is the gateway,
    not a client library's per-chunk object building on the same two cores.
    """
    body = {
        "model": MODEL, "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens, "temperature": 0.0, "stream": True, "seed": seed,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    first = None
    n = 0
    usage_tokens = 0
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage_tokens = chunk["usage"]["completion_tokens"]
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                n += 1
                if first is None:
                    first = time.perf_counter()
    return usage_tokens or n, t0, first or time.perf_counter(), time.perf_counter()


def gateway(base_url: str, max_tokens: int, runs: int) -> tuple[float, float]:
    client = httpx.Client(base_url=base_url, timeout=600)
    rates, ttfts = [], []
    for i in range(runs + 1):
        n, t0, first, end = stream_once(client, max_tokens, i)
        if i == 0:
            continue
        ttfts.append(first - t0)
        rates.append((n - 1) / (end - first) if n > 1 else 0.0)
    client.close()
    return statistics.median(rates), statistics.median(ttfts)


def concurrent(base_url: str, clients: int, max_tokens: int) -> tuple[float, float]:
    """(aggregate tok/s, median TTFT) with ``clients`` simultaneous streams."""
    results: list[tuple[int, float, float, float]] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        client = httpx.Client(base_url=base_url, timeout=600)
        r = stream_once(client, max_tokens, seed)
        client.close()
        with lock:
            results.append(r)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.perf_counter()
    total = sum(r[0] for r in results)
    return total / (end - start), statistics.median(r[2] - r[1] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    ap.add_argument("--part", choices=("decode", "platform", "all"), default="decode")
    ap.add_argument("--calls", type=int, default=500, help="Calls per path (platform part).")
    args = ap.parse_args()
    if args.part in ("platform", "all"):
        platform(args.calls, args.no_record)
    if args.part in ("decode", "all"):
        decode(args)


def platform(calls: int, no_record: bool) -> None:
    from platform_bench import run
    from rich.console import Console
    from rich.table import Table

    console = Console(width=110, record=True)
    with tempfile.TemporaryDirectory() as tmp:
        for table in run(Path(tmp), calls, Table):
            console.print(table)
    if not no_record:
        append_result("serving.py --part platform", console.export_text())
        print("appended to benchmarks/RESULTS.md")


def decode(args: argparse.Namespace) -> None:

    from tests.conftest import start_server, stop_server

    print("direct llama-cpp-python ...", flush=True)
    d_rate, d_ttft = direct(args.max_tokens, args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(
            Path(tmp),
            "--preload-models",
            MODEL,
            "--queue-limit",
            "64",
            "--n-threads",
            str(THREADS),
            "--log-level",
            "warning",
        )
        try:
            print("gateway ...", flush=True)
            g_rate, g_ttft = gateway(srv.base_url, args.max_tokens, args.runs)
            conc = []
            for n in (1, 2, 4, 8):
                print(f"{n} concurrent clients ...", flush=True)
                conc.append((n, *concurrent(srv.base_url, n, args.max_tokens)))
        finally:
            stop_server(srv)

    from rich.console import Console
    from rich.table import Table

    t1 = Table(
        title=f"{MODEL}: gateway vs direct ({args.max_tokens} tokens, median of {args.runs})"
    )
    for col in ("path", "decode tok/s", "TTFT ms"):
        t1.add_column(col)
    t1.add_row("llama-cpp-python direct", f"{d_rate:.1f}", f"{d_ttft * 1000:.1f}")
    t1.add_row("intramuros gateway (HTTP + SSE, httpx)", f"{g_rate:.1f}", f"{g_ttft * 1000:.1f}")
    t1.add_row("ratio / added", f"{g_rate / d_rate:.3f}", f"+{(g_ttft - d_ttft) * 1000:.1f}")
    t2 = Table(title="aggregate decode throughput, concurrent streaming clients")
    for col in ("clients", "aggregate tok/s", "median TTFT ms"):
        t2.add_column(col)
    for n, rate, ttft in conc:
        t2.add_row(str(n), f"{rate:.1f}", f"{ttft * 1000:.0f}")
    console = Console(width=100, record=True)
    console.print(t1)
    console.print(t2)
    if not args.no_record:
        text = console.export_text()
        import llama_cpp

        append_result("serving.py", text, f"; llama-cpp-python {llama_cpp.__version__}")
        print("appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
