"""Serving benchmark: the gateway vs llama-cpp-python called directly, and concurrency.

Usage::

    python benchmarks/serving.py [--part decode|platform|all] [--runs 3]
                                 [--max-tokens 128] [--calls 500] [--no-record]

``--part decode`` (the default) measures, with the same model, prompt and
sampling settings:

1. decode tokens/s and time to first token (TTFT) calling ``llama_cpp.Llama``
   in-process (the baseline), then streaming through ``intramuros serve`` over
   HTTP; prints the ratios;
2. aggregate decode tokens/s and median TTFT with 1, 2, 4 and 8 concurrent
   streaming clients, intramuros (``--llama-slots 8``) side by side with
   ``llama-server -np 8`` on the same model file, threads and context per
   slot, when a llama-server binary is found (``LLAMA_SERVER``, or built by
   ``benchmarks/build_llama_server.sh``);
3. the prefix cache: a request with a ~1,500-token system prompt, then another
   with the same system prompt and a different question: both TTFTs, on both
   servers.

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
import subprocess
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
    client: httpx.Client, max_tokens: int, seed: int | None,
    messages: list[dict[str, str]] | None = None, usage: dict[str, int] | None = None,
) -> tuple[int, float, float, float]:
    """(tokens, start, first token time, end) of one streamed chat completion.

    A lean SSE reader (httpx + json), so that what is timed is the gateway,
    not a client library's per-chunk object building on the same two cores.
    The final ``usage`` is copied into ``usage`` when given.
    """
    body: dict[str, object] = {
        "model": MODEL, "messages": messages or [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    if seed is not None:
        body["seed"] = seed
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
                if usage is not None:
                    usage.update({k: v for k, v in chunk["usage"].items() if isinstance(v, int)})
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                n += 1
                if first is None:
                    first = time.perf_counter()
    return usage_tokens or n, t0, first or time.perf_counter(), time.perf_counter()


def gateway(base_url: str, max_tokens: int, runs: int) -> tuple[float, float]:
    client = httpx.Client(base_url=base_url, timeout=600)
    rates, ttfts = [], []
    for i in range(runs + 1):
        # No seed: like the direct call (which keeps its last prompt), the server may
        # reuse the prompt it read in the previous run.
        n, t0, first, end = stream_once(client, max_tokens, None)
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

    def worker(reader: int) -> None:
        # A question of its own per client and round, told apart from its first words:
        # every prompt is read cold on both servers, one client as eight (no seed: a
        # seeded request skips intramuros's prefix cache on purpose).
        messages = [{"role": "user", "content": f"Reader {reader} of {clients}: {PROMPT}"}]
        client = httpx.Client(base_url=base_url, timeout=600)
        r = stream_once(client, max_tokens, None, messages)
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


# A system prompt of about 1,500 tokens (the same for both requests of the prefix test).
SYSTEM = " ".join(
    f"Rule {i}: the assistant of the bank answers briefly, politely and only about "
    f"accounts, cards, loans and transfers; it never asks for a full card number."
    for i in range(1, 60)
)


def prefix_ttfts(base_url: str) -> tuple[float, float, int]:
    """(first TTFT, second TTFT, prompt tokens) of two requests sharing SYSTEM."""
    client = httpx.Client(base_url=base_url, timeout=600)
    out = []
    usage: dict[str, int] = {}
    for question in ("How do I block my card?", "How do I order a new card?"):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        # No seed: a seeded request reads its prompt whole on purpose (same text each time).
        _, t0, first, _ = stream_once(client, 8, None, messages, usage)
        out.append(first - t0)
    client.close()
    return out[0], out[1], usage.get("prompt_tokens", 0)


def llama_server_binary() -> Path | None:
    """The llama-server to compare with: LLAMA_SERVER, or the one build_llama_server.sh made."""
    given = os.environ.get("LLAMA_SERVER")
    if given:
        return Path(given)
    built = ROOT / "benchmarks" / ".llama-server" / "build" / "bin" / "llama-server"
    return built if built.exists() else None


def start_llama_server(binary: Path, slots: int, ctx: int) -> tuple[subprocess.Popen[bytes], str]:
    """``llama-server -np slots`` on the bundled model, loopback; (process, base URL)."""
    from tests.conftest import bundled_file, free_port

    port = free_port()
    proc = subprocess.Popen(
        [str(binary), "-m", str(bundled_file(MODEL)), "--host", "127.0.0.1", "--port", str(port),
         "-np", str(slots), "-c", str(slots * ctx), "-t", str(THREADS), "-tb", str(THREADS),
         "-b", "512", "--no-webui"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama-server did not start")


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


CLIENTS = (1, 2, 4, 8)
SLOTS = 8
SLOT_CONTEXT = 2048


Side = tuple[list[tuple[int, float, float]], tuple[float, float, int]]


def side(base_url: str, max_tokens: int) -> Side:
    """One server's concurrency rows and prefix-cache TTFTs."""
    conc = []
    for n in CLIENTS:
        print(f"  {n} concurrent clients ...", flush=True)
        concurrent(base_url, 1, 16)  # warm the slots' caches alike on both sides
        conc.append((n, *concurrent(base_url, n, max_tokens)))
    print("  prefix cache ...", flush=True)
    return conc, prefix_ttfts(base_url)


