"""Broken, hostile and oversized requests against the live server, over real HTTP.

Every refusal must be a clean OpenAI error object with the right status,
``type``, ``code`` and ``param``; no answer may leak a traceback or a file
path, and nothing a client sends may produce a 500 or take the server down.
Generations are kept tiny (``max_tokens`` <= 8): the test machine is small.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import CHAT_MODEL, EMBED_MODEL, Server
from tests.helpers import ANY, check_error

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
USER = [{"role": "user", "content": "Say hi."}]
JSON_HEADERS = {"content-type": "application/json"}
# The `server` fixture runs with --max-body-bytes 1048576.
BODY_LIMIT = 1024 * 1024
# Settings.max_embedding_inputs' default (the fixture does not change it).
MAX_EMBEDDING_INPUTS = 2048


def chat(**extra: Any) -> dict[str, Any]:
    """A valid chat body (tiny generation) with ``extra`` merged in."""
    return {"model": CHAT_MODEL, "messages": USER, "max_tokens": 4, **extra}


def completion(**extra: Any) -> dict[str, Any]:
    """A valid completion body (tiny generation) with ``extra`` merged in."""
    return {"model": CHAT_MODEL, "prompt": "Once upon", "max_tokens": 4, **extra}


def embedding(**extra: Any) -> dict[str, Any]:
    """A valid embeddings body with ``extra`` merged in."""
    return {"model": EMBED_MODEL, "input": "hello", **extra}


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    """``body`` minus ``key``."""
    return {k: v for k, v in body.items() if k != key}


def tool(parameters: Any, name: str = "get_weather") -> dict[str, Any]:
    """A function tool with the given parameters schema."""
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def nested_schema(depth: int) -> dict[str, Any]:
    """An object schema nested ``depth`` levels deep (valid, but hostile)."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def raw_chat_with_content(content_json: str) -> bytes:
    """A chat body whose user content is the given raw JSON text (not re-encoded)."""
    return (
        f'{{"model": "{CHAT_MODEL}", "max_tokens": 4, '
        f'"messages": [{{"role": "user", "content": {content_json}}}]}}'
    ).encode()


@dataclass(frozen=True)
class Case:
    """One bad request and the error it must get."""

    path: str
    body: Any = None  # JSON-encoded by httpx
    raw: bytes | None = None  # sent as is, with a JSON content type
    status: int = 400
    param: Any = ANY
    code: Any = "invalid_request"
    type_: Any = "invalid_request_error"
    contains: tuple[str, ...] = field(default=())

    def send(self, http: httpx.Client) -> httpx.Response:
        if self.raw is not None:
            return http.post(self.path, content=self.raw, headers=JSON_HEADERS)
        return http.post(self.path, json=self.body)


def unrecognized(path: str, body: dict[str, Any], name: str) -> Case:
    return Case(
        path, {**body, name: 1}, param=name, contains=("Unrecognized request argument", name)
    )


def missing(path: str, body: dict[str, Any], name: str) -> Case:
    return Case(path, without(body, name), param=name, contains=(name,))


