"""EU Financial Sanctions Files (FSF), the consolidated list in XML.

The format, as published by the European Commission (namespace
``http://eu.europa.ec/fpi/fsd/export``; tags read here without it):

- root ``<export generationDate="2024-05-01T..." globalFileId="...">``;
- one ``<sanctionEntity logicalId="13" euReferenceNumber="EU.27.28"
  unitedNationId="..." designationDate="...">`` per listed party, holding
  - ``<regulation programme="IRQ" publicationDate="..."/>`` (the regime),
  - ``<subjectType code="person|enterprise" classificationCode="P|E"/>``,
  - ``<nameAlias wholeName="..." firstName middleName lastName gender="M|F"
    strong="true|false" nameLanguage="..."/>`` (``strong="false"``: weak alias),
  - ``<citizenship countryIso2Code="IQ" countryDescription="IRAQ"/>``,
  - ``<birthdate birthdate="1937-04-28" year="1937" circa="false"
    countryIso2Code="IQ"/>``,
  - ``<identification identificationTypeCode="passport" number="..."
    countryIso2Code="..."/>``,
  - ``<address street city zipCode countryIso2Code countryDescription/>``,
  - ``<remark>`` text.

Line numbers of skipped entries come from the position of their opening tag.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from intramuros.kyc.errors import MalformedList
from intramuros.kyc.importers.base import ImportResult, RowError, read_xml
from intramuros.kyc.model import Entity, Identifier, add_name, add_unique, is_iso_date
from intramuros.kyc.normalize import country_code

_OPENING = re.compile(r"<(?:\w+:)?sanctionEntity[\s>/]")
_SCHEMA = {"person": "person", "enterprise": "organization", "p": "person", "e": "organization"}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(node: ET.Element, tag: str) -> list[ET.Element]:
    return [c for c in node if _local(c.tag) == tag]


def _country(node: ET.Element) -> str | None:
    code = node.get("countryIso2Code") or ""
    if code and code != "00":
        return country_code(code)
    return country_code(node.get("countryDescription"))


def parse(path: Path, list_name: str) -> ImportResult:
    """Read an EU FSF consolidated XML file."""
    result = ImportResult()
    text, root = read_xml(path, result)
    if _local(root.tag) != "export":
        raise MalformedList(f"{path.name}: root element is {_local(root.tag)}, not export.",
                            param="format")  # fmt: skip
    generated = (root.get("generationDate") or "")[:10]
    result.list_date = generated if is_iso_date(generated) else None
    lines = [text.count("\n", 0, m.start()) + 1 for m in _OPENING.finditer(text)]
    for position, node in enumerate(_children(root, "sanctionEntity")):
        line = lines[position] if position < len(lines) else 0
        entity = _entry(node, list_name)
        if isinstance(entity, str):
            result.errors.append(RowError(str(path), line, entity))
        else:
            result.entities.append(entity)
    return result


def _entry(node: ET.Element, list_name: str) -> Entity | str:
    ident = node.get("logicalId") or node.get("euReferenceNumber")
    if not ident:
        return "sanctionEntity without logicalId"
    subject = _children(node, "subjectType")
    code = (subject[0].get("code") or subject[0].get("classificationCode") or "") if subject else ""
    entity = Entity(list_name=list_name, source_id=ident,
                    schema=_SCHEMA.get(code.lower(), "unknown"))  # fmt: skip
    for alias in _children(node, "nameAlias"):
        whole = alias.get("wholeName") or " ".join(
            p for p in (alias.get("firstName"), alias.get("middleName"), alias.get("lastName")) if p
        )
        weak = (alias.get("strong") or "true").lower() == "false"
        add_name(entity, whole, "weak" if weak else ("primary" if not entity.names else "strong"))
        if alias.get("gender") and not entity.gender:
            entity.gender = {"m": "male", "f": "female"}.get(alias.get("gender", "").lower())
    if not entity.names:
        return f"sanctionEntity {ident} without a name"
    for reg in _children(node, "regulation"):
        add_unique(entity.programs, reg.get("programme"))
    entity.listed_on = (node.get("designationDate") or "")[:10] or None
    for cit in _children(node, "citizenship"):
        add_unique(entity.nationalities, _country(cit))
    for birth in _children(node, "birthdate"):
        date = birth.get("birthdate") or birth.get("year") or ""
        if is_iso_date(date):
            add_unique(entity.birth_dates, date)
    for doc in _children(node, "identification"):
        number = doc.get("number") or doc.get("latinNumber")
        if number:
            kind = (doc.get("identificationTypeCode") or "document").lower()
            entity.identifiers.append(Identifier(kind, number, _country(doc)))
    for addr in _children(node, "address"):
        parts = [p for p in (addr.get("street"), addr.get("city"), addr.get("zipCode"),
                             addr.get("countryDescription")) if p]  # fmt: skip
        if parts:
            add_unique(entity.addresses, ", ".join(parts))
        add_unique(entity.countries, _country(addr))
    remarks = [c.text.strip() for c in _children(node, "remark") if c.text and c.text.strip()]
    entity.remarks = " ".join(remarks) or None
    return entity
