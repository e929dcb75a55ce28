"""The ``openai-upstream`` engine: a catalogue model served by another OpenAI-compatible server.

vLLM, TGI, llama.cpp's ``llama-server``, llama-cpp-python's server or another
intramuros can run the weights; we forward each call over HTTP and translate
the answer back into our dataclasses. The record holds no secret: the API key,
if any, is read from the environment variable named in ``options.api_key_env``.

A model may have several upstreams (``base_url`` and ``base_urls``): a pool
(``engines/upstream_pool.py``) with least-outstanding balancing. A call whose
upstream cannot be reached, drops the connection or answers 5xx or 429 before
anything was streamed is tried on the next upstream; a client that does not
stream gets its whole answer in one upstream call, so it is retried too; a
stream that breaks after its first chunk ends with an error.

Failures are mapped by HTTP status and by the JSON body's ``error`` object,
never by message text. Only the upstream's ``error.message`` (truncated) is
ever passed on, and only for 4xx answers: a 5xx message may carry the
upstream's stack traces or file paths, so it goes to our log instead.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from functools import partial
from typing import Annotated, Any, ClassVar

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, field_serializer

from intramuros.engines.base import (
    ChatParams,
    CompletionParams,
    Delta,
    EmbeddingResult,
    Engine,
    EngineStat,
    Generation,
    SamplingParams,
    Usage,
)
from intramuros.engines.http11 import Answer, LeanHTTP
from intramuros.engines.upstream_answers import (
    StreamState,
    error_object,
    generation,
    guard,
    malformed,
    retry_after,
    sse_events,
    whole_delta,
)
from intramuros.engines.upstream_pool import Member, UpstreamPool
from intramuros.errors import (
    EngineError,
    EngineUnavailable,
    IntramurosError,
    InvalidRequest,
    PayloadTooLarge,
    QueueFull,
)

log = logging.getLogger(__name__)

# Tried on another upstream of the pool: this one is down, restarting or saturated.
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_RETRY_TRANSPORT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                    httpx.ReadError, httpx.WriteError, httpx.PoolTimeout)  # fmt: skip
# Upstream error codes worth keeping: clients branch on them.
_KEPT_CODES = frozenset({"context_length_exceeded"})


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
    base_urls: list[Annotated[HttpUrl, AfterValidator(_plain_url)]] = Field(
        default_factory=list, max_length=32,
        description="Further upstreams serving the same model: a pool with base_url, "
        "balanced by outstanding calls, with failover.",
    )  # fmt: skip
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

    @field_serializer("base_urls")
    def _base_urls_text(self, urls: list[HttpUrl]) -> list[str]:
        return [str(u).rstrip("/") for u in urls]


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

    _pool: UpstreamPool | None = None

    # -- lifecycle -------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The upstream's API root, e.g. ``http://127.0.0.1:8080/v1``."""
        return str(self.record.options.get("base_url", "")).rstrip("/")

    @property
    def upstream_model(self) -> str:
        """The model's name at the upstream."""
        return str(self.record.options.get("upstream_model") or self.record.name)

    @property
    def base_urls(self) -> list[str]:
        """Every upstream of the model: ``base_url`` first."""
        more = self.record.options.get("base_urls") or []
        return [self.base_url, *(str(u).rstrip("/") for u in more)]

    def _where(self) -> str:
        if self._pool is not None and len(self._pool.members) > 1:
            return f"{len(self._pool.members)} upstreams"
        url = httpx.URL(self.base_url)
        return f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"

    def load(self) -> None:
        """Open the HTTP clients and check that an upstream answers ``GET /models``."""
        self.close()  # a reload must not leak the previous connection pool
        try:
            timeout = float(self.record.options.get("timeout") or self.settings.upstream_timeout)
        except (TypeError, ValueError):
            timeout = -1.0
        if (not all(u.startswith(("http://", "https://")) for u in self.base_urls)
                or timeout <= 0):  # fmt: skip
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
        def client(url: str) -> httpx.Client:
            return httpx.Client(
                base_url=url + "/",
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                # No proxy variable may route our traffic anywhere else.
                trust_env=False,
            )

        pool = UpstreamPool(self.base_urls, client, name=self.record.name,
                            max_failures=self.settings.upstream_max_failures,
                            probe_seconds=self.settings.upstream_probe_seconds)  # fmt: skip
        for member in pool.members:
            if member.url.startswith("http://"):
                member.lean = LeanHTTP(member.url, headers, timeout=timeout,
                                       connect_timeout=min(timeout, 10.0))  # fmt: skip
        self._pool = pool
        down = [m for m in pool.members if not pool.probe(m)]
        if len(down) == len(pool.members):
            self.close()
            raise EngineUnavailable(
                f"Upstream of model '{self.record.name}' at {self._where()} is not reachable "
                "(GET /models failed)."
            )
        for member in down:  # out of service until the prober sees it answer
            for _ in range(pool.max_failures):
                pool.failed(member, "GET /models failed at load")

    def health(self) -> bool:
        """True when an upstream in service answers ``GET /models`` quickly."""
        pool = self._pool
        return pool is not None and any(pool.probe(m) for m in pool.members if m.in_service)

    def stats(self) -> list[EngineStat]:
        """The pool's balancing and failover counts, per upstream."""
        return self._pool.stats() if self._pool is not None else []

    def close(self) -> None:
        """Close the HTTP clients (and their pooled connections)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- generation ------------------------------------------------------

    def stream_chat(self, params: ChatParams, cancel: threading.Event) -> Iterator[Delta]:
        """Stream ``POST /chat/completions``; tool calls arrive whole on the last delta.

        A client waiting for the whole answer gets it from one non-streaming call,
        which the pool can retry elsewhere.
        """
        if params.whole:
            yield whole_delta(self.generate_chat(params, cancel))
            return
        yield from self._stream("chat/completions", self._chat_body(params), cancel, chat=True)

    def stream_completion(
        self, params: CompletionParams, cancel: threading.Event
    ) -> Iterator[Delta]:
        """Stream ``POST /completions`` (one non-streaming call for a whole answer)."""
        if params.whole and not params.echo:
            yield whole_delta(self.generate_completion(params, cancel))
            return
        body = self._completion_body(params)
        yield from self._stream("completions", body, cancel, chat=False)

    def generate_chat(self, params: ChatParams, cancel: threading.Event) -> Generation:
        """One non-streaming chat call (cheaper upstream than gathering a stream)."""
        # Once sent, a non-streaming call runs to its end: cancel is only checked before.
        if cancel.is_set():
            return Generation("", "cancelled", Usage(0, 0))
        data = self._post("chat/completions", {**self._chat_body(params), "stream": False})
        return guard(lambda: generation(data, chat=True))

    def generate_completion(self, params: CompletionParams, cancel: threading.Event) -> Generation:
        """One non-streaming text completion."""
        if cancel.is_set():
            return Generation("", "cancelled", Usage(0, 0))
        data = self._post("completions", {**self._completion_body(params), "stream": False})
        return guard(lambda: generation(data, chat=False))

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

        return guard(parse)

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

    def _require_pool(self) -> UpstreamPool:
        if self._pool is None:
            raise EngineUnavailable(f"Model '{self.record.name}' is not loaded.")
        return self._pool

    def _attempts(self) -> Generator[Member, None, None]:
        """The upstreams to try a call on, in turn (each counted outstanding while used)."""
        pool = self._require_pool()
        tried: set[str] = set()
        while (member := pool.pick(tried)) is not None:
            if tried:
                pool.failed_over()
            tried.add(member.url)
            with pool.using(member):
                yield member

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        pool = self._require_pool()
        error: IntramurosError | None = None
        attempts = self._attempts()
        with closing(attempts):
            for member in attempts:
                response: httpx.Response | Answer
                try:
                    response = (member.lean.post_json(path, body) if member.lean is not None
                                else member.client.post(path, json=body))  # fmt: skip
                except httpx.HTTPError as exc:
                    error = self._transport_failure(member, exc)
                    continue
                if isinstance(response, Answer):
                    if response.status_code < 400:
                        pool.succeeded(member)
                        return self._json_object(response)
                    response = response.as_httpx()  # errors are read by httpx's rules
                retry = self._retryable(member, response)
                if retry is not None:
                    error = retry
                    continue
                pool.succeeded(member)
                if response.status_code >= 400:
                    raise self._status_error(response, member)
                return self._json_object(response)
        assert error is not None
        raise error

    def _json_object(self, response: httpx.Response | Answer) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise self._malformed()
        return data

    @contextmanager
    def _open(self, path: str, body: dict[str, Any]) -> Iterator[httpx.Response]:
        pool = self._require_pool()
        error: IntramurosError | None = None
        attempts = self._attempts()
        with closing(attempts):
            for member in attempts:
                try:
                    with member.client.stream("POST", path, json=body) as response:
                        if response.status_code >= 400:
                            response.read()
                            retry = self._retryable(member, response)
                            if retry is not None:
                                error = retry
                                continue
                            raise self._status_error(response, member)
                        pool.succeeded(member)
                        try:
                            yield response
                        except (httpx.HTTPError, EngineError) as exc:
                            # Lost mid-stream: the client has had part of the answer, so it
                            # ends with an error rather than a retry.
                            pool.failed(member, type(exc).__name__)
                            if isinstance(exc, httpx.HTTPError):
                                raise self._transport_error(exc, member) from None
                            raise
                        return
                except httpx.HTTPError as exc:
                    error = self._transport_failure(member, exc)
        assert error is not None
        raise error

    def _retryable(self, member: Member, response: httpx.Response) -> IntramurosError | None:
        """The error of an answer worth trying on another upstream (5xx, 429), or None.
        A 429 is the upstream protecting itself, not a failure counted against it."""
        if response.status_code not in _RETRY_STATUS:
            return None
        if response.status_code != 429:
            self._require_pool().failed(member, f"HTTP {response.status_code}")
        return self._status_error(response, member)

    def _transport_failure(self, member: Member, exc: httpx.HTTPError) -> IntramurosError:
        """Count ``exc`` against ``member``; its error to try the next upstream with, or
        raised when the call may have reached the upstream (not safe to send again)."""
        self._require_pool().failed(member, type(exc).__name__)
        error = self._transport_error(exc, member)
        if not isinstance(exc, _RETRY_TRANSPORT):
            raise error from None
        return error

    def _stream(
        self, path: str, body: dict[str, Any], cancel: threading.Event, *, chat: bool
    ) -> Iterator[Delta]:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        state = StreamState()
        with self._open(path, body) as response:
            events = sse_events(response, state, self.record.name)
            while True:
                # Checked before each read, so a cancel never waits for the next token.
                if cancel.is_set():
                    response.close()  # dropping the connection aborts the upstream's generation
                    yield Delta(finish_reason="cancelled", usage=state.final_usage())
                    return
                chunk = next(events, None)
                if chunk is None:
                    break
                delta = guard(partial(state.feed, chunk, chat=chat))
                if delta.text or delta.logprobs:
                    yield delta
        if state.finish is None and not state.done:
            raise EngineError(f"The upstream of model '{self.record.name}' ended its stream early.")
        yield Delta(finish_reason=state.finish or "stop", tool_calls=state.tool_calls(),
                    usage=state.final_usage())  # fmt: skip

    # -- errors ----------------------------------------------------------

    def _transport_error(self, exc: httpx.HTTPError, member: Member) -> IntramurosError:
        if isinstance(exc, httpx.TimeoutException | httpx.ConnectError):
            return EngineUnavailable(
                f"Upstream of model '{self.record.name}' at {self._where()} is not "
                f"reachable or did not answer in time ({type(exc).__name__})."
            )
        log.warning("upstream %s of model %s: %r", member.where, self.record.name, exc)
        return EngineError(f"The connection to the upstream of model '{self.record.name}' failed.")

    def _malformed(self) -> EngineError:
        return malformed(self.record.name)

    def _status_error(self, response: httpx.Response, member: Member) -> IntramurosError:
        status = response.status_code
        message, param, code = error_object(response)
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
            return QueueFull(name, limit=0, retry_after=retry_after(response))
        log.warning("upstream %s of model %s: HTTP %d: %s", member.where, name, status, message)
        if status in (401, 403, 404):
            # Our catalogue or credentials are wrong, not the caller's request.
            return EngineUnavailable(
                f"The upstream at {member.where} refused model '{name}' "
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