def decode(args: argparse.Namespace) -> None:
    from tests.conftest import start_server, stop_server

    print("direct llama-cpp-python ...", flush=True)
    d_rate, d_ttft = direct(args.max_tokens, args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(
            Path(tmp), "--preload-models", MODEL, "--queue-limit", "64",
            "--n-threads", str(THREADS), "--llama-slots", str(SLOTS),
            "--n-ctx", str(SLOT_CONTEXT), "--log-level", "warning",
        )  # fmt: skip
        try:
            print("intramuros ...", flush=True)
            g_rate, g_ttft = gateway(srv.base_url, args.max_tokens, args.runs)
            ours = side(srv.base_url, args.max_tokens)
        finally:
            stop_server(srv)
    theirs = None
    binary = llama_server_binary()
    if binary is not None:
        print(f"llama-server ({binary}) ...", flush=True)
        proc, url = start_llama_server(binary, SLOTS, SLOT_CONTEXT)
        try:
            theirs = side(url, args.max_tokens)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    from rich.console import Console
    from rich.table import Table

    t1 = Table(
        title=f"{MODEL}: gateway vs direct ({args.max_tokens} tokens, median of {args.runs}, "
        f"{THREADS} thread(s))"
    )
    for col in ("path", "decode tok/s", "TTFT ms"):
        t1.add_column(col)
    t1.add_row("llama-cpp-python direct", f"{d_rate:.1f}", f"{d_ttft * 1000:.1f}")
    t1.add_row("intramuros (HTTP + SSE, httpx)", f"{g_rate:.1f}", f"{g_ttft * 1000:.1f}")
    t1.add_row("ratio / added", f"{g_rate / d_rate:.3f}", f"+{(g_ttft - d_ttft) * 1000:.1f}")
    t2 = Table(title=f"concurrent streaming clients, {args.max_tokens} tokens each, "
                     f"{SLOTS} slots of {SLOT_CONTEXT} tokens on both servers")  # fmt: skip
    for col in ("clients", "intramuros tok/s", "TTFT ms (median)",
                "llama-server tok/s", "TTFT ms (median)"):  # fmt: skip
        t2.add_column(col)
    for k, (n, rate, ttft) in enumerate(ours[0]):
        other = ("-", "-") if theirs is None else (
            f"{theirs[0][k][1]:.1f}", f"{theirs[0][k][2] * 1000:.0f}")  # fmt: skip
        t2.add_row(str(n), f"{rate:.1f}", f"{ttft * 1000:.0f}", *other)
    t3 = Table(title=f"prefix cache: a {ours[1][2]}-token prompt, then the same system prompt "
                     "with another question")  # fmt: skip
    for col in ("server", "1st TTFT ms", "2nd TTFT ms", "2nd / 1st"):
        t3.add_column(col)
    for name, result in (("intramuros", ours), ("llama-server", theirs)):
        if result is not None:
            a, b, _ = result[1]
            t3.add_row(name, f"{a * 1000:.0f}", f"{b * 1000:.0f}", f"{b / a:.3f}")
    console = Console(width=110, record=True)
    for table in (t1, t2, t3):
        console.print(table)
    one, eight = ours[0][0], ours[0][-1]
    console.print(f"intramuros 8 clients / 1 client: {eight[1] / one[1]:.2f}x tok/s, "
                  f"TTFT {eight[2] / one[2]:.2f}x")  # fmt: skip
    if theirs is not None:
        console.print(f"intramuros / llama-server at 8 clients: "
                      f"{eight[1] / theirs[0][-1][1]:.2f}x tok/s")  # fmt: skip
    if not args.no_record:
        import llama_cpp

        append_result("serving.py", console.export_text(),
                      f"; llama-cpp-python {llama_cpp.__version__}")  # fmt: skip
        print("appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