CASES: dict[str, Case] = {
    # -- the body itself ------------------------------------------------------
    "chat-not-json": Case(CHAT, raw=b"{not json", code="invalid_json"),
    "chat-truncated-json": Case(CHAT, raw=b'{"model": "x", "messages": [', code="invalid_json"),
    "completions-not-json": Case(COMPLETIONS, raw=b"model=x&prompt=y", code="invalid_json"),
    "embeddings-not-json": Case(EMBEDDINGS, raw=b"\x00\x01garbage", code=ANY),
    "chat-json-array": Case(CHAT, [1, 2, 3]),
    "chat-json-string": Case(CHAT, "hello"),
    "chat-json-null": Case(CHAT, raw=b"null"),
    "completions-json-array": Case(COMPLETIONS, [completion()]),
    "embeddings-json-string": Case(EMBEDDINGS, "hello"),
    "embeddings-json-number": Case(EMBEDDINGS, raw=b"42"),
    "chat-invalid-utf8": Case(
        CHAT,
        raw=b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        code=ANY,
    ),
    # The OCR routes parse their (large) bodies themselves, off the event loop.
    "ocr-invalid-utf8": Case("/v1/ocr", raw=b"~\xffK\xfe\xfeT", code="invalid_json"),
    "ocr-job-invalid-utf8": Case("/v1/batch/ocr", raw=b"\xff", code="invalid_json"),
    # -- missing and unknown parameters ---------------------------------------
    "chat-missing-model": missing(CHAT, chat(), "model"),
    "chat-missing-messages": missing(CHAT, chat(), "messages"),
    "completions-missing-model": missing(COMPLETIONS, completion(), "model"),
    "completions-missing-prompt": missing(COMPLETIONS, completion(), "prompt"),
    "embeddings-missing-model": missing(EMBEDDINGS, embedding(), "model"),
    "embeddings-missing-input": missing(EMBEDDINGS, embedding(), "input"),
    "chat-unknown-field": unrecognized(CHAT, chat(), "frobnicate"),
    "completions-unknown-field": unrecognized(COMPLETIONS, completion(), "max_tokenz"),
    "embeddings-unknown-field": unrecognized(EMBEDDINGS, embedding(), "encoding"),
    # -- wrong types ----------------------------------------------------------
    "chat-messages-string": Case(CHAT, chat(messages="hello"), param="messages"),
    "chat-model-number": Case(CHAT, chat(model=42), param="model"),
    "chat-temperature-hot": Case(CHAT, chat(temperature="hot"), param="temperature"),
    "chat-max-tokens-string": Case(CHAT, chat(max_tokens="4"), param="max_tokens"),
    "chat-stream-string": Case(CHAT, chat(stream="yes"), param="stream"),
    "chat-content-number": Case(
        CHAT, chat(messages=[{"role": "user", "content": 5}]), param="messages[0].content"
    ),
    "completions-max-tokens-string": Case(
        COMPLETIONS, completion(max_tokens="4"), param="max_tokens"
    ),
    "completions-prompt-object": Case(COMPLETIONS, completion(prompt={"a": 1}), param="prompt"),
    "embeddings-input-number": Case(EMBEDDINGS, embedding(input=3.5), param="input"),
    # -- models -------------------------------------------------------------------
    "chat-unknown-model": Case(
        CHAT,
        chat(model="no-such-model"),
        status=404,
        param="model",
        code="model_not_found",
        contains=("no-such-model",),
    ),
    "completions-unknown-model": Case(
        COMPLETIONS,
        completion(model="no-such-model"),
        status=404,
        param="model",
        code="model_not_found",
    ),
    "embeddings-unknown-model": Case(
        EMBEDDINGS,
        embedding(model="no-such-model"),
        status=404,
        param="model",
        code="model_not_found",
    ),
    # Outside Latin-1 (a header could not carry it raw): still a 404, never a 500.
    "embeddings-unknown-astral-model": Case(
        EMBEDDINGS,
        embedding(model="\U000762c2-\u2603"),
        status=404,
        param="model",
        code="model_not_found",
    ),
    "chat-unknown-astral-model": Case(
        CHAT,
        chat(model="\U000762c2-\u2603"),
        status=404,
        param="model",
        code="model_not_found",
    ),
    "embeddings-with-chat-model": Case(
        EMBEDDINGS, embedding(model=CHAT_MODEL), param="model", code="model_not_supported"
    ),
    "chat-with-embedding-model": Case(
        CHAT, chat(model=EMBED_MODEL), param="model", code="model_not_supported"
    ),
    "completions-with-embedding-model": Case(
        COMPLETIONS, completion(model=EMBED_MODEL), param="model", code="model_not_supported"
    ),
    # -- values out of range --------------------------------------------------
    "chat-negative-max-tokens": Case(CHAT, chat(max_tokens=-5), param="max_tokens"),
    "chat-zero-max-tokens": Case(CHAT, chat(max_tokens=0), param="max_tokens"),
    "completions-negative-max-tokens": Case(
        COMPLETIONS, completion(max_tokens=-1), param="max_tokens"
    ),
    "chat-empty-messages": Case(CHAT, chat(messages=[]), param="messages"),
    "chat-unknown-role": Case(
        CHAT,
        chat(messages=[{"role": "wizard", "content": "hi"}]),
        param="messages[0]",
        contains=("wizard",),
    ),
    "chat-message-without-role": Case(
        CHAT, chat(messages=[{"content": "hi"}]), param="messages[0]"
    ),
    "chat-temperature-5": Case(CHAT, chat(temperature=5), param="temperature"),
    "chat-top-p-2": Case(CHAT, chat(top_p=2), param="top_p"),
    "chat-n-2": Case(CHAT, chat(n=2), param="n"),
    "completions-n-2": Case(COMPLETIONS, completion(n=2), param="n"),
    "completions-empty-prompt-list": Case(COMPLETIONS, completion(prompt=[]), param="prompt"),
    "completions-token-out-of-range": Case(
        COMPLETIONS, completion(prompt=[999999]), param="prompt"
    ),
    "chat-17-stops": Case(CHAT, chat(stop=["x"] * 17), param="stop"),
    # -- context length -------------------------------------------------------------
    "chat-max-tokens-1e9": Case(
        CHAT,
        chat(max_tokens=10**9),
        param=ANY,
        code="context_length_exceeded",
        contains=("maximum context length", str(10**9)),
    ),
    "completions-max-tokens-1e9": Case(
        COMPLETIONS,
        completion(max_tokens=10**9),
        param=ANY,
        code="context_length_exceeded",
        contains=("maximum context length", str(10**9)),
    ),
    "chat-prompt-3000-words": Case(
        CHAT,
        chat(messages=[{"role": "user", "content": "word " * 3000}]),
        param="messages",
        code="context_length_exceeded",
        contains=("maximum context length",),
    ),
    "completions-prompt-3000-words": Case(
        COMPLETIONS,
        completion(prompt="word " * 3000),
        param="prompt",
        code="context_length_exceeded",
        contains=("maximum context length",),
    ),
    # -- tools and response formats -------------------------------------------------
    "tool-schema-type-12": Case(
        CHAT, chat(tools=[tool({"type": 12})]), param="tools[0].function.parameters"
    ),
    "tool-schema-not-object-type": Case(
        CHAT, chat(tools=[tool({"type": "string"})]), param="tools[0].function.parameters"
    ),
    "tool-schema-a-list": Case(
        CHAT, chat(tools=[tool([1, 2])]), param="tools[0].function.parameters"
    ),
    "tool-second-bad": Case(
        CHAT,
        chat(tools=[tool({"type": "object"}), tool({"type": 12}, name="other")]),
        param="tools[1].function.parameters",
    ),
    "tool-bad-name": Case(
        CHAT,
        chat(tools=[tool({"type": "object"}, name="bad name!")]),
        param="tools[0].function.name",
    ),
    "tool-remote-ref": Case(
        CHAT,
        chat(
            tools=[
                tool(
                    {"type": "object", "properties": {"a": {"$ref": "https://example.com/x.json"}}}
                )
            ]
        ),
        param="tools[0].function.parameters",
    ),
    "tool-choice-not-in-tools": Case(
        CHAT,
        chat(
            tools=[tool({"type": "object"})],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        ),
        param="tool_choice",
        contains=("nope",),
    ),
    "tool-choice-required-without-tools": Case(
        CHAT, chat(tool_choice="required"), param="tool_choice"
    ),
    "tool-choice-any-without-tools": Case(CHAT, chat(tool_choice="any"), param="tool_choice"),
    "response-format-json-schema-without-schema": Case(
        CHAT,
        chat(response_format={"type": "json_schema"}),
        param="response_format.json_schema",
    ),
    "response-format-json-schema-object-without-schema": Case(
        CHAT,
        chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
        param="response_format.json_schema.schema",
    ),
    "response-format-remote-ref": Case(
        CHAT,
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"$ref": "https://example.com/x.json"}},
            }
        ),
        param="response_format.json_schema.schema",
        contains=("$ref",),
    ),
    "response-format-unknown-type": Case(
        CHAT, chat(response_format={"type": "yaml"}), param="response_format.type"
    ),
    # -- embeddings -------------------------------------------------------------------
    "embeddings-empty-list": Case(EMBEDDINGS, embedding(input=[]), param="input"),
    "embeddings-empty-string": Case(
        EMBEDDINGS, embedding(input=""), param=ANY, contains=("empty",)
    ),
    "embeddings-empty-string-in-list": Case(
        EMBEDDINGS, embedding(input=["a", ""]), param="input[1]"
    ),
    "embeddings-too-many-inputs": Case(
        EMBEDDINGS,
        embedding(input=["hello"] * 3000),
        param="input",
        contains=(str(MAX_EMBEDDING_INPUTS),),
    ),
    "embeddings-token-out-of-range": Case(EMBEDDINGS, embedding(input=[999999]), param=ANY),
    "embeddings-dimensions-10": Case(EMBEDDINGS, embedding(dimensions=10), param="dimensions"),
    "embeddings-dimensions-0": Case(EMBEDDINGS, embedding(dimensions=0), param="dimensions"),
    "embeddings-bad-encoding": Case(
        EMBEDDINGS, embedding(encoding_format="hex"), param="encoding_format"
    ),
    # -- nesting ----------------------------------------------------------------------
    "chat-content-10000-nested-lists": Case(
        CHAT,
        raw=raw_chat_with_content("[" * 10000 + "]" * 10000),
        param=ANY,
        code=ANY,
    ),
    "chat-content-300-nested-lists": Case(
        CHAT,
        raw=raw_chat_with_content("[" * 300 + "]" * 300),
        param=ANY,
    ),
    "chat-content-10000-nested-objects": Case(
        CHAT,
        raw=raw_chat_with_content('{"a":' * 10000 + "1" + "}" * 10000),
        param=ANY,
        code=ANY,
    ),
    "tool-schema-nested-300": Case(
        CHAT, chat(tools=[tool(nested_schema(300))]), param="tools[0].function.parameters"
    ),
    "response-format-schema-nested-300": Case(
        CHAT,
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": nested_schema(300)},
            }
        ),
        param="response_format.json_schema.schema",
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_request(http: httpx.Client, case: Case) -> None:
    check_error(
        case.send(http),
        case.status,
        param=case.param,
        code=case.code,
        type_=case.type_,
        contains=case.contains,
    )


