"""Matching, feature by feature: normalisation, transliteration, order, initials, evidence."""

from __future__ import annotations

import pytest

from intramuros.kyc.index import ScreeningIndex
from intramuros.kyc.match import Prepared, Subject, score
from intramuros.kyc.model import Entity, Identifier, Name
from intramuros.kyc.normalize import country_code, fold, name_form, parse_dates, phonetic


def person(name: str, *aliases: str, dob: list[str] | None = None,
           nat: list[str] | None = None, gender: str | None = None,
           ids: list[Identifier] | None = None, source_id: str = "1") -> Entity:  # fmt: skip
    return Entity("t", source_id, "person", [Name(name), *[Name(a, "strong") for a in aliases]],
                  birth_dates=dob or [], nationalities=nat or [], gender=gender,
                  identifiers=ids or [])  # fmt: skip


def s(name: str, entity: Entity, **kw: object) -> float:
    return score(Subject(name, **kw), Prepared.of(entity)).score  # type: ignore[arg-type]


PUTIN = person("PUTIN, Vladimir Vladimirovich", dob=["1952-10-07"], nat=["RU"], gender="male")


def test_fold_and_legal_forms() -> None:
    assert fold("  Müller-Lüdenscheidt, José  ") == "muller ludenscheidt jose"
    assert fold("S.A. de C.V.") == "sa de cv"
    form = name_form("ANGLO-CARIBBEAN CO., LTD.", organisation=True)
    assert form.tokens == ("anglo", "caribbean") and form.legal_forms == ("co", "ltd")
    # a person's name keeps "Co" and the like
    assert name_form("Co Ltd", organisation=False).tokens == ("co", "ltd")


def test_transliteration_scripts() -> None:
    assert fold("Владимир Путин") == "vladimir putin"
    assert fold("Βλαδίμηρος Πούτιν") == "vladimiros putin"
    assert fold("习近平") == "xi jin ping"
    assert name_form("محمد").script == "abjad" and name_form("משה").script == "abjad"
    assert s("Владимир Путин", PUTIN) > 0.9
    assert s("Βλαντιμίρ Πούτιν", PUTIN) > 0.85
    assert s("فلاديمير بوتين", PUTIN) > 0.75
    assert s("Xi Jinping", person("习近平")) > 0.9
    assert s("משה כהן", person("COHEN, Moshe")) > 0.82  # Hebrew: consonants only
    assert s("משה כהן", person("COHEN, Miriam")) < 0.82


def test_phonetic_keys() -> None:
    assert phonetic("vladimir") == phonetic("wladimir")
    assert phonetic("usama") == phonetic("osama")
    assert phonetic("mohammed") == phonetic("muhamad")
    assert s("Wladimir Putin", PUTIN) > 0.88


def test_order_initials_and_middle_names() -> None:
    assert s("Vladimir Vladimirovich Putin", PUTIN) == pytest.approx(1.0)
    assert s("Putin Vladimir Vladimirovich", PUTIN) == pytest.approx(1.0)
    dropped = s("Vladimir Putin", PUTIN)
    assert 0.86 < dropped < 1.0  # the missing patronymic costs a little
    initial = s("V. V. Putin", PUTIN)
    assert 0.8 < initial < dropped
    assert s("Vladimir Tyurin", PUTIN) < 0.7  # another surname is not a typo
    assert s("Vladimir Putni", PUTIN) > 0.86  # a typo is


def test_dob_evidence() -> None:
    base = s("Vladimir Putin", PUTIN)
    exact = s("Vladimir Putin", PUTIN, birth_date="1952-10-07")
    year = s("Vladimir Putin", PUTIN, birth_date="1952")
    near = s("Vladimir Putin", PUTIN, birth_date="1953-01-01")
    wrong = s("Vladimir Putin", PUTIN, birth_date="1980-01-01")
    assert exact > year > base > near > wrong
    assert base - wrong > 0.1


