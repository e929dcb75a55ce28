"""Recognising a document's type from its bytes, and loading images safely.

The type comes from the bytes, never from the name: a ``.pdf`` that is a PNG
is read as a PNG; a ``.pdf`` that is neither is refused as "not a PDF". The
pixel limit is checked from the image header before any pixel is decoded,
so a decompression bomb (a few kB that inflate to gigabytes) costs nothing.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

from intramuros.docai.errors import (
    DocumentEmpty,
    ImageTooLarge,
    InvalidDocument,
    UnsupportedDocument,
)

if TYPE_CHECKING:
    from PIL import Image

# Magic numbers: (prefix, MIME type).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)
IMAGE_TYPES = frozenset(m for _, m in _MAGIC) | {"image/webp"}


def sniff(data: bytes, filename: str) -> str:
    """The MIME type of ``data`` (``application/pdf`` or ``image/*``), or a clear error."""
    if not data:
        raise DocumentEmpty(filename, "the document is empty (0 bytes)")
    # PDF readers accept the header anywhere in the first kilobyte (some
    # generators put junk before it); so do we.
    if b"%PDF-" in data[:1024]:
        return "application/pdf"
    for prefix, mime in _MAGIC:
        if data.startswith(prefix):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:8].hex(" ")
    if filename.lower().endswith(".pdf"):
        raise InvalidDocument(
            filename, f"the name says PDF but the bytes are not a PDF (they start with {head})"
        )
    raise UnsupportedDocument(
        filename,
        f"not a PDF or a supported image (PNG, JPEG, TIFF, GIF, BMP, WebP); "
        f"the bytes start with {head}",
    )


def _check_pixels(size: tuple[int, int], max_pixels: int, filename: str, where: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise InvalidDocument(filename, f"{where} has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLarge(
            filename,
            f"{where} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            "pixels per page (--docai-max-pixels; a decompression bomb or an oversized scan)",
        )


def open_image(data: bytes, filename: str, max_pixels: int) -> Image.Image:
    """Open ``data`` with Pillow (header only), checking the pixel limit first."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow's own bomb guard (MAX_IMAGE_PIXELS) fires inside open(): a
        # warning just over it, an error at twice. Ours is the limit that
        # counts, so its warning is silenced here and its error reported.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(filename, f"the image is too large to decode safely ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidDocument(filename, f"the image is corrupted or truncated ({exc})") from exc
    _check_pixels(img.size, max_pixels, filename, "the image")
    return img


def frame_count(img: Image.Image, limit: int) -> int | None:
    """How many frames (pages) the image has, or None when it has more than ``limit``.

    A TIFF is a chain of page directories; counting them all would walk a
    chain as long as the file allows, so the walk stops after ``limit + 1``
    (reading directories only, no pixels). GIF frames are counted without
    decoding them.
    """
    if getattr(img, "format", None) == "TIFF":
        # One directory at a time: seeking far ahead makes Pillow (12) record a
        # wrong frame count when the chain ends before.
        count = 1
        try:
            while count <= limit:
                img.seek(count)
                count += 1
        except EOFError:
            pass
        finally:
            img.seek(0)
        return count if count <= limit else None
    count = int(getattr(img, "n_frames", 1))
    return count if count <= limit else None


def frame(img: Image.Image, index: int, filename: str, max_pixels: int) -> Image.Image:
    """Frame ``index``, its size checked from its header, then decoded by :func:`to_gray`."""
    from PIL import Image

    try:
        img.seek(index)
        _check_pixels(img.size, max_pixels, filename, f"page {index} of the image")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return to_gray(img)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(filename, f"page {index} is too large to decode ({exc})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidDocument(
            filename, f"page {index} of the image is corrupted or truncated ({exc})"
        ) from exc


def to_gray(img: Image.Image) -> Image.Image:
    """The current frame as 8-bit grayscale: upright (EXIF), transparency on white."""
    from PIL import Image, ImageOps

    # A phone photo stores its rotation in EXIF; pixels are as the sensor saw them.
    frame = ImageOps.exif_transpose(img) if img.getexif().get(0x0112, 1) != 1 else img
    if frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info):
        # Transparent pixels are often black underneath: put them on white paper.
        rgba = frame.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        frame = Image.alpha_composite(paper, rgba)
    return frame.convert("L")


def image_dpi(img: Image.Image, default: int = 300) -> int:
    """The resolution an image declares (JPEG/PNG/TIFF metadata), or ``default``."""
    dpi = img.info.get("dpi")
    try:
        x = round(float(dpi[0])) if dpi else 0
    except (TypeError, ValueError, IndexError):
        x = 0
    return x if 50 <= x <= 2400 else default
