"""UN Security Council consolidated list (XML).

``CONSOLIDATED_LIST`` (attribute ``dateGenerated``) holds ``INDIVIDUALS`` and
``ENTITIES``. An ``INDIVIDUAL`` has DATAID, FIRST_NAME .. FOURTH_NAME,
UN_LIST_TYPE (the regime), REFERENCE_NUMBER, LISTED_ON, GENDER,
NATIONALITY/VALUE, NAME_ORIGINAL_SCRIPT, INDIVIDUAL_ALIAS (QUALITY ``Good`` or
``Low``, ALIAS_NAME), INDIVIDUAL_ADDRESS (STREET, CITY, STATE_PROVINCE, COUNTRY),
INDIVIDUAL_DATE_OF_BIRTH (TYPE_OF_DATE EXACT/APPROXIMATELY/BETWEEN with DATE,
YEAR or FROM_YEAR/TO_YEAR) and INDIVIDUAL_DOCUMENT (TYPE_OF_DOCUMENT, NUMBER,
ISSUING_COUNTRY). An ``ENTITY`` has the same header, ENTITY_ALIAS and
ENTITY_ADDRESS. Line numbers of skipped entries come from the position of
their opening tag in the file.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from intramuros.kyc.errors import MalformedList
from intramuros.kyc.importers.base import ImportResult, RowError, read_xml
from intramuros.kyc.model import Entity, Identifier, add_name, add_unique, is_iso_date
from intramuros.kyc.normalize import country_code, parse_dates

_OPENING = re.compile(r"<(INDIVIDUAL|ENTITY)[\s>]")


def _text(node: ET.Element | None, tag: str) -> str | None:
    if node is None:
        return None
    child = node.find(tag)
    if child is None or child.text is None:
        return None
    value = " ".join(child.text.split())
    return value or None


def parse(path: Path, list_name: str) -> ImportResult:
    """Read a UN consolidated list XML file."""
    result = ImportResult()
    text, root = read_xml(path, result)
    if root.tag != "CONSOLIDATED_LIST":
        raise MalformedList(f"{path.name}: root element is {root.tag}, not CONSOLIDATED_LIST.",
                            param="format")  # fmt: skip
    generated = root.get("dateGenerated", "")[:10]
    result.list_date = generated if is_iso_date(generated) else None
    lines = [text.count("\n", 0, m.start()) + 1 for m in _OPENING.finditer(text)]
    nodes = [*root.iterfind("INDIVIDUALS/INDIVIDUAL"), *root.iterfind("ENTITIES/ENTITY")]
    # document order: individuals come first in the file, as in the iteration
    for position, node in enumerate(nodes):
        line = lines[position] if position < len(lines) else 0
        entity = _entry(node, list_name)
        if isinstance(entity, str):
            result.errors.append(RowError(str(path), line, entity))
        else:
            result.entities.append(entity)
    return result


def _entry(node: ET.Element, list_name: str) -> Entity | str:
    person = node.tag == "INDIVIDUAL"
    dataid = _text(node, "DATAID")
    if not dataid:
        return "entry without DATAID"
    name = " ".join(p for p in (_text(node, t) for t in
                                ("FIRST_NAME", "SECOND_NAME", "THIRD_NAME", "FOURTH_NAME")) if p)
    if not name:
        return f"entry {dataid} without a name"
    entity = Entity(list_name=list_name, source_id=dataid,
                    schema="person" if person else "organization")  # fmt: skip
    add_name(entity, name, "primary")
    add_name(entity, _text(node, "NAME_ORIGINAL_SCRIPT"), "strong")
    prefix = "INDIVIDUAL" if person else "ENTITY"
    for alias in node.iterfind(f"{prefix}_ALIAS"):
        quality = (_text(alias, "QUALITY") or "").lower()
        add_name(entity, _text(alias, "ALIAS_NAME"), "weak" if quality == "low" else "strong")
    add_unique(entity.programs, _text(node, "UN_LIST_TYPE"))
    entity.listed_on = _text(node, "LISTED_ON")
    gender = _text(node, "GENDER")
    entity.gender = gender.lower() if gender else None
    nationality = node.find("NATIONALITY")
    if nationality is not None:
        for value in nationality.iterfind("VALUE"):
            if value.text and value.text.strip():
                add_unique(entity.nationalities, country_code(value.text))
    for address in node.iterfind(f"{prefix}_ADDRESS"):
        parts = [p for p in (_text(address, t) for t in
                             ("STREET", "CITY", "STATE_PROVINCE", "COUNTRY")) if p]  # fmt: skip
        if parts:
            add_unique(entity.addresses, ", ".join(parts))
        add_unique(entity.countries, country_code(_text(address, "COUNTRY")))
    for dob in node.iterfind("INDIVIDUAL_DATE_OF_BIRTH"):
        for tag in ("DATE", "YEAR"):
            raw = _text(dob, tag)
            if raw:
                for date in parse_dates(raw):
                    add_unique(entity.birth_dates, date)
        first, last = _text(dob, "FROM_YEAR"), _text(dob, "TO_YEAR")
        if first and last and first.isdigit() and last.isdigit():
            for date in parse_dates(f"{first} to {last}"):
                add_unique(entity.birth_dates, date)
    for doc in node.iterfind("INDIVIDUAL_DOCUMENT"):
        number = _text(doc, "NUMBER")
        if number:
            kind = (_text(doc, "TYPE_OF_DOCUMENT") or "document").lower()
            country = _text(doc, "ISSUING_COUNTRY") or _text(doc, "COUNTRY_OF_ISSUE")
            entity.identifiers.append(Identifier(kind, number, country_code(country)))
    entity.remarks = _text(node, "COMMENTS1")
    return entity
