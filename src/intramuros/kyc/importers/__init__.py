"""List importers: each official format into :class:`intramuros.kyc.model.Entity` records."""

from __future__ import annotations

from pathlib import Path

from intramuros.kyc.errors import MalformedList
from intramuros.kyc.importers.base import ImportResult, RowError

FORMATS = ("ofac", "un", "opensanctions-ftm", "opensanctions-senzing", "eu", "csv")

__all__ = ["FORMATS", "ImportResult", "RowError", "parse_list"]


def parse_list(path: Path, fmt: str, list_name: str) -> ImportResult:
    """Read one list file (or OFAC folder) in format ``fmt``.

    Malformed rows are skipped and reported in ``result.errors`` with their line
    numbers; a file with no usable entry at all raises :class:`MalformedList`.
    """
    from intramuros.kyc.importers import csv_inhouse, eu, ofac, opensanctions, un

    parsers = {
        "ofac": ofac.parse,
        "un": un.parse,
        "opensanctions-ftm": opensanctions.parse_ftm,
        "opensanctions-senzing": opensanctions.parse_senzing,
        "eu": eu.parse,
        "csv": csv_inhouse.parse,
    }
    if fmt not in parsers:
        raise MalformedList(f"Unknown list format {fmt!r}; one of: {', '.join(FORMATS)}.",
                            param="format")  # fmt: skip
    if not path.exists():
        raise MalformedList(f"No such file: {path}", param="path")
    result = parsers[fmt](path, list_name)
    if not result.entities:
        detail = f" (first problem: {result.errors[0]})" if result.errors else ""
        raise MalformedList(f"No usable entry in {path} as format {fmt}{detail}.", param="path")
    seen: set[str] = set()
    unique = []
    for entity in result.entities:
        if entity.source_id in seen:
            result.errors.append(RowError(str(path), 0, f"duplicate id {entity.source_id}"))
            continue
        seen.add(entity.source_id)
        unique.append(entity)
    result.entities = unique
    return result
