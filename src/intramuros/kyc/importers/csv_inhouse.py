"""An in-house list as CSV, with a header row.

Columns (only ``id`` and ``name`` are required; order free, names case-insensitive):

| column | content |
|---|---|
| ``id`` | your identifier of the entry (unique) |
| ``name`` | the primary name |
| ``aliases`` | other names, separated by ``|`` |
| ``type`` | ``person``, ``organization``, ``vessel``, ``aircraft`` (default: unknown) |
| ``birth_dates`` | ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``, separated by ``|`` |
| ``nationalities`` | country names or ISO codes, separated by ``|`` |
| ``countries`` | countries of address or registration, separated by ``|`` |
| ``identifiers`` | ``kind:number`` pairs separated by ``|`` (``passport:X123|imo:9187629``) |
| ``gender`` | ``male`` / ``female`` |
| ``programs`` | regimes or reasons, separated by ``|`` |
| ``listed_on`` | ``YYYY-MM-DD`` |
| ``remarks`` | free text |
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from intramuros.kyc.importers.base import ImportResult, RowError, file_date, read_text
from intramuros.kyc.model import SCHEMAS, Entity, Identifier, add_name, add_unique, is_iso_date
from intramuros.kyc.normalize import country_code

HEADER = ("id", "name", "aliases", "type", "birth_dates", "nationalities", "countries",
          "identifiers", "gender", "programs", "listed_on", "remarks")  # fmt: skip


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split("|") if v.strip()]


def parse(path: Path, list_name: str) -> ImportResult:
    """Read an in-house CSV list (see the module docstring for the header)."""
    result = ImportResult(list_date=file_date(path))
    reader = csv.DictReader(io.StringIO(read_text(path, result)))
    try:
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    except csv.Error as exc:
        result.errors.append(RowError(str(path), 1, f"unreadable header: {exc}"))
        return result
    missing = {"id", "name"} - set(fields)
    if missing:
        result.errors.append(RowError(str(path), 1, f"header lacks {', '.join(sorted(missing))}"))
        return result
    unknown = set(fields) - set(HEADER)
    if unknown:
        result.errors.append(RowError(str(path), 1, f"unknown columns ignored: "
                                      f"{', '.join(sorted(unknown))}"))  # fmt: skip
    reader.fieldnames = fields
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.errors.append(RowError(str(path), line, f"unreadable CSV: {exc}"))
            continue
        problem = _problem(row)
        if problem:
            result.errors.append(RowError(str(path), line, problem))
            continue
        result.entities.append(_entity(row, list_name))
    return result


def _problem(row: dict[str, str | None]) -> str | None:
    if None in row:
        return "more fields than the header"
    if not (row.get("id") or "").strip():
        return "empty id"
    if not (row.get("name") or "").strip():
        return "empty name"
    kind = (row.get("type") or "").strip().lower()
    if kind and kind not in SCHEMAS:
        return f"type {kind!r} is not one of {', '.join(SCHEMAS)}"
    for date in _split(row.get("birth_dates")):
        if not is_iso_date(date):
            return f"birth date {date!r} is not YYYY[-MM[-DD]]"
    for pair in _split(row.get("identifiers")):
        if ":" not in pair:
            return f"identifier {pair!r} is not kind:number"
    return None


def _entity(row: dict[str, str | None], list_name: str) -> Entity:
    entity = Entity(list_name=list_name, source_id=(row.get("id") or "").strip(),
                    schema=(row.get("type") or "").strip().lower() or "unknown")  # fmt: skip
    add_name(entity, row.get("name"), "primary")
    for alias in _split(row.get("aliases")):
        add_name(entity, alias, "strong")
    for date in _split(row.get("birth_dates")):
        add_unique(entity.birth_dates, date)
    for value in _split(row.get("nationalities")):
        add_unique(entity.nationalities, country_code(value))
    for value in _split(row.get("countries")):
        add_unique(entity.countries, country_code(value))
    for pair in _split(row.get("identifiers")):
        kind, _, number = pair.partition(":")
        entity.identifiers.append(Identifier(kind.strip().lower(), number.strip()))
    entity.gender = (row.get("gender") or "").strip().lower() or None
    entity.programs = _split(row.get("programs"))
    entity.listed_on = (row.get("listed_on") or "").strip() or None
    entity.remarks = (row.get("remarks") or "").strip() or None
    return entity
