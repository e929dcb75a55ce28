"""OFAC SDN list, legacy CSV (``sdn.csv``, ``alt.csv``, ``add.csv``, ``sdn_comments.csv``).

The files have no header. As OFAC documents them ("SDN CSV file format"):

- ``sdn.csv``: ent_num, SDN_Name, SDN_Type (``individual``, ``vessel``,
  ``aircraft``, or ``-0-`` for entities), Program (``]``-``[`` separated),
  Title, Call_Sign, Vess_type, Tonnage, GRT, Vess_flag, Vess_owner, Remarks;
- ``alt.csv``: ent_num, alt_num, alt_type (aka, fka, nka), alt_name, alt_remarks;
- ``add.csv``: ent_num, add_num, address, city/state/postal code, country, add_remarks;
- ``sdn_comments.csv``: ent_num, the rest of a Remarks field too long for sdn.csv.

``-0-`` means empty. The Remarks hold dates of birth, nationalities, gender and
identification numbers as ``; ``-separated phrases (``DOB 20 Dec 1977;
nationality Iran; Passport A123 (Iran)``); quoted a.k.a.s there are the ones
OFAC calls weak. The path may be the folder or ``sdn.csv`` itself; the other
files are read from beside it when present.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from intramuros.kyc.importers.base import ImportResult, RowError, clean, file_date, read_text
from intramuros.kyc.model import Entity, Identifier, add_name, add_unique
from intramuros.kyc.normalize import country_code, parse_dates

_TYPES = {"individual": "person", "vessel": "vessel", "aircraft": "aircraft"}
# Identification phrases in the remarks, longest first so "National ID No." wins over "ID".
_ID_KINDS = sorted([
    "Passport", "National ID No.", "Cedula No.", "NIT #", "C.U.R.P.", "Registration Number",
    "R.F.C.", "RUC #", "Tax ID No.", "Registration ID", "Identification Number",
    "Folio Mercantil No.", "Matricula Mercantil No", "Company Number",
    "Commercial Registry Number", "V.A.T. Number", "Trade License No.", "RIF #",
    "Electoral Registry No.", "Driver's License No.", "Business Registration Number", "D.N.I.",
    "SSN", "Personal ID Card", "MMSI", "SWIFT/BIC", "Aircraft Tail Number",
    "Aircraft Manufacturer's Serial Number (MSN)", "Public Registration Number",
    "Immigration No.", "Birth Certificate Number", "Residency Number", "Travel Document Number",
    "Legal Entity Number", "Unified Social Credit Code (USCC)",
    "Vessel Registration Identification",
    "Tax ID", "Other Vessel Call Sign", "Diplomatic Passport", "Citizen's Card Number",
], key=len, reverse=True)  # fmt: skip
_QUOTED_AKA = re.compile(r"a\.k\.a\.,?\s+'([^']+)'")
_TRAILER = re.compile(r"\s+(?:expires|issued|Expiration|Issue Date|valid).*$", re.IGNORECASE)


def _locate(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        return path, path / "sdn.csv"
    return path.parent, path


def _rows(path: Path, result: ImportResult, width: int) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a headerless CSV; rows of the wrong width are reported."""
    text = read_text(path, result)
    reader = csv.reader(io.StringIO(text))
    out: list[tuple[int, list[str]]] = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.errors.append(RowError(str(path), start, f"unreadable CSV: {exc}"))
            continue
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != width:
            message = f"expected {width} fields, found {len(row)}"
            result.errors.append(RowError(str(path), start, message))
            continue
        if not row[0].strip().isdigit():
            result.errors.append(RowError(str(path), start, f"ent_num {row[0]!r} is not a number"))
            continue
        out.append((start, row))
    return out


