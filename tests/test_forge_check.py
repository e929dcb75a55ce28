"""The fine-tuning data check: every problem with its line and field, hostile lines,
token counts and the examples over the sequence length (a fake tokenizer: fast)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from intramuros.errors import InvalidRequest
from intramuros.forge import data as checks


def _report(text: bytes) -> tuple[checks.Report, list[checks.Chat]]:
    report = checks.Report()
    return report, checks.parse_file(text, report)


def _good(answer: str = "Paris.") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Capital of France?"},
                         {"role": "assistant", "content": answer}]}  # fmt: skip


def _lines(*objs: Any) -> bytes:
    return b"\n".join(o if isinstance(o, bytes) else json.dumps(o).encode() for o in objs)


def _fake(example: dict[str, Any]) -> tuple[list[int], list[bool]]:
    """One token per word; the assistant's words are learnt."""
    ids: list[int] = []
    mask: list[bool] = []
    for msg in example["messages"]:
        words = str(msg.get("content") or "x").split()
        ids += [len(w) for w in words]
        mask += [msg["role"] == "assistant"] * len(words)
    return ids, mask


def test_a_good_file_is_counted() -> None:
    report, chats = _report(_lines(_good(), _good("It is Paris.")) + b"\n\n")
    assert report.ok and report.examples == 2 and len(chats) == 2
    checks.tokenise(chats, _fake, 4, report)
    assert report.tokens == 3 + 1 + 3 + 3 and report.trained_tokens == 1 + 1
    assert report.too_long == [2] and report.max_tokens == 6
    estimate = checks.estimate_seconds(report, 3, 100.0, 10.0)
    assert estimate == pytest.approx(10.0 + 3 * 8 / 100, abs=0.05)


@pytest.mark.parametrize(("line", "field"), [
    (b"{not json", "line"),
    (b"\xff\xfe", "line"),
    (b"[1, 2]", "line"),
    (json.dumps({"messages": []}).encode(), "messages"),
    (json.dumps({"messages": "hi"}).encode(), "messages"),
    (json.dumps({"prompt": "x", "completion": "y"}).encode(), "prompt"),
    (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(),
     "messages[0].role"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), "messages"),
    (json.dumps({"messages": [{"role": "user", "content": "q"},
                              {"role": "assistant", "content": "a"},
                              {"role": "user", "content": "q2"}]}).encode(), "messages[2].role"),
    (json.dumps({"messages": [{"role": "user", "content": {"a": 1}},
                              {"role": "assistant", "content": "a"}]}).encode(),
     "messages[0].content"),
    (json.dumps({"messages": [{"role": "user", "content": "q"},
                              {"role": "assistant", "content": ""}]}).encode(),
     "messages[1].content"),
    (json.dumps({"messages": [{"role": "user", "content": "q", "weight": 1},
                              {"role": "assistant", "content": "a"}]}).encode(),
     "messages[0].weight"),
    (json.dumps({"messages": [{"role": "user", "content": "q"},
                              {"role": "assistant", "content": "a", "weight": 2}]}).encode(),
     "messages[1].weight"),
    (json.dumps({"messages": [{"role": "user", "content": "q"},
                              {"role": "tool", "tool_call_id": "c9", "content": "r"},
                              {"role": "assistant", "content": "a"}]}).encode(),
     "messages[1].tool_call_id"),
    (json.dumps({"messages": [{"role": "user", "content": "q"},
                              {"role": "assistant", "content": "a", "secret": 1}]}).encode(),
     "messages[1].secret"),
    (json.dumps({**_good(), "tools": "all"}).encode(), "tools"),
    (json.dumps({**_good(), "tools": [{"type": "function", "function": {}}]}).encode(),
     "tools[0].function.name"),
    (json.dumps({**_good(), "response_format": {"type": "yaml"}}).encode(), "response_format"),
    (b"[" * 100_000 + b"]" * 100_000, "line"),
    (b'{"messages": "' + b"x" * (checks.MAX_LINE_BYTES + 1) + b'"}', "line"),
])  # fmt: skip
def test_each_problem_names_its_line_and_field(line: bytes, field: str) -> None:
    report, chats = _report(_lines(_good(), line, _good()))
    assert not report.ok and report.problem_count >= 1
    assert (2, field) in {(p.line, p.field) for p in report.problems}, report.problems
    assert [c.line for c in chats] == [1, 3]
    assert report.summary().startswith("Line 2, ")


