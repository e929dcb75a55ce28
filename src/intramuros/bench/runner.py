"""Run suites against models, one item at a time, and score every answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from intramuros.bench import scorers
from intramuros.bench.client import BenchClient, ModelInfo, Reply
from intramuros.bench.render import chat_body, completion_body
from intramuros.bench.suite import Item, Suite

SEED = 1234


@dataclass
class ItemResult:
    """One (model, suite item) outcome, as written to the JSON report."""

    model: str
    suite: str
    item: str
    endpoint: str
    scorer: str
    expected: Any
    answer: str
    score: float
    detail: str
    finish_reason: str | None = None
    error: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    client_ms: float = 0.0
    request: dict[str, Any] | None = None  # the body sent (None if no call was made)


def request_body(model: ModelInfo, item: Item) -> dict[str, Any]:
    """The request the bench sends for ``item`` to ``model`` (chat or completion)."""
    if model.endpoint == "chat":
        return chat_body(model.id, item, SEED)
    return completion_body(model.id, item, SEED)


def refusal(model: ModelInfo, item: Item) -> str | None:
    """Why ``model`` cannot take ``item`` at all (scored 0 without a call), or None."""
    rf = item.response_format
    if rf is not None and rf.get("type") != "text" and "json" not in model.capabilities:
        return "the model has no JSON output capability (response_format)"
    return None


def score_reply(model: ModelInfo, suite: Suite, item: Item, reply: Reply) -> ItemResult:
    """Score one reply (an error scores 0)."""
    endpoint = model.endpoint or "-"
    result = ItemResult(model=model.id, suite=suite.name, item=item.id, endpoint=endpoint,
                        scorer=item.scorer, expected=item.expected, answer=reply.text,
                        score=0.0, detail="", finish_reason=reply.finish_reason,
                        error=reply.error, usage=reply.usage,
                        client_ms=round(reply.client_ms, 3))  # fmt: skip
    if reply.error is not None:
        result.detail = "error"
        return result
    s = scorers.score(item.scorer, reply.text, item.expected, item.options)
    result.score, result.detail = s.value, s.detail
    return result


def warm_up(client: BenchClient, model: ModelInfo) -> str | None:
    """One short unscored call, so loading the model is not timed; the error, if any."""
    probe = Item(id="warm-up", expected="", scorer="contains", options={},
                 messages=({"role": "user", "content": "Say OK."},), max_tokens=2)  # fmt: skip
    reply = client.call(model.endpoint or "chat", request_body(model, probe))
    return reply.error


def run_bench(
    client: BenchClient,
    models: list[ModelInfo],
    suites: list[Suite],
    *,
    on_item: Callable[[str], None] | None = None,
) -> list[ItemResult]:
    """Every item of every suite on every model, in order; ``on_item(label)`` after each."""
    results: list[ItemResult] = []
    for model in models:
        unavailable = warm_up(client, model)
        for suite in suites:
            for item in suite.items:
                why = refusal(model, item)
                body = None
                if unavailable is not None:
                    reply = Reply(error=f"model unavailable: {unavailable}")
                elif why is not None:
                    reply = Reply(error=why)
                else:
                    body = request_body(model, item)
                    reply = client.call(model.endpoint or "chat", body)
                result = score_reply(model, suite, item, reply)
                result.request = body
                results.append(result)
                if on_item is not None:
                    on_item(f"{model.id} / {suite.name}")
    return results
