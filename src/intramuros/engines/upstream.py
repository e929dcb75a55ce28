"""The ``openai-upstream`` engine: a catalogue model served by another OpenAI-compatible server.

vLLM, TGI, llama.cpp's ``llama-server``, llama-cpp-python's server or another
intramuros can run the weights; we forward each call over HTTP and translate
the answer back into our dataclasses. The record holds no secret: the API key,
if any, is read from the environment variable named in ``options.api_key_env``.

Failures are mapped by HTTP status and by the JSON body's ``error`` object,
never by message text. Only the upstream's ``error.message`` (truncated) is
ever passed on, and only for 4xx answers: a 5xx message may carry the
upstream's stack traces or file paths, so it goes to our log instead.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, ClassVar, TypeVar

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, field_serializer

from intramuros.engines.base import (
    ChatParams,
    CompletionParams,
    Delta,
    EmbeddingResult,
    Engine,
    FinishReason,
    Generation,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
)
from intramuros.errors import (
    EngineError,
    EngineUnavailable,
    IntramurosError,
    InvalidRequest,
    PayloadTooLarge,
    QueueFull,
)

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_MAX_MESSAGE = 500
_HEALTH_TIMEOUT = 3.0
# Upstream error codes worth keeping: clients branch on them.
_KEPT_CODES = frozenset({"context_length_exceeded"})
# OpenAI's legacy "function_call" is a tool call too; anything unknown ends as "stop".
_FINISH: dict[str, FinishReason] = {
    "stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"
}  # fmt: skip


def _plain_url(url: HttpUrl) -> HttpUrl:
    """No credentials, query or fragment in the URL: the catalogue is not a secret store."""
    if url.username or url.password:
        raise ValueError("must not hold credentials; name the environment variable holding "
                         "the key with api_key_env")  # fmt: skip
    if url.query or url.fragment:
        raise ValueError("must not have a query or a fragment")
    return url


class UpstreamOptions(BaseModel):
    """The catalogue options of an ``openai-upstream`` model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: Annotated[HttpUrl, AfterValidator(_plain_url)] = Field(
        description="The upstream's OpenAI API root, e.g. http://gpu-box:8000/v1 (its host is "
        "the one the egress guard lets this model reach)."
    )
    upstream_model: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="The model's name at the upstream (default: the model's name here).",
    )  # fmt: skip
    api_key_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="Environment variable holding the upstream's API key (never stored).",
    )  # fmt: skip
    timeout: float | None = Field(
        default=None, gt=0, le=86400,
        description="Seconds to wait for an answer (default: the upstream-timeout setting).",
    )  # fmt: skip

    @field_serializer("base_url")
    def _base_url_text(self, url: HttpUrl) -> str:
        return str(url).rstrip("/")


