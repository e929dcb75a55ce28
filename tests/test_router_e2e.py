"""Small-first routing end to end: real models, a real gateway process, the official client.

The gateway serves SmolLM2-135M and Gemma 3 270M (llama.cpp, context capped at
512 tokens here) and two upstream models served by a second intramuros
process with a 4096-token context: ``big-chat`` (chat, tools, JSON) and
``plain-chat`` (the same upstream declared without tools or JSON, as an
upstream that lacks them would be). Gemma is a base model with no chat
template, so a chat route can only escalate to a chat model: the upstream.
Every answer is greedy (temperature 0, fixed seed), so each scenario is
deterministic.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import CHAT_MODEL, EMBED_MODEL, Server, cli, start_server, stop_server

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

GEMMA = "gemma-3-270m"
ROUTES = f"""
[routes.json-small-first]
models = ["{CHAT_MODEL}", "{GEMMA}"]
tasks = ["extract"]

[routes.careful-chat]
models = ["{CHAT_MODEL}", "big-chat"]
min_confidence = -0.01

[routes.long-chat]
models = ["{CHAT_MODEL}", "big-chat"]

[routes.agent]
models = ["plain-chat", "{CHAT_MODEL}"]

[routes.base-only]
models = ["{GEMMA}"]

[routes.fast-stream]
models = ["{GEMMA}", "{CHAT_MODEL}"]
stream = "direct"
"""
# A realistic bound the decoding grammar cannot enforce (llama.cpp's converter
# ignores numeric bounds): the small model answers 10 legs for a bird.
LEGS = {"type": "object", "properties": {"legs": {"type": "integer", "minimum": 0,
                                                  "maximum": 8}}, "required": ["legs"]}  # fmt: skip
BIRD = 'Animal: spider\nJSON: {"legs": 8}\nAnimal: dog\nJSON: {"legs": 4}\nAnimal: bird\nJSON: '
PAYMENT = {"type": "object", "properties": {"amount": {"type": "number", "minimum": 1,
                                                       "maximum": 10000}},
           "required": ["amount"]}  # fmt: skip
PAID = "Payment of 250.00 EUR received on 2024-03-15 from Jane Doe.\nAs JSON: "
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 7}
WEATHER = [{"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}},
    "required": ["city"]}}}]  # fmt: skip


def _schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second intramuros, the "bigger" chat model (a larger context, here)."""
    srv = start_server(tmp_path_factory.mktemp("router-upstream"),
                       "--preload-models", CHAT_MODEL, "--n-ctx", "4096")  # fmt: skip
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: Server) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("router-gw")
    base = upstream.base_url + "/v1"
    cli(data, "models", "add-upstream", "big-chat", "--base-url", base, "--upstream-model",
        CHAT_MODEL, "--capabilities", "chat,completion,tools,json", "--context-length", "4096",
        "--license", "Apache-2.0")  # fmt: skip
    cli(data, "models", "add-upstream", "plain-chat", "--base-url", base, "--upstream-model",
        CHAT_MODEL, "--capabilities", "chat,completion", "--context-length", "4096",
        "--license", "Apache-2.0")  # fmt: skip
    config = data / "routes.toml"
    config.write_text(ROUTES)
    srv = start_server(data, "--config", str(config), "--n-ctx", "512",
                       "--preload-models", f"{CHAT_MODEL},{GEMMA},{EMBED_MODEL}",
                       auth=True)  # fmt: skip
    srv.keys["small-only"] = cli(data, "keys", "create", "--tenant", "acme",
                                 "--models", CHAT_MODEL).strip()  # fmt: skip
    srv.keys["gemma-only"] = cli(data, "keys", "create", "--tenant", "acme",
                                 "--models", GEMMA).strip()  # fmt: skip
    yield srv
    stop_server(srv)


@pytest.fixture()
def client(gw: Server) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=gw.keys["user"], max_retries=0,
                      timeout=120)  # fmt: skip
    yield c
    c.close()


def _routing(resp: Any) -> dict[str, Any]:
    routing = resp.usage.model_extra["routing"]
    assert isinstance(routing, dict)
    return routing


def _escalations(gw: Server, route: str) -> float:
    text = httpx.get(gw.base_url + "/metrics", timeout=30).text
    found = re.search(rf'^intramuros_route_escalations_total{{route="{re.escape(route)}"}} (\S+)$',
                      text, re.M)  # fmt: skip
    return float(found.group(1)) if found else 0.0


