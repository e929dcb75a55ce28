"""Continuous batching and the prefix cache on a real server with the bundled model.

One server with four slots. Every check of "the same text" is greedy
(temperature 0), where the text of a request must not depend on what else
shares its decode steps. That batching really happened is read from the
engine's own counters on ``/metrics`` (tokens per ``llama_decode``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import CHAT_MODEL, Server, start_server, stop_server
from tests.test_concurrency import metric
from tests.test_e2e_openai import WEATHER_TOOL

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

SLOTS = 4
QUESTIONS = [
    "Name three colours.",
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Count from one to five in words.",
]
TOOL = WEATHER_TOOL
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
# A long shared system prompt (hundreds of tokens): what the prefix cache is for.
SYSTEM = "You are the help desk of a small bank. " + " ".join(
    f"Rule {i}: answer politely, briefly and only about accounts, cards and transfers."
    for i in range(1, 25)
)


@pytest.fixture(scope="module")
def batched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("batching"), "--llama-slots", str(SLOTS),
                       "--n-ctx", "1024", "--queue-limit", "4",
                       "--preload-models", CHAT_MODEL)  # fmt: skip
    yield srv
    stop_server(srv)


@pytest.fixture()
def client(batched: Server) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=batched.base_url + "/v1", api_key="x", max_retries=0, timeout=120)
    yield c
    c.close()


def ask(client: openai.OpenAI, question: str, max_tokens: int = 40, **extra: Any) -> Any:
    return client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": question}],
        temperature=0, max_tokens=max_tokens, **extra,
    )  # fmt: skip


def together(calls: list[Callable[[], Any]]) -> list[Any]:
    """All the calls at once, from as many threads; their results in order."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def engine_stat(server: Server, name: str) -> float:
    return metric(server, f"intramuros_engine_{name}", model=CHAT_MODEL)


def test_greedy_text_is_the_same_batched_as_alone(batched: Server, client: openai.OpenAI) -> None:
    alone = [ask(client, q).choices[0].message.content for q in QUESTIONS]
    steps = engine_stat(batched, "decode_steps_total")
    tokens = engine_stat(batched, "batched_tokens_total")
    answers = together([lambda q=q: ask(client, q) for q in QUESTIONS])
    assert [a.choices[0].message.content for a in answers] == alone
    assert all(a.usage.completion_tokens > 5 for a in answers)
    # Batched for real: the decode steps of the four carried several tokens each.
    generated = sum(a.usage.completion_tokens for a in answers)
    steps = engine_stat(batched, "decode_steps_total") - steps
    tokens = engine_stat(batched, "batched_tokens_total") - tokens
    assert steps < 0.6 * generated, (steps, generated)
    assert tokens >= generated
    assert engine_stat(batched, "batch_slots") == SLOTS


def test_plain_tool_call_and_json_schema_in_one_batch(client: openai.OpenAI) -> None:
    plain, tool, schema, second_tool = together([
        lambda: ask(client, "Say hello."),
        lambda: ask(client, "What is the weather in Paris?", tools=[TOOL],
                    tool_choice="required", max_tokens=60),
        lambda: ask(client, "Invent a person.", max_tokens=60, response_format={
            "type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}),
        lambda: ask(client, "Weather in Rome?", tools=[TOOL],
                    tool_choice={"type": "function", "function": {"name": "get_weather"}},
                    max_tokens=60),
    ])  # fmt: skip
    assert plain.choices[0].message.content and not plain.choices[0].message.tool_calls
    for answer in (tool, second_tool):
        assert answer.choices[0].finish_reason == "tool_calls"
        call = answer.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments),
                            TOOL["function"]["parameters"])  # type: ignore[index]  # fmt: skip
    jsonschema.validate(json.loads(schema.choices[0].message.content), SCHEMA)