class OpenAIUpstreamEngine(Engine):
    """Runs a model by forwarding requests to an OpenAI-compatible server."""

    name: ClassVar[str] = "openai-upstream"
    # The upstream batches concurrent requests itself.
    max_concurrency: ClassVar[int] = 8
    # No standard tokenize route exists: the upstream's own 400 enforces the window.
    counts_tokens: ClassVar[bool] = False
    # Its one host, base_url's, is what the egress guard allows for it.
    options_model: ClassVar[type[BaseModel] | None] = UpstreamOptions
    capabilities: ClassVar[tuple[str, ...]] = ("chat", "completion", "embeddings", "tools", "json")

    _client: httpx.Client | None = None

    # -- lifecycle -------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The upstream's API root, e.g. ``http://127.0.0.1:8080/v1``."""
        return str(self.record.options.get("base_url", "")).rstrip("/")

    @property
    def upstream_model(self) -> str:
        """The model's name at the upstream."""
        return str(self.record.options.get("upstream_model") or self.record.name)

    def _where(self) -> str:
        url = httpx.URL(self.base_url)
        return f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"

    def load(self) -> None:
        """Open the HTTP client and check that the upstream answers ``GET /models``."""
        self.close()  # a reload must not leak the previous connection pool
        try:
            timeout = float(self.record.options.get("timeout") or self.settings.upstream_timeout)
        except (TypeError, ValueError):
            timeout = -1.0
        if not self.base_url.startswith(("http://", "https://")) or timeout <= 0:
            raise EngineUnavailable(
                f"Model '{self.record.name}' has an invalid options.base_url or options.timeout."
            )
        headers: dict[str, str] = {}
        key_env = self.record.options.get("api_key_env")
        if key_env:
            key = os.environ.get(str(key_env))
            if not key:
                raise EngineUnavailable(
                    f"Model '{self.record.name}': environment variable {key_env} "
                    "(the upstream API key) is not set."
                )
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            base_url=self.base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            # No proxy variable may route our traffic anywhere else.
            trust_env=False,
        )
        try:
            ok = self._client.get("models").status_code == 200
        except httpx.HTTPError:
            ok = False
        if not ok:
            self.close()
            raise EngineUnavailable(
                f"Upstream of model '{self.record.name}' at {self._where()} is not reachable "
                "(GET /models failed)."
            )

    def health(self) -> bool:
        """True when the upstream answers ``GET /models`` quickly."""
        if self._client is None:
            return False
        try:
            return self._client.get("models", timeout=_HEALTH_TIMEOUT).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        """Close the HTTP client (and its pooled connections)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- generation ------------------------------------------------------

    def stream_chat(self, params: ChatParams, cancel: threading.Event) -> Iterator[Delta]:
        """Stream ``POST /chat/completions``; tool calls arrive whole on the last delta."""
        yield from self._stream("chat/completions", self._chat_body(params), cancel, chat=True)

    def stream_completion(
        self, params: CompletionParams, cancel: threading.Event
    ) -> Iterator[Delta]:
        """Stream ``POST /completions``."""
        body = self._completion_body(params)
        yield from self._stream("completions", body, cancel, chat=False)

    def generate_chat(self, params: ChatParams, cancel: threading.Event) -> Generation:
        """One non-streaming chat call (cheaper upstream than gathering a stream)."""
        # Once sent, a non-streaming call runs to its end: cancel is only checked before.
        if cancel.is_set():
            return Generation("", "cancelled", Usage(0, 0))
        data = self._post("chat/completions", {**self._chat_body(params), "stream": False})
        return _guard(lambda: _generation(data, chat=True))

    def generate_completion(self, params: CompletionParams, cancel: threading.Event) -> Generation:
        """One non-streaming text completion."""
        if cancel.is_set():
            return Generation("", "cancelled", Usage(0, 0))
        data = self._post("completions", {**self._completion_body(params), "stream": False})
        return _guard(lambda: _generation(data, chat=False))

    def embed(self, inputs: Sequence[str | Sequence[int]]) -> EmbeddingResult:
        """``POST /embeddings``; vectors come back in input order."""
        items = [x if isinstance(x, str) else list(x) for x in inputs]
        body = {"model": self.upstream_model, "input": items, "encoding_format": "float"}
        data = self._post("embeddings", body)

        def parse() -> EmbeddingResult:
            items = sorted(data["data"], key=lambda d: int(d["index"]))
            vectors = [[float(v) for v in d["embedding"]] for d in items]
            if len(vectors) != len(inputs):
                raise ValueError("vector count")
            usage = data.get("usage") or {}
            return EmbeddingResult(vectors, int(usage.get("prompt_tokens") or 0))

        return _guard(parse)

    # -- request bodies --------------------------------------------------

    def _chat_body(self, params: ChatParams) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.upstream_model, "messages": list(params.messages)}
        body.update(_sampling(params.sampling, chat=True))
        if params.tools:
            body["tools"] = [
                {"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}}
                for t in params.tools
            ]  # fmt: skip
            choice = params.tool_choice
            body["tool_choice"] = (
                choice if choice in ("none", "auto", "required")
                else {"type": "function", "function": {"name": choice}}
            )  # fmt: skip
        return _with_format(body, params.response_format)

    def _completion_body(self, params: CompletionParams) -> dict[str, Any]:
        prompt = params.prompt if isinstance(params.prompt, str) else list(params.prompt)
        body: dict[str, Any] = {"model": self.upstream_model, "prompt": prompt}
        body.update(_sampling(params.sampling, chat=False))
        if params.echo:
            body["echo"] = True
        if params.suffix is not None:
            body["suffix"] = params.suffix
        return _with_format(body, params.response_format)

    # -- HTTP ------------------------------------------------------------

    def _require_client(self) -> httpx.Client:
        if self._client is None:
            raise EngineUnavailable(f"Model '{self.record.name}' is not loaded.")
        return self._client

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._require_client().post(path, json=body)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise self._status_error(response)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise self._malformed()
        return data

    @contextmanager
    def _open(self, path: str, body: dict[str, Any]) -> Iterator[httpx.Response]:
        try:
            with self._require_client().stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._status_error(response)
                yield response
        except httpx.HTTPError as exc:
            # Also covers a connection lost mid-stream, raised into us at the yield.
            raise self._transport_error(exc) from None

    def _stream(
        self, path: str, body: dict[str, Any], cancel: threading.Event, *, chat: bool
    ) -> Iterator[Delta]:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        state = _StreamState()
        with self._open(path, body) as response:
            events = _sse_events(response, self, state)
            while True:
                # Checked before each read, so a cancel never waits for the next token.
                if cancel.is_set():
                    response.close()  # dropping the connection aborts the upstream's generation
                    yield Delta(finish_reason="cancelled", usage=state.final_usage())
                    return
                chunk = next(events, None)
                if chunk is None:
                    break
                delta = _guard(partial(state.feed, chunk, chat=chat))
                if delta.text or delta.logprobs:
                    yield delta
        if state.finish is None and not state.done:
            raise EngineError(f"The upstream of model '{self.record.name}' ended its stream early.")
        yield Delta(finish_reason=state.finish or "stop", tool_calls=state.tool_calls(),
                    usage=state.final_usage())  # fmt: skip

    # -- errors ----------------------------------------------------------

    def _transport_error(self, exc: httpx.HTTPError) -> IntramurosError:
        if isinstance(exc, httpx.TimeoutException | httpx.ConnectError):
            return EngineUnavailable(
                f"Upstream of model '{self.record.name}' at {self._where()} is not "
                f"reachable or did not answer in time ({type(exc).__name__})."
            )
        log.warning("upstream %s of model %s: %r", self._where(), self.record.name, exc)
        return EngineError(f"The connection to the upstream of model '{self.record.name}' failed.")

    def _malformed(self) -> EngineError:
        return EngineError(f"The upstream of model '{self.record.name}' sent a malformed answer.")

    def _status_error(self, response: httpx.Response) -> IntramurosError:
        status = response.status_code
        message, param, code = _error_object(response)
        name = self.record.name
        if status in (400, 422):
            return InvalidRequest(
                message or f"The upstream rejected the request (HTTP {status}).",
                param=param,
                code=code if code in _KEPT_CODES else None,
            )
        if status == 413:
            return PayloadTooLarge(message or "The upstream found the request too large.")
        if status == 429:
            return QueueFull(name, limit=0, retry_after=_retry_after(response))
        log.warning("upstream %s of model %s: HTTP %d: %s", self._where(), name, status, message)
        if status in (401, 403, 404):
            # Our catalogue or credentials are wrong, not the caller's request.
            return EngineUnavailable(
                f"The upstream at {self._where()} refused model '{name}' "
                f"(as '{self.upstream_model}', HTTP {status})."
            )
        return EngineError(f"The upstream of model '{name}' failed (HTTP {status}).")


# -- helpers ---------------------------------------------------------------


def _sampling(s: SamplingParams, *, chat: bool) -> dict[str, Any]:
    # Only OpenAI's own fields: strict upstreams reject unknown ones, so
    # top_k and repetition_penalty are not forwarded.
    body: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p,
                            "presence_penalty": s.presence_penalty,
                            "frequency_penalty": s.frequency_penalty}  # fmt: skip
    optional = {"max_tokens": s.max_tokens, "stop": list(s.stop) or None, "seed": s.seed}
    body.update({k: v for k, v in optional.items() if v is not None})
    if s.logprobs is not None and chat:
        body.update(logprobs=True, top_logprobs=s.logprobs)
    elif s.logprobs is not None:
        body["logprobs"] = s.logprobs  # the legacy form: an int
    return body


def _with_format(body: dict[str, Any], fmt: dict[str, Any] | None) -> dict[str, Any]:
    if fmt is not None and fmt.get("type") == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "response", "schema": fmt.get("schema", {}), "strict": True}}  # fmt: skip
    elif fmt is not None:
        body["response_format"] = dict(fmt)
    return body


def _error_object(response: httpx.Response) -> tuple[str, str | None, str | None]:
    """``(message, param, code)`` of the body's ``error``; empty when there is none."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return "", None, None
    if isinstance(error, str):
        return error[:_MAX_MESSAGE], None, None
    if not isinstance(error, dict):
        return "", None, None
    message, param, code = error.get("message"), error.get("param"), error.get("code")
    return (
        str(message)[:_MAX_MESSAGE] if message else "",
        param if isinstance(param, str) else None,
        code if isinstance(code, str) else None,
    )


