"""``intramuros embed``: a JSONL file of texts to a JSONL file of vectors, resumable.

Each input line is ``{"id": "...", "text": "..."}``. Each output line is
``{"id": "...", "embedding": [...]}``, written in input order,
a chunk at a time, flushed to disk before the next: a re-run (after a crash,
a kill, a power cut) drops a half-written last line, skips every id already
in the output and loses nothing finished. A line that cannot be embedded (not
JSON, no id, a duplicate id, no text, a text the model refuses) is one line
of ``<output>.errors.jsonl`` (line, id, code, message) and the run goes on;
it is tried again by the next run.

Chunks of texts are embedded in worker processes (``--workers``, spawned) or,
given a Ray address, as Ray tasks on that cluster; each worker loads the
model once, after checking its files' sha256 against the catalogue. A chunk
the model refuses is embedded text by text, so one bad text fails alone. A
worker that dies has its chunk sent once more. The model's files must be at
the same path on every node (the registry package installed there). A worker
that cannot load the model (files missing or altered) stops the run with its
reason: every line would fail the same way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intramuros.catalog.records import ModelRecord
from intramuros.errors import EngineUnavailable, IntramurosError
from intramuros.platform.distributed import BatchWorkers, WorkerLost
from intramuros.settings import Settings

# Most characters of one text: a line over it is refused before any worker sees it.
MAX_TEXT_CHARS = 100_000
# Most bytes of one input line (the text, its id and the JSON around them).
MAX_LINE_BYTES = 4 * MAX_TEXT_CHARS + 4096

# The models a worker process has loaded, by name and weights digest.
_ENGINES: dict[tuple[str, str | None], Any] = {}


@dataclass
class EmbedSummary:
    """What a run did."""

    found: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    tokens: int = 0
    seconds: float = 0.0
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        """Texts embedded per second of this run's wall-clock time."""
        return self.done / self.seconds if self.seconds > 0 else 0.0


def errors_path(out: Path) -> Path:
    """Where a run's per-line errors go: beside its output."""
    return out.with_name(out.name + ".errors.jsonl")


def finished_ids(out: Path) -> set[str]:
    """The ids already in ``out``; a half-written last line (a killed run) is cut off."""
    if not out.exists():
        return set()
    done: set[str] = set()
    with out.open("rb+") as fh:
        good = 0
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                done.add(str(json.loads(line)["id"]))
            except (ValueError, KeyError, TypeError):
                break
            good += len(line)
        fh.truncate(good)
    return done


