"""The "flip the metric" chart: models side by side, one panel per metric.

Each panel ranks the same models on one metric (quality per suite, speed,
time to first token, energy, cost, CO2), with the winner of that panel marked,
so one sees at a glance that the winner changes with the metric.
matplotlib is the ``bench`` extra, imported here only, with the Agg backend
(no display, no network).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from intramuros.bench.errors import BenchError
from intramuros.bench.report import ALL, METRICS, Summary, fmt

TITLES = {
    "quality": "quality (mean item score)",
    "tokens_per_second": "decode tokens/s",
    "ttft_ms": "time to first token (ms)",
    "joules_per_token": "joules per token",
    "eur_per_million_tokens": "EUR per million tokens",
    "gco2e_per_million_tokens": "gCO2e per million tokens",
}
WINNER, OTHER = "#2a9d8f", "#adb5bd"


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise BenchError("the chart needs matplotlib: pip install 'intramuros[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_chart(path: Path, summaries: list[Summary], subtitle: str = "") -> None:
    """Write the PNG: 2 x 3 panels, one per metric; quality grouped by suite."""
    plt = pyplot()
    overall = [s for s in summaries if s.suite == ALL]
    models = [s.model for s in overall]
    suites = list(dict.fromkeys(s.suite for s in summaries if s.suite != ALL))
    palette = plt.get_cmap("tab10")
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    try:
        for ax, (attr, _, higher, spec) in zip(axes.flat, METRICS, strict=True):
            arrow = "higher is better" if higher else "lower is better"
            ax.set_title(f"{TITLES[attr]}\n({arrow})", fontsize=10)
            if attr == "quality":
                _quality_panel(ax, summaries, models, suites, palette)
                continue
            values = [getattr(s, attr) for s in overall]
            known = [v for v in values if v is not None]
            best = (max(known) if higher else min(known)) if known else None
            colours = [WINNER if v is not None and v == best and len(known) > 1 else OTHER
                       for v in values]  # fmt: skip
            bars = ax.bar(range(len(models)), [v or 0.0 for v in values], color=colours)
            for bar, v in zip(bars, values, strict=True):
                ax.annotate(fmt(v, spec), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=9)  # fmt: skip
            ax.set_xticks(range(len(models)), models, fontsize=8, rotation=10)
            ax.margins(y=0.2)
        fig.suptitle("intramuros bench: the winner depends on the metric"
                     + (f"\n{subtitle}" if subtitle else ""), fontsize=12)  # fmt: skip
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=110)
    finally:
        plt.close(fig)


def _quality_panel(ax: Any, summaries: list[Summary], models: list[str], suites: list[str],
                   palette: Any) -> None:  # fmt: skip
    groups = [*suites, ALL]
    width = 0.8 / max(1, len(models))
    index = {(s.model, s.suite): s.quality for s in summaries}
    known = [q for m in models if (q := index.get((m, ALL))) is not None]
    best = max(known) if len(known) > 1 else None
    for m, model in enumerate(models):
        xs = [g + (m - (len(models) - 1) / 2) * width for g in range(len(groups))]
        values = [index.get((model, g)) for g in groups]
        bars = ax.bar(xs, [v or 0.0 for v in values], width, label=model, color=palette(m))
        for bar, v, group in zip(bars, values, groups, strict=True):
            label = fmt(v, "{:.2f}")
            if group == ALL and v is not None and v == best:
                label = "best\n" + label
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)  # fmt: skip
    ax.set_xticks(range(len(groups)), [g.replace("_", "\n", 1) for g in groups], fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.legend(fontsize=7, loc="upper left")
