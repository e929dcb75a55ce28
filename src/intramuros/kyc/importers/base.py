"""What every importer returns, and small helpers they share."""

from __future__ import annotations

import datetime as dt
import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from intramuros.kyc.errors import MalformedList
from intramuros.kyc.model import Entity


@dataclass(frozen=True)
class RowError:
    """A malformed row, skipped: which file, which line, what was wrong."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{Path(self.file).name}:{self.line}: {self.message}"


@dataclass
class ImportResult:
    """Entities read from a list file, rows skipped, and what identifies the file."""

    entities: list[Entity] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    list_date: str | None = None
    # sha256 of every file read, by file name
    files: dict[str, str] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        """One hash over the files read (the file's own hash when there is one)."""
        if len(self.files) == 1:
            return next(iter(self.files.values()))
        blob = "".join(f"{name}:{digest}\n" for name, digest in sorted(self.files.items()))
        return hashlib.sha256(blob.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_date(path: Path) -> str:
    """The file's modification date (lists without a date of their own)."""
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date().isoformat()


def read_text(path: Path, result: ImportResult) -> str:
    """A text file's content (UTF-8, else Windows-1252 as older exports use); hashed."""
    raw = path.read_bytes()
    result.files[path.name] = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    # OFAC ends its files with a DOS end-of-file mark (Ctrl-Z)
    return text.rstrip("\x1a")


def read_xml(path: Path, result: ImportResult) -> tuple[str, ET.Element]:
    """An XML list file's text and root element (hashed like any list file); DTDs refused."""
    text = read_text(path, result)
    if "<!ENTITY" in text or "<!DOCTYPE" in text:
        # a list never needs a DTD; refusing it rules out entity-expansion attacks
        raise MalformedList(f"{path.name}: DTDs are not accepted in list files.", param="path")
    try:
        return text, ET.fromstring(text)
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else 0
        raise MalformedList(f"{path.name}:{line}: not well-formed XML ({exc})",
                            param="path") from None  # fmt: skip


def clean(value: str | None) -> str | None:
    """Stripped text, or None for empty and OFAC's ``-0-`` null."""
    if value is None:
        return None
    value = value.strip()
    return None if not value or value == "-0-" else value
