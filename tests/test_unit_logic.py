"""Fast unit tests of the logic around the engines (no model loaded)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from intramuros.api.errors import param_of
from intramuros.engines import prompting
from intramuros.engines.base import ChatParams, SamplingParams, ToolSpec
from intramuros.engines.registry import available_engines, engine_class
from intramuros.engines.stops import find_stop, held_back
from intramuros.errors import ConfigError, InvalidRequest, QueueFull
from intramuros.serving.scheduler import Lane
from intramuros.settings import Settings, load_settings

WEATHER = ToolSpec(
    "weather",
    "Weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
WITH_DEFS = ToolSpec("book", "Book a room", {
    "type": "object",
    "properties": {"guest": {"$ref": "#/$defs/person"}},
    "required": ["guest"],
    "$defs": {"person": {"type": "object", "properties": {"name": {"type": "string"}},
                         "required": ["name"]}},
})  # fmt: skip


# -- prompting -----------------------------------------------------------------


def test_tool_call_schema_accepts_only_valid_calls() -> None:
    schema = prompting.tool_call_schema([WEATHER, WITH_DEFS])
    good = [
        {"name": "weather", "arguments": {"city": "Rome"}},
        {"name": "book", "arguments": {"guest": {"name": "Ada"}}},
    ]
    bad = [
        {"name": "weather", "arguments": {}},
        {"name": "nope", "arguments": {"city": "Rome"}},
        {"name": "book", "arguments": {"guest": {}}},
        {"name": "weather", "arguments": {"city": "Rome"}, "extra": 1},
    ]
    for call in good:
        jsonschema.validate(call, schema)
    for call in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(call, schema)


def test_tools_grammar_shapes() -> None:
    forced = prompting.tools_grammar([WEATHER, WITH_DEFS], "weather")
    assert "root ::=" in forced and "book" not in forced
    auto = prompting.tools_grammar([WEATHER], "auto")
    assert "call ::=" in auto and "root ::= call | freetext" in auto


def test_remote_refs_and_bad_schemas_are_refused() -> None:
    with pytest.raises(InvalidRequest) as exc:
        prompting.check_json_schema({"$ref": "https://example.com/s.json"}, "p")
    assert exc.value.param == "p"
    with pytest.raises(InvalidRequest):
        prompting.check_json_schema({"type": 12}, "p")
    with pytest.raises(InvalidRequest):
        prompting.check_json_schema([1, 2], "p")


def test_parse_tool_call() -> None:
    assert prompting.parse_tool_call('{"name":"weather","arguments":{"city":"Oslo"}}',
                                     [WEATHER]) == ("weather", '{"city": "Oslo"}')  # fmt: skip
    assert prompting.parse_tool_call('{"name":"weather","arguments":{}}', [WEATHER]) is None
    assert prompting.parse_tool_call('{"name":"weather"', [WEATHER]) is None
    assert prompting.parse_tool_call("hello", [WEATHER]) is None


def test_normalise_messages() -> None:
    params = ChatParams(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a"},
                                         {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "1", "function": {"name": "weather", "arguments": '{"city":"X"}'}}]},
            {"role": "tool", "tool_call_id": "1", "content": "sunny"},
            {"role": "user", "content": "thanks"},
        ],
        sampling=SamplingParams(),
        tools=(WEATHER,),
        tool_choice="auto",
    )  # fmt: skip
    out = prompting.normalise_messages(params)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.") and '"weather"' in out[0]["content"]
    # parts are joined with a line break: two parts never glue into one token (or one IBAN)
    assert out[1]["content"] == "a\nb"
    assert json.loads(out[2]["content"]) == {"name": "weather", "arguments": {"city": "X"}}
    assert out[3]["content"] == "Result of tool 1: sunny\n\nthanks"
    with pytest.raises(InvalidRequest) as exc:
        prompting.message_text([{"type": "image_url", "image_url": {"url": "x"}}], 3)
    assert exc.value.param == "messages[3].content[0].type"


def test_stop_sequence_helpers() -> None:
    assert find_stop("hello world", ["wor"], 0) == 6
    assert find_stop("hello world", ["xyz"], 0) is None
    assert find_stop("hello", [], 0) is None
    assert held_back("hello wo", ["world"]) == 2
    assert held_back("hello", ["world"]) == 0
    assert held_back("abab", ["abc", "bab!"]) == 3


# -- error mapping ---------------------------------------------------------------


@pytest.mark.parametrize(("loc", "param"), [
    (("body", "model"), "model"),
    (("body", "messages", 0, "user", "content"), "messages[0].content"),
    (("body", "messages", 2, "content", "str"), "messages[2].content"),
    (("body", "tools", 0, "function", "parameters"), "tools[0].function.parameters"),
    (("body", "tool_choice", "NamedToolChoice", "function"), "tool_choice.function"),
    (("body",), None),
])  # fmt: skip
def test_param_of(loc: tuple[object, ...], param: str | None) -> None:
    assert param_of(loc) == param


# -- settings --------------------------------------------------------------------


def test_settings_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('port = 9001\nqueue_limit = 3\npreload_models = ["a", "b"]\n')
    monkeypatch.setenv("INTRAMUROS_QUEUE_LIMIT", "5")
    s = load_settings(config=cfg, data_dir=tmp_path)
    assert (s.port, s.queue_limit, s.preload_models) == (9001, 5, ["a", "b"])  # env beats file
    s = load_settings(config=cfg, queue_limit=7, preload_models="x, y")
    assert (s.queue_limit, s.preload_models) == (7, ["x", "y"])  # flags beat env
    with pytest.raises(ConfigError) as exc:
        load_settings(port=70000)
    assert "port" in exc.value.message
    with pytest.raises(ConfigError):
        load_settings(config=tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("port = [")
    with pytest.raises(ConfigError):
        load_settings(config=bad)
    assert Settings().host == "127.0.0.1" and Settings().port == 8000
    assert (
        str(Settings().data_dir).endswith(".local/share/intramuros")
        or "XDG_DATA_HOME" in __import__("os").environ
    )


def test_every_setting_is_described() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description and len(field.description) > 10, name


def test_engine_registry() -> None:
    assert {"llamacpp", "minilm", "openai-upstream", "whisper", "fake"} <= set(available_engines())
    # Every declared entry point loads, and names itself as declared.
    for name in available_engines():
        assert engine_class(name).name == name
    with pytest.raises(ConfigError):
        engine_class("nope")


def _broken_group(monkeypatch: pytest.MonkeyPatch, group: str, name: str, value: str) -> None:
    """The group's entry points as installed, plus (or instead of) a broken one."""
    import importlib.metadata as md

    real = md.entry_points

    def entry_points(**kw: Any) -> Any:
        found = [ep for ep in real(**kw) if ep.name != name]
        if kw.get("group") == group:
            found.append(md.EntryPoint(name, value, group))
        return md.EntryPoints(found)

    monkeypatch.setattr(md, "entry_points", entry_points)


