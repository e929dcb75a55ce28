"""Bench logic without a server: scorers (right and wrong answers), prompt rendering,
aggregation of metering into per-model metrics."""

from __future__ import annotations

import json

import pytest

from intramuros.bench import scorers
from intramuros.bench.client import ModelInfo, normalise_base_url
from intramuros.bench.errors import BenchError
from intramuros.bench.render import TEXT_STOPS, completion_body, render_prompt
from intramuros.bench.report import ALL, markdown_table, summarise
from intramuros.bench.runner import ItemResult, refusal, request_body
from intramuros.bench.suite import Item


def s(scorer: str, answer: str, expected: object, **options: object) -> float:
    scorers.check_options(scorer, expected, options)
    return scorers.score(scorer, answer, expected, options).value


# --------------------------------------------------------------------------
# each scorer, right and wrong
# --------------------------------------------------------------------------


def test_exact() -> None:
    assert s("exact", "  Paris ", "paris") == 1.0
    assert s("exact", "Paris\n\n", "PARIS") == 1.0
    assert s("exact", "Paris.", "Paris") == 0.0
    assert s("exact", "Paris.", "Paris", strip_punctuation=True) == 1.0
    assert s("exact", "paris", "Paris", case_sensitive=True) == 0.0
    assert s("exact", "Lyon", "Paris") == 0.0
    assert s("exact", "New  York", "new york") == 1.0
    assert s("exact", "New  York", "New York", normalize=False) == 0.0


def test_contains() -> None:
    assert s("contains", "The answer is Hello there", "hello") == 1.0
    assert s("contains", "Goodbye", "hello") == 0.0
    assert s("contains", "Hello", "hello", case_sensitive=True) == 0.0
    assert s("contains", "IBAN and BIC given", ["iban", "bic", "amount"]) == pytest.approx(2 / 3)


def test_regex() -> None:
    assert s("regex", "Date: 2025-03-14.", r"\d{4}-\d{2}-\d{2}") == 1.0
    assert s("regex", "14/03/2025", r"\d{4}-\d{2}-\d{2}") == 0.0
    assert s("regex", "Date: 2025-03-14", r"\d{4}-\d{2}-\d{2}", fullmatch=True) == 0.0
    assert s("regex", " 2025-03-14 ", r"\d{4}-\d{2}-\d{2}", fullmatch=True) == 1.0
    assert s("regex", "YES", "^yes$", ignore_case=True) == 1.0
    assert s("regex", "YES", "^yes$") == 0.0


@pytest.mark.parametrize(("text", "number"), [
    ("42", 42.0), ("The total is 1,234.56 EUR", 1234.56), ("1.234,56 €", 1234.56),
    ("1 234,56", 1234.56), ("12,5", 12.5), ("-3.5 degrees", -3.5), ("1,234", 1234.0),
    ("1.234.567", 1234567.0), ("\u22127", -7.0), ("no digits", None),
])  # fmt: skip
def test_parse_number(text: str, number: float | None) -> None:
    assert scorers.parse_number(text) == number


def test_numeric() -> None:
    assert s("numeric", "42", 42) == 1.0
    assert s("numeric", "It is 42.", 42) == 1.0
    assert s("numeric", "41", 42) == 0.0
    assert s("numeric", "41.9", 42, tolerance=0.2) == 1.0
    assert s("numeric", "41.7", 42, tolerance=0.2) == 0.0
    assert s("numeric", "105", 100, relative_tolerance=0.1) == 1.0
    assert s("numeric", "forty-two", 42) == 0.0


def test_choice() -> None:
    yes_no = {"choices": ["yes", "no"]}
    assert s("choice", "Yes.", "yes", **yes_no) == 1.0
    assert s("choice", " yes", "yes", **yes_no) == 1.0
    assert s("choice", "No, they are different people", "yes", **yes_no) == 0.0
    assert s("choice", "Maybe", "yes", **yes_no) == 0.0
    cats = {"choices": ["fuel", "groceries", "cash_withdrawal"]}
    assert s("choice", "This is a cash withdrawal", "cash_withdrawal", **cats) == 1.0
    assert s("choice", "groceries, not fuel", "groceries", **cats) == 1.0
    assert s("choice", "groceries, not fuel", "fuel", **cats) == 0.0
    # the answer in a JSON field
    field = {**cats, "field": "category"}
    assert s("choice", '{"category": "fuel"}', "fuel", **field) == 1.0
    assert s("choice", '{"category": "groceries"}', "fuel", **field) == 0.0
    assert s("choice", "fuel", "fuel", **field) == 0.0  # not JSON


SCHEMA = {"type": "object", "properties": {"iban": {"type": "string"},
          "amount": {"type": "number"}}, "required": ["iban", "amount"]}  # fmt: skip


def test_json_schema() -> None:
    want = {"iban": "DE89370400440532013000", "amount": 1234.5}
    opts = {"schema": SCHEMA, "fields": ["iban", "amount"]}
    right = json.dumps({"iban": "DE89 3704 0044 0532 0130 00", "amount": 1234.50})
    assert s("json_schema", right, want, **opts) == 1.0
    half = json.dumps({"iban": "DE89370400440532013000", "amount": 1243.5})
    assert s("json_schema", half, want, **opts) == 0.5
    assert s("json_schema", '{"iban": "x"}', want, **opts) == 0.0  # schema violation
    assert s("json_schema", "not json at all", want, **opts) == 0.0
    fenced = "Here:\n```json\n" + right + "\n```"
    assert s("json_schema", fenced, want, **opts) == 1.0
    # without fields: any valid document scores 1, an invalid one 0
    assert s("json_schema", half, None, schema=SCHEMA) == 1.0
    assert s("json_schema", '{"amount": "12"}', None, schema=SCHEMA) == 0.0
    # numbers as strings in the answer still compare as numbers, within tolerance
    assert s("json_schema", '{"iban": "DE89370400440532013000", "amount": 1234.504}', want,
             **opts) == 1.0  # fmt: skip


