"""Task suites: JSONL files of items, validated line by line on load.

One item per line, a JSON object::

    {"id": "inv-001",
     "messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."}],
     "expected": {"iban": "DE89...", "amount": 1234.5},
     "scorer": "json_schema", "schema": {...}, "fields": ["iban", "amount"],
     "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {...}}},
     "max_tokens": 128}

``messages`` (a conversation ending with a user turn) or ``prompt`` (plain
text); ``scorer`` one of :data:`~intramuros.bench.scorers.SCORERS`; the
scorer's options sit next to it at the top level. Bundled suites ship in this
package's ``suites/`` folder and are named by their file stem.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from intramuros.bench import scorers
from intramuros.bench.errors import SuiteError

MAX_SUITE_BYTES = 64 * 1024 * 1024
MAX_LINE_BYTES = 1024 * 1024
MAX_ITEMS = 100_000
MAX_TOKENS_LIMIT = 8192
ROLES = ("system", "user", "assistant")
ITEM_KEYS = frozenset({"id", "messages", "prompt", "expected", "scorer", "response_format",
                        "max_tokens", "stop", "tags"})  # fmt: skip
ALL_OPTIONS = frozenset().union(*scorers.OPTIONS.values())


@dataclass(frozen=True)
class Item:
    """One task: what to send, what is expected, how to score it."""

    id: str
    expected: Any
    scorer: str
    options: dict[str, Any]
    messages: tuple[dict[str, str], ...] | None = None
    prompt: str | None = None
    response_format: dict[str, Any] | None = None
    max_tokens: int = 64
    stop: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suite:
    """A named list of items, with the sha256 of the file it came from."""

    name: str
    path: str
    sha256: str
    items: tuple[Item, ...] = field(default_factory=tuple)


def bundled_suites() -> dict[str, Path]:
    """Name -> path of every suite shipped with the package."""
    folder = resources.files("intramuros.bench") / "suites"
    return {
        Path(str(entry)).stem: Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(".jsonl")
    }


def resolve_suite(name_or_path: str) -> Path:
    """A bundled suite's name, or a path to a JSONL file."""
    bundled = bundled_suites()
    if name_or_path in bundled:
        return bundled[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".jsonl" or path.exists():
        if not path.is_file():
            raise SuiteError(f"suite file {name_or_path} does not exist")
        return path
    known = ", ".join(sorted(bundled)) or "none"
    raise SuiteError(f"unknown suite {name_or_path!r}: not a bundled suite ({known}) nor a file")


def load_suite(name_or_path: str) -> Suite:
    """Load and validate a suite; any bad line raises ``SuiteError`` naming it."""
    path = resolve_suite(name_or_path)
    try:
        size = path.stat().st_size
        if size > MAX_SUITE_BYTES:
            raise SuiteError(f"{path}: {size} bytes, more than the {MAX_SUITE_BYTES} allowed")
        raw = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"cannot read suite {path}: {exc.strerror}") from None
    return parse_suite(raw, name=path.stem, origin=str(path))


