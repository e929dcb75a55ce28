"""Document reading benchmark: CER/WER per language and path, table cells, pages/s.

Usage::

    python benchmarks/docai_accuracy.py [--record] [--quick] [--corpus benchmarks/docai_corpus]

Reads the corpus made by ``make_docai_corpus.py`` with
``intramuros.docai.pipeline.read_document`` and compares each page with its
ground truth:

* **CER** (character error rate): Levenshtein distance between the page's
  text and the truth, over the truth's length; **WER** the same over words.
  Both sides are reduced to plain text first (markdown marks, table pipes
  and list dashes removed, whitespace collapsed, NFC), so CER measures the
  reading, not the formatting.
* **table cells**: share of the truth's cells found at the same row and
  column of a markdown table on the page.

Paths: ``text-layer`` (the born-digital PDFs, ``ocr="none"``), ``rapidocr``
and ``tesseract`` (the page images: clean 300 and 150 dpi, and the 300 dpi
"scans" with skew and noise; Tesseract gets the page's language), and
``auto`` (no language given) on the special documents (image-only PDF,
mixed PDF, garbage text layer, multi-page TIFF, page with a picture) and on
the Greek scans (script detection, then Tesseract ``grc+ell+eng``).

Speed: pages/s for born-digital and scanned pages, with 1 and 2 worker
processes, and per core (pages/s divided by the workers). ``--quick`` skips
RapidOCR on Greek (which it cannot read) and the 150 dpi images.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
import unicodedata
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "benchmarks" / "docai_corpus"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # also when imported by the tests

from record import append_result  # noqa: E402

# ---------------------------------------------------------------------------
# Metrics (also used by the tests)
# ---------------------------------------------------------------------------

_TABLE_RULE = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+\s*$")


def plain(text: str) -> str:
    """Markdown (or truth text) reduced to words: no marks, pipes, bullets; one space."""
    out = []
    for line in unicodedata.normalize("NFC", text).splitlines():
        s = line.strip()
        if _TABLE_RULE.match(s):
            continue
        s = re.sub(r"^#{1,6}\s+", "", s)
        s = re.sub(r"^[-*]\s+", "", s)
        if s.startswith("|"):
            s = " ".join(c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", s))
        out.append(s)
    return " ".join(" ".join(out).split())


def levenshtein(a: Any, b: Any) -> int:
    """Edit distance between two sequences (strings or lists of words)."""
    try:
        from rapidfuzz.distance import Levenshtein

        return int(Levenshtein.distance(a, b))
    except ImportError:  # pragma: no cover - rapidfuzz comes with the dev extras
        pass
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(hyp: str, ref: str) -> float:
    """Character error rate of ``hyp`` against ``ref`` (both reduced by :func:`plain`)."""
    h, r = plain(hyp), plain(ref)
    return levenshtein(h, r) / max(1, len(r))


def wer(hyp: str, ref: str) -> float:
    """Word error rate of ``hyp`` against ``ref``."""
    h, r = plain(hyp).split(), plain(ref).split()
    return levenshtein(h, r) / max(1, len(r))


def markdown_tables(md: str) -> list[list[list[str]]]:
    """The markdown tables in ``md``, as rows of cells (rule rows dropped)."""
    tables: list[list[list[str]]] = []
    cur: list[list[str]] = []
    for line in [*md.splitlines(), ""]:
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            if not _TABLE_RULE.match(s):
                cells = re.split(r"(?<!\\)\|", s[1:-1])
                cur.append([" ".join(c.replace("\\|", "|").split()) for c in cells])
        elif cur:
            tables.append(cur)
            cur = []
    return tables


def cell_accuracy(md: str, truth_tables: list[list[list[str]]]) -> tuple[int, int]:
    """(cells right, cells in the truth): a cell is right at the same row and column."""
    found = markdown_tables(md)
    right = total = 0
    for k, truth in enumerate(truth_tables):
        got = found[k] if k < len(found) else []
        for r, row in enumerate(truth):
            for c, cell in enumerate(row):
                total += 1
                g = got[r][c] if r < len(got) and c < len(got[r]) else None
                if g is not None and unicodedata.normalize("NFC", g) == \
                        unicodedata.normalize("NFC", " ".join(cell.split())):
                    right += 1
    return right, total


# ---------------------------------------------------------------------------
# Running the corpus
# ---------------------------------------------------------------------------


def load_truth(corpus: Path = CORPUS) -> dict[str, Any]:
    """The corpus's ground truth (document name -> language, kind, pages)."""
    return json.loads((corpus / "truth.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _read(job: tuple[str, str, str, list[str] | None]) -> tuple[str, str, list[str], float]:
    """(name, path, markdown per page, seconds): one document read (in a worker process)."""
    from intramuros.docai.pipeline import read_document

    path, name, ocr, langs = job
    data = Path(path).read_bytes()
    t0 = time.perf_counter()
    res = read_document(data, filename=name, ocr=ocr, languages=langs)  # type: ignore[arg-type]
    return name, ocr, [p.markdown for p in res.pages], time.perf_counter() - t0


def jobs(truth: dict[str, Any], corpus: Path, quick: bool) -> list[tuple[str, str, str, Any]]:
    """Every (path, name, engine, languages) the accuracy table needs."""
    out: list[tuple[str, str, str, Any]] = []
    for name, doc in truth.items():
        kind = doc["kind"]
        p = str(corpus / name)
        if kind == "born-digital":
            out.append((p, name, "none", None))
        elif kind.startswith(("clean-", "scan-")):
            if quick and kind == "clean-150":
                continue
            out.append((p, name, "tesseract", [doc["tess"]]))
            if not (quick and doc["lang"] in ("el", "grc")):
                out.append((p, name, "rapidocr", None))
            if kind == "scan-300" and doc["lang"] in ("el", "grc"):
                out.append((p, name, "auto", None))  # script detection, grc+ell+eng
        else:
            out.append((p, name, "auto", None))
    return out


PATH_NAME = {"none": "text-layer", "rapidocr": "rapidocr", "tesseract": "tesseract",
             "auto": "auto"}


def accuracy(truth: dict[str, Any], results: list[tuple[str, str, list[str], float]]) \
        -> dict[tuple[str, str, str], dict[str, float]]:
    """Per (path, language, kind): mean CER, WER, table cells right/total, pages, seconds."""
    acc: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list))
    for name, ocr, pages, secs in results:
        doc = truth[name]
        key = (PATH_NAME[ocr], doc["lang"], doc["kind"])
        for md, page in zip(pages, doc["pages"], strict=True):
            acc[key]["cer"].append(cer(md, page["text"]))
            acc[key]["wer"].append(wer(md, page["text"]))
            right, total = cell_accuracy(md, page["tables"])
            acc[key]["cells_right"].append(right)
            acc[key]["cells"].append(total)
        acc[key]["secs"].append(secs)
        acc[key]["pages"].append(len(pages))
    return {k: {"cer": statistics.fmean(v["cer"]), "wer": statistics.fmean(v["wer"]),
                "cells_right": sum(v["cells_right"]), "cells": sum(v["cells"]),
                "pages": sum(v["pages"]), "secs": sum(v["secs"])} for k, v in acc.items()}