def test_country_gender_and_type_evidence() -> None:
    base = s("Vladimir Putin", PUTIN)
    assert s("Vladimir Putin", PUTIN, nationality="Russia") > base
    assert s("Vladimir Putin", PUTIN, nationality="RU") > base
    assert s("Vladimir Putin", PUTIN, nationality="France") < base
    assert s("Vladimir Putin", PUTIN, gender="female") < base
    assert s("Vladimir Putin", PUTIN, schema="vessel") < base - 0.2
    assert country_code("Korea, North") == "KP" and country_code("Iran") == "IR"


def test_identifiers_are_decisive() -> None:
    vessel = Entity("t", "v1", "vessel", [Name("ADRIAN DARYA 1")],
                    identifiers=[Identifier("imo", "9116412")])  # fmt: skip
    weak_name = score(Subject("Grace 1", schema="vessel",
                              identifiers=(Identifier("imo", "IMO 9116412"),)),
                      Prepared.of(vessel))
    assert weak_name.score >= 0.99
    assert any(f["feature"] == "identifier_match" for f in weak_name.features)
    other = Entity("t", "p", "person", [Name("John Smith")],
                   identifiers=[Identifier("passport", "X1234567")])  # fmt: skip
    same = s("John Smith", other, identifiers=(Identifier("passport", "X1234567"),))
    different = s("John Smith", other, identifiers=(Identifier("passport", "Y7654321"),))
    assert same >= 0.99 and s("John Smith", other) > different


def test_numbers_must_match_exactly() -> None:
    vessel = Entity("t", "v", "vessel", [Name("VALFAJR 7")])
    assert s("VALFAJR 7", vessel) == pytest.approx(1.0)
    assert s("VALFAJR 8", vessel, schema="vessel") < 0.7


def test_explanation_names_pair_features_weights() -> None:
    ex = score(Subject("Putin Vladimir", birth_date="1952-10-07"), Prepared.of(PUTIN)).to_dict()
    assert ex["name"]["listed"] == "PUTIN, Vladimir Vladimirovich"
    assert {(p["query"], p["listed"], p["how"]) for p in ex["name"]["pairs"]} == {
        ("putin", "putin", "exact"), ("vladimir", "vladimir", "exact")}
    assert ex["name"]["unmatched_listed"] == ["vladimirovich"]
    assert ex["features"] == [{"feature": "dob_exact", "weight": 0.05, "query": "1952-10-07",
                               "listed": ["1952-10-07"]}]  # fmt: skip
    assert 0.0 <= ex["score"] <= 1.0


def test_weak_alias_counts_less() -> None:
    e = Entity("t", "w", "person", [Name("Abdul Rahman Example"), Name("Abu Example", "weak")])
    ex = score(Subject("Abu Example"), Prepared.of(e))
    assert ex.name.quality == "weak" and ex.score < 1.0


def test_dates_parsing() -> None:
    assert parse_dates("20 Dec 1977") == ["1977-12-20"]
    assert parse_dates("circa 1960") == ["1960"]
    assert parse_dates("Dec 1977") == ["1977-12"]
    assert parse_dates("1960 to 1962") == ["1960", "1961", "1962"]
    assert parse_dates("unknown") == []


def test_index_blocks_and_ranks() -> None:
    entities = [person(f"Person{i} Example{i}", source_id=str(i)) for i in range(2000)]
    entities.append(person("PUTIN, Vladimir Vladimirovich", source_id="putin"))
    index = ScreeningIndex.build(entities, {"t": (1, len(entities))})
    subject = Subject("Wladimir Putin")
    candidates = index.candidates(subject, name_form("Wladimir Putin"))
    assert 0 < len(candidates) <= 30  # never the whole list
    hits = index.screen(subject)
    assert hits[0].entity.source_id == "putin" and hits[0].score > 0.86
    assert index.screen(Subject("Nobody Atall")) == []
