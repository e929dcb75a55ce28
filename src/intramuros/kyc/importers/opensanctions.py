"""OpenSanctions exports: FollowTheMoney JSON lines and Senzing JSON lines.

**FollowTheMoney** (``entities.ftm.json``): one object a line with ``id``,
``schema`` (Person, Organization, Company, LegalEntity, Vessel, Airplane...),
``caption`` and ``properties`` (every value a list): name, alias, weakAlias,
previousName, birthDate, nationality, citizenship, country, gender,
passportNumber, idNumber, taxNumber, registrationNumber, imoNumber, address,
topics, program. Entities of other schemata (Sanction, Address, relations) are
skipped silently: they are not parties.

**Senzing** (``senzing.json``): one record a line with ``RECORD_ID``,
``RECORD_TYPE`` (PERSON, ORGANIZATION), ``NAMES`` (NAME_TYPE PRIMARY/ALIAS with
NAME_FULL, NAME_ORG or NAME_FIRST/NAME_MIDDLE/NAME_LAST), ``DATES``
(DATE_OF_BIRTH), ``COUNTRIES`` (NATIONALITY, CITIZENSHIP, REGISTRATION_COUNTRY),
``ADDRESSES`` (ADDR_FULL), ``IDENTIFIERS`` (PASSPORT_NUMBER, NATIONAL_ID_NUMBER,
TAX_ID_NUMBER, OTHER_ID_TYPE/OTHER_ID_NUMBER...), ``RISKS`` (TOPIC), ``GENDER``
and ``LAST_CHANGE``.

OpenSanctions data is CC BY-NC 4.0: commercial users need their own licence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from intramuros.kyc.importers.base import ImportResult, RowError, read_text
from intramuros.kyc.model import Entity, Identifier, add_name, add_unique, is_iso_date
from intramuros.kyc.normalize import country_code

_FTM_SCHEMA = {
    "Person": "person", "Organization": "organization", "Company": "organization",
    "LegalEntity": "organization", "PublicBody": "organization", "Vessel": "vessel",
    "Airplane": "aircraft",
}  # fmt: skip
_FTM_IDS = {"passportNumber": "passport", "idNumber": "national id", "taxNumber": "tax id",
            "registrationNumber": "registration", "imoNumber": "imo", "mmsi": "mmsi",
            "swiftBic": "swift/bic", "innCode": "tax id", "ogrnCode": "registration"}  # fmt: skip
_SENZING_IDS = (("PASSPORT_NUMBER", "passport"), ("NATIONAL_ID_NUMBER", "national id"),
                ("TAX_ID_NUMBER", "tax id"))  # fmt: skip


def _lines(path: Path, result: ImportResult) -> list[tuple[int, dict[str, Any]]]:
    out: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(read_text(path, result).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            result.errors.append(RowError(str(path), number, f"not JSON: {exc.msg}"))
            continue
        if not isinstance(record, dict):
            result.errors.append(RowError(str(path), number, "not a JSON object"))
            continue
        out.append((number, record))
    return out


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v.strip()]
    return []


def _date(value: str) -> str | None:
    value = value.strip()[:10]
    return value if is_iso_date(value) else None


def parse_ftm(path: Path, list_name: str) -> ImportResult:
    """Read FollowTheMoney JSON lines."""
    result = ImportResult()
    for number, record in _lines(path, result):
        schema = record.get("schema")
        props = record.get("properties")
        ident = record.get("id")
        if not isinstance(schema, str) or not isinstance(props, dict) or not isinstance(ident, str):
            result.errors.append(RowError(str(path), number, "needs id, schema and properties"))
            continue
        if schema not in _FTM_SCHEMA:
            continue
        entity = Entity(list_name=list_name, source_id=ident, schema=_FTM_SCHEMA[schema])
        for field_name, quality in (("name", "primary"), ("alias", "strong"),
                                    ("previousName", "strong"), ("weakAlias", "weak")):
            for value in _strings(props.get(field_name)):
                add_name(entity, value, quality)  # type: ignore[arg-type]
        if not entity.names:
            caption = record.get("caption")
            if isinstance(caption, str):
                add_name(entity, caption, "primary")
        if not entity.names:
            result.errors.append(RowError(str(path), number, f"entity {ident} has no name"))
            continue
        for value in _strings(props.get("birthDate")):
            add_unique(entity.birth_dates, _date(value))
        for key in ("nationality", "citizenship"):
            for value in _strings(props.get(key)):
                add_unique(entity.nationalities, country_code(value))
        for key in ("country", "jurisdiction", "flag"):
            for value in _strings(props.get(key)):
                add_unique(entity.countries, country_code(value))
        for value in _strings(props.get("address")):
            add_unique(entity.addresses, value)
        for key, kind in _FTM_IDS.items():
            for value in _strings(props.get(key)):
                entity.identifiers.append(Identifier(kind, value))
        for value in _strings(props.get("topics")):
            add_unique(entity.topics, value)
        for value in _strings(props.get("program")) + _strings(props.get("programId")):
            add_unique(entity.programs, value)
        genders = _strings(props.get("gender"))
        entity.gender = genders[0].lower() if genders else None
        first = record.get("first_seen")
        entity.listed_on = _date(first) if isinstance(first, str) else None
        result.entities.append(entity)
    return result


def _senzing_name(item: dict[str, Any]) -> str | None:
    for key in ("NAME_FULL", "NAME_ORG"):
        if isinstance(item.get(key), str) and item[key].strip():
            return str(item[key])
    parts = [item.get(k) for k in ("NAME_FIRST", "NAME_MIDDLE", "NAME_LAST")]
    joined = " ".join(p for p in parts if isinstance(p, str) and p.strip())
    return joined or None


def parse_senzing(path: Path, list_name: str) -> ImportResult:
    """Read Senzing JSON lines."""
    result = ImportResult()
    latest = ""
    for number, record in _lines(path, result):
        ident = record.get("RECORD_ID")
        if not isinstance(ident, str) or not ident.strip():
            result.errors.append(RowError(str(path), number, "no RECORD_ID"))
            continue
        kind = str(record.get("RECORD_TYPE") or "").upper()
        schema = {"PERSON": "person", "ORGANIZATION": "organization"}.get(kind, "unknown")
        entity = Entity(list_name=list_name, source_id=ident, schema=schema)
        names = record.get("NAMES")
        for item in names if isinstance(names, list) else []:
            if isinstance(item, dict):
                primary = str(item.get("NAME_TYPE", "")).upper() == "PRIMARY"
                add_name(entity, _senzing_name(item), "primary" if primary else "strong")
        if not entity.names:
            result.errors.append(RowError(str(path), number, f"record {ident} has no name"))
            continue
        entity.names.sort(key=lambda n: n.quality != "primary")
        for item in _dicts(record.get("DATES")):
            for value in _strings(item.get("DATE_OF_BIRTH")):
                add_unique(entity.birth_dates, _date(value))
        for item in _dicts(record.get("COUNTRIES")):
            for key in ("NATIONALITY", "CITIZENSHIP"):
                add_unique(entity.nationalities, country_code(item.get(key)))
            add_unique(entity.countries, country_code(item.get("REGISTRATION_COUNTRY")))
        for item in _dicts(record.get("ADDRESSES")):
            add_unique(entity.addresses, item.get("ADDR_FULL"))
        for item in _dicts(record.get("IDENTIFIERS")):
            for key, label in _SENZING_IDS:
                if isinstance(item.get(key), str):
                    entity.identifiers.append(Identifier(label, item[key]))
        for item in _dicts(record.get("RISKS")):
            add_unique(entity.topics, item.get("TOPIC"))
        gender = record.get("GENDER")
        entity.gender = gender.lower() if isinstance(gender, str) and gender else None
        changed = record.get("LAST_CHANGE")
        if isinstance(changed, str):
            latest = max(latest, changed[:10])
        result.entities.append(entity)
    result.list_date = latest if is_iso_date(latest) else None
    return result


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
