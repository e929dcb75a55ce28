"""Turning OpenAI-shaped chat requests into prompts and grammars for a local model.

Small models rarely know a tool-calling convention, so we teach one in the
system prompt and *enforce* it with a GBNF grammar built from the tools' JSON
schemas: whatever the model samples, a tool call is a JSON object
``{"name": <one of the tools>, "arguments": <valid against that tool>}``.
The same mechanism guarantees ``response_format`` JSON.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

import jsonschema

from intramuros.engines.base import ChatParams, ToolSpec
from intramuros.errors import InvalidRequest

# A non-JSON answer under tool_choice "auto" must not start with "{" (that
# branch is the tool call) nor with white space (so the choice is made at once).
_FREE_TEXT_RULES = r"""
root ::= call | freetext
freetext ::= [^{ \t\n\r] [^\x00]*
"""


def message_text(content: Any, index: int) -> str:
    """The text of a message's ``content`` (a string or a list of text parts).

    Parts are joined with a line break, never with nothing: two parts must not
    glue into one token the model reads whole (half an IBAN in each), and the
    personal-data scan joins them the same way.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append(str(part.get("text", "")))
        else:
            raise InvalidRequest(
                f"Content part of type '{kind}' is not supported by this model; "
                "only text parts are.",
                param=f"messages[{index}].content[{j}].type",
            )
    return "\n".join(parts)


def normalise_messages(params: ChatParams) -> list[dict[str, str]]:
    """Plain ``{role, content}`` messages any chat template can render.

    Tool calls and tool results are written out as text (the convention the
    system prompt teaches), and consecutive messages of one role are merged,
    since some templates (Gemma's) insist that roles alternate.
    """
    out: list[dict[str, str]] = []
    for i, msg in enumerate(params.messages):
        role = msg["role"]
        text = message_text(msg.get("content"), i)
        if role == "assistant" and msg.get("tool_calls"):
            calls = [
                json.dumps(
                    {
                        "name": call["function"]["name"],
                        "arguments": _loads_or_text(call["function"].get("arguments", "{}")),
                    },
                    ensure_ascii=False,
                )
                for call in msg["tool_calls"]
            ]
            text = "\n".join(([text] if text else []) + calls)
        elif role == "tool":
            name = msg.get("name") or msg.get("tool_call_id") or "tool"
            role, text = "user", f"Result of tool {name}: {text}"
        elif role == "developer":
            role = "system"
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + text
        else:
            out.append({"role": role, "content": text})

    instructions = _instructions(params)
    if instructions:
        if out and out[0]["role"] == "system":
            out[0]["content"] += "\n\n" + instructions
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out


def _loads_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _instructions(params: ChatParams) -> str:
    lines: list[str] = []
    if params.tools and params.tool_choice != "none":
        tools = [t for t in params.tools if params.tool_choice in ("auto", "required", t.name)]
        lines.append("You can call these tools:")
        for tool in tools:
            lines.append(
                json.dumps(
                    {"name": tool.name, "description": tool.description,
                     "parameters": tool.parameters},
                    ensure_ascii=False,
                )
            )  # fmt: skip
        lines.append(
            'To call a tool, answer with only a JSON object: {"name": <tool name>, '
            '"arguments": <arguments object>}.'
        )
        if params.tool_choice != "auto":
            lines.append("You must call a tool now.")
    rf = params.response_format
    if rf is not None and rf.get("type") in ("json_object", "json_schema"):
        lines.append("Answer with a JSON object only.")
        if rf.get("type") == "json_schema":
            lines.append("It must follow this JSON schema: " + json.dumps(rf["schema"]))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Schemas and grammars
# --------------------------------------------------------------------------


def check_json_schema(schema: Any, param: str) -> dict[str, Any]:
    """Validate a JSON schema supplied by a client; only local ``$ref`` allowed.

    Remote references are refused: resolving them would mean fetching over
    the network, which this platform never does.
    """
    if not isinstance(schema, dict):
        raise InvalidRequest("A JSON schema must be an object.", param=param)
    _refuse_remote_refs(schema, param)
    try:
        validator = jsonschema.validators.validator_for(schema)
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(f"Invalid JSON schema: {exc.message}", param=param) from None
    except RecursionError:
        raise InvalidRequest("The JSON schema is too deeply nested.", param=param) from None
    return schema


# Deeper schemas are refused: nobody writes them by hand, and the validator and
# grammar converter recurse once per level.
MAX_SCHEMA_DEPTH = 32


def _refuse_remote_refs(node: Any, param: str) -> None:
    stack: list[tuple[Any, int]] = [(node, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise InvalidRequest(
                f"The JSON schema is nested deeper than {MAX_SCHEMA_DEPTH} levels.", param=param
            )
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                raise InvalidRequest(
                    f"Only local $ref (starting with '#') are allowed, got '{ref}'.", param=param
                )
            stack.extend((value, depth + 1) for value in item.values())
        elif isinstance(item, list):
            stack.extend((value, depth + 1) for value in item)


def schema_to_gbnf(schema: dict[str, Any], param: str) -> str:
    """GBNF text (rule ``root``) accepting exactly the JSON documents of ``schema``."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return str(json_schema_to_gbnf(json.dumps(_anchor_patterns(schema))))
    except Exception as exc:  # the converter raises bare asserts/KeyErrors on odd schemas
        raise InvalidRequest(
            f"This JSON schema uses a feature the decoding grammar cannot express: {exc}",
            param=param,
        ) from None


def _anchor_patterns(node: Any) -> Any:
    """JSON Schema ``pattern`` searches anywhere; the converter wants ``^...$``."""
    if isinstance(node, list):
        return [_anchor_patterns(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _anchor_patterns(v) for k, v in node.items()}
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        starts = pattern.startswith("^")
        ends = pattern.endswith("$") and not pattern.endswith("\\$")
        if not (starts and ends):
            core = pattern[1 if starts else 0 : len(pattern) - (1 if ends else 0)]
            out["pattern"] = (
                "^" + ("" if starts else ".*") + "(" + core + ")" + ("" if ends else ".*") + "$"
            )
    return out


def tool_call_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """One JSON schema accepting a call to any of ``tools``.

    Each tool's ``$defs``/``definitions`` are hoisted to the root (renamed
    per tool) so that its local ``$ref`` still resolve.
    """
    variants: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    for i, tool in enumerate(tools):
        params = copy.deepcopy(tool.parameters) or {"type": "object", "properties": {}}
        for key in ("$defs", "definitions"):
            for def_name, def_schema in (params.pop(key, None) or {}).items():
                new_name = f"t{i}_{def_name}"
                defs[new_name] = def_schema
                _rename_refs(params, f"#/{key}/{def_name}", f"#/$defs/{new_name}")
                _rename_refs(defs, f"#/{key}/{def_name}", f"#/$defs/{new_name}")
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


def _rename_refs(node: Any, old: str, new: str) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and (ref == old or ref.startswith(old + "/")):
            node["$ref"] = new + ref[len(old) :]
        for value in node.values():
            _rename_refs(value, old, new)
    elif isinstance(node, list):
        for value in node:
            _rename_refs(value, old, new)


def tools_grammar(tools: Sequence[ToolSpec], tool_choice: str) -> str:
    """The grammar for a chat turn with tools.

    ``required`` or a tool's name: the answer must be a call (to that tool).
    ``auto``: either a call, or free text that does not start with ``{``.
    """
    chosen = [t for t in tools if tool_choice in ("auto", "required", t.name)]
    for i, tool in enumerate(tools):
        if tool in chosen:  # name the tool at fault, not just "tools"
            schema_to_gbnf(tool.parameters or {"type": "object"},
                           param=f"tools[{i}].function.parameters")  # fmt: skip
    gbnf = schema_to_gbnf(tool_call_schema(chosen), param="tools")
    if tool_choice != "auto":
        return gbnf
    renamed = "\n".join(
        "call ::=" + line[len("root ::=") :] if line.startswith("root ::=") else line
        for line in gbnf.splitlines()
    )
    return renamed + _FREE_TEXT_RULES


def response_grammar(response_format: dict[str, Any] | None) -> str | None:
    """The grammar enforcing ``response_format``, or None for free text."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return schema_to_gbnf({"type": "object"}, param="response_format")
    if kind == "json_schema":
        return schema_to_gbnf(
            response_format["schema"], param="response_format.json_schema.schema"
        )
    return None


def parse_tool_call(text: str, tools: Sequence[ToolSpec]) -> tuple[str, str] | None:
    """``(name, arguments_json)`` if ``text`` is a valid call to one of ``tools``."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or set(obj) != {"name", "arguments"}:
        return None
    tool = next((t for t in tools if t.name == obj["name"]), None)
    if tool is None:
        return None
    try:
        jsonschema.validate(obj["arguments"], tool.parameters or {"type": "object"})
    except jsonschema.ValidationError:
        return None
    return tool.name, json.dumps(obj["arguments"], ensure_ascii=False)