def parse_suite(raw: bytes, *, name: str, origin: str) -> Suite:
    """Validate the bytes of a JSONL suite (see the module docstring)."""
    items: list[Item] = []
    seen: set[str] = set()
    for number, line in enumerate(raw.split(b"\n"), start=1):
        where = f"{origin} line {number}"
        if len(line) > MAX_LINE_BYTES:
            raise SuiteError(f"{where}: longer than {MAX_LINE_BYTES} bytes")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise SuiteError(f"{where}: not UTF-8") from None
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SuiteError(f"{where}: not valid JSON ({exc})") from None
        except RecursionError:
            raise SuiteError(f"{where}: JSON nested too deeply") from None
        try:
            item = parse_item(data)
        except (SuiteError, scorers.ScorerOptionError) as exc:
            raise SuiteError(f"{where}: {exc}") from None
        if item.id in seen:
            raise SuiteError(f"{where}: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
        if len(items) > MAX_ITEMS:
            raise SuiteError(f"{origin}: more than {MAX_ITEMS} items")
    if not items:
        raise SuiteError(f"{origin}: the suite has no items")
    return Suite(name=name, path=origin, sha256=hashlib.sha256(raw).hexdigest(),
                 items=tuple(items))  # fmt: skip


def parse_item(data: Any) -> Item:
    """One item from its JSON object (``SuiteError`` or ``ScorerOptionError`` naming what is
    wrong)."""
    if not isinstance(data, dict):
        raise SuiteError("an item must be a JSON object")
    unknown = sorted(set(data) - ITEM_KEYS - ALL_OPTIONS)
    if unknown:
        raise SuiteError(f"unknown key(s) {', '.join(map(repr, unknown))}")
    ident = data.get("id")
    if not isinstance(ident, str | int) or isinstance(ident, bool) or str(ident).strip() == "":
        raise SuiteError("id must be a non-empty string")
    scorer = data.get("scorer")
    if scorer not in scorers.SCORERS:
        raise SuiteError(f"scorer must be one of {', '.join(scorers.SCORERS)}, got {scorer!r}")
    if "expected" not in data:
        raise SuiteError("expected is missing")
    options = {k: v for k, v in data.items() if k in ALL_OPTIONS}
    foreign = sorted(set(options) - scorers.OPTIONS[scorer])
    if foreign:
        raise SuiteError(f"option(s) {', '.join(map(repr, foreign))} do not apply to "
                         f"scorer {scorer}")  # fmt: skip
    scorers.check_options(scorer, data["expected"], options)
    messages, prompt = _input(data)
    max_tokens = data.get("max_tokens", 64)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not (
            1 <= max_tokens <= MAX_TOKENS_LIMIT):  # fmt: skip
        raise SuiteError(f"max_tokens must be an integer from 1 to {MAX_TOKENS_LIMIT}")
    stop = data.get("stop", [])
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise SuiteError("stop must be a string or a list of non-empty strings")
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise SuiteError("tags must be a list of strings")
    return Item(
        id=str(ident), expected=data["expected"], scorer=scorer, options=options,
        messages=messages, prompt=prompt, response_format=_response_format(data),
        max_tokens=max_tokens, stop=tuple(stop), tags=tuple(tags),
    )  # fmt: skip


def _input(data: dict[str, Any]) -> tuple[tuple[dict[str, str], ...] | None, str | None]:
    has_messages, has_prompt = "messages" in data, "prompt" in data
    if has_messages == has_prompt:
        raise SuiteError("give exactly one of messages or prompt")
    if has_prompt:
        prompt = data["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise SuiteError("prompt must be a non-empty string")
        return None, prompt
    messages = data["messages"]
    if not isinstance(messages, list) or not messages:
        raise SuiteError("messages must be a non-empty list")
    out: list[dict[str, str]] = []
    for i, msg in enumerate(messages):
        if (not isinstance(msg, dict) or set(msg) != {"role", "content"}
                or msg["role"] not in ROLES or not isinstance(msg["content"], str)):  # fmt: skip
            raise SuiteError(f"messages[{i}] must be {{\"role\": one of {', '.join(ROLES)}, "
                             f"\"content\": a string}}")  # fmt: skip
        out.append({"role": msg["role"], "content": msg["content"]})
    if out[-1]["role"] != "user":
        raise SuiteError("the last message must be a user turn")
    return tuple(out), None


def _response_format(data: dict[str, Any]) -> dict[str, Any] | None:
    rf = data.get("response_format")
    if rf is None:
        return None
    if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
        raise SuiteError("response_format.type must be text, json_object or json_schema")
    if rf["type"] == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise SuiteError("response_format.json_schema.schema must be a JSON schema object")
        try:
            scorers.check_options("json_schema", None, {"schema": spec["schema"]})
        except scorers.ScorerOptionError as exc:
            raise SuiteError(f"response_format.json_schema: {exc}") from None
    return rf
