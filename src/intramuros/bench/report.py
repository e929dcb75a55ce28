"""Aggregate item results per model (and per suite); table, Markdown and JSON.

Definitions (each from the server's per-call ``usage`` metering; a metric is
``None``, shown "n/a", when no call carried the field):

- quality: mean item score (0..1); a model's overall quality is the mean of
  its suites' qualities, so every suite weighs the same;
- tokens/s: decode speed, completion tokens over decode time summed over calls
  (each call's decode time = its completion tokens / its ``decode_tokens_per_second``);
- TTFT: median ``ttft_ms``;
- J/token, EUR and gCO2e per million tokens: summed ``energy_joules``,
  ``cost_eur``, ``co2e_grams`` over summed tokens (prompt + completion) of the
  calls that reported them.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from intramuros.bench.runner import ItemResult

ALL = "all"


@dataclass
class Summary:
    """The metrics of one model on one suite (or on all of them: ``suite == "all"``)."""

    model: str
    suite: str
    items: int
    errors: int
    quality: float | None
    tokens_per_second: float | None
    ttft_ms: float | None
    joules_per_token: float | None
    eur_per_million_tokens: float | None
    gco2e_per_million_tokens: float | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    energy_source: list[str] = field(default_factory=list)


# (attribute, column title, higher is better, format)
METRICS: tuple[tuple[str, str, bool, str], ...] = (
    ("quality", "quality", True, "{:.3f}"),
    ("tokens_per_second", "tok/s", True, "{:.1f}"),
    ("ttft_ms", "TTFT ms", False, "{:.0f}"),
    ("joules_per_token", "J/token", False, "{:.4f}"),
    ("eur_per_million_tokens", "EUR/Mtok", False, "{:.4f}"),
    ("gco2e_per_million_tokens", "gCO2e/Mtok", False, "{:.2f}"),
)


def _num(usage: dict[str, Any], key: str) -> float | None:
    value = usage.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _per_mtok(rows: list[ItemResult], key: str, scale: float) -> float | None:
    total, tokens, seen = 0.0, 0, False
    for r in rows:
        value = _num(r.usage, key)
        if value is None:
            continue
        seen = True
        total += value
        tokens += int(r.usage.get("prompt_tokens") or 0) + int(r.usage.get("completion_tokens")
                                                               or 0)  # fmt: skip
    if not seen or tokens == 0:
        return None
    return total / tokens * scale


def _decode_rate(rows: list[ItemResult]) -> float | None:
    tokens, seconds = 0.0, 0.0
    for r in rows:
        rate = _num(r.usage, "decode_tokens_per_second")
        n = int(r.usage.get("completion_tokens") or 0)
        if rate is None or rate <= 0 or n <= 0:
            continue
        tokens += n
        seconds += n / rate
    return tokens / seconds if seconds > 0 else None


def summarise_rows(model: str, suite: str, rows: list[ItemResult]) -> Summary:
    """The metrics of ``rows`` (one model; one suite or several)."""
    ttfts = [v for r in rows if (v := _num(r.usage, "ttft_ms")) is not None]
    sources = sorted({str(r.usage["energy_source"]) for r in rows
                      if r.usage.get("energy_source")})  # fmt: skip
    return Summary(
        model=model, suite=suite, items=len(rows),
        errors=sum(1 for r in rows if r.error is not None),
        quality=statistics.fmean(r.score for r in rows) if rows else None,
        tokens_per_second=_decode_rate(rows),
        ttft_ms=statistics.median(ttfts) if ttfts else None,
        joules_per_token=_per_mtok(rows, "energy_joules", 1.0),
        eur_per_million_tokens=_per_mtok(rows, "cost_eur", 1e6),
        gco2e_per_million_tokens=_per_mtok(rows, "co2e_grams", 1e6),
        prompt_tokens=sum(int(r.usage.get("prompt_tokens") or 0) for r in rows),
        completion_tokens=sum(int(r.usage.get("completion_tokens") or 0) for r in rows),
        energy_source=sources,
    )  # fmt: skip


def summarise(results: Iterable[ItemResult]) -> list[Summary]:
    """Per (model, suite) summaries, each model followed by its overall ``all`` row."""
    by_model: dict[str, dict[str, list[ItemResult]]] = {}
    for r in results:
        by_model.setdefault(r.model, {}).setdefault(r.suite, []).append(r)
    out: list[Summary] = []
    for model, suites in by_model.items():
        per_suite = [summarise_rows(model, name, rows) for name, rows in suites.items()]
        out.extend(per_suite)
        overall = summarise_rows(model, ALL, [r for rows in suites.values() for r in rows])
        qualities = [s.quality for s in per_suite if s.quality is not None]
        overall.quality = statistics.fmean(qualities) if qualities else None
        out.append(overall)
    return out


def fmt(value: float | None, spec: str) -> str:
    """A metric for display; ``n/a`` when the server did not report it."""
    return "n/a" if value is None else spec.format(value)


def _winners(summaries: list[Summary]) -> dict[str, str]:
    """Metric -> the model that wins it overall (only when at least two models compete)."""
    overall = [s for s in summaries if s.suite == ALL]
    wins: dict[str, str] = {}
    for attr, _, higher, _ in METRICS:
        scored = [(getattr(s, attr), s.model) for s in overall if getattr(s, attr) is not None]
        if len(scored) >= 2:
            wins[attr] = (max(scored) if higher else min(scored))[1]
    return wins


def rich_table(summaries: list[Summary], title: str = "intramuros bench") -> Table:
    """The table printed at the end of a run (overall winners in bold)."""
    table = Table(title=title)
    for name in ("model", "suite", "items", "errors"):
        table.add_column(name, justify="left" if name in ("model", "suite") else "right")
    for _, col, higher, _ in METRICS:
        table.add_column(f"{col} {'↑' if higher else '↓'}", justify="right")
    wins = _winners(summaries)
    for s in summaries:
        cells = []
        for attr, _, _, spec in METRICS:
            text = fmt(getattr(s, attr), spec)
            if s.suite == ALL and wins.get(attr) == s.model:
                text = f"[bold green]{text}[/]"
            cells.append(text)
        style = "bold" if s.suite == ALL else None
        table.add_row(s.model, s.suite, str(s.items), str(s.errors), *cells, style=style,
                      end_section=s.suite == ALL)  # fmt: skip
    return table


def markdown_table(summaries: list[Summary]) -> str:
    """The same table in Markdown (for docs and benchmarks/RESULTS.md); winners in bold."""
    head = ["model", "suite", "items", "errors"] + [
        f"{col} {'↑' if higher else '↓'}" for _, col, higher, _ in METRICS]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    wins = _winners(summaries)
    for s in summaries:
        cells = [s.model, s.suite, str(s.items), str(s.errors)]
        for attr, _, _, spec in METRICS:
            text = fmt(getattr(s, attr), spec)
            if s.suite == ALL and wins.get(attr) == s.model:
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_json(path: Path, *, meta: dict[str, Any], summaries: list[Summary],
               results: list[ItemResult]) -> None:  # fmt: skip
    """The complete report: run metadata, summaries and every item's result."""
    doc = {
        **meta,
        "definitions": __doc__,
        "summary": [asdict(s) for s in summaries if s.suite != ALL],
        "overall": [asdict(s) for s in summaries if s.suite == ALL],
        "items": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