def test_tool_calls_and_tools_are_checked_together() -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    good = {"tools": tools, "messages": [
        {"role": "user", "content": "Find order 7."},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "lookup", "arguments": "{\"id\": 7}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
        {"role": "assistant", "content": "It has shipped."}]}  # fmt: skip
    bad = json.loads(json.dumps(good))
    bad["messages"][1]["tool_calls"][0]["function"] = {"name": "drop_table", "arguments": "{x"}
    report, chats = _report(_lines(good, bad))
    assert [c.line for c in chats] == [1]
    assert {p.field for p in report.problems} == {
        "messages[1].tool_calls[0].function.name",
        "messages[1].tool_calls[0].function.arguments"}  # fmt: skip


def test_empty_and_blank_files_are_refused() -> None:
    for text in (b"", b"\n\n  \n"):
        report, chats = _report(text)
        assert not report.ok and chats == []
        assert report.problems[0].field == "file"


def test_too_many_problems_are_counted_not_all_listed() -> None:
    report, _ = _report(b"\n".join([b"{"] * 500))
    assert report.problem_count == 500 and len(report.problems) == checks.MAX_LISTED
    assert report.to_wire()["problem_count"] == 500
    assert "499 more problems" in report.summary()


def test_a_refusal_of_the_template_or_nothing_learnt_is_a_problem_of_its_line() -> None:
    def refusing(example: dict[str, Any]) -> tuple[list[int], list[bool]]:
        if "Lyon" in json.dumps(example):
            raise InvalidRequest("This template cannot render it.", param="messages")
        return _fake(example)

    long_question = {"messages": [{"role": "user", "content": "why " * 10},
                                  {"role": "assistant", "content": "Because."}]}  # fmt: skip
    report, chats = _report(_lines(_good(), _good("Lyon"), long_question))
    kept = checks.tokenise(chats, refusing, 4, report)
    assert len(kept) == 1
    assert [(p.line, p.field) for p in report.problems] == [(2, "messages"), (3, "messages")]
    assert "nothing to learn" in report.problems[1].message


def _scored(answer: str = "Paris.", **task: Any) -> dict[str, Any]:
    return _good(answer) | {"scorer": "exact", "expected": answer, **task}


def test_a_line_that_names_a_scorer_is_also_a_task() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip
    choice = _good('{"city": "Paris"}') | {
        "scorer": "choice", "expected": "Paris", "choices": ["Paris", "Lyon"],
        "field": "city", "response_format": fmt, "max_tokens": 16}  # fmt: skip
    report, chats = _report(_lines(_scored(), choice, _good()))
    assert report.ok, report.problems
    first, second, plain = (c.task for c in chats)
    # The prompt is the conversation before the answer; the answer is what is scored.
    assert first == {"id": "1", "messages": [{"role": "user", "content": "Capital of France?"}],
                     "scorer": "exact", "expected": "Paris."}  # fmt: skip
    assert second is not None and second["response_format"] == fmt
    assert second["choices"] == ["Paris", "Lyon"] and second["max_tokens"] == 16
    assert plain is None


@pytest.mark.parametrize(("task", "says"), [
    ({"scorer": "bogus"}, "scorer must be one of"),
    ({"expected": None, "scorer": "numeric"}, "expected"),
    ({"scorer": "regex", "expected": "(unclosed"}, "regular expressions"),
    # A tenant's pattern would run in the shared worker: (a+)+$ backtracks for ever.
    ({"scorer": "regex", "expected": "(a+)+$"}, "regular expressions"),
    ({"scorer": "json_schema", "expected": {}, "schema": {"type": "object", "properties": {
        "x": {"anyOf": [{"type": "string", "pattern": "(a+)+$"}]}}}}, "regular expressions"),
    ({"scorer": "json_schema", "expected": {}, "schema": {
        "patternProperties": {"(a+)+$": {}}}}, "regular expressions"),
    ({"scorer": "choice", "choices": "Paris"}, "choices"),
    ({"scorer": "exact", "fields": ["x"]}, "do not apply"),
    ({"scorer": "exact", "max_tokens": 10**6}, "max_tokens"),
])  # fmt: skip
def test_a_bad_scorer_is_a_problem_of_its_line_and_field(task: dict[str, Any], says: str) -> None:
    report, chats = _report(_lines(_good(), _scored(**task)))
    assert not report.ok and [c.line for c in chats] == [1]
    assert [(p.line, p.field) for p in report.problems] == [(2, "scorer")]
    assert says in report.problems[0].message, report.problems[0].message


def test_a_scored_line_with_tool_calls_in_its_prompt_is_refused() -> None:
    line = {"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."}],
        "scorer": "contains", "expected": "sunny"}  # fmt: skip
    report, _ = _report(_lines(line))
    assert [(p.line, p.field) for p in report.problems] == [(1, "scorer")]
    assert "plain text" in report.problems[0].message
