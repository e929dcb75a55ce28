"""The headline: a fine-tuned 135M specialist against larger general models, per suite.

For each shipped bench suite: fine-tune SmolLM2-135M on the generated
training set (``benchmarks/forge_data/``, made by ``forge_data.py``: no
template or entity of the suite's test items), then run ``intramuros bench``
on that suite with the specialist, its base and the larger general models
installed (Gemma 3 270M; ``--model`` adds any other). Prints and records
(``--record``: benchmarks/RESULTS.md, with the machine) quality, joules per
item and the training time, and draws the flip-the-metric chart.

Each training line is asked exactly as the bench asks: the suite's prompt
scaffolding (its system prompt, and for ``same_person`` its two worked
examples, read but not learnt: ``weight: 0``) and its ``response_format``
ride along, since they are part of the prompt the model is served with.

    python benchmarks/forge_headline.py --data-dir /tmp/forge-bench --record
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SUITES = ("invoice_fields", "same_person", "transaction_category")
BASE = "smollm2-135m-instruct"
# The longest generated example of each suite fits (tokens, prompt and answer).
SEQ_LEN = {"invoice_fields": 640, "same_person": 256, "transaction_category": 320}
GENERAL = ("gemma-3-270m",)
RECORDED = HERE / "forge_headline.json"


def suite_items(name: str) -> list[dict[str, Any]]:
    path = HERE.parent / "src" / "intramuros" / "bench" / "suites" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def as_asked(suite: str, src: Path, dest: Path) -> int:
    """The generated lines with the suite's scaffolding and response format; their count."""
    item = suite_items(suite)[0]
    scaffold = item["messages"][1:-1]  # worked examples between the system prompt and the question
    fmt = item.get("response_format")
    lines = []
    for raw in src.read_text().splitlines():
        line = json.loads(raw)
        system, *rest = line["messages"]
        shown = [dict(m, weight=0) if m["role"] == "assistant" else m for m in scaffold]
        line["messages"] = [system, *shown, *rest]
        if fmt is not None:
            line["response_format"] = fmt
        lines.append(json.dumps(line, ensure_ascii=False))
    dest.write_text("\n".join(lines) + "\n")
    return len(lines)


def run(cmd: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    full = [sys.executable, "-m", "intramuros.cli", *cmd, "--data-dir", str(data_dir)]
    print("+", " ".join(full[2:]), flush=True)
    return subprocess.run(full, text=True, capture_output=True, check=False)


def train(suite: str, data_dir: Path, work: Path, epochs: int, limit: int | None,
          lr_multiplier: float | None = None) -> dict[str, Any]:  # fmt: skip
    train_file, valid_file = work / f"{suite}.train.jsonl", work / f"{suite}.valid.jsonl"
    n = as_asked(suite, HERE / "forge_data" / f"{suite}.train.jsonl", train_file)
    as_asked(suite, HERE / "forge_data" / f"{suite}.validation.jsonl", valid_file)
    if limit is not None and limit < n:
        train_file.write_text("\n".join(train_file.read_text().splitlines()[:limit]) + "\n")
        n = limit
    started = time.perf_counter()
    done = run(["forge", "run", str(train_file), "--base", BASE, "--suffix",
                suite.replace("_", "-"), "--validation", str(valid_file), "--epochs",
                str(epochs), "--seq-len", str(SEQ_LEN[suite]), "--seed", "0", "--json",
                "--suite", suite,
                *(["--learning-rate-multiplier", str(lr_multiplier)] if lr_multiplier else [])],
               data_dir)  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"training on {suite} failed:\n{done.stdout[-2000:]}\n"
                         f"{done.stderr[-3000:]}")
    job = json.loads(done.stdout[done.stdout.index("{"):])
    task = ((job.get("intramuros") or {}).get("evaluation") or {}).get("task")
    return {"suite": suite, "examples": n, "epochs": epochs, "seconds": seconds,
            "lr_multiplier": lr_multiplier, "task": task, "job": job}


def bench(suite: str, models: list[str], data_dir: Path, out: Path,
          limit: int | None) -> dict[str, dict[str, Any]]:  # fmt: skip
    cmd = ["bench", "--suite", suite, "--out", str(out)]
    for model in models:
        cmd += ["--model", model]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    done = run(cmd, data_dir)
    if done.returncode != 0:
        raise SystemExit(f"bench on {suite} failed:\n{done.stderr[-3000:]}")
    report = json.loads((out / "bench.json").read_text())
    rows: dict[str, dict[str, Any]] = {}
    for model in models:
        items = [i for i in report["items"] if i["model"] == model and i["suite"] == suite]
        joules = [float(i["usage"].get("energy_joules") or 0.0) for i in items]
        summary = next(s for s in report["summary"] if s["model"] == model)
        rows[model] = {
            "quality": statistics.fmean(i["score"] for i in items),
            "joules_per_item": statistics.fmean(joules), "items": len(items),
            "errors": sum(1 for i in items if i["error"]),
            "tokens_per_second": summary["tokens_per_second"],
            "seconds_per_item": statistics.fmean(i["client_ms"] for i in items) / 1000,
        }  # fmt: skip
    return rows


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| suite | model | quality ↑ | J/item ↓ | s/item ↓ | training |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        for model, row in r["bench"].items():
            trained = (f"{r['seconds'] / 60:.1f} min, {r['examples']} ex x {r['epochs']} ep"
                       if model == r["model"] else "")  # fmt: skip
            lines.append(f"| {r['suite']} | {model} | {row['quality']:.3f} | "
                         f"{row['joules_per_item']:.2f} | {row['seconds_per_item']:.2f} | "
                         f"{trained} |")  # fmt: skip
    return "\n".join(lines)


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        rows = r["bench"]
        mine = rows[r["model"]]
        others = [m for m in rows if m not in (r["model"], BASE)]
        quality = all(mine["quality"] >= rows[m]["quality"] for m in others)
        energy = all(rows[m]["joules_per_item"] >= 5 * mine["joules_per_item"] for m in others)
        fast = r["seconds"] <= 15 * 60
        out.append(f"{r['suite']}: quality ≥ every larger model: {'yes' if quality else 'NO'}; "
                   f"≥5x fewer J/item: {'yes' if energy else 'NO'}; training ≤ 15 min: "
                   f"{'yes' if fast else 'NO'}")  # fmt: skip
    return out


