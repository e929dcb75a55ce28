"""Suite files: the bundled ones are sound and reproducible; broken and hostile
lines are refused with the file and line named."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from intramuros.bench.errors import SuiteError
from intramuros.bench.suite import bundled_suites, load_suite, parse_suite, resolve_suite

ROOT = Path(__file__).resolve().parent.parent
GOOD = {"id": "a", "prompt": "Say yes.", "expected": "yes", "scorer": "exact"}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_bench_suites", ROOT / "benchmarks" / "make_bench_suites.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bundled_suites_load() -> None:
    suites = bundled_suites()
    assert {"invoice_fields", "transaction_category", "same_person"} <= set(suites)
    for name in suites:
        suite = load_suite(name)
        assert len(suite.items) >= 50, name
        assert len(suite.sha256) == 64


def test_bundled_suites_are_the_generator_output() -> None:
    gen = _generator()
    for name, text in gen.render().items():
        assert (bundled_suites()[name]).read_text(encoding="utf-8") == text, name


def test_invoice_suite_ibans_have_valid_checksums() -> None:
    gen = _generator()
    items = load_suite("invoice_fields").items
    for item in items:
        iban = item.expected["iban"]
        assert gen.iban_valid(iban), iban
        # the IBAN really is in the document (spaced or not)
        doc = (item.messages or ())[-1]["content"].replace(" ", "")
        assert iban in doc
    assert not gen.iban_valid("DE89370400440532013001")  # one digit off


def test_balanced_answers() -> None:
    names = [i.expected for i in load_suite("same_person").items]
    assert names.count("yes") == names.count("no") == 30
    cats = {i.expected for i in load_suite("transaction_category").items}
    assert len(cats) == 12


def _line(**changes: object) -> bytes:
    item = {**GOOD, **changes}
    return json.dumps({k: v for k, v in item.items() if v is not None}).encode()


@pytest.mark.parametrize(("line", "message"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b"\xff\xfe garbage", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON|nested too deeply"),
    (_line(id=None), "id must be"),
    (_line(id=""), "id must be"),
    (_line(scorer="fuzzy"), "scorer must be one of"),
    (_line(expected=None), "expected is missing"),
    (_line(prompt=None), "exactly one of messages or prompt"),
    (_line(messages=[{"role": "user", "content": "x"}]), "exactly one of messages or prompt"),
    (_line(prompt=None, messages=[{"role": "user", "content": "x"}, {"role": "assistant",
                                                                       "content": "y"}]),
     "last message must be a user turn"),
    (_line(prompt=None, messages=[{"role": "hacker", "content": "x"}]), r"messages\[0\]"),
    (_line(prompt=None, messages="hi"), "non-empty list"),
    (_line(max_tokens=0), "max_tokens"),
    (_line(max_tokens=10**9), "max_tokens"),
    (_line(max_tokens=True), "max_tokens"),
    (_line(colour="red"), "unknown key"),
    (_line(choices=["yes", "no"]), "do not apply to scorer exact"),
    (_line(scorer="regex", expected="(oops"), "valid regex"),
    (_line(scorer="choice", choices=["no", "maybe"]), "not one of the choices"),
    (_line(response_format={"type": "xml"}), "response_format.type"),
    (_line(response_format={"type": "json_schema", "json_schema": {"schema": {"type": 5}}}),
     "response_format.json_schema"),
    (_line(stop=[""]), "stop must be"),
])  # fmt: skip
def test_bad_lines_name_the_line(line: bytes, message: str) -> None:
    raw = _line() + b"\n\n" + line + b"\n"
    with pytest.raises(SuiteError, match=message) as info:
        parse_suite(raw, name="t", origin="t.jsonl")
    assert "t.jsonl line 3:" in info.value.message


def test_duplicate_ids_and_empty_suites() -> None:
    with pytest.raises(SuiteError, match="line 2: duplicate id 'a'"):
        parse_suite(_line() + b"\n" + _line(), name="t", origin="t.jsonl")
    with pytest.raises(SuiteError, match="no items"):
        parse_suite(b"\n  \n", name="t", origin="t.jsonl")


def test_oversized_line_refused() -> None:
    huge = _line(prompt="x" * (1024 * 1024 + 10))
    with pytest.raises(SuiteError, match="line 1: longer than"):
        parse_suite(huge, name="t", origin="t.jsonl")


def test_resolve(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"unknown suite 'nope'.*invoice_fields"):
        resolve_suite("nope")
    with pytest.raises(SuiteError, match="does not exist"):
        resolve_suite(str(tmp_path / "missing.jsonl"))
    with pytest.raises(SuiteError, match="does not exist"):
        resolve_suite(str(tmp_path))  # a folder is not a suite
    path = tmp_path / "mine.jsonl"
    path.write_bytes(_line() + b"\n")
    suite = load_suite(str(path))
    assert suite.name == "mine" and suite.items[0].prompt == "Say yes."
