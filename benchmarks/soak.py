"""Soak: 8 streaming clients against one server for a bounded time, on loopback.

Usage::

    python benchmarks/soak.py [--seconds 600] [--clients 8] [--warmup 60] [--no-record]

Starts ``intramuros serve`` with one slot per client on the bundled chat model
(127.0.0.1 only), and keeps every client streaming chat completions of
varied lengths (some with a JSON schema, some cut short by the client) until
the time is up. Reports requests, errors, tokens, and the server's resident
memory after the warm-up and at the end (``/proc/PID/status``, the server and
its children). Nothing is asserted: the numbers go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from record import append_result  # noqa: E402

MODEL = "smollm2-135m-instruct"
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "List ten fruits.",
    "Explain what a bank transfer is.",
    "Describe the sea in three sentences.",
]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its children, KiB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = self.errors = self.tokens = self.cut = 0
        self.messages: list[str] = []

    def add(self, *, tokens: int = 0, error: str | None = None, cut: bool = False) -> None:
        with self.lock:
            self.requests += 1
            self.tokens += tokens
            self.cut += cut
            if error is not None:
                self.errors += 1
                if len(self.messages) < 10:
                    self.messages.append(error)


def client_loop(base_url: str, until: float, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base_url, timeout=300) as http:
        while time.monotonic() < until:
            body: dict[str, object] = {
                "model": MODEL, "stream": True, "temperature": 0.8,
                "max_tokens": rng.choice((16, 64, 128, 256)),
                "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
            }  # fmt: skip
            if rng.random() < 0.2:
                schema = {"name": "x", "schema": SCHEMA}
                body["response_format"] = {"type": "json_schema", "json_schema": schema}
            leave_after = rng.choice((None, None, None, 5))
            tokens = 0
            try:
                with http.stream("POST", "/v1/chat/completions", json=body) as r:
                    if r.status_code != 200:
                        tally.add(error=f"HTTP {r.status_code}: {r.read()[:200]!r}")
                        continue
                    for line in r.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if "error" in chunk:
                            raise RuntimeError(str(chunk["error"]))
                        tokens += 1
                        if leave_after is not None and tokens >= leave_after:
                            break
                tally.add(tokens=tokens, cut=leave_after is not None)
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                tally.add(error=f"{type(exc).__name__}: {exc}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--warmup", type=float, default=60)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    import tempfile

    from rich.console import Console
    from rich.table import Table
    from tests.conftest import start_server, stop_server

    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(
            Path(tmp), "--preload-models", MODEL, "--queue-limit", "64",
            "--llama-slots", str(args.clients), "--log-level", "warning",
        )  # fmt: skip
        try:
            tally = Tally()
            start = time.monotonic()
            until = start + args.seconds
            threads = [threading.Thread(target=client_loop, args=(srv.base_url, until, i, tally))
                       for i in range(args.clients)]  # fmt: skip
            for t in threads:
                t.start()
            time.sleep(min(args.warmup, args.seconds / 2))
            after_warmup = rss_kib(srv.proc.pid)
            warm_requests = tally.requests
            for t in threads:
                t.join()
            elapsed = time.monotonic() - start
            at_end = rss_kib(srv.proc.pid)
            healthy = httpx.get(srv.base_url + "/healthz", timeout=10).status_code == 200
        finally:
            stop_server(srv)

    table = Table(title=f"soak: {args.clients} streaming clients for {elapsed:.0f} s, {MODEL}")
    for col in ("requests", "errors", "cut by client", "tokens", "RSS after warm-up MiB",
                "RSS at end MiB", "change", "healthy at end"):  # fmt: skip
        table.add_column(col)
    change = (at_end - after_warmup) / after_warmup * 100
    table.add_row(str(tally.requests), str(tally.errors), str(tally.cut), str(tally.tokens),
                  f"{after_warmup / 1024:.0f}", f"{at_end / 1024:.0f}", f"{change:+.1f}%",
                  str(healthy))  # fmt: skip
    console = Console(width=110, record=True)
    console.print(table)
    console.print(f"requests after warm-up: {tally.requests - warm_requests}")
    for message in tally.messages:
        console.print(f"error: {message}")
    if not args.no_record:
        append_result("soak.py", console.export_text())
        print("appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
