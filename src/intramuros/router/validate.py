"""Checks on a model's answer that decide whether a route escalates.

Each check returns ``None`` (the answer passes) or a :class:`Problem` whose
``reason`` is safe to write in clear into the ledger: it names the check, the
JSON path and the schema keyword that failed, never the answer's text (which
may carry personal data the tenant's policy keeps out of clear records).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from intramuros.protocol import openai as p
from intramuros.router.config import Check

# Outcomes that trigger an escalation (besides ``low_confidence``).
INVALID_JSON = "invalid_json"
SCHEMA_VIOLATION = "schema_violation"
INVALID_TOOL_CALL = "invalid_tool_call"
EMPTY = "empty"
LOW_CONFIDENCE = "low_confidence"


@dataclass(frozen=True)
class Problem:
    """Why an answer failed: a stable outcome code and a short, content-free reason."""

    outcome: str
    reason: str


@dataclass(frozen=True)
class Verdict:
    """The judgement of one attempt: passed or not, why, and its confidence."""

    ok: bool
    outcome: str
    reason: str
    confidence: float | None


def mean_logprob(values: Iterable[float | None]) -> float | None:
    """The mean token log-probability (the answer's confidence); None without tokens."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def _parse(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return False, None


def _schema_problem(doc: Any, schema: Mapping[str, Any], what: str) -> Problem | None:
    """The most relevant schema violation of ``doc`` (formats checked too), if any."""
    try:
        cls = jsonschema.validators.validator_for(schema)
        validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
        errors = list(validator.iter_errors(doc))
    except (jsonschema.SchemaError, RecursionError):
        return None  # the core refused bad schemas already; nothing to judge by
    if not errors:
        return None
    best = jsonschema.exceptions.best_match(errors)
    keyword = best.validator if isinstance(best.validator, str) else "?"
    return Problem(SCHEMA_VIOLATION, f"{what} violates the schema at {best.json_path} "
                   f"('{keyword}'; {len(errors)} error(s))")  # fmt: skip


def check_json_text(
    text: str, response_format: p.ResponseFormat | None, checks: Sequence[Check], what: str
) -> Problem | None:
    """An answer under ``response_format`` json_object / json_schema: parses, validates."""
    if response_format is None or response_format.type == "text":
        return None
    want_schema = response_format.type == "json_schema" and response_format.json_schema
    if "json" not in checks and not ("schema" in checks and want_schema):
        return None
    ok, doc = _parse(text)
    if not ok:
        return Problem(INVALID_JSON, f"{what} is not valid JSON")
    if response_format.type == "json_object" and not isinstance(doc, dict):
        return Problem(INVALID_JSON, f"{what} is JSON but not an object")
    if want_schema and "schema" in checks and response_format.json_schema is not None:
        return _schema_problem(doc, response_format.json_schema.schema_, what)
    return None


def check_tool_calls(
    calls: Sequence[p.ToolCallOut], req: p.ChatCompletionRequest
) -> Problem | None:
    """Each call names a given tool, with JSON arguments matching its parameters schema."""
    tools = {t.function.name: t.function.parameters for t in req.tools or []}
    choice = req.tool_choice
    required = choice in ("required", "any") or isinstance(choice, p.NamedToolChoice)
    if not calls:
        if required and tools:
            return Problem(INVALID_TOOL_CALL, "no tool call, though tool_choice requires one")
        return None
    for i, call in enumerate(calls):
        what = f"tool_calls[{i}]"
        if call.function.name not in tools:
            return Problem(INVALID_TOOL_CALL, f"{what} names a function not in tools")
        if isinstance(choice, p.NamedToolChoice) and call.function.name != choice.function.name:
            return Problem(INVALID_TOOL_CALL, f"{what} is not the function tool_choice names")
        ok, args = _parse(call.function.arguments)
        if not ok or not isinstance(args, dict):
            return Problem(INVALID_TOOL_CALL, f"{what} arguments are not a JSON object")
        schema = tools[call.function.name]
        if schema is not None:
            problem = _schema_problem(args, schema, f"{what} arguments")
            if problem is not None:
                return Problem(INVALID_TOOL_CALL, problem.reason)
    return None


def check_chat(
    resp: p.ChatCompletionResponse, req: p.ChatCompletionRequest, checks: Sequence[Check]
) -> Problem | None:
    """The configured checks on a chat answer (first problem found)."""
    message = resp.choices[0].message if resp.choices else p.ChatMessageOut()
    calls = message.tool_calls or []
    text = message.content or ""
    if "tool_call" in checks and req.tools:
        problem = check_tool_calls(calls, req)
        if problem is not None:
            return problem
    if "empty" in checks and not calls and not text.strip():
        return Problem(EMPTY, "the answer is empty")
    if not calls:
        return check_json_text(text, req.response_format, checks, "the answer")
    return None


def check_completion(
    resp: p.CompletionResponse, req: p.CompletionRequest, checks: Sequence[Check]
) -> Problem | None:
    """The configured checks on every choice of a text completion."""
    for choice in resp.choices:
        what = f"choices[{choice.index}]" if len(resp.choices) > 1 else "the answer"
        if "empty" in checks and not choice.text.strip():
            return Problem(EMPTY, f"{what} is empty")
        problem = check_json_text(choice.text, req.response_format, checks, what)
        if problem is not None:
            return problem
    return None


def chat_confidence(resp: p.ChatCompletionResponse) -> float | None:
    """Mean token log-probability of a chat answer (None when none was returned)."""
    lp = resp.choices[0].logprobs if resp.choices else None
    return mean_logprob(t.logprob for t in (lp.content or [])) if lp else None


def completion_confidence(resp: p.CompletionResponse) -> float | None:
    """Mean token log-probability over every choice of a text completion."""
    return mean_logprob(
        v for c in resp.choices if c.logprobs is not None for v in c.logprobs.token_logprobs
    )


def judge(problem: Problem | None, confidence: float | None, threshold: float | None) -> Verdict:
    """Pass, or fail with the first reason: a failed check, then low confidence.

    With a threshold but no log-probabilities to judge by (an upstream that
    returns none), the answer passes and the reason says so.
    """
    if problem is not None:
        return Verdict(False, problem.outcome, problem.reason, confidence)
    if threshold is not None:
        if confidence is None:
            return Verdict(True, "ok", "no log-probabilities to judge confidence by", None)
        if confidence < threshold:
            return Verdict(False, LOW_CONFIDENCE, f"mean token log-probability "
                           f"{confidence:.3f} < threshold {threshold:g}", confidence)  # fmt: skip
        return Verdict(True, "ok", f"passed checks; confidence {confidence:.3f} >= "
                       f"{threshold:g}", confidence)  # fmt: skip
    return Verdict(True, "ok", "passed checks", confidence)
