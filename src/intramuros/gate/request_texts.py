"""The text fields of a chat, completion or embeddings request, for the personal-data scan.

Every field that reaches the model or the records is listed, with its
``param`` (as an error names it), in the order the model reads them:

- chat: per message, ``name``, ``tool_call_id``, ``content`` (a string, or
  each text part ``content[j].text``, and an image part's ``image_url.url``
  unless it is a ``data:`` URL), ``refusal``, each ``tool_calls[k].id``,
  ``.function.name`` and ``.function.arguments`` (a JSON value: its keys,
  strings and numbers, escapes decoded); then each ``tools[t].function.name``,
  ``.description`` and ``.parameters`` (the schema's strings);
  ``response_format.json_schema`` (its schema, name and description); ``stop``;
- completions: ``prompt`` (or ``prompt[i]``; token ids decoded with the
  model's tokenizer), ``suffix``, ``stop``;
- embeddings: ``input`` (or ``input[i]``; token ids decoded likewise).

The end user's id (``user`` / ``metadata.user``) is added by the caller as a
``subject`` field. Fields where a placeholder can stand are ``text``; names,
ids, schemas and decoded token ids are ``fixed``. Each collector then gives
back the request's values with the model's pieces put in (:meth:`protect`) and
the redacted text of the fields kept in the ledger (:meth:`record`). JSON
values are walked without recursion; one nested beyond :data:`MAX_JSON_DEPTH`
levels is read as one string (its JSON text).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from intramuros.gate.privacy import FieldKind, PiiDecision, TextField

MAX_JSON_DEPTH = 64

Decode = Callable[[Sequence[int]], "str | None"]
T_co = TypeVar("T_co", covariant=True)


class RequestTexts(Protocol[T_co]):
    """What the serving layer needs of a collector: its fields, the model's values, records."""

    @property
    def fields(self) -> list[TextField]: ...
    def protect(self, decision: PiiDecision) -> T_co | None: ...
    def record(self, decision: PiiDecision) -> list[str]: ...


class ToolLike(Protocol):
    """What the scan reads of a tool definition."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def parameters(self) -> dict[str, Any]: ...


def json_leaves(value: Any) -> list[str] | None:
    """Keys, strings and numbers of a JSON value, in document order; None if too deep."""
    out: list[str] = []
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return None
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int | float):
            out.append(json.dumps(item))
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                stack.append((child, depth + 1))
                stack.append((str(key), depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in reversed(item))
    return out


def _rebuild(value: Any, leaves: Iterator[str]) -> Any:
    """``value`` with its leaves replaced, in :func:`json_leaves` order (depth is bounded)."""
    if isinstance(value, str):
        return next(leaves)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        new = next(leaves)
        return value if new == json.dumps(value) else new  # a placeholder is a string
    if isinstance(value, dict):
        return {next(leaves): _rebuild(child, leaves) for child in value.values()}
    if isinstance(value, list):
        return [_rebuild(child, leaves) for child in value]
    return value


class _Collector:
    """Fields, and for each the JSON value it was read from (None: a plain text)."""

    def __init__(self) -> None:
        self.fields: list[TextField] = []
        self._json: list[Any] = []
        self._original: list[str] = []

    def _add(self, f: TextField, value: Any, original: str) -> int:
        self.fields.append(f)
        self._json.append(value)
        self._original.append(original)
        return len(self.fields) - 1

    def text(self, param: str, value: str, *, fixed: bool = False, record: bool = False) -> int:
        kind: FieldKind = "fixed" if fixed else "text"
        return self._add(TextField(param, (value,), kind, record), None, value)

    def json_value(self, param: str, value: Any, *, fixed: bool) -> int:
        leaves = json_leaves(value)
        if leaves is None:  # beyond the depth we walk: read it as one string
            try:
                return self.text(param, json.dumps(value, ensure_ascii=False), fixed=True)
            except (ValueError, RecursionError):
                return self.opaque(param)
        kind: FieldKind = "fixed" if fixed else "text"
        return self._add(TextField(param, tuple(leaves), kind), value, "")

    def json_text(self, param: str, raw: str, *, record: bool) -> int:
        """A JSON document given as a string (tool-call arguments); plain text if it is not."""
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            return self.text(param, raw, record=record)
        leaves = json_leaves(value)
        if leaves is None:
            return self.text(param, raw, record=record)
        return self._add(TextField(param, tuple(leaves), "text", record), value, raw)

    def opaque(self, param: str) -> int:
        return self._add(TextField(param, (), "opaque"), None, "")

    def rebuilt(self, index: int, pieces: tuple[str, ...]) -> str:
        """Field ``index`` as text again, from rewritten pieces."""
        value = self._json[index]
        if value is None:
            return pieces[0] if pieces else ""
        return json.dumps(_rebuild(value, iter(pieces)), ensure_ascii=False)

    def changed(self, decision: PiiDecision, index: int) -> str | None:
        """Field ``index`` for the model, or None when the model may see it as it is."""
        pieces = decision.model_pieces(index)
        if pieces == self.fields[index].pieces:
            return None
        return self.rebuilt(index, pieces)

    def record(self, decision: PiiDecision) -> list[str]:
        """The redacted text of every field kept as ledger content, in order."""
        out = []
        for index, f in enumerate(self.fields):
            if f.record:
                pieces = decision.record_pieces(index)
                unchanged = pieces == f.pieces
                out.append(self._original[index] if unchanged else self.rebuilt(index, pieces))
        return out


def _or(new: str | None, old: Any) -> Any:
    return old if new is None else new


# --------------------------------------------------------------------------
# chat
# --------------------------------------------------------------------------


def chat_size(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Any], extra: bool,
    strings: Sequence[str | None] = (),
) -> int:
    """About how many characters a chat request's scan reads, without walking it.

    Tools, tool calls and a response schema count as "large": their size is
    only known by walking them, which is the work to keep off the event loop.
    ``strings`` are the request's other texts (stop sequences, schema name).
    """
    if tools or extra:
        return _LARGE
    total = sum(len(x) for x in strings if x)
    for msg in messages:
        if msg.get("tool_calls"):
            return _LARGE
        for value in msg.values():
            if isinstance(value, str):
                total += len(value)
            elif isinstance(value, list):
                total += sum(_strings_size(part) for part in value)
    return total


def _strings_size(part: Any) -> int:
    """Characters in a content part's strings (its text, an image's URL)."""
    if not isinstance(part, Mapping):
        return 0
    return sum(len(v) if isinstance(v, str) else _strings_size(v) for v in part.values())


_LARGE = 1 << 30


@dataclass
class ChatProtected:
    """A chat request's values as the model may see them."""

    messages: list[dict[str, Any]]
    descriptions: list[str]
    stop: tuple[str, ...]


