"""``intramuros docai batch``: a directory of documents to markdown (and JSON), resumable.

Every document under ``INPUT_DIR`` (by extension, hidden files skipped) gives
``OUT_DIR/<relative path>.md`` (the pages, each after a ``<!-- page N -->``
marker) and ``OUT_DIR/<relative path>.json`` (the ``/v1/ocr`` answer, the
source's size, mtime and sha256, and the extraction when ``--schema`` is
given). Each output is written to a temporary file and renamed into place,
the JSON last: a JSON whose recorded size and mtime match the source marks the
document done, so a re-run (after a crash, a kill, a power cut) skips it and
loses nothing finished. A document that fails is one line of
``OUT_DIR/errors.jsonl`` (file, code, message) and the batch goes on; it is
tried again by the next run.

Documents are read in worker processes (``--workers``, spawned, so a crash in
a reader kills one worker, not the batch: its document is retried once in a
fresh pool, then reported). Extraction, when asked, runs in this process
through an in-process gate (metered and ledgered under ``--tenant``).

With a Ray address (``--ray-address``, the ``ray_address`` setting) the
documents are read as Ray tasks on that cluster instead: this process reads
each file and sends its bytes (the nodes need not share a file system), a
lost worker's document is tried once more, and outputs, errors and resuming
are the same as with local workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intramuros.docai.pipeline import DEFAULT_MAX_PIXELS, DocumentResult, OcrEngine
from intramuros.errors import IntramurosError
from intramuros.fsutil import write_atomic
from intramuros.platform.distributed import BatchWorkers, WorkerLost

SUPPORTED = frozenset({".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif",
                       ".webp"})  # fmt: skip
ERRORS_FILE = "errors.jsonl"


@dataclass
class BatchOptions:
    """How to read (and optionally extract from) every document of a batch."""

    ocr: OcrEngine = "auto"
    model: str = "intramuros-ocr"
    languages: list[str] | None = None
    pages: list[int] | None = None
    workers: int = 1
    max_pages: int = 1000
    max_pixels: int = DEFAULT_MAX_PIXELS
    schema: dict[str, Any] | None = None
    schema_name: str = "document"
    ray_address: str | None = None


@dataclass
class BatchSummary:
    """What a run did."""

    found: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    pages: int = 0
    seconds: float = 0.0
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pages_per_second(self) -> float:
        """Pages read per second of this run's wall-clock time."""
        return self.pages / self.seconds if self.seconds > 0 else 0.0


def discover(input_dir: Path, out_dir: Path) -> list[Path]:
    """Documents under ``input_dir`` (relative paths, sorted), outside ``out_dir``."""
    found: list[Path] = []
    out = out_dir.resolve()
    for root, dirs, names in os.walk(input_dir):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (here / d).resolve() != out)  # fmt: skip
        for name in names:
            if name.startswith(".") or Path(name).suffix.lower() not in SUPPORTED:
                continue
            found.append((here / name).relative_to(input_dir))
    return sorted(found)


def output_paths(out_dir: Path, rel: Path) -> tuple[Path, Path]:
    """``(markdown, json)`` outputs of one input (its name kept whole: a.pdf -> a.pdf.md)."""
    base = out_dir / rel.parent
    return base / f"{rel.name}.md", base / f"{rel.name}.json"


def is_done(json_path: Path, source: Path) -> bool:
    """Whether ``json_path`` records this very version of ``source`` (size and mtime)."""
    try:
        recorded = json.loads(json_path.read_text(encoding="utf-8"))["source"]
        st = source.stat()
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(recorded.get("size") == st.st_size and recorded.get("mtime_ns") == st.st_mtime_ns)


def _write_output(path: Path, text: str) -> None:
    """An output file, all or nothing (a killed run leaves no half-written output)."""
    write_atomic(path, text.encode("utf-8"), mode=0o666, dir_mode=0o777)


def page_markdown(result: DocumentResult) -> str:
    """The document as one markdown text, each page after a ``<!-- page N -->`` marker."""
    return "\n\n".join(f"<!-- page {p.index} -->\n\n{p.markdown.strip()}\n"
                       for p in result.pages)  # fmt: skip


def read_one(path: str, options: dict[str, Any]) -> dict[str, Any]:
    """Read one document (in a worker process); never raises for a bad document."""
    source = Path(path)
    try:
        st = source.stat()
        data = source.read_bytes()
    except OSError as exc:
        return {"ok": False, "code": "unreadable_file", "message": f"{exc.strerror}"}
    return _with_source(read_data(source.name, data, options), _Source.of(data, st))


def read_data(name: str, data: bytes, options: dict[str, Any]) -> dict[str, Any]:
    """Read one document's bytes (in a worker process or a Ray task); never raises for a
    bad document."""
    from intramuros.docai import pipeline
    from intramuros.offline import enforce_offline

    enforce_offline()  # a Ray worker is not started by us: its hub switches are set here
    try:
        result = pipeline.read_document(data, filename=name, **options)
    except IntramurosError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}
    except Exception as exc:  # a reader bug: report it, keep the batch going
        return {"ok": False, "code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "result": result}


@dataclass(frozen=True)
class _Source:
    """What marks a source done: its digest, size and mtime."""

    sha256: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, data: bytes, st: os.stat_result) -> _Source:
        return cls(hashlib.sha256(data).hexdigest(), st.st_size, st.st_mtime_ns)


