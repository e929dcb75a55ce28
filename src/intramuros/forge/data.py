"""Checking a fine-tuning file before anything trains: OpenAI's chat JSONL.

Each line is ``{"messages": [...], "tools": [...]?}``: roles ``system``,
``developer``, ``user``, ``assistant`` (text, or ``tool_calls``; ``weight`` 0
or 1) and ``tool`` (with ``tool_call_id``). Every problem is reported with its
line number and field, all of them at once (up to :data:`MAX_LISTED`), so a
user fixes a file in one pass. Then each example is tokenised as the base
model will read it (:class:`Tokenizer`, the model's own engine), which gives
the token counts, the examples longer than the sequence length, and an
estimate of the training time on this machine.

Pure functions of bytes: the server runs them in a worker thread, the
``forge validate`` command in its own process.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from intramuros.bench.errors import SuiteError
from intramuros.bench.scorers import ScorerOptionError
from intramuros.bench.suite import ALL_OPTIONS, parse_item

ROLES = ("system", "developer", "user", "assistant", "tool")
# One line of a training file: long documents in a prompt are fine, a megabyte is not.
MAX_LINE_BYTES = 512 * 1024
MAX_EXAMPLES = 100_000
MAX_MESSAGES = 256
MAX_LISTED = 100
MIN_EXAMPLES = 1

LINE_KEYS = ("messages", "tools", "parallel_tool_calls", "response_format")
# Ours: a line may name how its answer is scored, as a bench suite's item does.
TASK_KEYS = frozenset({"scorer", "expected", "max_tokens", "stop"}) | ALL_OPTIONS

Tokenizer = Callable[[dict[str, Any]], tuple[list[int], list[bool]]]


@dataclass(frozen=True)
class Problem:
    """One problem of a file: where (line, 1-based; field, as a JSON path) and what."""

    line: int
    field: str
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "message": self.message}


@dataclass(frozen=True)
class Chat:
    """One well-formed example: its messages and tools, as the engine takes them."""

    line: int
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    # Ours: the response format the model will be asked with (its instructions are part
    # of the prompt it is served with, so it is trained with them too).
    response_format: dict[str, Any] | None = None
    # Ours: the line as a bench item (its prompt, expected answer and scorer), when it
    # names a scorer: a validation line is then also scored as a task, before and after.
    task: dict[str, Any] | None = None


@dataclass
class Report:
    """What checking a file found (see :func:`check_file`)."""

    examples: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    max_tokens: int = 0
    too_long: list[int] = field(default_factory=list)
    seq_len: int = 0
    estimated_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.problem_count == 0 and self.examples >= MIN_EXAMPLES

    def add(self, line: int, where: str, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(Problem(line, where, message))

    def summary(self) -> str:
        """The first problem, for a job's error message; or a line saying all is well."""
        if self.examples < MIN_EXAMPLES and not self.problem_count:
            return "The file holds no training examples."
        if not self.problem_count:
            return f"{self.examples} examples, {self.tokens} tokens."
        first = self.problems[0]
        more = self.problem_count - 1
        tail = f" ({more} more problem{'s' if more != 1 else ''})" if more else ""
        return f"Line {first.line}, {first.field}: {first.message}{tail}"

    def to_wire(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "examples": self.examples, "problem_count": self.problem_count,
            "problems": [p.to_wire() for p in self.problems], "tokens": self.tokens,
            "trained_tokens": self.trained_tokens, "max_tokens": self.max_tokens,
            "seq_len": self.seq_len, "too_long": self.too_long[:MAX_LISTED],
            "too_long_count": len(self.too_long), "estimated_seconds": self.estimated_seconds,
        }  # fmt: skip


def parse_file(data: bytes, report: Report) -> list[Chat]:
    """The examples of a chat JSONL file; every problem goes to ``report``."""
    chats: list[Chat] = []
    if not data.strip():
        report.add(1, "file", "The file is empty.")
        return chats
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        if report.examples >= MAX_EXAMPLES:
            report.add(number, "file", f"More than {MAX_EXAMPLES} examples; split the file.")
            break
        report.examples += 1
        chat = _parse_line(number, raw, report)
        if chat is not None:
            chats.append(chat)
    return chats


