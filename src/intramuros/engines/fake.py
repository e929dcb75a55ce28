"""A fake engine: deterministic text, embeddings and JSON, with the latency you ask for.

It loads no weights and runs no model, so tests of the logic around engines
(the gate, quotas, metering, the ledger, streaming, the admin routes) run in
milliseconds; the real engines keep their own end-to-end tests. It is shipped
in the package (entry point ``fake`` of ``intramuros.engines``) so that an
operator can also point a load test or a client integration at it.

Add it to a catalogue as any model whose ``engine`` is ``fake``: it needs no
path and no hash. Its behaviour is set by the record's ``options``
(:class:`FakeOptions`; unknown options are refused):

``seed`` (int, 0)
    Mixed into every generation: two models with different seeds answer the
    same prompt differently.
``ttft`` (seconds, 0)
    Time to first token: slept before the first delta of every generation
    (and before an embeddings answer).
``token_delay`` (seconds, 0)
    Time between two tokens. Both waits end at once when the call is cancelled.
``context_length`` (tokens)
    The context window; the record's ``context_length`` when absent.
``reply_tokens`` (tokens, 16)
    Length of a free-text answer when ``max_tokens`` allows it.
``dimensions`` (int, 32)
    Length of embedding vectors.
``load_seconds`` (seconds, 0)
    Time :meth:`FakeEngine.load` takes.
``fail_after`` (tokens, none)
    Raise ``EngineError`` after yielding this many tokens (an engine that
    breaks mid-stream).

What it does:

- Tokens: a word (with the blank before it) or one punctuation mark is a
  token; a chat prompt is rendered as ChatML turns after
  ``prompting.normalise_messages`` (so tool and format instructions count,
  and unsupported content parts are refused like by a real engine). Token
  ids index a fixed vocabulary of words.
- Text: words drawn by a generator seeded with the prompt, ``seed`` and the
  request's ``seed``: the same request always gets the same answer, whatever
  its temperature. ``stop`` sequences, ``max_tokens`` (finish ``length``),
  ``echo``, ``logprobs`` (``top_logprobs`` alternatives, the sampled token
  first) and cancellation (finish ``cancelled``) behave as with llama.cpp.
- JSON: under ``response_format`` the answer is a JSON document valid for the
  schema (``json_object``: an object), made by a small generator (types,
  ``properties``/``required``, ``items``, ``enum``/``const``, ``anyOf``/
  ``oneOf``/``allOf``, local ``$ref``, bounds, lengths, a few formats). A
  schema it cannot satisfy (a ``pattern``, say) is refused with
  ``InvalidRequest`` naming ``response_format``, as a grammar that cannot be
  built is refused by llama.cpp.
- Tools: under ``tool_choice`` a tool name or ``required``, the answer is a
  call to that tool (or to the first tool named in the last message, else the
  first tool), its arguments generated from the tool's schema; under
  ``auto``, a call when the last message names a tool, free text otherwise.
  A call cut short by ``max_tokens`` comes back as text, finish ``length``.
- Embeddings: unit vectors drawn from the text's hash (equal texts, equal
  vectors).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from intramuros.engines import prompting
from intramuros.engines.base import (
    ChatParams,
    CompletionParams,
    Delta,
    EmbeddingResult,
    Engine,
    FinishReason,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    ToolSpec,
    TopLogprob,
    Usage,
)
from intramuros.engines.stops import find_stop, held_back
from intramuros.errors import ConfigError, ContextLengthExceeded, EngineError, InvalidRequest

if TYPE_CHECKING:
    from intramuros.catalog.records import ModelRecord
    from intramuros.settings import Settings

# A word with the blank before it, one punctuation mark with its blank, or trailing blanks:
# the pieces always join back into the text.
_TOKEN = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")

VOCABULARY: tuple[str, ...] = (
    "the", "a", "of", "and", "to", "in", "is", "it", "that", "for", "on", "with", "as", "by",
    "at", "from", "this", "be", "or", "are", "an", "was", "not", "but", "wall", "gate", "river",
    "stone", "bridge", "tower", "field", "garden", "harbour", "market", "lantern", "window",
    "mountain", "forest", "letter", "number", "morning", "evening", "silver", "copper", "amber",
    "quiet", "bright", "steady", "careful", "open", "close", "read", "write", "count", "carry",
    "follow", "gather", "answer", "measure", "listen",
)  # fmt: skip
# Deeper schemas are cut short (a recursive $ref would otherwise never end).
_MAX_DEPTH = 24


class FakeOptions(BaseModel):
    """The catalogue options of a ``fake`` model (see the module's documentation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, description="Mixed into every generation.")
    ttft: float = Field(default=0.0, ge=0, le=600, description="Seconds before the first token.")
    token_delay: float = Field(default=0.0, ge=0, le=60, description="Seconds between tokens.")
    context_length: int | None = Field(
        default=None, ge=1, description="Context window in tokens (default: the record's)."
    )
    reply_tokens: int = Field(default=16, ge=1, le=100_000, description="Free-text answer length.")
    dimensions: int = Field(default=32, ge=1, le=4096, description="Embedding vector length.")
    load_seconds: float = Field(default=0.0, ge=0, le=600, description="Seconds load() takes.")
    fail_after: int | None = Field(
        default=None, ge=0, description="Raise EngineError after this many tokens."
    )


class FakeEngine(Engine):
    """Deterministic answers with configurable latency; no weights (see the module docs)."""

    name: ClassVar[str] = "fake"
    max_concurrency: ClassVar[int] = 1
    # What `intramuros models add --engine fake --option KEY=VALUE` takes and serves.
    options_model: ClassVar[type[BaseModel] | None] = FakeOptions
    capabilities: ClassVar[tuple[str, ...]] = ("chat", "completion", "embeddings", "tools", "json")

    def __init__(self, record: ModelRecord, settings: Settings) -> None:
        super().__init__(record, settings)
        try:
            self.options = FakeOptions.model_validate(record.options)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(
                f"Model '{record.name}': bad fake-engine options: {problems}"
            ) from None
        self._loaded = False

    # -- lifecycle -------------------------------------------------------

    def load(self) -> None:
        """Nothing to load; waits ``load_seconds``."""
        if self.options.load_seconds:
            threading.Event().wait(self.options.load_seconds)
        self._loaded = True

    def health(self) -> bool:
        """True once loaded."""
        return self._loaded

    # -- tokens ----------------------------------------------------------

    @property
    def context_length(self) -> int:
        """The ``context_length`` option, else the record's."""
        return self.options.context_length or self.record.context_length

    def count_tokens(self, text: str) -> int:
        """Words and punctuation marks in ``text``."""
        return len(tokenize(text))

    def count_chat_tokens(self, params: ChatParams) -> int:
        """Tokens of the rendered chat prompt."""
        return self.count_tokens(render_chat(params))

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The words of vocabulary ids; ``InvalidRequest`` (param ``prompt``) for others."""
        bad = next((t for t in tokens if not 0 <= t < len(VOCABULARY)), None)
        if bad is not None:
            raise InvalidRequest(
                f"Token id {bad} is outside this model's vocabulary (0..{len(VOCABULARY) - 1}).",
                param="prompt",
            )
        return "".join(" " + VOCABULARY[t] for t in tokens)

    # -- generation ------------------------------------------------------

    def stream_chat(self, params: ChatParams, cancel: threading.Event) -> Iterator[Delta]:
        """A chat answer: free text, a JSON document or a tool call."""
        prompt = render_chat(params)
        prompt_tokens = self._check_fits(prompt, params.sampling, "messages")
        rng = self._rng(prompt, params.sampling)
        if params.tools and params.tool_choice != "none":
            tool = _chosen_tool(params, _last_text(params))
            if tool is not None:
                yield from self._tool_call(tool, params.sampling, prompt_tokens, rng, cancel)
                return
        pieces = self._answer(params.response_format, prompt_tokens, rng, first_blank=False)
        yield from self._emit(pieces, params.sampling, prompt_tokens, rng, cancel)

    def stream_completion(
        self, params: CompletionParams, cancel: threading.Event
    ) -> Iterator[Delta]:
        """A text completion of a prompt given as text or vocabulary ids."""
        if params.suffix is not None:
            raise InvalidRequest("This model does not support `suffix`.", param="suffix")
        prompt = params.prompt if isinstance(params.prompt, str) else self.detokenize(params.prompt)
        prompt_tokens = self._check_fits(
            prompt, params.sampling, "prompt",
            count=None if isinstance(params.prompt, str) else len(params.prompt),
        )  # fmt: skip
        rng = self._rng(prompt, params.sampling)
        pieces = self._answer(params.response_format, prompt_tokens, rng, first_blank=True)
        if params.echo:
            yield Delta(text=prompt)
        yield from self._emit(pieces, params.sampling, prompt_tokens, rng, cancel)

    def embed(self, inputs: Sequence[str | Sequence[int]]) -> EmbeddingResult:
        """Unit vectors drawn from each text's hash."""
        texts = [text if isinstance(text, str) else self.detokenize(text) for text in inputs]
        vectors: list[list[float]] = []
        tokens = 0
        for text in texts:
            count = self.count_tokens(text)
            if count > self.context_length:
                raise ContextLengthExceeded(
                    model=self.record.name, context_length=self.context_length,
                    prompt_tokens=count, max_tokens=0, param="input",
                )  # fmt: skip
            tokens += count
            rng = random.Random(_digest(self.options.seed, text))
            raw = [rng.gauss(0.0, 1.0) for _ in range(self.options.dimensions)]
            norm = sum(v * v for v in raw) ** 0.5 or 1.0
            vectors.append([v / norm for v in raw])
        if self.options.ttft:
            threading.Event().wait(self.options.ttft)
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens)

    # -- helpers -----------------------------------------------------------

    def _rng(self, prompt: str, sampling: SamplingParams) -> random.Random:
        return random.Random(_digest(self.options.seed, sampling.seed, prompt))

    def _check_fits(
        self, prompt: str, sampling: SamplingParams, param: str, count: int | None = None
    ) -> int:
        """The prompt's tokens; ``ContextLengthExceeded`` as llama.cpp would raise it."""
        tokens = self.count_tokens(prompt) if count is None else count
        if tokens == 0:
            raise InvalidRequest("The prompt is empty.", param=param)
        window = self.context_length
        wanted = sampling.max_tokens if sampling.max_tokens is not None else window - tokens
        if wanted <= 0 or tokens + wanted > window:
            raise ContextLengthExceeded(
                model=self.record.name, context_length=window, prompt_tokens=tokens,
                max_tokens=max(wanted, 1), param=param,
            )  # fmt: skip
        return tokens

    def _answer(
        self,
        response_format: dict[str, Any] | None,
        prompt_tokens: int,
        rng: random.Random,
        *,
        first_blank: bool,
    ) -> list[str]:
        """The pieces of the whole answer (before ``max_tokens`` and ``stop`` cut it).

        A chat answer starts with a word, never a blank or "{" (the tool-call branch); a
        completion goes on from its prompt, so it starts with a blank.
        """
        kind = (response_format or {}).get("type")
        if kind in ("json_object", "json_schema"):
            schema = (
                response_format["schema"] if kind == "json_schema" and response_format
                else {"type": "object", "properties": {"answer": {"type": "string"}},
                      "required": ["answer"]}
            )  # fmt: skip
            return tokenize(json.dumps(json_example(schema, rng), ensure_ascii=False))
        room = self.context_length - prompt_tokens
        length = min(self.options.reply_tokens, room)
        pieces = [" " + rng.choice(VOCABULARY) for _ in range(max(length, 1))]
        if not first_blank:
            pieces[0] = pieces[0].lstrip()
        return pieces

    def _tool_call(
        self,
        tool: ToolSpec,
        sampling: SamplingParams,
        prompt_tokens: int,
        rng: random.Random,
        cancel: threading.Event,
    ) -> Iterator[Delta]:
        arguments = json_example(tool.parameters or {"type": "object"}, rng)
        text = json.dumps({"name": tool.name, "arguments": arguments}, ensure_ascii=False)
        pieces = tokenize(text)
        limit = sampling.max_tokens
        if limit is not None and len(pieces) > limit:
            # Cut short before the call was complete: the text comes back, as with llama.cpp.
            yield from self._emit(pieces, sampling, prompt_tokens, rng, cancel)
            return
        if not self._wait(len(pieces), cancel):
            yield Delta(finish_reason="cancelled", usage=Usage(prompt_tokens, 0))
            return
        call = ToolCall(
            id="call_" + rng.getrandbits(96).to_bytes(12, "big").hex(),
            name=tool.name,
            arguments=json.dumps(arguments, ensure_ascii=False),
        )
        yield Delta(finish_reason="tool_calls", tool_calls=[call],
                    usage=Usage(prompt_tokens, len(pieces)))  # fmt: skip

    def _wait(self, tokens: int, cancel: threading.Event) -> bool:
        """Sleep as long as ``tokens`` tokens take; False when cancelled meanwhile."""
        delay = self.options.ttft + self.options.token_delay * max(tokens - 1, 0)
        if delay:
            return not cancel.wait(delay)
        return not cancel.is_set()

    def _emit(
        self,
        pieces: list[str],
        sampling: SamplingParams,
        prompt_tokens: int,
        rng: random.Random,
        cancel: threading.Event,
    ) -> Iterator[Delta]:
        """Stream ``pieces`` one token at a time: latency, stops, logprobs, cancellation."""
        limit = sampling.max_tokens if sampling.max_tokens is not None else len(pieces)
        stops = [s for s in sampling.stop if s]
        finish: FinishReason = "stop" if len(pieces) <= limit else "length"
        text, emitted, used = "", 0, 0
        pending: list[TokenLogprob] = []
        for i, piece in enumerate(pieces[:limit]):
            delay = self.options.ttft if i == 0 else self.options.token_delay
            if (cancel.wait(delay) if delay else cancel.is_set()):
                finish = "cancelled"
                break
            if self.options.fail_after is not None and used >= self.options.fail_after:
                raise EngineError(f"Model '{self.record.name}' failed while generating.")
            used += 1
            text += piece
            if sampling.logprobs is not None:
                pending.append(_logprob(piece, sampling.logprobs, rng))
            cut = find_stop(text, stops, emitted)
            if cut is not None:
                text, finish = text[:cut], "stop"
                break
            safe = len(text) - held_back(text, stops)
            if safe > emitted:
                yield Delta(text=text[emitted:safe], logprobs=pending)
                emitted, pending = safe, []
        yield Delta(text=text[emitted:], logprobs=pending, finish_reason=finish,
                    usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=used))  # fmt: skip


