"""benchmarks/forge_data.py: fine-tuning data for the bench suites, scored as the bench
scores, and proven disjoint from the suites' test items (the proof can fail)."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest

from intramuros.bench import scorers
from intramuros.bench.suite import Item, Suite, load_suite

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "forge_data.py"
COMMITTED = ROOT / "benchmarks" / "forge_data"
SUITES = ("invoice_fields", "same_person", "transaction_category")


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_forge_data", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up by name while its classes are made.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def written(gen: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("forge")
    assert gen.main(["--out", str(out), "--seed", "0", "--train", "600",
                     "--validation", "60"]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def built(gen: ModuleType) -> tuple[dict[str, str], dict[str, Any], list[str]]:
    result: tuple[dict[str, str], dict[str, Any], list[str]] = gen.build(0, 600, 60)
    return result


@functools.cache
def _suite(name: str) -> Suite:
    return load_suite(name)  # loading validates every item's schema: once is enough


def _template(suite: str) -> Item:
    return _suite(suite).items[0]


def _system(suite: str) -> str:
    return next(m["content"] for m in _template(suite).messages or () if m["role"] == "system")


def _iban_ok(iban: str) -> bool:
    # Written out again here, so the generator's own check is not what is tested.
    moved = iban[4:] + iban[:4]
    digits = "".join(str(int(c, 36)) for c in moved)
    return iban.isalnum() and iban[:2].isalpha() and int(digits) % 97 == 1


def test_files_are_chat_jsonl_with_the_suite_prompts(written: Path) -> None:
    for suite in SUITES:
        system = _system(suite)
        for split, least in (("train", 500), ("validation", 50)):
            path = written / f"{suite}.{split}.jsonl"
            raw = path.read_bytes()
            assert len(raw) < 1024 * 1024, path
            lines = raw.decode("utf-8").splitlines()
            assert len(lines) >= least, (path, len(lines))
            for line in lines:
                row = json.loads(line)
                assert list(row) == ["messages"]
                messages = row["messages"]
                assert [m["role"] for m in messages] == ["system", "user", "assistant"]
                assert all(set(m) == {"role", "content"} for m in messages)
                assert messages[0]["content"] == system
                assert messages[1]["content"].strip() and messages[2]["content"].strip()


def test_written_files_are_the_built_examples(
    gen: ModuleType, written: Path, built: tuple[dict[str, str], dict[str, Any], list[str]]
) -> None:
    files, forged, _ = built
    for name, text in files.items():
        assert (written / name).read_text(encoding="utf-8") == text, name
    for suite, splits in forged.items():
        for split, examples in splits.items():
            assert gen.render(examples) == files[f"{suite}.{split}.jsonl"]


def test_answers_score_full_marks_under_the_suite_scorer(
    built: tuple[dict[str, str], dict[str, Any], list[str]]
) -> None:
    _, forged, _ = built
    for suite, splits in forged.items():
        template = _template(suite)
        rf = template.response_format
        validator = None
        if rf is not None and rf["type"] == "json_schema":
            schema = rf["json_schema"]["schema"]
            validator = jsonschema.validators.validator_for(schema)(schema)
        for examples in splits.values():
            for ex in examples:
                # The item the bench would build for this input, with this expected value.
                item = dataclasses.replace(template, expected=ex.expected, messages=(
                    {"role": "system", "content": ex.system},
                    {"role": "user", "content": ex.user}))  # fmt: skip
                score = scorers.score(item.scorer, ex.answer, item.expected, item.options)
                assert score.value == 1.0, (suite, ex.user, ex.answer, score.detail)
                if validator is not None:
                    validator.validate(json.loads(ex.answer))
                if suite == "invoice_fields":
                    assert ex.answer == json.dumps(ex.expected, ensure_ascii=False)
                elif suite == "same_person":
                    assert ex.answer in ("yes", "no")


def test_invoice_fields_are_in_the_document(
    gen: ModuleType, built: tuple[dict[str, str], dict[str, Any], list[str]]
) -> None:
    _, forged, _ = built
    countries: Counter[str] = Counter()
    for examples in forged["invoice_fields"].values():
        for ex in examples:
            iban = ex.expected["iban"]
            assert _iban_ok(iban) and gen.iban_valid(iban), iban
            countries[iban[:2]] += 1
            assert iban in ex.user.replace(" ", "")
            assert ex.expected["counterparty"] in ex.user
            assert round(ex.expected["amount"] * 100) in gen.amounts_in(ex.user), ex.user
            assert ex.expected["date"][:4] in ex.user
    assert {"DE", "FR", "IT", "ES", "NL", "BE", "AT", "CH", "GB"} <= set(countries)
    assert _iban_ok("DE89370400440532013000") and gen.iban_valid("DE89 3704 0044 0532 0130 00")
    assert not gen.iban_valid("DE89370400440532013001")  # one digit off


def test_balanced(built: tuple[dict[str, str], dict[str, Any], list[str]]) -> None:
    _, forged, _ = built
    train = {suite: splits["train"] for suite, splits in forged.items()}
    cats = Counter(ex.expected for ex in train["transaction_category"])
    assert set(cats) == set(_template("transaction_category").options["choices"])
    assert max(cats.values()) - min(cats.values()) <= 1, cats
    answers = Counter(ex.expected for ex in train["same_person"])
    assert abs(answers["yes"] - answers["no"]) <= 1, answers
    kinds = Counter(ex.tag for ex in train["same_person"])
    assert len(kinds) >= 10 and min(kinds.values()) >= 30, kinds
    layouts = Counter(ex.tag for ex in train["invoice_fields"])
    assert len(layouts) >= 12 and min(layouts.values()) >= 20, layouts
    assert {tag.rsplit("-", 1)[1] for tag in layouts} >= {"en", "fr", "de", "it", "es", "nl"}


def test_no_duplicates_and_validation_apart_from_train(
    built: tuple[dict[str, str], dict[str, Any], list[str]]
) -> None:
    _, forged, _ = built
    for suite, splits in forged.items():
        train = [ex.user for ex in splits["train"]]
        validation = [ex.user for ex in splits["validation"]]
        assert len(set(train)) == len(train), suite
        assert not set(train) & set(validation), suite


def test_leak_check_passes(built: tuple[dict[str, str], dict[str, Any], list[str]]) -> None:
    _, _, problems = built
    assert problems == []


def _suite_profile(gen: ModuleType, suite: str) -> Any:
    _, items = gen.suite_items(suite)
    return gen.profile(suite, items)


def _test_user(suite: str, index: int) -> str:
    return (_suite(suite).items[index].messages or ())[-1]["content"]


LEAKS = [
    # a test document copied as it is
    ("invoice_fields", lambda: _test_user("invoice_fields", 0), "span"),
    # a test layout refilled with new values: the number-blind token spans see it
    ("invoice_fields", lambda: (
        "SEPA CREDIT TRANSFER ADVICE\nOrdering party: Northwind Trading GmbH\n"
        "Execution date: 2027-03-05\nBeneficiary: Brandt Feinmechanik GmbH\n"
        "Beneficiary IBAN: DE12 3456 7890 1234 5678 90\nAmount: EUR 1,111.11"), "token span"),
    ("invoice_fields", lambda: "Kontoinhaber: Brandt Feinmechanik GmbH\nKonto: "
                               "DE50 2940 2838 3047 8052 21", "IBAN"),
    ("invoice_fields", lambda: "Gutschrift 2027-05-02 über 33,245.67 von Brandt "
                               "Feinmechanik GmbH", "amount"),
    ("invoice_fields", lambda: "Zahlungseingang von Müller Logistik GmbH am 2027-05-02",
     "counterparty"),
    ("invoice_fields", lambda: "Zahlungseingang vom 2026-08-14 von Brandt Feinmechanik GmbH",
     "test date"),
    ("same_person", lambda: _test_user("same_person", 0), "span"),
    ("same_person", lambda: "Name 1: Søren Gallagher\nName 2: S. Gallagher", "word"),
    ("same_person", lambda: "Name 1: Sergej Lindqvist\nName 2: S. Lindqvist", "close to"),
    ("transaction_category", lambda: _test_user("transaction_category", 0), "span"),
    ("transaction_category", lambda: "PAIEMENT PAR CB 01.02 LUFTHANSA BORDEAUX 12,37-", "word"),
    ("transaction_category", lambda: "GIROCARD REWE//DRESDEN/DE 2027-01-02T10:00 BETRAG -111,05",
     "amount"),
]  # fmt: skip


@pytest.mark.parametrize(("suite", "user", "kind"), LEAKS,
                         ids=[f"{suite}-{kind}" for suite, _, kind in LEAKS])
def test_leak_check_catches_leaks(gen: ModuleType, suite: str, user: Any, kind: str) -> None:
    prof = _suite_profile(gen, suite)
    text = user()
    expected: Any = "yes" if suite == "same_person" else "travel"
    if suite == "invoice_fields":
        expected = {"iban": "DE12345678901234567890", "amount": 1.0, "date": "2027-05-02",
                    "counterparty": "Brandt Feinmechanik GmbH"}  # fmt: skip
    leaked = gen.Example(_system(suite), text, expected, json.dumps(expected), "leak")
    problems = gen.check_leaks(prof, [leaked])
    assert problems, text
    assert any(kind in p for p in problems), problems
    # Hidden among clean examples, it is still found, and only it.
    clean = gen.forge(suite, 3, 40, 5, prof, _system(suite))["train"]
    assert gen.check_leaks(prof, clean) == []
    mixed = gen.check_leaks(prof, [*clean[:20], leaked, *clean[20:]])
    assert mixed == problems


def test_main_fails_when_the_data_leaks(
    gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    honest = gen.GENERATORS["transaction_category"]
    copied = _test_user("transaction_category", 5)

    def leaky(*args: Any) -> list[Any]:
        examples = honest(*args)
        examples[0] = dataclasses.replace(examples[0], user=copied)
        return list(examples)

    monkeypatch.setitem(gen.GENERATORS, "transaction_category", leaky)
    assert gen.main(["--out", str(tmp_path), "--seed", "0", "--train", "24",
                     "--validation", "12"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "leak check FAILED" in err and copied[:30] in err


def test_same_seed_same_bytes(
    gen: ModuleType, written: Path, built: tuple[dict[str, str], dict[str, Any], list[str]]
) -> None:
    # Two separate seed-0 runs (the command and build()) wrote the same bytes...
    files, _, _ = built
    assert all((written / name).read_bytes() == text.encode() for name, text in files.items())
    # ...and another seed writes other data.
    other, _, problems = gen.build(1, 600, 60)
    assert all(files[name] != other[name] for name in files)
    assert problems == []


def test_committed_data_is_the_seed_0_output(written: Path) -> None:
    names = sorted(p.name for p in written.iterdir())
    assert sorted(p.name for p in COMMITTED.glob("*.jsonl")) == names
    for name in names:
        committed = (COMMITTED / name).read_bytes()
        assert len(committed) < 1024 * 1024, name
        assert committed == (written / name).read_bytes(), (
            f"{name} is stale: rerun python benchmarks/forge_data.py --out benchmarks/forge_data"
            " --seed 0")