class ChatTexts(_Collector):
    """The fields of a chat request (engine-level messages, tools, format, stop).

    ``first_index`` is the request index of ``messages[0]``: -1 when the
    gateway put a system prompt of its own first (not scanned).
    """

    def __init__(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[ToolLike] = (),
        response_format: Mapping[str, Any] | None = None,
        stop: Sequence[str] = (),
        *,
        first_index: int = 0,
        schema_name: str | None = None,
        schema_description: str | None = None,
    ) -> None:
        super().__init__()
        self._messages = list(messages)
        self._tools = list(tools)
        self._stop = tuple(stop)
        self._slots: list[tuple[Any, ...]] = []
        for i, msg in enumerate(self._messages):
            if i + first_index >= 0:
                self._message(i, f"messages[{i + first_index}]", msg)
        for t, tool in enumerate(self._tools):
            where = f"tools[{t}].function"
            self._slot(("fixed",), self.text(f"{where}.name", tool.name, fixed=True))
            self._slot(("description", t), self.text(f"{where}.description", tool.description))
            self._slot(("fixed",), self.json_value(f"{where}.parameters", tool.parameters,
                                                   fixed=True))  # fmt: skip
        rf = response_format or {}
        if "schema" in rf:
            where = "response_format.json_schema"
            self._slot(("fixed",), self.json_value(f"{where}.schema", rf["schema"], fixed=True))
        for key, value in (("name", schema_name), ("description", schema_description)):
            if value:
                where = f"response_format.json_schema.{key}"
                self._slot(("fixed",), self.text(where, value, fixed=True))
        for k, value in enumerate(self._stop):
            self._slot(("stop", k), self.text("stop", value))

    def _slot(self, slot: tuple[Any, ...], index: int) -> None:
        assert index == len(self._slots)
        self._slots.append(slot)

    def _message(self, i: int, where: str, msg: Mapping[str, Any]) -> None:
        # In the order the model reads them: "Result of tool <name>: <content>".
        if isinstance(msg.get("name"), str):
            self._slot(("fixed",), self.text(f"{where}.name", msg["name"], fixed=True))
        if isinstance(msg.get("tool_call_id"), str):
            self._slot(("fixed",), self.text(f"{where}.tool_call_id", msg["tool_call_id"],
                                             fixed=True))  # fmt: skip
        content = msg.get("content")
        if isinstance(content, str):
            self._slot(("content", i), self.text(f"{where}.content", content, record=True))
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, Mapping):
                    continue
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    self._slot(("part", i, j), self.text(f"{where}.content[{j}].text",
                                                         part["text"], record=True))  # fmt: skip
                elif part.get("type") == "image_url":
                    image = part.get("image_url")
                    url = image.get("url") if isinstance(image, Mapping) else image
                    if isinstance(url, str) and not url.startswith("data:"):
                        self._slot(("fixed",), self.text(f"{where}.content[{j}].image_url.url",
                                                         url, fixed=True))  # fmt: skip
        if isinstance(msg.get("refusal"), str):
            self._slot(("refusal", i), self.text(f"{where}.refusal", msg["refusal"]))
        for k, call in enumerate(msg.get("tool_calls") or []):
            at = f"{where}.tool_calls[{k}]"
            if isinstance(call.get("id"), str):
                self._slot(("fixed",), self.text(f"{at}.id", call["id"], fixed=True))
            function = call.get("function") or {}
            if isinstance(function.get("name"), str):
                self._slot(("fixed",), self.text(f"{at}.function.name", function["name"],
                                                 fixed=True))  # fmt: skip
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                index = self.json_text(f"{at}.function.arguments", arguments, record=True)
                self._slot(("arguments", i, k), index)

    def protect(self, decision: PiiDecision) -> ChatProtected | None:
        """The values with placeholders put in; None when the model may see them all as sent."""
        if decision.pseudonymiser is None:
            return None
        messages: list[dict[str, Any]] = [dict(m) for m in self._messages]
        descriptions = [t.description for t in self._tools]
        stop = list(self._stop)
        for index, slot in enumerate(self._slots):
            if slot[0] == "fixed":
                continue
            new = self.changed(decision, index)
            if new is None:
                continue
            kind = slot[0]
            if kind == "content":
                messages[slot[1]]["content"] = new
            elif kind == "part":
                msg = messages[slot[1]]
                parts = msg["content"] = list(msg["content"])
                parts[slot[2]] = {**parts[slot[2]], "text": new}
            elif kind == "refusal":
                messages[slot[1]]["refusal"] = new
            elif kind == "arguments":
                msg = messages[slot[1]]
                calls = msg["tool_calls"] = list(msg["tool_calls"])
                call = dict(calls[slot[2]])
                call["function"] = {**call["function"], "arguments": new}
                calls[slot[2]] = call
            elif kind == "description":
                descriptions[slot[1]] = new
            elif kind == "stop":
                stop[slot[1]] = new
        return ChatProtected(messages, descriptions, tuple(stop))


