"""End-to-end batch throughput: `intramuros docai batch` on the docai corpus, 1 and 2 workers.

Usage::

    python benchmarks/docai_batch.py [--record] [--corpus benchmarks/docai_corpus]

Unlike ``docai_accuracy.py`` (the reader alone, warmed up), this times the
whole command as an operator runs it: worker start-up, reading, writing the
``.md``/``.json`` outputs atomically. Born-digital PDFs and scanned pages are
timed apart; each run starts from an empty output directory. Pages/s per core
is pages/s divided by the workers.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import append_result, machine

from intramuros.docai.batch import BatchOptions, run_batch


def _stage(corpus: Path, kind: str, into: Path) -> int:
    """Copy the corpus files of one kind into ``into``; return how many."""
    into.mkdir(parents=True, exist_ok=True)
    if kind == "born-digital":
        chosen = [p for p in corpus.glob("*.pdf")
                  if not p.name.startswith("bad_") and "garbage" not in p.name]  # fmt: skip
    else:
        chosen = sorted(corpus.glob("*_scan300.jpg"))
    for path in chosen:
        shutil.copy(path, into / path.name)
    return len(chosen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path(__file__).parent / "docai_corpus")
    ap.add_argument("--record", action="store_true", help="Append the table to RESULTS.md.")
    args = ap.parse_args()
    table = Table(title="docai batch, end to end")
    for col in ("documents", "workers", "files", "pages", "seconds", "pages/s", "pages/s/core"):
        table.add_column(col)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("born-digital", "scanned"):
            src = Path(tmp) / kind
            files = _stage(args.corpus, kind, src)
            for workers in (1, 2):
                out = Path(tmp) / f"out-{kind}-{workers}"
                summary = asyncio.run(run_batch(src, out, BatchOptions(workers=workers)))
                row = (kind, str(workers), str(files), str(summary.pages),
                       f"{summary.seconds:.1f}", f"{summary.pages_per_second:.2f}",
                       f"{summary.pages_per_second / workers:.2f}")  # fmt: skip
                table.add_row(*row)
                lines.append(" | ".join(row))
    Console().print(table)
    print(machine())
    if args.record:
        header = "documents | workers | files | pages | seconds | pages/s | pages/s/core\n"
        append_result("docai_batch.py", header + "\n".join(lines) + "\n",
                      extra="; shared with other concurrent work")  # fmt: skip


if __name__ == "__main__":
    main()