def _parse_line(number: int, raw: bytes, report: Report) -> Chat | None:
    if len(raw) > MAX_LINE_BYTES:
        report.add(number, "line", f"The line is {len(raw)} bytes; at most {MAX_LINE_BYTES}.")
        return None
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        report.add(number, "line", "The line is not UTF-8 text.")
        return None
    except (ValueError, RecursionError) as exc:
        report.add(number, "line", f"The line is not valid JSON ({str(exc)[:120]}).")
        return None
    if not isinstance(obj, dict):
        report.add(number, "line", "Each line must be a JSON object with 'messages'.")
        return None
    before = report.problem_count
    for key in obj:
        if key not in LINE_KEYS and key not in TASK_KEYS:
            report.add(number, key, "Unknown field; a line has 'messages' and maybe 'tools'.")
    fmt = obj.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") in (
            "text", "json_object", "json_schema")):  # fmt: skip
        report.add(number, "response_format", "A response format is {'type': 'json_object'} "
                   "or {'type': 'json_schema', 'json_schema': {...}}.")  # fmt: skip
    tools = _check_tools(number, obj.get("tools"), report)
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        report.add(number, "messages", "'messages' must be a non-empty list.")
        return None
    if len(messages) > MAX_MESSAGES:
        report.add(number, "messages", f"{len(messages)} messages; at most {MAX_MESSAGES}.")
        return None
    calls: set[str] = set()
    for i, msg in enumerate(messages):
        _check_message(number, f"messages[{i}]", msg, report, calls, tools)
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        report.add(number, "messages", "No assistant message: nothing to learn.")
    elif isinstance(messages[-1], dict) and messages[-1].get("role") != "assistant":
        report.add(number, f"messages[{len(messages) - 1}].role",
                   "The last message must be the assistant's.")  # fmt: skip
    task = _task(number, obj, messages, report) if "scorer" in obj else None
    if report.problem_count != before:
        return None
    return Chat(number, messages, tools, fmt if isinstance(fmt, dict) else None, task)


def _task(number: int, obj: dict[str, Any], messages: list[Any],
          report: Report) -> dict[str, Any] | None:  # fmt: skip
    """The line as a bench item: the conversation up to its last answer is the prompt,
    the scorer and its options say how an answer is scored."""
    prompt = messages[:-1]
    if not all(isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
               and isinstance(m.get("content"), str) for m in prompt):  # fmt: skip
        report.add(number, "scorer", "A scored line's prompt must be system, user and "
                   "assistant messages of plain text.")  # fmt: skip
        return None
    # The tenant's own patterns would be matched by Python's backtracking ``re`` in the
    # training worker, which one job at a time per machine shares: a pattern written to
    # backtrack forever would stall every tenant's fine-tuning.
    if obj.get("scorer") == "regex" or _has_pattern(obj.get("schema")):
        report.add(number, "scorer", "A scored line may not use regular expressions (the "
                   "regex scorer, or 'pattern' in a schema); use exact, contains, choice, "
                   "numeric or json_schema without patterns.")  # fmt: skip
        return None
    item = {k: v for k, v in obj.items() if k in TASK_KEYS}
    item |= {"id": str(number),
             "messages": [{"role": m["role"], "content": m["content"]} for m in prompt]}
    if obj.get("response_format") is not None:
        item["response_format"] = obj["response_format"]
    try:
        parse_item(item)
    except (SuiteError, ScorerOptionError) as exc:
        report.add(number, "scorer", f"As a scored task: {exc}.")
        return None
    return item


