"""KYC screening: accuracy on the labelled set, index build time, screenings per second.

Loads the three sample lists (OFAC SDN, UN consolidated, OpenSanctions US
Congress), builds the index, scores every pair of benchmarks/kyc_evalset.jsonl
through the index (blocking included: a target the index does not propose
scores 0), and reports precision, recall and F1 at the default threshold,
overall and per category; then times single-threaded screening (one core).

    python benchmarks/kyc.py [--threshold 0.86] [--record]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from record import append_result  # noqa: E402

from intramuros.kyc.importers import parse_list  # noqa: E402
from intramuros.kyc.index import ScreeningIndex  # noqa: E402
from intramuros.kyc.match import Subject  # noqa: E402
from intramuros.kyc.workflow import to_subject  # noqa: E402
from intramuros.settings import Settings  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sanctions"
EVALSET = ROOT / "benchmarks" / "kyc_evalset.jsonl"
LISTS = [(DATA / "ofac", "ofac", "ofac"), (DATA / "un" / "UN_consolidated.xml", "un", "un"),
         (DATA / "opensanctions" / "us_congress_senzing.json", "opensanctions-senzing",
          "us_congress")]  # fmt: skip

# Everyday customers: common first names and surnames (synthetic, fixed seed).
FIRST = ("Anna", "Marie", "Jean", "Pierre", "Sophie", "Thomas", "Laura", "Lukas", "Elena",
         "Marco", "Giulia", "Carlos", "Lucia", "Jan", "Eva", "Peter", "Sarah", "David",
         "Olga", "Ivan", "Fatima", "Ahmed", "Wei", "Yuki", "Nikos", "Maria", "John", "Emma")
LAST = ("Martin", "Bernard", "Dubois", "Muller", "Schmidt", "Schneider", "Rossi", "Russo",
        "Garcia", "Fernandez", "Lopez", "de Vries", "Jansen", "Nowak", "Kowalski", "Novak",
        "Papadopoulos", "Smith", "Jones", "Williams", "Brown", "Petrov", "Ivanova", "Chen",
        "Wang", "Tanaka", "Haddad", "Yilmaz", "Silva", "Santos", "Leroy", "Moreau")


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Settings.model_fields["kyc_threshold"].default
    parser.add_argument("--threshold", type=float, default=default)
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the speed run")
    parser.add_argument("--show-errors", action="store_true")
    parser.add_argument("--evalset", type=Path, default=EVALSET,
                        help="labelled pairs (e.g. a held-out set made with another seed)")
    args = parser.parse_args()
    console = Console(record=True, width=110)

    started = time.perf_counter()
    entities = []
    for path, fmt, name in LISTS:
        entities += parse_list(path, fmt, name).entities
    parse_s = time.perf_counter() - started
    index = ScreeningIndex.build(entities)
    console.print(f"{len(entities)} entities from 3 lists; parse {parse_s:.2f}s, "
                  f"index build {index.build_seconds:.2f}s, {len(index.postings)} blocking keys")

    text = args.evalset.read_text(encoding="utf-8")
    pairs = [json.loads(line) for line in text.splitlines() if line]
    per: dict[str, list[int]] = {}
    errors = []
    for pair in pairs:
        hits = index.screen(to_subject(pair["query"]), min_score=0.0, limit=50)
        target = (pair["target"]["list"], pair["target"]["source_id"])
        score = next((h.score for h in hits if (h.entity.list_name, h.entity.source_id) == target),
                     0.0)  # fmt: skip
        predicted = score >= args.threshold
        counts = per.setdefault(pair["category"], [0, 0, 0, 0])  # tp fp fn tn
        label = pair["label"] == 1
        counts[0 if predicted and label else 1 if predicted else 2 if label else 3] += 1
        if predicted != label:
            errors.append((pair["category"], pair["query"]["name"], round(score, 3)))
    table = Table(title=f"accuracy at threshold {args.threshold} ({len(pairs)} labelled pairs, "
                        f"{args.evalset.name})")
    for col in ("category", "pairs", "TP", "FP", "FN", "TN", "precision", "recall", "F1"):
        table.add_column(col, justify="left" if col == "category" else "right")
    total = [0, 0, 0, 0]
    for category, c in sorted(per.items(), key=lambda kv: (kv[0].startswith("neg_"), kv[0])):
        total = [a + b for a, b in zip(total, c, strict=True)]
        p, r, f = _prf(c[0], c[1], c[2])
        if category.startswith("neg_"):
            table.add_row(category, str(sum(c)), *map(str, c), "-", "-",
                          f"specificity {c[3] / sum(c):.3f}")  # fmt: skip
        else:
            table.add_row(category, str(sum(c)), *map(str, c), f"{p:.3f}", f"{r:.3f}", f"{f:.3f}")
    p, r, f = _prf(total[0], total[1], total[2])
    table.add_row("ALL", str(sum(total)), *map(str, total), f"{p:.3f}", f"{r:.3f}", f"{f:.3f}",
                  style="bold")  # fmt: skip
    console.print(table)
    if args.show_errors:
        for err in errors:
            console.print(err)

    # Two query mixes: the labelled set (mostly near-hits, the slow case) and
    # a bank's everyday customers (mostly nobody on any list).
    rng = random.Random(7)
    customers = [Subject(f"{rng.choice(FIRST)} {rng.choice(LAST)}", schema="person",
                         birth_date=f"{rng.randint(1940, 2005)}-{rng.randint(1, 12):02d}-"
                                    f"{rng.randint(1, 28):02d}") for _ in range(1000)]  # fmt: skip
    # Not a labelled set (a random combination may exist somewhere), but an
    # everyday customer base: how many alerts an analyst would face.
    alerts = sum(1 for c in customers
                 if index.screen(c, min_score=args.threshold, limit=1))  # fmt: skip
    console.print(f"alerts on {len(customers)} synthetic everyday customers (common first names "
                  f"and surnames, random birth dates): {alerts} ({alerts / len(customers):.1%})")
    for label, subjects in (("labelled-set queries", [to_subject(p["query"]) for p in pairs]),
                            ("synthetic customers", customers)):  # fmt: skip
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < args.seconds:
            for subject in subjects:
                index.screen(subject, min_score=0.7, limit=10)
            done += len(subjects)
        elapsed = time.perf_counter() - started
        console.print(f"speed, {label}: {done} screenings in {elapsed:.1f}s on one thread = "
                      f"{done / elapsed:.0f} screenings/s per core "
                      f"(all {len(entities)} entities of the three lists loaded)")
    if args.record:
        append_result("kyc.py", console.export_text(),
                      extra="; machine shared with other concurrent work")


if __name__ == "__main__":
    main()