def test_a_broken_engine_entry_point_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from intramuros.engines.registry import describe_engines, model_hosts

    _broken_group(monkeypatch, "intramuros.engines", "llamacpp",
                  "intramuros.engines.no_such_module:LlamaCppEngine")  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        engine_class("llamacpp")
    assert "llamacpp" in caught.value.message
    assert "intramuros.engines.no_such_module:LlamaCppEngine" in caught.value.message
    # Nothing else lists our engines: no fallback to a copy.
    info = {e.name: e for e in describe_engines()}
    assert info["llamacpp"].error and info["minilm"].error is None
    # A model of a broken engine may reach nothing.
    assert model_hosts("llamacpp", {"base_url": "http://10.1.2.3/v1"}) == frozenset()
    # An entry point naming a class that is not an engine, or with another name.
    _broken_group(monkeypatch, "intramuros.engines", "minilm", "intramuros.errors:ConfigError")
    with pytest.raises(ConfigError, match="not an Engine subclass"):
        engine_class("minilm")
    _broken_group(monkeypatch, "intramuros.engines", "other",
                  "intramuros.engines.fake:FakeEngine")  # fmt: skip
    with pytest.raises(ConfigError, match="names itself 'fake'"):
        engine_class("other")


def test_a_broken_workload_entry_point_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from intramuros.platform.plugin import installed_workloads

    assert [w.name for w in installed_workloads()] == ["docai", "forge", "kyc", "voice"]
    _broken_group(monkeypatch, "intramuros.workloads", "kyc", "intramuros.kyc.nothing:plugin")
    with pytest.raises(ConfigError, match=r"Workload 'kyc' \(intramuros.kyc.nothing:plugin\)"):
        installed_workloads()


# -- the lane (scheduler) ------------------------------------------------------------


def test_lane_order_queue_limit_and_cancel() -> None:
    async def scenario() -> None:
        lane: Lane[int] = Lane("m", concurrency=1, queue_limit=2)
        release = threading.Event()
        order: list[str] = []
        stopped_at: list[int] = []

        def blocking(name: str):  # type: ignore[no-untyped-def]
            def run() -> str:
                release.wait(5)
                order.append(name)
                return name

            return run

        def counting(cancel: threading.Event) -> Iterator[int]:
            i = 0
            try:
                while not cancel.is_set() and i < 10_000:
                    i += 1
                    yield i
                    time.sleep(0.001)
            finally:
                stopped_at.append(i)

        first = asyncio.create_task(lane.call(blocking("a")))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(lane.call(blocking("b")))
        third = asyncio.create_task(lane.call(blocking("c")))
        await asyncio.sleep(0.05)
        assert lane.waiting == 2
        with pytest.raises(QueueFull) as exc:
            await lane.call(blocking("d"))
        assert exc.value.headers == {"Retry-After": "1"} and exc.value.status == 429
        release.set()
        assert await asyncio.gather(first, second, third) == ["a", "b", "c"]
        assert order == ["a", "b", "c"]

        stream = lane.stream(counting)
        got = [await stream.__anext__() for _ in range(3)]
        assert got == [1, 2, 3]
        await stream.aclose()  # the consumer leaves: the worker must stop soon
        assert await asyncio.wait_for(lane.call(lambda: "next"), 5) == "next"
        assert stopped_at and stopped_at[0] < 10_000
        lane.shutdown()

    asyncio.run(scenario())


def test_lane_propagates_worker_errors() -> None:
    async def scenario() -> None:
        lane: Lane[int] = Lane("m", concurrency=1, queue_limit=1)

        def broken(cancel: threading.Event) -> Iterator[int]:
            yield 1
            raise InvalidRequest("bad", param="x")

        stream = lane.stream(broken)
        assert await stream.__anext__() == 1
        with pytest.raises(InvalidRequest):
            await stream.__anext__()
        assert await lane.call(lambda: 5) == 5  # the slot came back
        lane.shutdown()

    asyncio.run(scenario())