def _ledger_routing(gw: Server, answer_id: str) -> dict[str, Any]:
    r = httpx.get(gw.base_url + "/v1/admin/ledger", params={"limit": 1000},
                  headers=gw.headers("admin"), timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    hits = [e for e in r.json()["data"]
            if e["kind"] == "routing" and e["data"].get("answer_id") == answer_id]  # fmt: skip
    assert len(hits) == 1, f"no single routing record for {answer_id}"
    entry: dict[str, Any] = hits[0]
    return entry


# --------------------------------------------------------------------------
# the scenarios of the issue
# --------------------------------------------------------------------------


def test_schema_violation_on_the_small_model_escalates(gw: Server, client: openai.OpenAI) -> None:
    before = _escalations(gw, "json-small-first")
    raw = client.completions.with_raw_response.create(
        model="json-small-first", prompt=BIRD, max_tokens=20,
        extra_body={"response_format": _schema(LEGS)}, **GREEDY,
    )  # fmt: skip
    resp = raw.parse()
    assert raw.headers["x-intramuros-model"] == GEMMA == resp.model
    routing = _routing(resp)
    assert routing["route"] == "json-small-first" and routing["model"] == GEMMA
    assert routing["escalated"] is True
    first, second = routing["attempts"]
    assert first["model"] == CHAT_MODEL and first["outcome"] == "schema_violation"
    assert "$.legs" in first["reason"] and "'maximum'" in first["reason"]
    assert second == {"model": GEMMA, "outcome": "ok", "reason": "passed checks",
                      "confidence": None}  # fmt: skip
    jsonschema.validate(json.loads(resp.choices[0].text), LEGS)  # the answer sent is valid
    assert _escalations(gw, "json-small-first") == before + 1
    entry = _ledger_routing(gw, resp.id)
    assert entry["tenant"] == "acme" and entry["key_id"] and entry["data"]["escalated"] is True
    assert entry["data"]["attempts"] == routing["attempts"]
    assert set(entry["data"]["usage"]) == {CHAT_MODEL, GEMMA}  # both calls were real
    # the request paid for both calls: `total` sums them, the usage is the answer's own
    assert resp.usage is not None
    total = routing["total"]
    assert total["prompt_tokens"] > resp.usage.prompt_tokens
    assert total["completion_tokens"] > resp.usage.completion_tokens
    # the small model's own answer, asked directly, is indeed out of bounds
    direct = client.completions.create(
        model=CHAT_MODEL,
        prompt=BIRD,
        max_tokens=20,
        extra_body={"response_format": _schema(LEGS)},
        **GREEDY,
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(direct.choices[0].text), LEGS)


def test_a_request_the_small_model_satisfies_stays_small(gw: Server, client: openai.OpenAI) -> None:
    before = _escalations(gw, "json-small-first")
    raw = client.completions.with_raw_response.create(
        model="json-small-first", prompt=PAID, max_tokens=20,
        extra_body={"response_format": _schema(PAYMENT)}, **GREEDY,
    )  # fmt: skip
    resp = raw.parse()
    assert raw.headers["x-intramuros-model"] == CHAT_MODEL
    routing = _routing(resp)
    assert routing["escalated"] is False and routing["model"] == CHAT_MODEL
    assert [a["outcome"] for a in routing["attempts"]] == ["ok"]
    jsonschema.validate(json.loads(resp.choices[0].text), PAYMENT)
    assert _escalations(gw, "json-small-first") == before
    # chat on `auto`: the catalogue by weights size; the upstreams (no size) rank last
    raw_chat = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8,
        **GREEDY)  # fmt: skip
    chat = raw_chat.parse()
    assert raw_chat.headers["x-intramuros-model"] == CHAT_MODEL == chat.model
    assert _routing(chat)["route"] == "auto" and chat.choices[0].message.content
    assert _ledger_routing(gw, chat.id)["data"]["model"] == CHAT_MODEL