def throughput(corpus: Path, truth: dict[str, Any], workers: int, kind: str, engine: str,
               repeat: int) -> float:
    """Pages per second reading ``kind`` pages with ``engine`` on ``workers`` processes."""
    names = [n for n, d in truth.items() if d["kind"] == kind]
    if engine == "tesseract":
        todo = [(str(corpus / n), n, engine, [truth[n]["tess"]]) for n in names] * repeat
    else:
        todo = [(str(corpus / n), n, engine, None) for n in names] * repeat
    n_pages = sum(len(truth[j[1]]["pages"]) for j in todo)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_read, todo[:workers]))  # warm up: imports and model loads
        t0 = time.perf_counter()
        list(pool.map(_read, todo))
        return n_pages / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--record", action="store_true", help="Append the tables to RESULTS.md.")
    ap.add_argument("--quick", action="store_true",
                    help="Skip RapidOCR on Greek and the 150 dpi images.")
    ap.add_argument("--workers", type=int, default=2, help="Processes for the accuracy pass.")
    ap.add_argument("--no-speed", action="store_true", help="Skip the pages/s measurements.")
    args = ap.parse_args()

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    truth = load_truth(args.corpus)
    todo = jobs(truth, args.corpus, args.quick)
    results = []
    with Progress() as progress, ProcessPoolExecutor(args.workers) as pool:
        task = progress.add_task("reading the corpus", total=len(todo))
        for r in pool.map(_read, todo):
            results.append(r)
            progress.advance(task)
    acc = accuracy(truth, results)

    console = Console(record=True, width=110)
    table = Table(title=f"intramuros.docai on {args.corpus.name}: CER/WER per path, "
                  "language and page kind (lower is better)")
    for col in ("path", "lang", "kind", "pages", "CER", "WER", "table cells", "s/page"):
        table.add_column(col, justify="left" if col in ("path", "lang", "kind") else "right")
    for (path, lang, kind), v in sorted(acc.items()):
        cells = f"{v['cells_right']:.0f}/{v['cells']:.0f}" if v["cells"] else "-"
        table.add_row(path, lang, kind, f"{v['pages']:.0f}", f"{v['cer']:.3f}",
                      f"{v['wer']:.3f}", cells, f"{v['secs'] / max(1, v['pages']):.2f}")
    console.print(table)

    if not args.no_speed:
        speed = Table(title="Throughput (pages/s; per core = pages/s / workers)")
        for col in ("pages", "engine", "workers", "pages/s", "pages/s per core"):
            speed.add_column(col, justify="left" if col in ("pages", "engine") else "right")
        for kind, engine, repeat in (("born-digital", "none", 3), ("scan-300", "tesseract", 1),
                                     ("scan-300", "rapidocr", 1)):
            for workers in (1, 2):
                pps = throughput(args.corpus, truth, workers, kind, engine, repeat)
                label = "born-digital" if kind == "born-digital" else "scanned 300 dpi"
                speed.add_row(label, PATH_NAME[engine], str(workers), f"{pps:.2f}",
                              f"{pps / workers:.2f}")
        console.print(speed)
    if args.record:
        append_result("docai_accuracy.py", console.export_text(),
                      extra=" (shared with other concurrent work)")


if __name__ == "__main__":
    main()