def test_huge_max_tokens_message_names_the_counts(http: httpx.Client) -> None:
    err = check_error(
        http.post(CHAT, json=chat(max_tokens=10**9)), 400, code="context_length_exceeded"
    )
    m = re.search(
        r"maximum context length is (\d+) tokens.*requested (\d+) tokens \((\d+) in", err["message"]
    )
    assert m, err["message"]
    context, requested, prompt = (int(x) for x in m.groups())
    assert 64 <= context < 10**9
    assert requested == prompt + 10**9
    assert prompt > 0


# --------------------------------------------------------------------------
# Routes and methods
# --------------------------------------------------------------------------

ROUTES: dict[str, tuple[str, str, int, str]] = {
    "get-chat": ("GET", CHAT, 405, "method_not_allowed"),
    "put-chat": ("PUT", CHAT, 405, "method_not_allowed"),
    "delete-completions": ("DELETE", COMPLETIONS, 405, "method_not_allowed"),
    "get-embeddings": ("GET", EMBEDDINGS, 405, "method_not_allowed"),
    "post-models": ("POST", "/v1/models", 405, "method_not_allowed"),
    "delete-model": ("DELETE", f"/v1/models/{CHAT_MODEL}", 405, "method_not_allowed"),
    "post-unknown-route": ("POST", "/v1/no/such/route", 404, "not_found"),
    "get-unknown-route": ("GET", "/nope", 404, "not_found"),
    "get-v1": ("GET", "/v1", 404, "not_found"),
    "get-unknown-v2": ("GET", "/v2/chat/completions", 404, "not_found"),
}