def _with_source(outcome: dict[str, Any], source: _Source) -> dict[str, Any]:
    if outcome["ok"]:
        outcome.update(sha256=source.sha256, size=source.size, mtime_ns=source.mtime_ns)
    return outcome


async def _read(workers: BatchWorkers, path: Path, reader: dict[str, Any]) -> dict[str, Any]:
    """One document's outcome: read by a local worker from its path, or, on a cluster
    (whose nodes may not share this file system), from its bytes sent from here.
    ``WorkerLost`` when its worker died twice."""
    if not workers.remote:
        return await asyncio.wrap_future(workers.submit(read_one, str(path), reader))

    def load() -> tuple[bytes, _Source]:
        data = path.read_bytes()
        return data, _Source.of(data, path.stat())

    try:
        data, source = await asyncio.to_thread(load)  # digesting a large file: off the loop
    except OSError as exc:
        return {"ok": False, "code": "unreadable_file", "message": f"{exc.strerror}"}
    outcome = await asyncio.wrap_future(workers.submit(read_data, path.name, data, reader))
    return _with_source(outcome, source)


Extractor = Callable[[DocumentResult], Any]  # async: (result) -> extraction dict


async def run_batch(
    input_dir: Path,
    out_dir: Path,
    opts: BatchOptions,
    *,
    extractor: Any = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> BatchSummary:
    """Read every document not yet done; see the module docstring."""
    from intramuros.docai.sources import to_response

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = discover(input_dir, out_dir)
    summary = BatchSummary(found=len(files))
    todo = [rel for rel in files if not is_done(output_paths(out_dir, rel)[1], input_dir / rel)]
    summary.skipped = len(files) - len(todo)
    if on_start is not None:
        on_start(len(todo), summary.skipped)
    reader = {"pages": opts.pages, "ocr": opts.ocr, "languages": opts.languages,
              "include_images": False, "max_pages": opts.max_pages,
              "max_pixels": opts.max_pixels}  # fmt: skip
    # Joining a cluster blocks for a moment: not on the loop.
    workers = await asyncio.to_thread(BatchWorkers, opts.workers, opts.ray_address)
    gate = asyncio.Semaphore(max(1, opts.workers) * 2)
    errors_path = out_dir / ERRORS_FILE

    def fail(rel: Path, code: str | None, message: str) -> None:
        entry = {"file": str(rel), "code": code, "message": message, "ts": time.time()}
        summary.failed += 1
        summary.errors.append(entry)
        with errors_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")

    async def one(rel: Path) -> None:
        async with gate:
            outcome: dict[str, Any] = {"ok": False, "code": "worker_crashed",
                                       "message": "the worker reading it died, twice"}  # fmt: skip
            with contextlib.suppress(WorkerLost):  # then the outcome above
                outcome = await _read(workers, input_dir / rel, reader)
            await finish(rel, outcome)
            if on_progress is not None:
                on_progress(summary.done + summary.failed, summary.pages)

    async def finish(rel: Path, outcome: dict[str, Any]) -> None:
        if not outcome["ok"]:
            fail(rel, outcome.get("code"), outcome.get("message", ""))
            return
        result: DocumentResult = outcome["result"]
        doc: dict[str, Any] = {
            "source": {"path": str(rel), "size": outcome["size"],
                       "mtime_ns": outcome["mtime_ns"], "sha256": outcome["sha256"]},
            "ocr": to_response(result, opts.model, include_images=False).model_dump(mode="json"),
        }  # fmt: skip
        if extractor is not None:
            try:
                doc["extraction"] = await extractor(result)
            except IntramurosError as exc:
                fail(rel, exc.code, exc.message)
                return
        md_path, json_path = output_paths(out_dir, rel)
        _write_output(md_path, page_markdown(result))
        _write_output(json_path, json.dumps(doc, ensure_ascii=False, indent=1))
        summary.done += 1
        summary.pages += len(result.pages)

    try:
        await asyncio.gather(*(one(rel) for rel in todo))
    finally:
        workers.close()
    summary.seconds = time.perf_counter() - started
    return summary


def parse_pages(text: str | None, max_pages: int = 10_000) -> list[int] | None:
    """``"0,2,5-7"`` -> ``[0, 2, 5, 6, 7]`` (0-based, as the API); None for no text.

    ``ValueError`` for a malformed list or an index at or over ``max_pages``.
    """
    from intramuros.docai.sources import parse_pages as parse

    return parse(text, max_pages) if text else None


def language_list(text: str | None) -> list[str] | None:
    """``"eng,fra"`` or ``"ell+grc"`` -> a list of Tesseract codes."""
    if not text:
        return None
    return [code.strip() for code in text.replace("+", ",").split(",") if code.strip()]