# -- text ------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """The fake engine's tokens of ``text``; they join back into it."""
    return _TOKEN.findall(text)


def render_chat(params: ChatParams) -> str:
    """The chat prompt as the fake engine reads it: ChatML turns, then the assistant's opening
    (so a short message costs about as many tokens as with a small real model)."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
                    for m in prompting.normalise_messages(params))  # fmt: skip
    return turns + "<|im_start|>assistant\n"


def _last_text(params: ChatParams) -> str:
    if not params.messages:
        return ""
    return prompting.message_text(params.messages[-1].get("content"), len(params.messages) - 1)


def _chosen_tool(params: ChatParams, last: str) -> ToolSpec | None:
    """The tool to call, or None for a free-text answer (``auto`` and no tool named)."""
    named = next((t for t in params.tools if t.name == params.tool_choice), None)
    if named is not None:
        return named
    mentioned = next((t for t in params.tools if t.name in last), None)
    if params.tool_choice == "auto":
        return mentioned
    return mentioned or params.tools[0]


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def _logprob(piece: str, k: int, rng: random.Random) -> TokenLogprob:
    best = -round(rng.random() * 0.5, 4)
    others = [w for w in VOCABULARY if " " + w != piece and w != piece]
    top = [TopLogprob(token=piece, logprob=best, bytes=list(piece.encode()))]
    for j, word in enumerate(rng.sample(others, min(max(k - 1, 0), len(others)))):
        token = " " + word
        top.append(TopLogprob(token=token, logprob=round(best - 1.0 - j, 4),
                              bytes=list(token.encode())))  # fmt: skip
    return TokenLogprob(token=piece, logprob=best, bytes=list(piece.encode()),
                        top=tuple(top[:k]))  # fmt: skip


# -- JSON for a schema -----------------------------------------------------------


def json_example(schema: dict[str, Any], rng: random.Random) -> Any:
    """A document valid for ``schema``; ``InvalidRequest`` when the generator cannot make one."""
    value = _Generator(schema, rng).value(schema, 0)
    try:
        jsonschema.validate(value, schema)
    except (jsonschema.ValidationError, jsonschema.SchemaError) as exc:
        raise InvalidRequest(
            f"The fake engine cannot generate JSON for this schema: {exc.message}",
            param="response_format",
        ) from None
    return value


class _Generator:
    """Walks a schema and makes a small, valid-looking value of each node."""

    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    def value(self, node: Any, depth: int) -> Any:
        if not isinstance(node, dict):
            return {} if node is not False else None
        if "$ref" in node:
            return self.value(self._resolve(str(node["$ref"])), depth + 1)
        if "const" in node:
            return node["const"]
        if isinstance(node.get("enum"), list) and node["enum"]:
            return self.rng.choice(node["enum"])
        for key in ("anyOf", "oneOf"):
            if isinstance(node.get(key), list) and node[key]:
                return self.value(node[key][0], depth + 1)
        if isinstance(node.get("allOf"), list):
            merged: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
            for part in node["allOf"]:
                part = self._resolve(part["$ref"]) if isinstance(part, dict) and "$ref" in part \
                    else part  # fmt: skip
                if isinstance(part, dict):
                    props = {**merged.get("properties", {}), **part.get("properties", {})}
                    required = [*merged.get("required", []), *part.get("required", [])]
                    merged = {**merged, **part, "properties": props, "required": required}
            return self.value(merged, depth + 1)
        kind = node.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in node else "array" if "items" in node else "string"
        maker = getattr(self, "_" + str(kind), None)
        if maker is None:
            return None
        return maker(node, depth)

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node

    def _object(self, node: dict[str, Any], depth: int) -> dict[str, Any]:
        props: dict[str, Any] = node.get("properties") or {}
        required = [r for r in node.get("required", []) if isinstance(r, str)]
        names = list(props) if depth < _MAX_DEPTH else required
        out = {name: self.value(props.get(name, {}), depth + 1) for name in names}
        for name in required:
            if name not in out:
                out[name] = self.value(props.get(name, {}), depth + 1)
        return out

    def _array(self, node: dict[str, Any], depth: int) -> list[Any]:
        prefix = node.get("prefixItems") or []
        low = int(node.get("minItems", 0 if depth >= _MAX_DEPTH else 1))
        high = int(node.get("maxItems", max(low, len(prefix), 2)))
        count = max(low, min(len(prefix) or low, high))
        items = node.get("items", {})
        out = [self.value(prefix[i] if i < len(prefix) else items, depth + 1) for i in range(count)]
        if node.get("uniqueItems"):
            unique: list[Any] = []
            for item in out:
                if item not in unique:
                    unique.append(item)
            out = unique
        return out

    def _string(self, node: dict[str, Any], depth: int) -> str:
        formats = {"date": "2024-05-17", "date-time": "2024-05-17T09:30:00Z", "time": "09:30:00",
                   "email": "someone@example.com", "uri": "https://example.com/",
                   "uuid": "12345678-1234-5678-1234-567812345678"}  # fmt: skip
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in formats:
            return formats[fmt]
        low, high = int(node.get("minLength", 1)), int(node.get("maxLength", 40))
        text = " ".join(self.rng.choice(VOCABULARY) for _ in range(3))
        while len(text) < low:
            text += " " + self.rng.choice(VOCABULARY)
        return text[: max(high, 0)]

    def _integer(self, node: dict[str, Any], depth: int) -> int:
        low, high = self._bounds(node, integer=True)
        step = node.get("multipleOf")
        value = self.rng.randint(int(low), int(high))
        if isinstance(step, int) and step > 0:
            value = -(-int(low) // step) * step
        return value

    def _number(self, node: dict[str, Any], depth: int) -> float:
        low, high = self._bounds(node, integer=False)
        return round(self.rng.uniform(low, high), 2) if high > low else float(low)

    def _bounds(self, node: dict[str, Any], *, integer: bool) -> tuple[float, float]:
        nudge = 1 if integer else 0.01
        low = float(node.get("minimum", 0))
        high = float(node.get("maximum", max(low, 0) + 100))
        if "exclusiveMinimum" in node:
            low = float(node["exclusiveMinimum"]) + nudge
        if "exclusiveMaximum" in node:
            high = float(node["exclusiveMaximum"]) - nudge
        if integer:
            low, high = float(-(-low // 1)), float(high // 1)
        return low, max(low, high)

    def _boolean(self, node: dict[str, Any], depth: int) -> bool:
        return self.rng.random() < 0.5

    def _null(self, node: dict[str, Any], depth: int) -> None:
        return None
