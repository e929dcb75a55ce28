"""Structured extraction: a document's text into the caller's JSON schema, with pages.

The OCR'd text goes to a chat model through the gate (``platform.chat``: metered,
quota-checked, under the tenant's personal-data policy, written to the
ledger) with ``response_format`` set to the schema, so decoding is
grammar-constrained and the answer parses and validates. We still validate
it (a token budget can cut JSON short: then the call fails, naming that).

Each leaf value is then looked up in the pages' text (case, spacing and
markdown marks ignored; numbers also in their usual spellings, IBAN-like
values also without spaces) and given the 0-based index of the first page
holding it, or ``None`` when it is not there verbatim: a value the model
made up, or one it reformatted, shows as unattributed. Before that, a
patterned field (``pattern`` in the schema) whose value is not in the text is
replaced by the document's only match of the pattern, if there is exactly one
(see :func:`repair`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from intramuros.errors import ContextLengthExceeded, InvalidRequest
from intramuros.files.errors import ExtractionFailed
from intramuros.protocol import openai as p

if TYPE_CHECKING:
    from intramuros.gate.tenants import Principal
    from intramuros.platform.interface import Platform

MAX_SCHEMA_CHARS = 20_000
_SYSTEM = (
    "You read a document and fill in a JSON object. Copy every value exactly as it is "
    "written in the document. Use null for a field the document does not give."
)
_NAME_RE = re.compile(r"[^a-zA-Z0-9_-]+")
_MARKS = re.compile(r"[|*#_`>]+")
_SPACES = re.compile(r"\s+")


@dataclass
class Extraction:
    """The fields the model filled, and the page each leaf value was found on."""

    fields: dict[str, Any]
    pages: dict[str, int | None]
    model: str
    usage: dict[str, Any] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The result as written by ``intramuros docai extract``."""
        return {"fields": self.fields, "pages": self.pages, "model": self.model,
                "repaired": self.repaired, "usage": self.usage}  # fmt: skip


def check_schema(schema: Any, param: str) -> dict[str, Any]:
    """``schema`` if it is a valid JSON schema of an object; else ``InvalidRequest``."""
    import jsonschema

    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise InvalidRequest(f"{param} must be a JSON schema with \"type\": \"object\".",
                             param=param)  # fmt: skip
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise InvalidRequest(f"{param} is over {MAX_SCHEMA_CHARS} characters.", param=param)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(f"{param} is not a valid JSON schema: {exc.message}",
                             param=param) from None  # fmt: skip
    return schema


def annotation_schema(
    fmt: p.ResponseFormat | None, param: str
) -> tuple[dict[str, Any], str] | None:
    """The schema and name of a ``document_annotation_format`` (json_schema only)."""
    if fmt is None:
        return None
    if fmt.type != "json_schema" or fmt.json_schema is None:
        raise InvalidRequest(f"{param} must be {{\"type\": \"json_schema\", \"json_schema\": "
                             "{\"name\": ..., \"schema\": {...}}}.", param=param)  # fmt: skip
    schema = check_schema(fmt.json_schema.schema_, f"{param}.json_schema.schema")
    return schema, fmt.json_schema.name


def _messages(text: str, instructions: str | None) -> list[Any]:
    # The engine adds the schema itself to the system prompt (and enforces it).
    user = f"Document:\n{text}\n\nFill in the JSON object from this document."
    if instructions:
        user += f"\n\n{instructions}"
    return [p.SystemMessage(role="system", content=_SYSTEM),
            p.UserMessage(role="user", content=user)]