# --------------------------------------------------------------------------
# completions and embeddings
# --------------------------------------------------------------------------


class CompletionTexts(_Collector):
    """The fields of a completions request: its prompts (text or token ids), suffix, stop."""

    def __init__(
        self,
        prompts: Sequence[str | Sequence[int]],
        suffix: str | None,
        stop: Sequence[str],
        decode: Decode,
    ) -> None:
        super().__init__()
        self._prompts = list(prompts)
        self._prompt_fields: list[int | None] = []
        for i, prompt in enumerate(self._prompts):
            where = "prompt" if len(self._prompts) == 1 else f"prompt[{i}]"
            if isinstance(prompt, str):
                self._prompt_fields.append(self.text(where, prompt, record=True))
                continue
            decoded = decode(prompt)
            self._prompt_fields.append(None)
            if decoded is None:
                self.opaque(where)
            else:
                self.text(where, decoded, fixed=True)
        self._suffix = suffix
        self._suffix_field = self.text("suffix", suffix, record=True) if suffix else None
        self._stop = tuple(stop)
        self._stop_fields = [self.text("stop", s) for s in self._stop]

    def protect(
        self, decision: PiiDecision
    ) -> tuple[list[str | Sequence[int]], str | None, tuple[str, ...]] | None:
        """``(prompts, suffix, stop)`` with placeholders put in; None when nothing changes."""
        if decision.pseudonymiser is None:
            return None
        prompts = [
            p if index is None else _or(self.changed(decision, index), p)
            for p, index in zip(self._prompts, self._prompt_fields, strict=True)
        ]
        suffix = self._suffix
        if self._suffix_field is not None:
            suffix = _or(self.changed(decision, self._suffix_field), suffix)
        stop = tuple(_or(self.changed(decision, i), s)
                     for s, i in zip(self._stop, self._stop_fields, strict=True))  # fmt: skip
        return prompts, suffix, stop


class EmbeddingTexts(_Collector):
    """The inputs of an embeddings request (text or token ids)."""

    def __init__(self, inputs: Sequence[str | Sequence[int]], decode: Decode) -> None:
        super().__init__()
        self._inputs = list(inputs)
        self._input_fields: list[int | None] = []
        for i, item in enumerate(self._inputs):
            where = "input" if len(self._inputs) == 1 else f"input[{i}]"
            if isinstance(item, str):
                self._input_fields.append(self.text(where, item))
                continue
            decoded = decode(item)
            self._input_fields.append(None)
            if decoded is None:
                self.opaque(where)
            else:
                self.text(where, decoded, fixed=True)

    def protect(self, decision: PiiDecision) -> list[str | Sequence[int]] | None:
        """The inputs with placeholders put in; None when nothing changes."""
        if decision.pseudonymiser is None:
            return None
        return [
            item if index is None else _or(self.changed(decision, index), item)
            for item, index in zip(self._inputs, self._input_fields, strict=True)
        ]