def chart(results: list[dict[str, Any]], dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    suites = [r["suite"] for r in results]
    models = ["specialist (135M, fine-tuned)", f"{BASE} (base)", *GENERAL]
    width = 0.8 / len(models)
    for k, label in enumerate(models):
        def value(r: dict[str, Any], key: str, label: str = label) -> float:
            name = r["model"] if label.startswith("specialist") else label.split(" ")[0]
            row = r["bench"].get(name)
            return float(row[key]) if row else 0.0

        xs = [i + k * width for i in range(len(suites))]
        axes[0].bar(xs, [value(r, "quality") for r in results], width, label=label)
        axes[1].bar(xs, [value(r, "joules_per_item") for r in results], width, label=label)
    for ax, title in zip(axes, ("quality (higher is better)", "joules per item (lower is better)"),
                         strict=True):  # fmt: skip
        ax.set_xticks([i + width for i in range(len(suites))], suites, fontsize=8)
        ax.set_title(title)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle("A fine-tuned 135M specialist against larger general models")
    fig.tight_layout()
    fig.savefig(dest, dpi=110)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())  # fmt: skip
    load = os.getloadavg()[0]
    return f"{cpu}, {os.cpu_count()} cores, load {load:.1f} at the start"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--suite", action="append", choices=SUITES)
    parser.add_argument("--model", action="append", default=[],
                        help="Another general model of the catalogue to compare with.")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-limit", action="append", default=[], metavar="[SUITE=]N",
                        help="Train on the first N generated examples (of SUITE only).")
    parser.add_argument("--lr-multiplier", action="append", default=[], metavar="[SUITE=]X",
                        help="The learning-rate multiplier (of SUITE only); default: auto.")
    parser.add_argument("--bench-limit", type=int, default=None)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    work = args.data_dir / "headline"
    work.mkdir(exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    where = machine()
    results = []
    limits: dict[str, int] = {}
    for entry in args.train_limit:
        name, _, count = entry.rpartition("=")
        for suite in [name] if name else SUITES:
            limits[suite] = int(count)
    rates: dict[str, float] = {}
    for entry in args.lr_multiplier:
        name, _, value = entry.rpartition("=")
        for suite in [name] if name else SUITES:
            rates[suite] = float(value)
    for suite in args.suite or SUITES:
        trained = train(suite, args.data_dir, work, args.epochs, limits.get(suite),
                        rates.get(suite))  # fmt: skip
        model = trained["job"]["fine_tuned_model"]
        models = [model, BASE, *GENERAL, *args.model]
        trained["model"] = model
        trained["bench"] = bench(suite, models, args.data_dir, work / suite, args.bench_limit)
        results.append(trained)
        print(table([trained]), flush=True)
    (work / "headline.json").write_text(json.dumps(results, indent=2, default=str))
    if args.record:
        # The recorded set: each suite's latest run, so one suite can be measured again
        # without losing the others from the table and the chart.
        kept = json.loads(RECORDED.read_text())["results"] if RECORDED.is_file() else []
        ran = {r["suite"] for r in results}
        slim = [{k: v for k, v in r.items() if k != "job"} for r in results]
        merged = sorted([r for r in kept if r["suite"] not in ran] + slim,
                        key=lambda r: SUITES.index(r["suite"]))  # fmt: skip
        RECORDED.write_text(json.dumps({"machine": where, "results": merged}, indent=2) + "\n")
        results = merged
    text = table(results)
    lines = verdicts(results)
    print(text)
    print("\n".join(lines))
    chart(results, HERE.parent / "docs" / "img" / "forge_headline.png")
    if args.record:
        with (HERE / "RESULTS.md").open("a") as fh:
            fh.write(f"\n## Forge headline ({started:%Y-%m-%d %H:%M} UTC)\n\n"
                     f"Machine: {where}. `python benchmarks/forge_headline.py "
                     f"--epochs {args.epochs}"
                     + "".join(f" --suite {e}" for e in args.suite or [])
                     + "".join(f" --train-limit {e}" for e in args.train_limit)
                     + "".join(f" --lr-multiplier {e}" for e in args.lr_multiplier)
                     + (f" --bench-limit {args.bench_limit}" if args.bench_limit else "")
                     + "`\n\n" + text + "\n\n" + "\n".join(f"- {v}" for v in lines) + "\n")


if __name__ == "__main__":
    main()