def test_low_confidence_escalates_to_the_next_model_up(gw: Server, client: openai.OpenAI) -> None:
    before = _escalations(gw, "careful-chat")
    messages = [{"role": "user", "content": "Name a colour."}]
    raw = client.chat.completions.with_raw_response.create(
        model="careful-chat", messages=messages, max_tokens=8, **GREEDY)  # fmt: skip
    resp = raw.parse()
    assert raw.headers["x-intramuros-model"] == "big-chat"
    routing = _routing(resp)
    assert routing["escalated"] is True and routing["model"] == "big-chat"
    first = routing["attempts"][0]
    assert first["model"] == CHAT_MODEL and first["outcome"] == "low_confidence"
    assert first["confidence"] < -0.01 and "< threshold -0.01" in first["reason"]
    assert len(routing["attempts"]) == 2  # retried once, never more
    # log-probabilities were asked for internally, not by this client: not sent
    assert resp.choices[0].logprobs is None
    assert _escalations(gw, "careful-chat") == before + 1
    # a client that asks for them gets them
    asked = client.chat.completions.create(model="careful-chat", messages=messages,
                                           max_tokens=8, logprobs=True, **GREEDY)  # fmt: skip
    assert asked.choices[0].logprobs is not None and asked.choices[0].logprobs.content


def test_capabilities_pick_a_model_that_can_serve(gw: Server, client: openai.OpenAI) -> None:
    # a prompt longer than the local model's context goes to the one that takes it
    long = [{"role": "user", "content": "Summarise: " + "The cat sat on the mat. " * 80}]
    raw = client.chat.completions.with_raw_response.create(
        model="long-chat", messages=long, max_tokens=8, **GREEDY)  # fmt: skip
    resp = raw.parse()
    assert raw.headers["x-intramuros-model"] == "big-chat"
    skipped = _routing(resp)["attempts"][0]
    assert skipped["model"] == CHAT_MODEL and skipped["outcome"] == "skipped"
    assert re.fullmatch(r"needs \d+ tokens; its context is 512", skipped["reason"])
    assert _routing(resp)["escalated"] is False
    # tools: the cheaper model has no tool calls, the next one does
    raw = client.chat.completions.with_raw_response.create(
        model="agent",
        messages=[{"role": "user", "content": "Weather in Lyon?"}],
        tools=WEATHER,
        tool_choice="required",
        max_tokens=40,
        **GREEDY,
    )  # type: ignore[arg-type]
    resp = raw.parse()
    assert raw.headers["x-intramuros-model"] == CHAT_MODEL
    assert resp.choices[0].message.tool_calls[0].function.name == "weather"  # type: ignore[index]
    assert "does not support tool calls" in _routing(resp)["attempts"][0]["reason"]
    # ...while a plain chat stays on the cheaper one
    raw = client.chat.completions.with_raw_response.create(
        model="agent", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, **GREEDY
    )
    assert raw.headers["x-intramuros-model"] == "plain-chat"
    # embeddings: the only embedding model; a base model cannot chat at all
    raw_emb = client.embeddings.with_raw_response.create(model="auto", input=["hello"])
    assert raw_emb.headers["x-intramuros-model"] == EMBED_MODEL
    assert len(raw_emb.parse().data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="base-only", messages=[{"role": "user",
                                                                     "content": "Hi"}])  # fmt: skip
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "no_eligible_model"
    assert error["param"] == "model" and "does not support chat" in error["message"]


def test_task_tag_and_tenant_policy(gw: Server, client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(
        model="auto", prompt=PAID, max_tokens=20, **GREEDY)  # fmt: skip
    assert raw.headers["x-intramuros-model"] == CHAT_MODEL
    # metadata.task sends `auto` to the route listing the task
    chat = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
        metadata={"task": "extract"}, **GREEDY)  # fmt: skip
    assert _routing(chat)["route"] == "json-small-first"
    assert "task 'extract' -> route 'json-small-first'" in _routing(chat)["reason"]
    unknown = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
        metadata={"task": "poetry"}, **GREEDY)  # fmt: skip
    assert _routing(unknown)["route"] == "auto" and "no route for task" in _routing(unknown)[
        "reason"]  # fmt: skip
    # a key limited to the small model: no escalation to a model it may not use
    small_only = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=gw.keys["small-only"],
                               max_retries=0, timeout=120)  # fmt: skip
    resp = small_only.completions.create(
        model="json-small-first",
        prompt=BIRD,
        max_tokens=20,
        extra_body={"response_format": _schema(LEGS)},
        **GREEDY,
    )
    routing = _routing(resp)
    assert resp.model == CHAT_MODEL and routing["escalated"] is False
    assert [a["model"] for a in routing["attempts"]] == [CHAT_MODEL]  # gemma not even named
    assert "no eligible model up to retry on" in routing["reason"]
    assert _ledger_routing(gw, resp.id)["data"]["denied"] == [GEMMA]
    small_only.close()
    # a key that may use none of the route's models: 403
    gemma_only = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=gw.keys["gemma-only"],
                               max_retries=0, timeout=120)  # fmt: skip
    with pytest.raises(openai.PermissionDeniedError) as info:
        gemma_only.chat.completions.create(model="agent", messages=[{"role": "user",
                                                                     "content": "Hi"}])  # fmt: skip
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "no_allowed_model"
    gemma_only.close()