def _has_pattern(schema: Any) -> bool:
    """Whether a JSON schema holds a regular expression anywhere (walked without recursion)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "pattern" in node or "patternProperties" in node:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _check_tools(number: int, tools: Any, report: Report) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        report.add(number, "tools", "'tools' must be a list.")
        return []
    good: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            report.add(number, where, "A tool is {'type': 'function', 'function': {...}}.")
            continue
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            report.add(number, where + ".function.name", "A tool needs a name.")
            continue
        params = fn.get("parameters", {})
        if not isinstance(params, dict):
            report.add(number, where + ".function.parameters", "Must be a JSON schema object.")
            continue
        good.append(tool)
    return good


def _check_message(number: int, where: str, msg: Any, report: Report, calls: set[str],
                   tools: list[dict[str, Any]]) -> None:  # fmt: skip
    if not isinstance(msg, dict):
        report.add(number, where, "A message must be an object with 'role' and 'content'.")
        return
    role = msg.get("role")
    if role not in ROLES:
        report.add(number, where + ".role", f"Unknown role {str(role)[:40]!r}; one of "
                   + ", ".join(ROLES) + ".")  # fmt: skip
        return
    content = msg.get("content")
    text_ok = _content_ok(content)
    if content is not None and not text_ok:
        report.add(number, where + ".content",
                   "Content must be a string or a list of text parts.")  # fmt: skip
    if "weight" in msg and (role != "assistant" or msg["weight"] not in (0, 1)):
        report.add(number, where + ".weight", "Only assistant messages have a weight, 0 or 1.")
    if role == "assistant":
        tool_calls = msg.get("tool_calls")
        if tool_calls is not None:
            _check_calls(number, where, tool_calls, report, calls, tools)
        elif content is None or (isinstance(content, str) and not content):
            report.add(number, where + ".content", "An assistant message needs content "
                       "or tool_calls.")  # fmt: skip
    elif role == "tool":
        call_id = msg.get("tool_call_id")
        if not isinstance(call_id, str) or call_id not in calls:
            report.add(number, where + ".tool_call_id",
                       "A tool message answers a tool call made earlier (its id).")  # fmt: skip
    elif content is None:
        report.add(number, where + ".content", "Missing content.")
    unknown = set(msg) - {"role", "content", "name", "weight", "tool_calls", "tool_call_id"}
    for key in sorted(unknown):
        report.add(number, f"{where}.{key}", "Unknown field.")


def _content_ok(content: Any) -> bool:
    if isinstance(content, str):
        return True
    return isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    )


def _check_calls(number: int, where: str, tool_calls: Any, report: Report, calls: set[str],
                 tools: list[dict[str, Any]]) -> None:  # fmt: skip
    names = {t["function"]["name"] for t in tools}
    if not isinstance(tool_calls, list) or not tool_calls:
        report.add(number, where + ".tool_calls", "'tool_calls' must be a non-empty list.")
        return
    for k, call in enumerate(tool_calls):
        at = f"{where}.tool_calls[{k}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            report.add(number, at + ".function", "A tool call has a function with a name.")
            continue
        if names and fn["name"] not in names:
            report.add(number, at + ".function.name",
                       f"{fn['name'][:60]!r} is not one of the line's tools.")  # fmt: skip
        arguments = fn.get("arguments", "{}")
        try:
            json.loads(arguments) if isinstance(arguments, str) else None
        except ValueError:
            report.add(number, at + ".function.arguments", "Arguments must be a JSON string.")
        if not isinstance(arguments, str):
            report.add(number, at + ".function.arguments", "Arguments must be a JSON string.")
        if isinstance(call.get("id"), str):
            calls.add(call["id"])


def tokenise(chats: Sequence[Chat], tokenizer: Tokenizer, seq_len: int,
             report: Report) -> list[tuple[list[int], list[bool]]]:  # fmt: skip
    """Each chat as the model reads it; counts, the examples over ``seq_len``, and
    refusals of the template (e.g. roles a model's template does not take) go to
    ``report``."""
    from intramuros.errors import IntramurosError

    report.seq_len = seq_len
    out: list[tuple[list[int], list[bool]]] = []
    for chat in chats:
        try:
            ids, mask = tokenizer({"messages": chat.messages, "tools": chat.tools,
                                   "response_format": chat.response_format})
        except IntramurosError as exc:
            report.add(chat.line, getattr(exc, "param", None) or "messages", str(exc))
            continue
        learnt = sum(mask[:seq_len])
        if not learnt:
            needed = mask.index(True) + 1 if True in mask else len(ids)
            report.add(chat.line, "messages", "No assistant token within the sequence "
                       f"length ({seq_len}): nothing to learn (this example needs a "
                       f"sequence length of at least {needed}).")  # fmt: skip
            continue
        report.tokens += len(ids)
        report.trained_tokens += learnt
        report.max_tokens = max(report.max_tokens, len(ids))
        if len(ids) > seq_len:
            report.too_long.append(chat.line)
        out.append((ids, mask))
    return out


def estimate_seconds(report: Report, epochs: int, tokens_per_second: float,
                     load_seconds: float) -> float:  # fmt: skip
    """Roughly how long training takes here: tokens read per epoch at the measured rate,
    plus loading the base and the two evaluations."""
    per_epoch = min(report.tokens, report.examples * max(report.seq_len, 1))
    return round(load_seconds + math.ceil(epochs) * per_epoch / max(tokens_per_second, 1.0), 1)


def chat_params(example: dict[str, Any]) -> Any:
    """An example (``messages``, ``tools``, ``response_format``) as the engine's chat request."""
    from intramuros.engines.base import ChatParams, SamplingParams, ToolSpec

    tools = tuple(ToolSpec(name=t["function"]["name"],
                           description=t["function"].get("description", ""),
                           parameters=t["function"].get("parameters", {}))
                  for t in example["tools"])  # fmt: skip
    fmt = example.get("response_format")
    if fmt is not None and fmt.get("type") == "json_schema":
        fmt = {"type": "json_schema", "schema": fmt.get("json_schema", {}).get("schema", {})}
    return ChatParams(messages=example["messages"], sampling=SamplingParams(), tools=tools,
                      response_format=fmt)