@pytest.mark.parametrize(("scorer", "expected", "options", "message"), [
    ("regex", "(unclosed", {}, "valid regex"),
    ("numeric", "42", {}, "must be a number"),
    ("numeric", 42, {"tolerance": -1}, "non-negative"),
    ("choice", "maybe", {"choices": ["yes", "no"]}, "not one of the choices"),
    ("choice", "yes", {"choices": ["yes"]}, "at least two"),
    ("json_schema", {}, {"schema": {"type": "nonsense"}}, "valid JSON schema"),
    ("json_schema", {"a": 1}, {"schema": {}, "fields": ["b"]}, "every field"),
    ("exact", 3, {}, "must be a string"),
    ("bogus", "x", {}, "unknown scorer"),
])  # fmt: skip
def test_bad_options_refused(scorer: str, expected: object, options: dict[str, object],
                             message: str) -> None:  # fmt: skip
    with pytest.raises(scorers.ScorerOptionError, match=message):
        scorers.check_options(scorer, expected, options)


# --------------------------------------------------------------------------
# requests per model capability
# --------------------------------------------------------------------------

MESSAGES = (
    {"role": "system", "content": "Answer yes or no."},
    {"role": "user", "content": "Is water wet?"},
    {"role": "assistant", "content": "yes"},
    {"role": "user", "content": "Is fire cold?"},
)


def test_render_prompt_few_shot() -> None:
    text = render_prompt(MESSAGES)
    assert text == ("Answer yes or no.\n\nInput: Is water wet?\nOutput: yes\n\n"
                    "Input: Is fire cold?\nOutput:")  # fmt: skip


def test_request_per_capability() -> None:
    item = Item(id="a", expected="no", scorer="choice", options={"choices": ["yes", "no"]},
                messages=MESSAGES, max_tokens=4)  # fmt: skip
    chat = ModelInfo("c", ("chat", "completion", "json"), "chat")
    base = ModelInfo("b", ("completion", "json"), "completion")
    body = request_body(chat, item)
    assert body["messages"] == list(MESSAGES) and "prompt" not in body
    body = request_body(base, item)
    assert body["prompt"].endswith("Output:") and body["stop"] == list(TEXT_STOPS)
    rf = {"type": "json_object"}
    json_item = Item(id="j", expected=None, scorer="json_schema", options={"schema": {}},
                     messages=MESSAGES, response_format=rf)  # fmt: skip
    body = completion_body("b", json_item, 1)
    assert body["response_format"] == rf and "stop" not in body  # the grammar ends it
    assert refusal(ModelInfo("x", ("completion",), "completion"), json_item) is not None
    assert refusal(base, json_item) is None


def test_base_url_normalised() -> None:
    assert normalise_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000"
    assert normalise_base_url("https://gw.example/ai/v1") == "https://gw.example/ai"
    for bad in ("127.0.0.1:8000", "ftp://x", "http://", ""):
        with pytest.raises(BenchError, match="base-url"):
            normalise_base_url(bad)


# --------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------


def _result(model: str, suite: str, score: float, usage: dict[str, object],
            error: str | None = None) -> ItemResult:  # fmt: skip
    return ItemResult(model=model, suite=suite, item=f"{suite}-{score}", endpoint="chat",
                      scorer="exact", expected="x", answer="x", score=score, detail="",
                      error=error, usage=usage)  # fmt: skip


def test_summaries_from_metering() -> None:
    u1 = {"prompt_tokens": 90, "completion_tokens": 10, "decode_tokens_per_second": 10.0,
          "ttft_ms": 100.0, "energy_joules": 2.0, "cost_eur": 1e-4, "co2e_grams": 1e-3,
          "energy_source": "estimated"}  # fmt: skip
    u2 = {"prompt_tokens": 80, "completion_tokens": 20, "decode_tokens_per_second": 40.0,
          "ttft_ms": 300.0, "energy_joules": 4.0, "cost_eur": 3e-4, "co2e_grams": 3e-3,
          "energy_source": "estimated"}  # fmt: skip
    results = [
        _result("small", "a", 1.0, u1), _result("small", "a", 0.0, u2),
        _result("small", "b", 1.0, u1),
        _result("big", "a", 1.0, {}), _result("big", "b", 0.0, {}, error="HTTP 503: x"),
    ]  # fmt: skip
    rows = {(r.model, r.suite): r for r in summarise(results)}
    a = rows[("small", "a")]
    assert a.quality == 0.5 and a.items == 2 and a.errors == 0
    # 30 tokens decoded in 10/10 + 20/40 = 1.5 s
    assert a.tokens_per_second == pytest.approx(20.0)
    assert a.ttft_ms == pytest.approx(200.0)
    assert a.joules_per_token == pytest.approx(6.0 / 200)
    assert a.eur_per_million_tokens == pytest.approx(4e-4 / 200 * 1e6)
    assert a.gco2e_per_million_tokens == pytest.approx(4e-3 / 200 * 1e6)
    assert a.energy_source == ["estimated"]
    overall = rows[("small", ALL)]
    assert overall.quality == pytest.approx(0.75)  # mean of the suites' qualities (0.5, 1)
    assert overall.items == 3
    big = rows[("big", ALL)]
    assert big.errors == 1 and big.tokens_per_second is None and big.joules_per_token is None
    table = markdown_table(summarise(results))
    assert "| big | all | 2 | 1 | 0.500 | n/a |" in table
    assert "**0.750**" in table  # the overall quality winner is bold
