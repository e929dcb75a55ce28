"""Personal-data detection benchmark: precision, recall, F1 per category, and speed.

Usage::

    python benchmarks/pii.py [--record] [--testset benchmarks/pii_testset.jsonl] [--src DIR]

Runs ``intramuros.gate.pii.detect`` over the labelled set made by
``make_pii_testset.py``. A finding counts as a true positive only when its
category, start and end all equal a labelled entity's; any other finding is a
false positive of its category, any labelled entity not found a false negative
of its own. Throughput is the test set's size (UTF-8 kB) over the time
``detect`` takes on it (best of several passes), plus the time for one 10 kB
text. A speed table follows: ordinary and dense text, a megabyte of it, and
the inputs that once made the server freeze (many distinct addresses to
pseudonymise, a phone prefix followed by thousands of digit groups). With
``--record`` the tables are appended, with a description of the machine and
the date, to ``benchmarks/RESULTS.md``. ``--src`` scores the detector of
another source tree (e.g. ``git archive`` of an older commit) for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TESTSET = ROOT / "benchmarks" / "pii_testset.jsonl"
if __name__ == "__main__" and "--src" in sys.argv:  # before intramuros is imported
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--src") + 1]).resolve()))
else:
    sys.path.insert(0, str(ROOT / "src"))

sys.path.insert(0, str(ROOT / "benchmarks"))  # also when imported by the tests
from record import append_result  # noqa: E402

from intramuros.gate.pii import CATEGORIES, Pseudonymiser, detect  # noqa: E402


@dataclass
class Counts:
    """True positives, false positives and false negatives of one category."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def load(path: Path = TESTSET) -> list[dict[str, Any]]:
    """The test set's records."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def score(records: list[dict[str, Any]]) -> tuple[dict[str, Counts], list[str]]:
    """Counts per category, and a description of every error (for debugging)."""
    counts = {c: Counts() for c in CATEGORIES}
    errors: list[str] = []
    for r in records:
        text = r["text"]
        truth = {(e["category"], e["start"], e["end"]) for e in r["entities"]}
        found = {(f.category, f.start, f.end) for f in detect(text)}
        for cat, _, _ in found & truth:
            counts[cat].tp += 1
        for cat, start, end in found - truth:
            counts[cat].fp += 1
            errors.append(f"FP {cat:<18} {text[start:end]!r:<34} in {text!r}")
        for cat, start, end in truth - found:
            counts[cat].fn += 1
            errors.append(f"FN {cat:<18} {text[start:end]!r:<34} in {text!r}")
    return counts, errors


def throughput(records: list[dict[str, Any]], passes: int = 5) -> tuple[float, float, float]:
    """(kB/s over the test set, ms per 10 kB text, kB of the test set)."""
    texts = [r["text"] for r in records]
    size_kb = sum(len(t.encode()) for t in texts) / 1000
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        for t in texts:
            detect(t)
        best = min(best, time.perf_counter() - t0)
    # One 10 kB text made of the test set's sentences (a long prompt).
    joined = ""
    for t in texts[:: max(1, len(texts) // 200)]:
        if len(joined.encode()) >= 10_000:
            break
        joined += t + "\n"
    joined = joined.encode()[:10_000].decode(errors="ignore")
    best_10k = float("inf")
    for _ in range(passes * 4):
        t0 = time.perf_counter()
        detect(joined)
        best_10k = min(best_10k, time.perf_counter() - t0)
    return size_kb / best, best_10k * 1000, size_kb


def _best(run: Any, passes: int) -> float:
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def speed(records: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(case, milliseconds, best of a few passes) for ordinary, dense and hostile inputs."""
    dense = "\n".join(r["text"] for r in records)
    prose = "Bonjour, je vous écris au sujet de la réunion du 12 mars à 10 h. "
    prose_en = "The meeting moved to the afternoon; please bring the slides and your notes. "
    megabyte = (dense * (1_000_000 // len(dense) + 1))[:1_000_000]

    def addresses(size: int) -> str:
        return " ".join(f"user{i}@example.com" for i in range(size // 20))

    small, large = addresses(160_000), addresses(1_000_000)
    phone_groups = "+33 " + "1 " * 5_000
    return [
        ("detect, 10 kB of prose (no digits)", _best(lambda: detect(prose_en * 130), 20)),
        ("detect, 10 kB of prose (FR, dates)", _best(lambda: detect((prose * 160)[:10_000]), 20)),
        ("detect, 10 kB of dense test set", _best(lambda: detect(dense[:10_000]), 20)),
        ("detect, 1 MB of dense test set", _best(lambda: detect(megabyte), 2)),
        ("pseudonymise 160 kB of distinct addresses",
         _best(lambda: Pseudonymiser().pseudonymise(small), 2)),
        ("pseudonymise 1 MB of distinct addresses",
         _best(lambda: Pseudonymiser().pseudonymise(large), 1)),
        ("detect '+33 ' then 5,000 digit groups (10 kB)", _best(lambda: detect(phone_groups), 1)),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--testset", type=Path, default=TESTSET)
    ap.add_argument("--record", action="store_true", help="Append the table to RESULTS.md.")
    ap.add_argument("--errors", action="store_true", help="List every false positive/negative.")
    ap.add_argument("--src", type=Path, help="Score the detector of this source tree instead.")
    ap.add_argument("--note", default="", help="Added to the machine line of the record.")
    args = ap.parse_args()

    records = load(args.testset)
    counts, errors = score(records)
    kb_s, ms_10k, size_kb = throughput(records)

    from rich.console import Console
    from rich.table import Table

    n_decoys = sum(1 for r in records if not r["entities"])
    table = Table(
        title=f"intramuros.gate.pii on {args.testset.name}: {len(records)} texts "
        f"({n_decoys} decoys), exact-span match"
    )
    for col in ("category", "entities", "TP", "FP", "FN", "precision", "recall", "F1"):
        table.add_column(col, justify="left" if col == "category" else "right")
    total = Counts()
    for cat in CATEGORIES:
        c = counts[cat]
        total.tp, total.fp, total.fn = total.tp + c.tp, total.fp + c.fp, total.fn + c.fn
        table.add_row(
            cat, str(c.tp + c.fn), str(c.tp), str(c.fp), str(c.fn),
            f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}",
        )  # fmt: skip
    table.add_row(
        "all (micro)", str(total.tp + total.fn), str(total.tp), str(total.fp), str(total.fn),
        f"{total.precision:.3f}", f"{total.recall:.3f}", f"{total.f1:.3f}",
    )  # fmt: skip
    console = Console(width=100, record=True)
    console.print(table)
    console.print(
        f"throughput: {kb_s:,.0f} kB/s over {size_kb:.0f} kB "
        f"(best of 5 passes); one 10 kB text: {ms_10k:.2f} ms"
    )
    timings = Table(title="speed (best of a few passes)")
    timings.add_column("case")
    timings.add_column("ms", justify="right")
    for case, seconds in speed(records):
        timings.add_row(case, f"{seconds * 1000:,.1f}")
    console.print(timings)
    if args.errors:
        for e in errors:
            print(e)
    if args.record:
        text = console.export_text()
        note = f"; {args.note}" if args.note else ""
        append_result("pii.py", text, note)
        print("appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
