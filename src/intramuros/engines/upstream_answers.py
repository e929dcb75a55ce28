"""Reading an OpenAI-compatible upstream's answers: error bodies, server-sent events,
stream chunks and whole completions, into the engine's dataclasses.

Every parser here treats the body as hostile: a field of the wrong type or shape
is an ``EngineError`` (see :func:`guard`), never a crash, and only the first
``MAX_MESSAGE`` characters of an upstream's message are ever kept.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from intramuros.engines.base import (
    Delta,
    FinishReason,
    Generation,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
)
from intramuros.errors import EngineError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

MAX_MESSAGE = 500
# OpenAI's legacy "function_call" is a tool call too; anything unknown ends as "stop".
_FINISH: dict[str, FinishReason] = {
    "stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"
}  # fmt: skip


def malformed(model: str) -> EngineError:
    """The error of an answer that is not what the protocol says."""
    return EngineError(f"The upstream of model '{model}' sent a malformed answer.")


def error_object(response: httpx.Response) -> tuple[str, str | None, str | None]:
    """``(message, param, code)`` of the body's ``error``; empty when there is none."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return "", None, None
    if isinstance(error, str):
        return error[:MAX_MESSAGE], None, None
    if not isinstance(error, dict):
        return "", None, None
    message, param, code = error.get("message"), error.get("param"), error.get("code")
    return (
        str(message)[:MAX_MESSAGE] if message else "",
        param if isinstance(param, str) else None,
        code if isinstance(code, str) else None,
    )


def retry_after(response: httpx.Response) -> int:
    value = response.headers.get("Retry-After", "")
    # An HTTP-date form is possible but rare; we then fall back to 1 s.
    return max(1, int(value)) if value.strip().isdigit() else 1


def sse_events(
    response: httpx.Response, state: StreamState, model: str
) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a server-sent-event stream, up to ``data: [DONE]``."""
    for line in response.iter_lines():
        if not line or line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if name in ("event", "id", "retry") and sep:
            continue
        if name != "data" or not sep:
            raise malformed(model)
        value = value.removeprefix(" ")
        if value.strip() == "[DONE]":
            state.done = True
            return
        try:
            payload = json.loads(value)
        except ValueError:
            raise malformed(model) from None
        if not isinstance(payload, dict):
            raise malformed(model)
        if payload.get("error") is not None:
            error = payload["error"]
            message = str(error.get("message") if isinstance(error, dict) else error)
            log.warning("upstream of model %s failed mid-stream: %.500s", model, message)
            raise EngineError(f"The upstream of model '{model}' failed mid-stream.")
        yield payload


def guard(parse: Callable[[], _T]) -> _T:
    """Run a parser; a body of the wrong shape becomes ``EngineError``."""
    try:
        return parse()
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise EngineError("The upstream sent an answer of an unexpected shape.") from None


def _finish(value: Any) -> FinishReason:
    return _FINISH.get(str(value), "stop")


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    return Usage(int(value.get("prompt_tokens") or 0), int(value.get("completion_tokens") or 0))


def _chat_logprobs(value: Any) -> list[TokenLogprob]:
    if not isinstance(value, dict):
        return []
    return [
        TokenLogprob(
            token=str(e["token"]), logprob=float(e["logprob"]), bytes=e.get("bytes"),
            top=tuple(TopLogprob(str(t["token"]), float(t["logprob"]), t.get("bytes"))
                      for t in e.get("top_logprobs") or ()),
        )
        for e in value.get("content") or ()
    ]  # fmt: skip


def _legacy_logprobs(value: Any) -> list[TokenLogprob]:
    if not isinstance(value, dict):
        return []
    out: list[TokenLogprob] = []
    tops = value.get("top_logprobs") or []
    for i, (token, lp) in enumerate(zip(value["tokens"], value["token_logprobs"], strict=True)):
        if lp is None:  # an echoed first prompt token has no conditional probability
            continue
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        ranked = sorted(top.items(), key=lambda kv: -float(kv[1]))
        out.append(
            TokenLogprob(
                str(token), float(lp), top=tuple(TopLogprob(str(t), float(p)) for t, p in ranked)
            )
        )
    return out


@dataclass
class _ToolCallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class StreamState:
    """What a stream has said so far, for its final delta."""

    finish: FinishReason | None = None
    usage: Usage | None = None
    done: bool = False
    content_chunks: int = 0
    calls: dict[int, _ToolCallParts] = field(default_factory=dict)

    def feed(self, chunk: dict[str, Any], *, chat: bool) -> Delta:
        """Take one chunk in; return the text and logprobs it adds."""
        self.usage = _usage(chunk.get("usage")) or self.usage
        choices = chunk.get("choices") or []
        if not choices:  # the usage chunk has none
            return Delta()
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish = _finish(choice["finish_reason"])
        if not chat:
            text = choice.get("text") or ""
            logprobs = _legacy_logprobs(choice.get("logprobs"))
        else:
            delta = choice.get("delta") or {}
            text = delta.get("content") or ""
            logprobs = _chat_logprobs(choice.get("logprobs"))
            for part in delta.get("tool_calls") or ():
                call = self.calls.setdefault(int(part.get("index") or 0), _ToolCallParts())
                fn = part.get("function") or {}
                # id and name come whole (some servers repeat them in every chunk,
                # llama-cpp-python does): keep the first; arguments come in pieces.
                call.id = call.id or str(part.get("id") or "")
                call.name = call.name or str(fn.get("name") or "")
                call.arguments.append(str(fn.get("arguments") or ""))
        if text:
            self.content_chunks += 1
        return Delta(text=str(text), logprobs=logprobs)

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(c.id or "call_" + secrets.token_hex(12), c.name, "".join(c.arguments) or "{}")
            for _, c in sorted(self.calls.items())
        ]

    def final_usage(self) -> Usage:
        # Without a usage chunk (not every server honours include_usage), each
        # content chunk is roughly one token.
        return self.usage or Usage(0, self.content_chunks)


def whole_delta(gen: Generation) -> Delta:
    """A whole answer as the one delta of a stream."""
    return Delta(text=gen.text, logprobs=list(gen.logprobs), finish_reason=gen.finish_reason,
                 tool_calls=list(gen.tool_calls), usage=gen.usage)  # fmt: skip


def generation(data: dict[str, Any], *, chat: bool) -> Generation:
    choice = data["choices"][0]
    usage = _usage(data.get("usage")) or Usage(0, 0)
    if not chat:
        return Generation(str(choice.get("text") or ""), _finish(choice.get("finish_reason")),
                          usage, _legacy_logprobs(choice.get("logprobs")))  # fmt: skip
    message = choice["message"]
    calls = [
        ToolCall(str(c.get("id") or "call_" + secrets.token_hex(12)),
                 str(c["function"]["name"]), str(c["function"].get("arguments") or "{}"))
        for c in message.get("tool_calls") or ()
    ]  # fmt: skip
    return Generation(str(message.get("content") or ""), _finish(choice.get("finish_reason")),
                      usage, _chat_logprobs(choice.get("logprobs")), calls)  # fmt: skip