@pytest.mark.parametrize(
    ("method", "path", "status", "code"), list(ROUTES.values()), ids=list(ROUTES)
)
def test_unknown_routes_and_wrong_methods(
    http: httpx.Client, method: str, path: str, status: int, code: str
) -> None:
    r = http.request(method, path, json={} if method in ("POST", "PUT") else None)
    check_error(r, status, code=code)


MODEL_IDS: dict[str, str] = {
    "unknown": "no-such-model",
    "very-long": "a" * 5000,
    "nul-and-dots": "%2e%2e%2f%00x",
    "unicode": "mod\u00e8le-\u2603",
    "near-miss": CHAT_MODEL.upper(),
}


@pytest.mark.parametrize("model_id", list(MODEL_IDS.values()), ids=list(MODEL_IDS))
def test_get_unknown_model(http: httpx.Client, model_id: str) -> None:
    err = check_error(
        http.get(f"/v1/models/{model_id}"), 404, param="model", code="model_not_found"
    )
    assert "does not exist" in err["message"]


def test_get_known_model_still_works(http: httpx.Client) -> None:
    r = http.get(f"/v1/models/{CHAT_MODEL}")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == CHAT_MODEL


# --------------------------------------------------------------------------
# Oversized bodies
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [CHAT, COMPLETIONS, EMBEDDINGS], ids=["chat", "completions", "embeddings"]
)
def test_oversize_body_with_content_length(http: httpx.Client, path: str) -> None:
    body = json.dumps(chat(messages=[{"role": "user", "content": "x" * (BODY_LIMIT * 3 // 2)}]))
    r = http.post(path, content=body.encode(), headers=JSON_HEADERS)
    check_error(r, 413, code="payload_too_large", contains=(str(BODY_LIMIT),))


@pytest.mark.parametrize("path", [CHAT, EMBEDDINGS], ids=["chat", "embeddings"])
def test_oversize_chunked_body(http: httpx.Client, path: str) -> None:
    """No Content-Length: the limit must hold on the bytes actually received."""
    piece = 50_000
    count = (BODY_LIMIT * 3 // 2) // piece + 1

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "' + CHAT_MODEL.encode() + b'", "input": "'
        for _ in range(count):
            yield b"x" * piece
        yield b'"}'

    request = http.build_request("POST", path, content=chunks(), headers=JSON_HEADERS)
    assert "content-length" not in request.headers
    assert request.headers.get("transfer-encoding") == "chunked"
    check_error(http.send(request), 413, code="payload_too_large")


def test_body_just_under_the_limit_is_not_413(http: httpx.Client) -> None:
    # A body under the limit is parsed (and refused for its content, not its size).
    words = "hello " * ((BODY_LIMIT - 4096) // 6)
    body = json.dumps(chat(messages=[{"role": "user", "content": words}]))
    assert len(body) < BODY_LIMIT
    r = http.post(CHAT, content=body.encode(), headers=JSON_HEADERS)
    check_error(r, 400, code="context_length_exceeded")


# --------------------------------------------------------------------------
# Strange characters: 200 or 400, never 500
# --------------------------------------------------------------------------

ESCAPES = {
    "nul": "\\u0000",
    "lone-high-surrogate": "\\ud800",
    "lone-low-surrogate": "\\udfff",
    "reversed-pair": "\\udc00\\ud800",
    "bom-and-controls": "\\ufeff\\u0001\\u001b[31m",
}


def _raw(path: str, escaped: str) -> bytes:
    text = f'"a{escaped}b"'
    if path == CHAT:
        return raw_chat_with_content(text)
    if path == COMPLETIONS:
        return f'{{"model": "{CHAT_MODEL}", "max_tokens": 4, "prompt": {text}}}'.encode()
    return f'{{"model": "{EMBED_MODEL}", "input": [{text}]}}'.encode()


@pytest.mark.parametrize(
    "path", [CHAT, COMPLETIONS, EMBEDDINGS], ids=["chat", "completions", "embeddings"]
)
@pytest.mark.parametrize("escaped", list(ESCAPES.values()), ids=list(ESCAPES))
def test_escaped_control_characters_never_500(http: httpx.Client, path: str, escaped: str) -> None:
    r = http.post(path, content=_raw(path, escaped), headers=JSON_HEADERS)
    assert r.status_code in (200, 400), f"{r.status_code}: {r.text[:300]}"
    if r.status_code == 400:
        check_error(r, 400)
    else:
        assert "error" not in r.json()


SURROGATE_ELSEWHERE = {
    "chat-model-name": (
        CHAT,
        b'{"model": "x\\ud800", "messages": [{"role": "user", "content": "a"}]}',
    ),
    "embeddings-model-name": (EMBEDDINGS, b'{"model": "x\\ud800", "input": "hi"}'),
    "completions-model-name": (COMPLETIONS, b'{"model": "x\\udfff", "prompt": "hi"}'),
    "unknown-field-name": (CHAT, b'{"model": "m", "\\ud800": 1, "messages": []}'),
    "tool-choice-name": (
        CHAT,
        b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "tool_choice":'
        b' {"type": "function", "function": {"name": "\\ud800"}}}' % CHAT_MODEL.encode(),
    ),
}


@pytest.mark.parametrize(
    ("path", "raw"), list(SURROGATE_ELSEWHERE.values()), ids=list(SURROGATE_ELSEWHERE)
)
def test_escaped_surrogate_outside_content_never_500(
    http: httpx.Client, path: str, raw: bytes
) -> None:
    r = http.post(path, content=raw, headers=JSON_HEADERS)
    assert r.status_code in (400, 404), f"{r.status_code}: {r.text[:300]}"
    check_error(r, r.status_code)


# --------------------------------------------------------------------------
# Remote $ref: refused without any fetch
# --------------------------------------------------------------------------


@pytest.fixture()
def tripwire() -> Iterator[tuple[str, list[bytes]]]:
    """A local TCP listener that records any connection made to it."""
    hits: list[bytes] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    hits.append(conn.recv(4096))
                except OSError:
                    hits.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/schema.json", hits
    stop.set()
    thread.join(timeout=5)
    sock.close()


@pytest.mark.parametrize("where", ["response_format", "tool"])
def test_remote_ref_is_refused_and_never_fetched(
    http: httpx.Client, tripwire: tuple[str, list[bytes]], where: str
) -> None:
    url, hits = tripwire
    schema = {"type": "object", "properties": {"x": {"$ref": url}}}
    if where == "tool":
        body, param = chat(tools=[tool(schema)]), "tools[0].function.parameters"
    else:
        body = chat(
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        )
        param = "response_format.json_schema.schema"
    check_error(http.post(CHAT, json=body), 400, param=param)
    assert hits == [], f"the server fetched the remote $ref: {hits!r}"


# --------------------------------------------------------------------------
# Odd corners
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [CHAT, COMPLETIONS, EMBEDDINGS], ids=["chat", "completions", "embeddings"]
)
@pytest.mark.parametrize("content_type", ["application/json", None], ids=["json", "no-type"])
def test_empty_body(http: httpx.Client, path: str, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    err = check_error(http.post(path, content=b"", headers=headers), 400, param=None)
    # The message must say what is wrong, not name a parameter called None.
    assert "None" not in err["message"], err


UNANCHORED = {
    "type": "object",
    "properties": {"code": {"type": "string", "pattern": "[A-Z]{3}"}},
    "required": ["code"],
}


@pytest.mark.parametrize("where", ["response_format", "tool"])
def test_schema_pattern_the_grammar_cannot_use(http: httpx.Client, where: str) -> None:
    """A valid JSON schema (unanchored pattern): served, or refused naming that schema."""
    if where == "tool":
        body = chat(tools=[tool(UNANCHORED)], tool_choice="required")
        param = "tools[0].function.parameters"
    else:
        body = chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": UNANCHORED},
            }
        )
        param = "response_format.json_schema.schema"
    r = http.post(CHAT, json=body)
    assert r.status_code in (200, 400), r.text[:300]
    if r.status_code == 400:
        check_error(r, 400, param=param)


# --------------------------------------------------------------------------
# After all of it: still alive
# --------------------------------------------------------------------------


def test_zz_server_survived_everything(server: Server, http: httpx.Client) -> None:
    assert server.proc.poll() is None, "the server process died"
    assert http.get("/healthz").status_code == 200
    r = http.post(CHAT, json=chat(max_tokens=4))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert 0 < body["usage"]["completion_tokens"] <= 4
    r = http.post(COMPLETIONS, json=completion(max_tokens=2))
    assert r.status_code == 200, r.text