def _retry_after(response: httpx.Response) -> int:
    value = response.headers.get("Retry-After", "")
    # An HTTP-date form is possible but rare; we then fall back to 1 s.
    return max(1, int(value)) if value.strip().isdigit() else 1


def _sse_events(
    response: httpx.Response, engine: OpenAIUpstreamEngine, state: _StreamState
) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a server-sent-event stream, up to ``data: [DONE]``."""
    for line in response.iter_lines():
        if not line or line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if name in ("event", "id", "retry") and sep:
            continue
        if name != "data" or not sep:
            raise engine._malformed()
        value = value.removeprefix(" ")
        if value.strip() == "[DONE]":
            state.done = True
            return
        try:
            payload = json.loads(value)
        except ValueError:
            raise engine._malformed() from None
        if not isinstance(payload, dict):
            raise engine._malformed()
        if payload.get("error") is not None:
            error = payload["error"]
            message = str(error.get("message") if isinstance(error, dict) else error)
            log.warning(
                "upstream of model %s failed mid-stream: %.500s", engine.record.name, message
            )
            raise EngineError(f"The upstream of model '{engine.record.name}' failed mid-stream.")
        yield payload


def _guard(parse: Callable[[], _T]) -> _T:
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
class _StreamState:
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


def _generation(data: dict[str, Any], *, chat: bool) -> Generation:
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
