"""Ledger cost: append and verify, keyed and not, beside a plain insert of the same rows.

Usage::

    python benchmarks/ledger.py [--records 3000] [--rounds 5] [--record]

For each variant, on a fresh SQLite file: CPU time per append (process time,
which a loaded machine disturbs far less than wall time), appends per second
(wall), and CPU time per record verified. The anchor, in the same run, is the
direct library call: one SQLAlchemy insert per row of the same table, with no
chain, lock, MAC or encryption, which is what an unaudited log would cost.
With ``--record`` the table is appended, with the machine, to RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from record import append_result  # noqa: E402

from intramuros.ledger import Ledger, generate_key_file  # noqa: E402
from intramuros.ledger.tables import ledger_records  # noqa: E402
from intramuros.store.db import Database  # noqa: E402

DATA = {"route": "/v1/chat/completions", "model": "smollm2-135m-instruct", "status": 200,
        "prompt_tokens": 31, "completion_tokens": 20, "latency_ms": 123.4}  # fmt: skip
CONTENT = {"prompt": ["hello " * 40], "output": "world " * 40}


def _variant(keyed: bool, content: bool) -> Callable[[Path, int], tuple[float, float, float]]:
    def run(folder: Path, n: int) -> tuple[float, float, float]:
        db = Database(f"sqlite:///{folder}/db.sqlite")
        db.migrate()
        keys = generate_key_file(folder / "ledger.key") if keyed else None
        ledger = Ledger(db, keys)
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(n):
            ledger.append("model_call", tenant="acme", key_id="k1", subject="u1",
                          data={**DATA, "n": i}, content=CONTENT if content else None)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        start = time.process_time()
        report = ledger.verify()
        verify = time.process_time() - start
        assert report.ok and report.checked == n, report
        db.close()
        return cpu / n * 1e6, n / wall, verify / n * 1e6

    return run


def _anchor(folder: Path, n: int) -> tuple[float, float, float]:
    """The same rows, inserted one per transaction with no chain: the floor."""
    db = Database(f"sqlite:///{folder}/db.sqlite")
    db.migrate()
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        with db.begin() as conn:
            conn.execute(ledger_records.insert().values(
                seq=i + 1, ts=time.time(), kind="model_call", tenant="acme", key_id="k1",
                subject="u1", data=str({**DATA, "n": i}), content_digest=None,
                prev_hash="0" * 64, hash="0" * 64))  # fmt: skip
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    db.close()
    return cpu / n * 1e6, n / wall, float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="append to RESULTS.md")
    args = parser.parse_args()
    variants = {
        "plain insert (anchor)": _anchor,
        "ledger, no key": _variant(False, False),
        "ledger, keyed (MAC)": _variant(True, False),
        "ledger, keyed, with content": _variant(True, True),
    }
    lines = [f"{args.records} records, median of {args.rounds} rounds, SQLite (WAL, full sync)",
             f"{'variant':30} {'append us CPU':>14} {'appends/s':>10} {'verify us CPU/rec':>18}"]
    for name, run in variants.items():
        results = []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as folder:
                results.append(run(Path(folder), args.records))
        cpu, rate, verify = (statistics.median(r[i] for r in results) for i in range(3))
        lines.append(f"{name:30} {cpu:14.0f} {rate:10.0f} {verify:18.1f}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.record:
        append_result("benchmarks/ledger.py", text)


if __name__ == "__main__":
    main()
