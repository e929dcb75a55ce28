"""Untrusted file names and media types: made safe to store, show and sniff.

A file name from a client is metadata only: stored bytes are addressed by the
file's id, never by its name, so ``../../etc/passwd`` cannot reach the file
system. The name is still cut to its last path component and cleaned, so it
can be shown and used as a download name without surprises.
"""

from __future__ import annotations

import re
import unicodedata

MAX_NAME = 255
_MIME_RE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}/[a-z0-9][a-z0-9.+-]{0,63}")

# Leading bytes of the document types we read. PDF may follow a little junk
# (readers accept "%PDF-" within the first KiB).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)

DOCUMENT_TYPES = frozenset(
    {"application/pdf", "image/png", "image/jpeg", "image/tiff", "image/gif", "image/bmp",
     "image/webp"}
)  # fmt: skip
IMAGE_TYPES = DOCUMENT_TYPES - {"application/pdf"}


def safe_filename(name: str | None, default: str = "upload") -> str:
    """The last path component of ``name``, without control characters, at most 255 chars."""
    text = unicodedata.normalize("NFC", name or "")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    if text in ("", ".", ".."):
        return default
    if len(text) > MAX_NAME:
        _stem, dot, ext = text.rpartition(".")
        keep = ext if dot and 0 < len(ext) <= 16 else ""
        text = text[: MAX_NAME - len(keep) - 1] + "." + keep if keep else text[:MAX_NAME]
    return text


def sniff_mime(data: bytes) -> str | None:
    """The media type of ``data`` from its first bytes, if it is a document type we know."""
    if b"%PDF-" in data[:1024]:
        return "application/pdf"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    return None


def clean_mime(value: str | None) -> str | None:
    """A declared media type, lower-cased and without parameters, or None if malformed."""
    if not value:
        return None
    base = value.split(";", 1)[0].strip().lower()
    if base == "image/jpg":
        base = "image/jpeg"
    return base if _MIME_RE.fullmatch(base) else None
