"""One entity model for every list: persons, organisations, vessels, aircraft.

Importers turn each official format into :class:`Entity` records; the store
keeps them as JSON (``to_dict``/``from_dict``) and the matcher reads nothing
else. Dates are ISO strings with the precision the list gives (``1971``,
``1971-05``, ``1971-05-03``); countries are ISO 3166 alpha-2 codes where the
list's spelling is known (see :func:`intramuros.kyc.normalize.country_code`),
else the folded text.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Schema = Literal["person", "organization", "vessel", "aircraft", "unknown"]
SCHEMAS: tuple[str, ...] = ("person", "organization", "vessel", "aircraft", "unknown")

# How much a list trusts a name: OFAC's weak a.k.a., UN's "Low" quality aliases
# are spellings the publisher itself calls unreliable, so they weigh less.
Quality = Literal["primary", "strong", "weak"]

_ISO_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


@dataclass
class Name:
    """One name of an entity: the primary name or an alias."""

    value: str
    quality: Quality = "primary"


@dataclass
class Identifier:
    """A document or registration number (passport, national id, IMO, tail number...)."""

    kind: str
    value: str
    country: str | None = None

    def key(self) -> str:
        """The number as compared: letters and digits only, upper case."""
        return identifier_key(self.value)


@dataclass
class Entity:
    """One listed party, as every importer produces it."""

    list_name: str
    source_id: str
    schema: str = "unknown"
    names: list[Name] = field(default_factory=list)
    birth_dates: list[str] = field(default_factory=list)
    nationalities: list[str] = field(default_factory=list)
    countries: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    identifiers: list[Identifier] = field(default_factory=list)
    programs: list[str] = field(default_factory=list)
    gender: str | None = None
    listed_on: str | None = None
    remarks: str | None = None
    # Topics such as "sanction" or "role.pep" (OpenSanctions' vocabulary).
    topics: list[str] = field(default_factory=list)

    @property
    def caption(self) -> str:
        """The primary name (the first name, whatever its quality)."""
        return self.names[0].value if self.names else self.source_id

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the stored form)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entity:
        """The inverse of :meth:`to_dict`."""
        values = dict(data)
        values["names"] = [Name(**n) for n in values.get("names", [])]
        values["identifiers"] = [Identifier(**i) for i in values.get("identifiers", [])]
        return cls(**values)

    def digest(self) -> str:
        """A hash of the content: re-screening tells a changed entry from an unchanged one."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


def identifier_key(value: str) -> str:
    """Letters and digits only, upper case: ``A-123 456`` and ``a123456`` compare equal.

    An IMO number is its seven digits, with or without the ``IMO`` prefix.
    """
    key = "".join(ch for ch in value.upper() if ch.isalnum())
    if key.startswith("IMO") and len(key) == 10 and key[3:].isdigit():
        return key[3:]
    return key


def is_iso_date(value: str) -> bool:
    """True for ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` with plausible month and day."""
    if not _ISO_DATE.match(value):
        return False
    parts = [int(p) for p in value.split("-")]
    if not 1000 <= parts[0] <= 2999:
        return False
    if len(parts) > 1 and not 1 <= parts[1] <= 12:
        return False
    return not (len(parts) > 2 and not 1 <= parts[2] <= 31)


def add_unique(items: list[str], value: str | None) -> None:
    """Append ``value`` if it is non-empty and not there yet (lists keep their order)."""
    if value and value not in items:
        items.append(value)


def add_name(entity: Entity, value: str | None, quality: Quality) -> None:
    """Add a name unless the same spelling is already there."""
    if not value:
        return
    value = " ".join(value.split())
    if value and all(n.value != value for n in entity.names):
        entity.names.append(Name(value, quality))
