"""Small-first routing, the logic alone: route configuration, candidate choice, answer checks,
and the escalation rules (against a stand-in core service; the real one is in
test_router_e2e.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from intramuros.catalog.records import Capability, ModelRecord, Origin
from intramuros.errors import (
    ConfigError,
    EngineUnavailable,
    InvalidRequest,
    RateLimited,
)
from intramuros.gate.tenants import Principal
from intramuros.protocol import openai as p
from intramuros.router import choose, validate
from intramuros.router.config import (
    RouteProfile,
    check_against_catalog,
    parse_costs,
    parse_routes,
)
from intramuros.router.errors import NoEligibleModel, RouteForbidden
from intramuros.router.service import RouterService
from intramuros.settings import load_settings

# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------


def _bad(raw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_routes(raw)
    return info.value.message


def test_good_routes_parse_with_defaults() -> None:
    routes = parse_routes({"cheap": {"models": ["a", "b"], "tasks": ["extract"],
                                     "min_confidence": -1.5}})  # fmt: skip
    cheap = routes["cheap"]
    assert cheap.models == ("a", "b") and cheap.tasks == ("extract",)
    assert cheap.min_confidence == -1.5 and cheap.escalate and cheap.stream == "buffer"
    assert set(cheap.checks) == {"json", "schema", "tool_call", "empty"}
    assert parse_routes(None) == {} and parse_routes("") == {}
    assert parse_routes('{"x": {}}')["x"].models is None  # JSON text, as from the environment


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"r": {"models": ["a", "a"]}}, "models[1]", "listed twice"),
        ({"r": {"models": []}}, "models", "at least one"),
        ({"r": {"models": ["auto"]}}, "models[0]", "'auto'"),
        ({"r": {"models": ["bad name!"]}}, "models[0]", "not a valid model name"),
        ({"r": {"models": "a"}}, "models", "tuple"),
        ({"r": {"min_confidence": 0.5}}, "min_confidence", "between -100 and 0"),
        ({"r": {"min_confidence": -1000}}, "min_confidence", "between -100 and 0"),
        ({"r": {"min_confidence": float("nan")}}, "min_confidence", "between -100 and 0"),
        ({"r": {"min_confidence": "high"}}, "min_confidence", "number"),
        ({"r": {"checks": ["jsn"]}}, "checks[0]", "'json'"),
        ({"r": {"checks": ["json", "json"]}}, "checks", "twice"),
        ({"r": {"stream": "sometimes"}}, "stream", "'buffer'"),
        ({"r": {"escalate": "maybe"}}, "escalate", "boolean"),
        ({"r": {"modles": ["a"]}}, "modles", "Extra inputs"),
        ({"r": {"tasks": ["has space"]}}, "tasks[0]", "task tag"),
        ({"r": "not a table"}, "(profile)", "table"),
        ({"bad name": {}}, "(name)", "route name"),
        ({"a": {"tasks": ["t"]}, "b": {"tasks": ["t"]}}, "tasks[0]", "already routed by route 'a'"),
    ],
)
def test_bad_routes_name_the_route_and_field(raw: Any, field: str, words: str) -> None:
    message = _bad(raw)
    route = next(iter(raw)) if field != "tasks[0]" or "b" not in raw else "b"
    assert f"route '{route}'" in message and f"field '{field}'" in message, message
    assert words in message, message


def test_routes_that_are_not_tables_or_json() -> None:
    assert "not valid JSON" in _bad("{nope")
    assert "table of profiles" in _bad(["a"])


def test_costs() -> None:
    assert parse_costs({"a": 1, "b": 2.5}) == {"a": 1.0, "b": 2.5}
    assert parse_costs('{"a": 0}') == {"a": 0.0}
    for bad in ({"a": -1}, {"a": "cheap"}, {"a": True}, {"a": float("inf")}, {"bad name": 1}):
        with pytest.raises(ConfigError, match="model_costs"):
            parse_costs(bad)


def test_settings_refuse_bad_routes_from_toml_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[routes.cheap]\nmodels = ["a", "b"]\nmin_confidence = -2\n'
                    '[model_costs]\na = 1\n')  # fmt: skip
    settings = load_settings(config=str(good), data_dir=str(tmp_path))
    assert settings.routes["cheap"]["models"] == ["a", "b"]
    assert settings.model_costs == {"a": 1.0}
    bad = tmp_path / "bad.toml"
    bad.write_text('[routes.cheap]\nmodels = ["a"]\nmin_confidence = 3\n')
    with pytest.raises(ConfigError, match=r"route 'cheap', field 'min_confidence'"):
        load_settings(config=str(bad), data_dir=str(tmp_path))
    monkeypatch.setenv("INTRAMUROS_ROUTES", '{"fast": {"checks": ["nope"]}}')
    with pytest.raises(ConfigError, match=r"route 'fast', field 'checks\[0\]'"):
        load_settings(data_dir=str(tmp_path))
    monkeypatch.setenv("INTRAMUROS_ROUTES", '{"fast": {"tasks": ["t"]}}')
    assert load_settings(data_dir=str(tmp_path)).routes["fast"]["tasks"] == ["t"]


def test_routes_checked_against_the_catalogue() -> None:
    routes = parse_routes({"r": {"models": ["m1", "m2"]}})
    check_against_catalog(routes, ["m1", "m2", "m3"])
    with pytest.raises(ConfigError, match=r"route 'r', field 'models\[1\]'.*'m2' is not in"):
        check_against_catalog(routes, ["m1"])
    with pytest.raises(ConfigError, match=r"route 'm1', field '\(name\)'.*also a model"):
        check_against_catalog(parse_routes({"m1": {}}), ["m1"])
    with pytest.raises(ConfigError, match="'r' is a route"):
        check_against_catalog(parse_routes({"r": {}, "s": {"models": ["r"]}}), ["m1"])
    with pytest.raises(ConfigError, match="named 'auto'"):
        check_against_catalog({}, ["auto"])


# --------------------------------------------------------------------------
# choosing
# --------------------------------------------------------------------------


def _record(name: str, caps: tuple[Capability, ...], size: int | None,
            ctx: int = 2048) -> ModelRecord:  # fmt: skip
    return ModelRecord(name=name, engine="fake", format="gguf", size_bytes=size,
                       context_length=ctx, origin=Origin(kind="file"),
                       capabilities=caps)  # fmt: skip


CATALOGUE = [
    _record("big", ("chat", "completion", "tools", "json"), 900, ctx=4096),
    _record("small", ("chat", "completion", "tools", "json"), 100, ctx=64),
    _record("base", ("completion", "json"), 300),
    _record("vectors", ("embeddings",), 50),
    _record("remote", ("chat", "completion"), None),
]
ANYONE = Principal(tenant="acme", key_id="k1", role="user")


def test_resolve_routes_and_tasks() -> None:
    routes = parse_routes({"extract": {"tasks": ["invoice", "iban"]}, "other": {}})
    assert choose.is_route("auto", {}) and choose.is_route("other", routes)
    assert not choose.is_route("small", routes)
    res = choose.resolve("auto", {"task": "iban"}, routes)
    assert res.route == "extract" and res.task == "iban" and "task 'iban'" in (res.note or "")
    res = choose.resolve("auto", {"task": "poetry", "user": "u1"}, routes)
    assert res.route == "auto" and "no route for task 'poetry'" in (res.note or "")
    assert choose.resolve("auto", None, routes).profile == RouteProfile()
    # a named route ignores the task: the client chose the route itself
    assert choose.resolve("other", {"task": "iban"}, routes).route == "other"
    # a configured `auto` overrides the default one
    assert choose.resolve("auto", {}, parse_routes({"auto": {"models": ["small"]}})
                          ).profile.models == ("small",)  # fmt: skip


@pytest.mark.parametrize("task", [{"$gt": ""}, ["a"], 7, "", "x" * 65, "../etc", "a b", "é"])
def test_hostile_task_tags_are_refused(task: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        choose.resolve("auto", {"task": task}, {})
    assert info.value.param == "metadata.task"


def test_default_ladder_is_the_catalogue_by_cost() -> None:
    ladder = choose.ladder(RouteProfile(), CATALOGUE, ANYONE, {}, "chat")
    # by weights size; an upstream without size ranks last; non-chat models left out
    assert [r.name for r in ladder.models] == ["small", "big", "remote"]
    ladder = choose.ladder(RouteProfile(), CATALOGUE, ANYONE, {}, "completion")
    assert [r.name for r in ladder.models] == ["small", "base", "big", "remote"]
    # configured costs win over sizes
    ladder = choose.ladder(RouteProfile(), CATALOGUE, ANYONE, {"remote": 1, "big": 2}, "chat")
    assert [r.name for r in ladder.models] == ["remote", "big", "small"]
    assert choose.cost_of(CATALOGUE[4], {}) == float("inf")


def test_configured_ladder_keeps_its_order_and_the_key_policy() -> None:
    profile = RouteProfile(models=("big", "gone", "small", "base"))
    ladder = choose.ladder(profile, CATALOGUE, ANYONE, {}, "chat")
    assert [r.name for r in ladder.models] == ["big", "small", "base"]
    assert [(s.model, s.reason) for s in ladder.skipped] == [("gone", "not in the catalogue")]
    limited = Principal(tenant="acme", key_id="k2", role="user", models=("small",))
    ladder = choose.ladder(profile, CATALOGUE, limited, {}, "chat")
    assert [r.name for r in ladder.models] == ["small"]
    assert ladder.denied == ["big", "base"]  # kept out of the answer, as /v1/models hides them


# --------------------------------------------------------------------------
# answer checks
# --------------------------------------------------------------------------

LEGS = {"type": "object", "properties": {"legs": {"type": "integer", "minimum": 0,
                                                  "maximum": 8}}, "required": ["legs"]}  # fmt: skip
ALL = ("json", "schema", "tool_call", "empty")


def _fmt(schema: dict[str, Any] | None = None) -> p.ResponseFormat:
    if schema is None:
        return p.ResponseFormat(type="json_object")
    return p.ResponseFormat.model_validate(
        {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    )


def test_json_checks() -> None:
    assert validate.check_json_text('{"legs": 2}', _fmt(LEGS), ALL, "the answer") is None
    problem = validate.check_json_text('{"legs": 10}', _fmt(LEGS), ALL, "the answer")
    assert problem is not None and problem.outcome == "schema_violation"
    assert "$.legs" in problem.reason and "'maximum'" in problem.reason
    assert "10" not in problem.reason  # the answer's values never go in clear to the ledger
    problem = validate.check_json_text('{"legs": 2', _fmt(LEGS), ALL, "the answer")
    assert problem is not None and problem.outcome == "invalid_json"
    problem = validate.check_json_text("[1, 2]", _fmt(), ALL, "the answer")
    assert problem is not None and problem.outcome == "invalid_json" and "object" in problem.reason
    assert validate.check_json_text("[1", None, ALL, "x") is None  # no JSON asked for
    assert validate.check_json_text('{"legs": 10}', _fmt(LEGS), ("json",), "x") is None
    email = {"type": "object", "properties": {"e": {"type": "string", "format": "email"}}}
    problem = validate.check_json_text('{"e": "nobody"}', _fmt(email), ALL, "x")
    assert problem is not None and "'format'" in problem.reason


def _chat_req(**kw: Any) -> p.ChatCompletionRequest:
    return p.ChatCompletionRequest.model_validate(
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **kw}
    )


def _chat_resp(content: str | None = None, calls: list[tuple[str, str]] | None = None,
               logprobs: list[float] | None = None) -> p.ChatCompletionResponse:  # fmt: skip
    message = p.ChatMessageOut(content=content, tool_calls=[
        p.ToolCallOut(id=f"c{i}", function=p.FunctionCallOut(name=n, arguments=a))
        for i, (n, a) in enumerate(calls or [])
    ] or None)  # fmt: skip
    lp = (p.ChoiceLogprobs(content=[p.TokenLogprobOut(token="t", logprob=v) for v in logprobs])
          if logprobs is not None else None)  # fmt: skip
    return p.ChatCompletionResponse(
        id="x", created=0, model="m", choices=[p.ChatChoice(index=0, message=message,
                                                            logprobs=lp, finish_reason="stop")],
        usage=p.UsageOut(prompt_tokens=1, completion_tokens=1, total_tokens=2),
    )  # fmt: skip


WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "minLength": 2}},
    "required": ["city"]}}}  # fmt: skip


@pytest.mark.parametrize(
    ("calls", "choice", "outcome"),
    [
        ([("weather", '{"city": "Lyon"}')], "required", None),
        ([("weather", '{"city": "L"}')], "required", "invalid_tool_call"),
        ([("weather", '{"town": "Lyon"}')], "auto", "invalid_tool_call"),
        ([("weather", "Lyon")], "auto", "invalid_tool_call"),
        ([("weather", "[1]")], "auto", "invalid_tool_call"),
        ([("rain", '{"city": "Lyon"}')], "auto", "invalid_tool_call"),
        ([], "required", "invalid_tool_call"),
        ([], "auto", "empty"),
    ],
)
def test_tool_call_checks(calls: list[tuple[str, str]], choice: str, outcome: str | None) -> None:
    req = _chat_req(tools=[WEATHER], tool_choice=choice)
    problem = validate.check_chat(_chat_resp(None, calls), req, ALL)
    assert (problem.outcome if problem else None) == outcome


def test_named_tool_choice_and_text_answers() -> None:
    two = [WEATHER, {"type": "function", "function": {"name": "time"}}]
    req = _chat_req(tools=two, tool_choice={"type": "function", "function": {"name": "time"}})
    problem = validate.check_chat(_chat_resp(None, [("weather", '{"city": "Lyon"}')]), req, ALL)
    assert problem is not None and "tool_choice" in problem.reason
    assert validate.check_chat(_chat_resp(None, [("time", "{}")]), req, ALL) is None
    plain = _chat_req()
    assert validate.check_chat(_chat_resp("Hello"), plain, ALL) is None
    problem = validate.check_chat(_chat_resp("  \n"), plain, ALL)
    assert problem is not None and problem.outcome == "empty"
    assert validate.check_chat(_chat_resp(""), plain, ("json",)) is None  # empty check off


def test_completion_checks_every_choice() -> None:
    req = p.CompletionRequest.model_validate({"model": "r", "prompt": ["a", "b"],
                                              "response_format": _fmt(LEGS).model_dump(
                                                  by_alias=True)})  # fmt: skip
    choices = [p.CompletionChoice(index=0, text='{"legs": 1}', finish_reason="stop"),
               p.CompletionChoice(index=1, text='{"legs": 9}', finish_reason="stop")]  # fmt: skip
    resp = p.CompletionResponse(id="x", created=0, model="m", choices=choices)
    problem = validate.check_completion(resp, req, ALL)
    assert problem is not None and problem.reason.startswith("choices[1]")


def test_confidence_and_verdicts() -> None:
    assert validate.mean_logprob([-1.0, -3.0, None, float("-inf")]) == -2.0
    assert validate.mean_logprob([]) is None
    assert validate.chat_confidence(_chat_resp("x", logprobs=[-0.5, -1.5])) == -1.0
    low = validate.judge(None, -2.0, -1.0)
    assert not low.ok and low.outcome == "low_confidence" and "-2.000 < threshold -1" in low.reason
    assert validate.judge(None, -0.5, -1.0).ok
    assert validate.judge(None, None, -1.0).ok  # nothing to judge by: passes, and says so
    bad = validate.judge(validate.Problem("empty", "the answer is empty"), -0.1, -1.0)
    assert not bad.ok and bad.outcome == "empty"


# --------------------------------------------------------------------------
# escalation rules, against a stand-in core service
# --------------------------------------------------------------------------


class _Engine:
    counts_tokens = True
    max_token_bytes = None  # no byte bound: every prompt is counted

    def __init__(self, context_length: int) -> None:
        self.context_length = context_length

    def count_chat_tokens(self, params: Any) -> int:
        return sum(len(str(m.get("content", "")).split()) for m in params.messages)


class _Loaded:
    def __init__(self, record: ModelRecord) -> None:
        self.engine = _Engine(record.context_length)


class FakeCore:
    """The platform as the router sees it; answers chat calls from a script: model name ->
    answer text or exception."""

    def __init__(self, script: dict[str, Any], routes: dict[str, Any]) -> None:
        self.settings = load_settings(routes=routes)
        self.metrics_registry = CollectorRegistry()
        self.entries: list[tuple[str, dict[str, Any]]] = []
        self.script = script
        self.calls: list[p.ChatCompletionRequest] = []

    async def model_records(self) -> list[ModelRecord]:
        return CATALOGUE

    async def lane(self, name: str) -> _Loaded:
        return _Loaded(next(r for r in CATALOGUE if r.name == name))

    async def audit_event(self, kind: str, **kw: Any) -> bool:
        self.entries.append((kind, kw))
        return True

    async def chat(self, req: p.ChatCompletionRequest, who: Principal) -> Any:
        self.calls.append(req)
        answer = self.script[req.model]
        if isinstance(answer, Exception):
            raise answer
        text, logprobs = answer
        resp = _chat_resp(text, logprobs=logprobs if req.logprobs else None)
        resp.model = req.model
        return resp


def _run(core: FakeCore, **kw: Any) -> Any:
    router = RouterService(core)  # type: ignore[arg-type]
    routed = asyncio.run(router.chat(_chat_req(**kw), ANYONE))
    return routed, router


def test_small_answer_that_passes_stays_small() -> None:
    core = FakeCore({"small": ("hello", [-0.1])}, {"r": {"models": ["small", "big"]}})
    routed, _ = _run(core, model="r")
    routing = routed.result.usage.routing
    assert routed.model == "small" and not routing["escalated"]
    assert [c.model for c in core.calls] == ["small"]
    kind, entry = core.entries[0]
    assert kind == "routing" and entry["data"]["model"] == "small" and entry["tenant"] == "acme"


def test_low_confidence_escalates_once_and_logprobs_are_stripped() -> None:
    core = FakeCore(
        {"small": ("hello", [-3.0]), "big": ("hello", [-2.5]), "remote": ("x", [])},
        {"r": {"models": ["small", "big", "remote"], "min_confidence": -1}},
    )
    routed, router = _run(core, model="r")
    routing = routed.result.usage.routing
    assert routed.model == "big" and routing["escalated"]
    assert [c.model for c in core.calls] == ["small", "big"]  # once, never a third model
    assert all(c.logprobs for c in core.calls)  # asked for internally...
    assert routed.result.choices[0].logprobs is None  # ...and not shown to this client
    assert [a["outcome"] for a in routing["attempts"]] == ["low_confidence", "low_confidence"]
    assert router.escalations.labels("r")._value.get() == 1


def test_answer_that_passed_checks_beats_one_that_failed_them() -> None:
    core = FakeCore(
        {"small": ("hello", [-3.0]), "big": ("", [-0.1])},
        {"r": {"models": ["small", "big"], "min_confidence": -1}},
    )
    routed, _ = _run(core, model="r")
    routing = routed.result.usage.routing
    assert routed.model == "small" and routing["escalated"]
    assert "kept small's answer" in routing["reason"]


def test_engine_error_escalates_other_client_errors_do_not() -> None:
    core = FakeCore(
        {"small": EngineUnavailable("down"), "big": ("hi", None)},
        {"r": {"models": ["small", "big"]}},
    )
    routed, _ = _run(core, model="r")
    assert routed.model == "big"
    assert routed.result.usage.routing["attempts"][0]["outcome"] == "error"
    core = FakeCore(
        {"small": RateLimited("slow down", retry_after=1), "big": ("hi", None)},
        {"r": {"models": ["small", "big"]}},
    )
    with pytest.raises(RateLimited):
        _run(core, model="r")
    core = FakeCore({"small": EngineUnavailable("down")}, {"r": {"models": ["small"]}})
    with pytest.raises(EngineUnavailable):
        _run(core, model="r")


def test_capabilities_context_and_no_eligible_model() -> None:
    core = FakeCore({"big": ("ok", None)}, {"r": {"models": ["base", "small", "big"]}})
    routed, _ = _run(core, model="r", messages=[{"role": "user", "content": "w " * 100}],
                     max_tokens=4)  # fmt: skip
    attempts = routed.result.usage.routing["attempts"]
    assert routed.model == "big" and not routed.result.usage.routing["escalated"]
    assert attempts[0]["model"] == "base" and "does not support chat" in attempts[0]["reason"]
    assert attempts[1]["model"] == "small"
    assert attempts[1]["reason"] == "needs 104 tokens; its context is 64"
    core = FakeCore({}, {"r": {"models": ["base", "vectors"]}})
    with pytest.raises(NoEligibleModel) as info:
        _run(core, model="r")
    assert "base:" in info.value.message and "vectors:" in info.value.message
    core = FakeCore({}, {"r": {"models": ["small"]}})
    router = RouterService(core)  # type: ignore[arg-type]
    nobody = Principal(tenant="acme", key_id="k3", role="user", models=("base",))
    with pytest.raises(RouteForbidden) as denied:
        asyncio.run(router.chat(_chat_req(model="r"), nobody))
    assert denied.value.status == 403


def test_escalate_false_and_buffered_stream() -> None:
    core = FakeCore({"small": ("", None)}, {"r": {"models": ["small", "big"], "escalate": False}})
    routed, _ = _run(core, model="r")
    assert routed.model == "small" and "not escalated" in routed.result.usage.routing["reason"]
    core = FakeCore({"small": ("hello there", None)}, {"r": {"models": ["small", "big"]}})
    routed, _ = _run(core, model="r", stream=True, stream_options={"include_usage": True})

    async def collect() -> list[p.ChatCompletionChunk]:
        return [c async for c in routed.result]

    chunks = asyncio.run(collect())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "hello there" and core.calls[0].stream is False
    assert chunks[-1].usage is not None and chunks[-1].usage.routing["model"] == "small"
    assert json.loads(chunks[-2].model_dump_json())["choices"][0]["finish_reason"] == "stop"