async def extract(
    core: Platform,
    who: Principal,
    page_texts: Sequence[str],
    schema: dict[str, Any],
    *,
    model: str,
    name: str = "document",
    instructions: str | None = None,
    max_tokens: int | None = None,
) -> Extraction:
    """Fill ``schema`` from the pages' text with ``model`` (see the module docstring)."""
    import jsonschema

    n_ctx = core.settings.n_ctx
    budget = max_tokens or max(16, min(768, n_ctx // 3))
    text = "\n\n".join(t.strip() for t in page_texts)
    # About three characters a token; shrunk from the real count if it does not fit.
    chars = max(200, (n_ctx - budget - 120) * 3)
    fmt = p.ResponseFormat(type="json_schema", json_schema=p.JSONSchemaSpec(
        name=_NAME_RE.sub("_", name)[:64] or "document", schema_=schema, strict=True))  # fmt: skip
    for _attempt in range(4):
        req = p.ChatCompletionRequest(
            model=model, messages=_messages(text[:chars], instructions),
            temperature=0.0, max_tokens=budget, response_format=fmt,
        )  # fmt: skip
        try:
            reply = await core.chat(req, who)
            break
        except ContextLengthExceeded as exc:
            room = exc.context_length - exc.max_tokens - 16
            if chars <= 200 or room <= 0 or len(text) <= 200:
                raise
            chars = max(200, int(min(chars, len(text)) * room / exc.prompt_tokens * 0.9))
    else:  # pragma: no cover - four shrinks always fit or raise
        raise ExtractionFailed("The document does not fit in the model's context.")
    assert isinstance(reply, p.ChatCompletionResponse)
    choice = reply.choices[0]
    content = choice.message.content or ""
    if choice.finish_reason == "length":
        raise ExtractionFailed(
            f"The extraction ran out of its token budget ({budget} tokens) before the JSON "
            "was complete; bound the schema (maxLength, maxItems) or raise --n-ctx.",
            param="document_annotation_format",
        )
    try:
        fields = json.loads(content)
        jsonschema.validate(fields, schema)
    except (ValueError, jsonschema.ValidationError) as exc:
        raise ExtractionFailed(f"The model's answer does not validate against the schema: "
                               f"{getattr(exc, 'message', exc)}",
                               param="document_annotation_format") from None  # fmt: skip
    usage = reply.usage.model_dump() if reply.usage is not None else {}
    repaired = repair(fields, schema, page_texts)
    if repaired:
        jsonschema.validate(fields, schema)  # a repair only ever puts in a pattern's match
    return Extraction(fields=fields, pages=locate(fields, page_texts), model=model, usage=usage,
                      repaired=repaired)  # fmt: skip


# --------------------------------------------------------------------------
# Deterministic repair of patterned fields
# --------------------------------------------------------------------------


def _pattern_of(schema: Any) -> str | None:
    """The ``pattern`` of a string schema (or of the string branch of an ``anyOf``)."""
    if not isinstance(schema, dict):
        return None
    if isinstance(schema.get("pattern"), str):
        return str(schema["pattern"])
    for branch in schema.get("anyOf") or []:
        if isinstance(branch, dict) and isinstance(branch.get("pattern"), str):
            return str(branch["pattern"])
    return None


def repair(fields: dict[str, Any], schema: dict[str, Any], page_texts: Sequence[str],
           prefix: str = "") -> list[str]:  # fmt: skip
    """Fix patterned string fields whose value is not in the document.

    When the model wrote a value for a field with a ``pattern`` (an IBAN, an
    invoice number format) that does not occur in the text, and exactly one
    distinct text of the document matches the pattern, that text replaces it.
    Returns the paths repaired. Deterministic: no model call.
    """
    done: list[str] = []
    text = "\n".join(page_texts)
    for name, sub in (schema.get("properties") or {}).items():
        value = fields.get(name)
        path = f"{prefix}{name}"
        if isinstance(value, dict) and isinstance(sub, dict):
            done += repair(value, sub, page_texts, path + ".")
            continue
        pattern = _pattern_of(sub)
        if pattern is None or (isinstance(value, str) and value and locate(
                {name: value}, page_texts).get(name) is not None):  # fmt: skip
            continue
        core = pattern.removeprefix("^").removesuffix("$")
        try:
            found = {m.group(0).strip() for m in re.finditer(rf"(?<![A-Za-z0-9]){core}"
                                                             r"(?![A-Za-z0-9])", text)}  # fmt: skip
        except re.error:
            continue
        if len(found) == 1:
            fields[name] = found.pop()
            done.append(path)
    return done


# --------------------------------------------------------------------------
# Page attribution
# --------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Text for matching: NFKC, case-folded, markdown marks and runs of spaces as one space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACES.sub(" ", _MARKS.sub(" ", text)).strip()


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, scalar)`` for every leaf: ``a.b``, ``items[0].price``."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from leaves(sub, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from leaves(sub, f"{path}[{i}]")
    else:
        yield path, value


def spellings(value: Any) -> list[str]:
    """Normalised ways a value may be written in a document."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        number = float(value)
        forms = {str(value)}
        if number.is_integer():
            forms.add(str(int(number)))
        fixed = f"{number:,.2f}"
        forms |= {f"{number:.2f}", fixed, fixed.replace(",", " "),
                  fixed.replace(",", "\x00").replace(".", ",").replace("\x00", "."),
                  fixed.replace(",", " ").replace(".", ",")}  # fmt: skip
        return sorted(normalise(f) for f in forms)
    text = normalise(str(value))
    return [text] if text else []


def locate(fields: Any, page_texts: Sequence[str]) -> dict[str, int | None]:
    """The first page (0-based) holding each leaf value, or None; see the module docstring."""
    pages = [normalise(t) for t in page_texts]
    compact = [t.replace(" ", "") for t in pages]
    found: dict[str, int | None] = {}
    for path, value in leaves(fields):
        forms = spellings(value)
        if not forms:
            continue
        found[path] = None
        for index, page in enumerate(pages):
            if any(_occurs(f, page) for f in forms) or any(
                len(f) >= 6 and f.replace(" ", "") in compact[index] for f in forms
            ):
                found[path] = index
                break
    return found


def _occurs(form: str, page: str) -> bool:
    """``form`` in ``page``; a short one (``F``, ``12``) only as a whole word."""
    if len(form) >= 4:
        return form in page
    return re.search(rf"(?<!\w){re.escape(form)}(?!\w)", page) is not None
