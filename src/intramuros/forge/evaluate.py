"""The task score: the model answering a task before and after fine-tuning, as served.

The validation loss says whether the model writes the validation answers more
readily; a user wants to know whether it does the *task* better. When the job
names a bundled bench suite (``suite``), or its validation lines name a scorer
(bench items: ``scorer``, ``expected`` and the scorer's options next to
``messages``), each item is answered twice by the llama.cpp engine that serves
the model: by the base, then by the base with the new adapter, at temperature 0
with the bench's seed and the item's response format, and scored by the bench's
scorers. At most ``forge_eval_items`` items, in their order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from intramuros.bench import scorers
from intramuros.bench.suite import Item, load_suite, parse_item
from intramuros.catalog.records import ModelRecord
from intramuros.errors import IntramurosError
from intramuros.settings import Settings

# As ``intramuros bench`` asks: answers are comparable with its reports.
SEED = 1234
# Items answered at once: the decode loop batches them; more only queue.
CONCURRENCY = 4


class Stopped(Exception):
    """The job was cancelled while its model was being scored."""


@dataclass(frozen=True)
class Tasks:
    """What the model is scored on: a suite (name, sha256) or the validation file's lines."""

    source: str
    sha256: str | None
    items: tuple[Item, ...]


@dataclass
class TaskScore:
    """The mean score of the base and of the fine-tuned model on the same items."""

    source: str
    sha256: str | None
    items: int
    before: float = 0.0
    after: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "items": self.items,
                "before": round(self.before, 4), "after": round(self.after, 4),
                "errors": self.errors or None}  # fmt: skip


def tasks_for(suite: str | None, lines: Sequence[dict[str, Any]], limit: int) -> Tasks | None:
    """The items to score on: the suite's, else the scored validation lines; None if none."""
    if suite is not None:
        loaded = load_suite(suite)
        return Tasks(f"suite:{loaded.name}", loaded.sha256, loaded.items[:limit])
    if not lines:
        return None
    return Tasks("validation_file", None, tuple(parse_item(line) for line in lines[:limit]))


def score_models(base: ModelRecord, adapter: ModelRecord, settings: Settings, tasks: Tasks,
                 should_stop: Callable[[], bool]) -> TaskScore:  # fmt: skip
    """Load the base in llama.cpp, answer every item without and with the adapter."""
    from intramuros.engines.registry import engine_class

    engine = engine_class(base.engine)(base, settings)
    engine.load()
    result = TaskScore(tasks.source, tasks.sha256, len(tasks.items))
    try:
        result.before = _mean(engine, tasks.items, should_stop, result.errors)
        tuned = engine.with_adapter(adapter)
        try:
            result.after = _mean(tuned, tasks.items, should_stop, result.errors)
        finally:
            tuned.close()
    finally:
        engine.close()
    return result


def _mean(engine: Any, items: Sequence[Item], should_stop: Callable[[], bool],
          errors: dict[str, int]) -> float:  # fmt: skip
    cancel = threading.Event()

    def one(item: Item) -> float:
        if should_stop():
            cancel.set()
        if cancel.is_set():
            raise Stopped
        try:
            answer = engine.generate_chat(chat_params(item), cancel).text
        except IntramurosError as exc:  # an item the model cannot take scores 0
            key = type(exc).__name__
            errors[key] = errors.get(key, 0) + 1
            return 0.0
        return scorers.score(item.scorer, answer, item.expected, item.options).value

    with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="forge-eval") as pool:
        scores = list(pool.map(one, items))
    if cancel.is_set():
        raise Stopped
    return sum(scores) / len(scores) if scores else 0.0


def chat_params(item: Item) -> Any:
    """The item as the engine's chat request, as the bench sends it."""
    from intramuros.engines.base import ChatParams, SamplingParams

    messages = list(item.messages or ({"role": "user", "content": item.prompt or ""},))
    fmt = item.response_format
    if fmt is not None and fmt.get("type") == "json_schema":
        fmt = {"type": "json_schema", "schema": fmt["json_schema"]["schema"]}
    elif fmt is not None and fmt.get("type") == "text":
        fmt = None
    sampling = SamplingParams(max_tokens=item.max_tokens, temperature=0.0, seed=SEED,
                              stop=item.stop)  # fmt: skip
    return ChatParams(messages=messages, sampling=sampling, response_format=fmt)
