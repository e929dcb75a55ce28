"""List importers on the real samples (counts checked independently) and on malformed files."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from intramuros.kyc.errors import MalformedList
from intramuros.kyc.importers import parse_list

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "sanctions"
FIXTURES = Path(__file__).parent / "fixtures" / "kyc"


def test_ofac_sample_counts_and_fields() -> None:
    sdn = DATA / "ofac" / "sdn.csv"
    # counted independently: distinct ent_num of 12-field rows, aliases per alt.csv row
    with sdn.open(encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh) if len(r) == 12]
    expected = {r[0] for r in rows}
    with (DATA / "ofac" / "alt.csv").open(encoding="utf-8") as fh:
        alt_rows = [r for r in csv.reader(fh) if len(r) == 5]
    result = parse_list(DATA / "ofac", "ofac", "ofac")
    assert {e.source_id for e in result.entities} == expected
    assert len(result.entities) == len(expected)
    assert result.errors == []
    assert len(result.files) == 4 and len(result.sha256) == 64
    strong = sum(1 for e in result.entities for n in e.names if n.quality == "strong")
    assert strong <= len(alt_rows) and strong > 0.95 * len(alt_rows)  # duplicates collapse
    by_id = {e.source_id: e for e in result.entities}
    karner = by_id["16814"]  # KARNER, Matevz: DOB 19 Jul 1978; Passport P01104005 (Slovenia)
    assert karner.schema == "person"
    assert karner.birth_dates == ["1978-07-19"]
    assert karner.nationalities == ["SI"]
    assert any(i.kind == "passport" and i.value == "P01104005" for i in karner.identifiers)
    assert by_id["15741"].schema == "aircraft"
    types = {r[0]: r[2].strip() for r in rows}
    vessels = {k for k, v in types.items() if v == "vessel"}
    assert {e.source_id for e in result.entities if e.schema == "vessel"} == vessels
    imo = [e for e in result.entities if any(i.kind == "imo" for i in e.identifiers)]
    values = [i.value for e in imo for i in e.identifiers if i.kind == "imo"]
    # "IMO 1234567" is read as the bare number (one OFAC entry has a 5-digit oddity)
    seven = sum(bool(re.fullmatch(r"\d{7}", v)) for v in values)
    assert len(values) > 300 and seven >= len(values) - 2


def test_un_sample_counts() -> None:
    path = DATA / "un" / "UN_consolidated.xml"
    text = path.read_text(encoding="utf-8")
    ids = set(re.findall(r"<DATAID>(\d+)</DATAID>", text))
    individuals = len(re.findall(r"<INDIVIDUAL>", text))
    result = parse_list(path, "un", "un")
    assert {e.source_id for e in result.entities} == ids
    assert sum(1 for e in result.entities if e.schema == "person") == individuals
    assert result.list_date == "2026-02-27"
    badege = next(e for e in result.entities if e.source_id == "6907993")
    assert badege.caption == "ERIC BADEGE" and badege.birth_dates == ["1971"]
    assert badege.nationalities == ["CD"] and "DRC" in badege.programs


def test_senzing_sample_counts() -> None:
    path = DATA / "opensanctions" / "us_congress_senzing.json"
    ids = {json.loads(line)["RECORD_ID"] for line in path.read_text().splitlines() if line.strip()}
    result = parse_list(path, "opensanctions-senzing", "us_congress")
    assert {e.source_id for e in result.entities} == ids
    first = result.entities[0]
    assert first.caption == "Jennifer L. McClellan" and first.birth_dates == ["1972"]
    assert first.nationalities == ["US"] and "role.pep" in first.topics


def test_ofac_malformed_rows_reported_with_lines(tmp_path: Path) -> None:
    folder = tmp_path / "ofac"
    folder.mkdir()
    lines = (DATA / "ofac" / "sdn.csv").read_text(encoding="utf-8").splitlines()[:5]
    lines.insert(2, '999999,"SHORT ROW",-0-')  # line 3: too few fields
    lines.insert(4, 'abc,"X",-0- ,"CUBA",-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ')  # line 5
    lines.append('123456789,"",-0- ,"CUBA",-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ')  # line 8
    (folder / "sdn.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "alt.csv").write_text('36,12,"aka","AERO-CARIBBEAN",-0- \n424242,1,"aka","X",-0- \n')
    result = parse_list(folder, "ofac", "t")
    assert len(result.entities) == 5
    found = {(Path(e.file).name, e.line) for e in result.errors}
    assert found == {("sdn.csv", 3), ("sdn.csv", 5), ("sdn.csv", 8), ("alt.csv", 2)}
    assert any("unknown ent_num 424242" in e.message for e in result.errors)


def test_un_malformed(tmp_path: Path) -> None:
    broken = tmp_path / "un.xml"
    broken.write_text("<CONSOLIDATED_LIST><INDIVIDUALS><INDIVIDUAL>\n<DATAID>1</DAT")
    with pytest.raises(MalformedList, match="not well-formed"):
        parse_list(broken, "un", "un")
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><CONSOLIDATED_LIST/>')
    with pytest.raises(MalformedList, match="DTD"):
        parse_list(bomb, "un", "un")
    partial = tmp_path / "partial.xml"
    partial.write_text("<CONSOLIDATED_LIST>\n<INDIVIDUALS>\n<INDIVIDUAL><DATAID>1</DATAID>"
                       "<FIRST_NAME>ALPHA</FIRST_NAME></INDIVIDUAL>\n"
                       "<INDIVIDUAL><FIRST_NAME>NOID</FIRST_NAME></INDIVIDUAL>\n"
                       "</INDIVIDUALS>\n</CONSOLIDATED_LIST>\n")  # fmt: skip
    result = parse_list(partial, "un", "un")
    assert [e.source_id for e in result.entities] == ["1"]
    assert [(e.line, e.message) for e in result.errors] == [(4, "entry without DATAID")]
    with pytest.raises(MalformedList, match="CONSOLIDATED_LIST"):
        parse_list(FIXTURES / "eu_fsf_sample.xml", "un", "un")


def test_eu_fixture() -> None:
    result = parse_list(FIXTURES / "eu_fsf_sample.xml", "eu", "eu")
    assert [e.source_id for e in result.entities] == ["9001", "9002"]
    assert [(e.line, "without a name" in e.message) for e in result.errors] == [(23, True)]
    ivan, org = result.entities
    assert ivan.schema == "person" and org.schema == "organization"
    assert [n.quality for n in ivan.names] == ["primary", "strong", "weak"]
    assert ivan.birth_dates == ["1961-04-12"] and ivan.nationalities == ["RU"]
    assert ivan.identifiers[0].value == "7100123456" and ivan.gender == "male"
    assert result.list_date == "2026-11-30" and "UKR" in ivan.programs


def test_ftm_fixture() -> None:
    result = parse_list(FIXTURES / "ftm_sample.json", "opensanctions-ftm", "os")
    assert [e.source_id for e in result.entities] == ["t-person-1", "t-vessel-1"]
    assert [e.line for e in result.errors] == [4, 5]
    person, vessel = result.entities
    assert person.birth_dates == ["1975-09-01"] and person.topics == ["sanction"]
    assert vessel.schema == "vessel" and vessel.identifiers[0].key() == "9876543"


def test_senzing_malformed(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"RECORD_ID": "a", "RECORD_TYPE": "PERSON", "NAMES": '
                    '[{"NAME_TYPE": "PRIMARY", "NAME_FULL": "Ann Example"}]}\n'
                    '[1, 2]\n{"RECORD_TYPE": "PERSON"}\n{"RECORD_ID": "b", "NAMES": []}\n{bad\n')
    result = parse_list(path, "opensanctions-senzing", "s")
    assert [e.source_id for e in result.entities] == ["a"]
    assert sorted(e.line for e in result.errors) == [2, 3, 4, 5]


def test_inhouse_csv(tmp_path: Path) -> None:
    path = tmp_path / "inhouse.csv"
    path.write_text(
        "id,name,aliases,type,birth_dates,nationalities,identifiers,gender\n"
        "c1,Jane Example,J. Example|Джейн Экзампл,person,1980-02-03,France,"
        "passport:12AB34567,female\n"
        "c2,,,person,,,,\n"
        "c3,Bad Date,,person,03/02/1980,,,\n"
        "c4,Bad Type,,spaceship,,,,\n"
        "c5,Acme Shipping Ltd,,organization,,,registration:HRB 123,\n"
        "c6,Too Many,,person,,,,,extra\n",
        encoding="utf-8",
    )
    result = parse_list(path, "csv", "inhouse")
    assert [e.source_id for e in result.entities] == ["c1", "c5"]
    assert [e.line for e in result.errors] == [3, 4, 5, 7]
    jane = result.entities[0]
    assert jane.nationalities == ["FR"] and len(jane.names) == 3
    no_header = tmp_path / "nohead.csv"
    no_header.write_text("a,b\n1,2\n")
    with pytest.raises(MalformedList, match="header lacks"):
        parse_list(no_header, "csv", "x")


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(MalformedList, match="No such file"):
        parse_list(tmp_path / "missing.csv", "csv", "x")
    with pytest.raises(MalformedList, match="Unknown list format"):
        parse_list(FIXTURES / "ftm_sample.json", "pdf", "x")
    binary = tmp_path / "sdn.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(MalformedList, match="No usable entry"):
        parse_list(binary, "ofac", "x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MalformedList, match=r"sdn\.csv not found"):
        parse_list(empty, "ofac", "x")
    shutil.copy(FIXTURES / "ftm_sample.json", tmp_path / "f.json")
    with pytest.raises(MalformedList):
        parse_list(tmp_path / "f.json", "opensanctions-senzing", "x")