def parse(path: Path, list_name: str) -> ImportResult:
    """Read the SDN files at ``path`` (folder or sdn.csv)."""
    result = ImportResult()
    folder, sdn = _locate(path)
    if not sdn.is_file():
        result.errors.append(RowError(str(sdn), 0, "sdn.csv not found"))
        return result
    result.list_date = file_date(sdn)
    by_id: dict[str, Entity] = {}
    remarks: dict[str, str] = {}
    for line, row in _rows(sdn, result, 12):
        ent, name = row[0].strip(), clean(row[1])
        if not name:
            result.errors.append(RowError(str(sdn), line, "empty SDN_Name"))
            continue
        if ent in by_id:
            result.errors.append(RowError(str(sdn), line, f"duplicate ent_num {ent}"))
            continue
        kind = _TYPES.get((clean(row[2]) or "").lower(), "organization")
        entity = Entity(list_name=list_name, source_id=ent, schema=kind)
        add_name(entity, name, "primary")
        entity.programs = [p.strip() for p in re.split(r"\]\s*\[", clean(row[3]) or "")
                           if p.strip()]  # fmt: skip
        if clean(row[5]):
            entity.identifiers.append(Identifier("call_sign", clean(row[5]) or ""))
        flag = clean(row[9])
        if flag:
            add_unique(entity.countries, country_code(flag))
        by_id[ent] = entity
        remarks[ent] = clean(row[11]) or ""
    comments = folder / "sdn_comments.csv"
    if comments.is_file():
        for line, row in _rows(comments, result, 2):
            ent = row[0].strip()
            if ent not in by_id:
                result.errors.append(RowError(str(comments), line, f"unknown ent_num {ent}"))
                continue
            remarks[ent] = remarks.get(ent, "") + (row[1] or "")
    alt = folder / "alt.csv"
    if alt.is_file():
        for line, row in _rows(alt, result, 5):
            ent, alias = row[0].strip(), clean(row[3])
            if ent not in by_id:
                result.errors.append(RowError(str(alt), line, f"unknown ent_num {ent}"))
                continue
            if not alias:
                result.errors.append(RowError(str(alt), line, "empty alt_name"))
                continue
            add_name(by_id[ent], alias, "strong")
    add = folder / "add.csv"
    if add.is_file():
        for line, row in _rows(add, result, 6):
            ent = row[0].strip()
            if ent not in by_id:
                result.errors.append(RowError(str(add), line, f"unknown ent_num {ent}"))
                continue
            parts = [p for p in (clean(row[2]), clean(row[3]), clean(row[4])) if p]
            if parts:
                add_unique(by_id[ent].addresses, ", ".join(parts))
            add_unique(by_id[ent].countries, country_code(clean(row[4])))
    for ent, entity in by_id.items():
        _apply_remarks(entity, remarks.get(ent, ""))
    result.entities = list(by_id.values())
    return result


def _apply_remarks(entity: Entity, text: str) -> None:
    """Dates of birth, nationalities, gender, identifiers and weak a.k.a.s from Remarks."""
    if not text:
        return
    entity.remarks = text
    for alias in _QUOTED_AKA.findall(text):
        add_name(entity, alias, "weak")
    for raw in text.split(";"):
        part = raw.strip().rstrip(".").strip()
        bare = part[5:] if part.startswith("alt. ") else part
        if bare.startswith("DOB "):
            for date in parse_dates(bare[4:]):
                add_unique(entity.birth_dates, date)
        elif bare.startswith(("nationality ", "citizen ")):
            add_unique(entity.nationalities, country_code(bare.split(" ", 1)[1]))
        elif bare.startswith("Gender "):
            entity.gender = bare[7:].strip().lower() or None
        else:
            _identifier(entity, bare)


def _identifier(entity: Entity, phrase: str) -> None:
    for kind in _ID_KINDS:
        if not phrase.startswith(kind + " "):
            continue
        value = _TRAILER.sub("", phrase[len(kind) + 1:]).strip()
        country = None
        m = re.match(r"^(.*?)\s*\(([^)]*)\)\s*$", value)
        if m:
            value, country = m.group(1).strip(), country_code(m.group(2))
        label = kind.lower().rstrip(".#").strip()
        if kind == "Vessel Registration Identification":
            label = "imo"
            value = re.sub(r"^IMO\s*", "", value)
        if value:
            entity.identifiers.append(Identifier(label, value, country))
        return