def test_a_client_leaving_mid_batch_leaves_the_others_intact(
    batched: Server, client: openai.OpenAI
) -> None:
    alone = [ask(client, q, max_tokens=60).choices[0].message.content for q in QUESTIONS[:3]]
    leaver = threading.Event()

    def leave_early() -> str:
        body = {"model": CHAT_MODEL, "stream": True, "max_tokens": 400, "temperature": 1.0,
                "messages": [{"role": "user", "content": "Tell me a very long story."}]}
        with httpx.Client(base_url=batched.base_url, timeout=60) as http, \
                http.stream("POST", "/v1/chat/completions", json=body) as r:  # fmt: skip
            seen = 0
            for line in r.iter_lines():
                seen += line.startswith("data: ")
                if seen >= 5:
                    break
        leaver.set()
        return "left"

    results = together([leave_early] + [
        lambda q=q: ask(client, q, max_tokens=60).choices[0].message.content
        for q in QUESTIONS[:3]
    ])  # fmt: skip
    assert leaver.is_set() and results[0] == "left"
    assert results[1:] == alone
    # The leaver's request is recorded as the client's going away (499), not an error.
    assert metric(batched, "intramuros_requests_total", model=CHAT_MODEL, status="499") >= 1


def test_a_prompt_too_long_for_a_slot_is_refused_before_streaming(batched: Server) -> None:
    words = " ".join(f"word{i}" for i in range(1500))  # far over the 1024-token slot
    body = {"model": CHAT_MODEL, "stream": True, "max_tokens": 10,
            "messages": [{"role": "user", "content": words}]}
    with httpx.Client(base_url=batched.base_url, timeout=60) as http:
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "context_length_exceeded"
        assert not r.text.startswith("data:")
        # And one that fits the window but not with its max_tokens.
        short = [{"role": "user", "content": "Hi"}]
        r = http.post("/v1/chat/completions", json={**body, "messages": short, "max_tokens": 1024})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "context_length_exceeded"
        assert "1024" in r.json()["error"]["message"]


def test_a_shared_system_prompt_is_read_once(batched: Server, client: openai.OpenAI) -> None:
    def asked(question: str, seed: int | None = None) -> Any:
        return client.chat.completions.create(
            model=CHAT_MODEL, temperature=0, max_tokens=20, seed=seed,
            messages=[{"role": "system", "content": SYSTEM},
                      {"role": "user", "content": question}],
        )  # fmt: skip

    hits = engine_stat(batched, "prefix_cache_hits_total")
    saved = engine_stat(batched, "prefix_cache_saved_tokens_total")
    first = asked("How do I block my card?")
    second = asked("How do I order a new card?")
    assert first.usage.prompt_tokens > 300
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens > 300, second.usage
    assert engine_stat(batched, "prefix_cache_hits_total") > hits
    assert engine_stat(batched, "prefix_cache_saved_tokens_total") - saved >= details.cached_tokens
    # The cached prefix gives the text reading it whole gives (a seed reads it whole).
    whole = asked("How do I order a new card?", seed=1)
    assert whole.usage.prompt_tokens_details.cached_tokens == 0
    assert whole.choices[0].message.content == second.choices[0].message.content
    # Several at once share it too.
    answers = together([lambda i=i: asked(f"Question {i}: what is a transfer?")
                        for i in range(SLOTS)])  # fmt: skip
    assert all(a.usage.prompt_tokens_details.cached_tokens > 300 for a in answers)


def test_more_clients_than_slots_and_queue_get_429_never_500(batched: Server) -> None:
    """Sixteen clients at once on four slots and a queue of four: the rest are refused
    with 429 at once, every admitted one is answered, and the server stays healthy."""
    body = {"model": CHAT_MODEL, "max_tokens": 30, "temperature": 0.7,
            "messages": [{"role": "user", "content": "Tell me about the moon."}]}

    def call() -> int:
        with httpx.Client(base_url=batched.base_url, timeout=120) as http:
            return http.post("/v1/chat/completions", json=body).status_code

    statuses = together([call] * 16)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= SLOTS
    assert statuses.count(429) >= 1
    assert httpx.get(batched.base_url + "/healthz", timeout=5).status_code == 200
    assert engine_stat(batched, "batch_active") == 0