def read_items(path: Path) -> Iterator[tuple[int, str | None, str | None, str | None]]:
    """``(line number, id, text, error)`` of every non-blank line of a JSONL input."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if len(raw) > MAX_LINE_BYTES:
                yield number, None, None, f"line over {MAX_LINE_BYTES} bytes"
                continue
            try:
                item = json.loads(raw)
            except ValueError as exc:
                yield number, None, None, f"not JSON: {exc}"
                continue
            except RecursionError:
                yield number, None, None, "not JSON: nested too deeply"
                continue
            if not isinstance(item, dict):
                yield number, None, None, 'not an object {"id": ..., "text": ...}'
                continue
            ident, text = item.get("id"), item.get("text")
            if not isinstance(ident, str | int) or isinstance(ident, bool) or str(ident) == "":
                yield number, None, None, "no id (a string or an integer)"
            elif not isinstance(text, str) or not text.strip():
                yield number, str(ident), None, "no text (a non-empty string)"
            elif len(text) > MAX_TEXT_CHARS:
                yield number, str(ident), None, f"text over {MAX_TEXT_CHARS} characters"
            else:
                yield number, str(ident), text, None


def _engine(record: ModelRecord, settings: Settings) -> Any:
    key = (record.name, record.sha256)
    engine = _ENGINES.get(key)
    if engine is None:
        from intramuros.catalog.catalog import verify_files
        from intramuros.engines.registry import engine_class

        verify_files(record)
        engine = engine_class(record.engine)(record, settings)
        engine.load()
        _ENGINES[key] = engine
    return engine


def core_settings(settings: Settings) -> dict[str, Any]:
    """The core's settings as plain values a worker can be sent (the class with every
    installed section is built at run time and does not pickle)."""
    return {name: getattr(settings, name) for name in Settings.model_fields}


def embed_chunk(record: ModelRecord, settings: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """Embed ``texts`` (in a worker process or a Ray task): ``{"outcomes": [...],
    "tokens": N}``, one outcome per text, in order. ``settings``: :func:`core_settings`.

    A model or file problem (missing, altered, not loadable) is ``{"fatal": message}``:
    the run stops, as no text could be embedded; a chunk the model refuses is tried
    text by text.
    """
    from intramuros.offline import enforce_offline

    enforce_offline()
    try:
        # Already validated by the command; not read again from this node's environment.
        engine = _engine(record, Settings.model_construct(**settings))
    except IntramurosError as exc:
        return {"fatal": exc.message}
    try:
        result = engine.embed(texts)
    except IntramurosError:
        outcomes, tokens = [], 0
        for text in texts:
            try:
                one = engine.embed([text])
            except IntramurosError as exc:
                outcomes.append({"ok": False, "code": exc.code, "message": exc.message})
                continue
            outcomes.append({"ok": True, "embedding": one.vectors[0]})
            tokens += one.prompt_tokens
        return {"outcomes": outcomes, "tokens": tokens}
    return {"outcomes": [{"ok": True, "embedding": v} for v in result.vectors],
            "tokens": result.prompt_tokens}  # fmt: skip


def run_embed(
    record: ModelRecord,
    settings: Settings,
    source: Path,
    out: Path,
    workers: BatchWorkers,
    *,
    batch_size: int = 32,
    in_flight: int = 4,
    on_progress: Callable[[int], None] | None = None,
) -> EmbedSummary:
    """Embed every line of ``source`` not yet in ``out``; see the module docstring."""
    started = time.perf_counter()
    summary = EmbedSummary()
    values = core_settings(settings)
    done = finished_ids(out)
    seen: set[str] = set()
    out.parent.mkdir(parents=True, exist_ok=True)
    Chunk = list[tuple[int, str, str]]
    pending: list[tuple[Chunk, Future[dict[str, Any]]]] = []

    with out.open("ab") as sink, errors_path(out).open("a", encoding="utf-8") as errors:

        def fail(line: int, ident: str | None, code: str, message: str) -> None:
            entry = {"line": line, "id": ident, "code": code, "message": message,
                     "ts": time.time()}  # fmt: skip
            summary.failed += 1
            summary.errors.append(entry)
            errors.write(json.dumps(entry, ensure_ascii=False) + "\n")

        def send(chunk: Chunk) -> None:
            texts = [text for _, _, text in chunk]
            pending.append((chunk, workers.submit(embed_chunk, record, values, texts)))

        def collect() -> None:
            chunk, future = pending.pop(0)
            try:
                result = future.result()
            except WorkerLost:
                lost = {"ok": False, "code": "worker_crashed",
                        "message": "the worker embedding it died, twice"}  # fmt: skip
                result = {"outcomes": [lost] * len(chunk), "tokens": 0}
            if "fatal" in result:
                raise EngineUnavailable(result["fatal"])
            lines = []
            for (line, ident, _), outcome in zip(chunk, result["outcomes"], strict=True):
                if not outcome["ok"]:
                    fail(line, ident, outcome["code"], outcome["message"])
                    continue
                lines.append(json.dumps({"id": ident, "embedding": outcome["embedding"]}) + "\n")
                summary.done += 1
            summary.tokens += result["tokens"]
            sink.write("".join(lines).encode())
            sink.flush()
            os.fsync(sink.fileno())
            errors.flush()
            if on_progress is not None:
                on_progress(summary.done + summary.failed)

        chunk: Chunk = []
        for line, ident, text, problem in read_items(source):
            summary.found += 1
            if problem is not None or text is None or ident is None:
                fail(line, ident, "invalid_line", problem or "no text")
                continue
            if ident in seen:
                fail(line, ident, "duplicate_id", f"id {ident!r} is on an earlier line")
                continue
            seen.add(ident)
            if ident in done:
                summary.skipped += 1
                continue
            chunk.append((line, ident, text))
            if len(chunk) == batch_size:
                send(chunk)
                chunk = []
                while len(pending) >= in_flight:
                    collect()
        if chunk:
            send(chunk)
        while pending:
            collect()
    summary.seconds = time.perf_counter() - started
    return summary