def test_streams_buffered_and_direct(gw: Server, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="careful-chat", messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8, stream=True, stream_options={"include_usage": True}, **GREEDY)  # fmt: skip
    assert raw.headers["x-intramuros-model"] == "big-chat"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None
    routing = chunks[-1].usage.model_extra["routing"]
    assert routing["escalated"] is True and routing["model"] == "big-chat"
    # direct: streamed as generated from the first eligible model, not checked
    raw = client.chat.completions.with_raw_response.create(
        model="fast-stream", messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
        stream=True, stream_options={"include_usage": True}, **GREEDY)  # fmt: skip
    assert raw.headers["x-intramuros-model"] == CHAT_MODEL  # gemma cannot chat
    chunks = list(raw.parse())
    assert len(chunks) > 4  # token by token, not one buffered chunk
    routing = chunks[-1].usage.model_extra["routing"]  # type: ignore[union-attr]
    assert routing["attempts"][-1]["outcome"] == "streamed" and "not checked" in routing["reason"]
    raw_c = client.completions.with_raw_response.create(
        model="fast-stream", prompt="One, two,", max_tokens=6, stream=True, **GREEDY
    )
    assert raw_c.headers["x-intramuros-model"] == GEMMA
    assert "".join(c.choices[0].text for c in raw_c.parse() if c.choices)


def test_bad_input_and_plain_models(gw: Server, client: openai.OpenAI) -> None:
    headers = gw.headers("user")
    url = gw.base_url + "/v1/chat/completions"
    hi = [{"role": "user", "content": "Hi"}]
    for task in ({"$gt": ""}, ["extract"], "x" * 100_000, "../../etc", 3):
        r = httpx.post(url, headers=headers, timeout=30, json={
            "model": "auto", "messages": hi, "metadata": {"task": task}})  # fmt: skip
        assert r.status_code == 400 and r.json()["error"]["param"] == "metadata.task", r.text
    r = httpx.post(url, headers=headers, timeout=30,
                   json={"model": "no-such-route", "messages": hi})  # fmt: skip
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(url, headers=headers, timeout=30, json={"model": "auto", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    # a plain model still says which model answered, and carries no routing
    raw = client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=hi, max_tokens=4
    )  # type: ignore[arg-type]
    assert raw.headers["x-intramuros-model"] == CHAT_MODEL
    assert raw.parse().usage.model_extra.get("routing") is None  # type: ignore[union-attr]
    raw_emb = client.embeddings.with_raw_response.create(model=EMBED_MODEL, input="x")
    assert raw_emb.headers["x-intramuros-model"] == EMBED_MODEL
    # the server goes on
    assert httpx.get(gw.base_url + "/healthz", timeout=10).status_code == 200


# --------------------------------------------------------------------------
# bad configuration is refused at start
# --------------------------------------------------------------------------


def test_bad_route_configuration_is_refused_at_start(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[routes.cheap]\nmodels = ["smollm2-135m-instruct", "no-such-model"]\n')
    with pytest.raises(RuntimeError) as info:
        start_server(tmp_path / "a", "--config", str(unknown), "--preload-models", "")
    assert re.search(r"server exited [1-9]", str(info.value))
    # The refusal comes at start-up, after the catalogue is read: still one line, exit 1.
    r = subprocess.run([sys.executable, "-m", "intramuros.cli", "serve", "--no-auth",
                        "--data-dir", str(tmp_path / "a2"), "--config", str(unknown),
                        "--preload-models", "", "--port", "0"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "error: Invalid route configuration: route 'cheap', field 'models[1]': model "
        "'no-such-model' is not in the catalogue (see `intramuros models list`)")
    shape = tmp_path / "shape.toml"
    shape.write_text('[routes.cheap]\nmodels = ["smollm2-135m-instruct"]\nmin_confidence = 2\n')
    r = subprocess.run([sys.executable, "-m", "intramuros.cli", "serve", "--no-auth",
                        "--data-dir", str(tmp_path / "b"), "--config", str(shape)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "error: Invalid route configuration: route 'cheap', field 'min_confidence': a mean "
        "token log-probability: between -100 and 0 (e.g. -1.5), got 2.0"
    )
