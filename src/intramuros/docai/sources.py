"""Where a document comes from in an OCR request, and how pages become wire types.

Documents arrive inline as ``data:`` URLs or as ids of files uploaded earlier;
http(s) URLs are refused (this server fetches nothing). The declared media
type must be one we read and must agree with the bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from intramuros.docai import protocol as dp
from intramuros.docai.pipeline import DocumentResult, OcrEngine
from intramuros.errors import InvalidRequest, ModelNotFound
from intramuros.files.errors import BadDocument, FileTooLarge, RemoteURLRefused
from intramuros.files.names import DOCUMENT_TYPES, IMAGE_TYPES, clean_mime, sniff_mime

# Model names of /v1/ocr and the OCR engine each selects for pages without a
# real text layer. ``mistral-ocr-latest`` is accepted so Mistral clients work
# unchanged.
DEFAULT_OCR_MODEL = "intramuros-ocr"
OCR_MODELS: dict[str, OcrEngine] = {
    "intramuros-ocr": "auto",
    "mistral-ocr-latest": "auto",
    "rapidocr": "rapidocr",
    "tesseract": "tesseract",
    "text-layer": "none",
}

_DATA_URL = re.compile(r"data:([^,]*),(.*)", re.DOTALL | re.IGNORECASE)
_REMOTE = re.compile(r"\s*(https?|ftp|file|s3|gs)://", re.IGNORECASE)
_WS = re.compile(rb"\s+")


def ocr_engine(model: str | None) -> tuple[str, OcrEngine]:
    """``(model name, engine)``; ``ModelNotFound`` for a name we do not serve."""
    name = model or DEFAULT_OCR_MODEL
    engine = OCR_MODELS.get(name)
    if engine is None:
        raise ModelNotFound(name)
    return name, engine


def parse_pages(text: str) -> list[int]:
    """``"0,2,5-7"`` -> ``[0, 2, 5, 6, 7]`` (Mistral's string form of ``pages``, 0-based)."""
    pages: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"cannot read page range '{part.strip()[:20]}' (e.g. 0,2,5-7)")
        lo, hi = int(first), int(last) if dash else int(first)
        if hi < lo or hi - lo > 100_000:
            raise ValueError(f"bad page range '{part.strip()[:20]}'")
        pages.update(range(lo, hi + 1))
    return sorted(pages)


def page_list(pages: int | Sequence[int] | str | None, max_pages: int) -> list[int] | None:
    """Mistral's ``pages`` (an index, a list, or "0,2-4"; 0-based) as a sorted unique list."""
    if pages is None:
        return None
    if isinstance(pages, str):
        try:
            wanted = parse_pages(pages)
        except ValueError as exc:
            raise InvalidRequest(f"pages: {exc}.", param="pages") from None
    else:
        wanted = [pages] if isinstance(pages, int) else list(pages)
    if not wanted:
        raise InvalidRequest("pages must list at least one page index (0-based).", param="pages")
    for i, index in enumerate(wanted):
        if index < 0:
            raise InvalidRequest(f"pages[{i}] is {index}; page indexes start at 0.",
                                 param="pages")  # fmt: skip
    unique = sorted(set(wanted))
    if len(unique) > max_pages:
        raise InvalidRequest(f"At most {max_pages} pages may be read at once.", param="pages")
    return unique


def decode_data_url(url: str, *, param: str, images_only: bool, max_bytes: int) -> tuple[
        str, bytes]:  # fmt: skip
    """``(media type, bytes)`` of a base64 ``data:`` URL holding a document we read."""
    if _REMOTE.match(url):
        raise RemoteURLRefused(
            f"{param} is a remote URL; this server fetches nothing over the network. Send the "
            "document inline as a data: URL (data:application/pdf;base64,...) or upload it to "
            '/v1/files and pass {"type": "file", "file_id": ...}.',
            param=param,
        )
    match = _DATA_URL.match(url)
    if match is None:
        raise BadDocument(f"{param} must be a data: URL (data:<media type>;base64,<data>).",
                          param=param)  # fmt: skip
    header, payload = match.groups()
    parts = [part.strip() for part in header.split(";")]
    if "base64" not in (p.lower() for p in parts[1:]):
        raise BadDocument(f"{param} must be base64-encoded (data:<media type>;base64,...).",
                          param=param)  # fmt: skip
    mime = clean_mime(parts[0])
    allowed = IMAGE_TYPES if images_only else DOCUMENT_TYPES
    if mime not in allowed:
        raise BadDocument(
            f"{param} has media type '{parts[0][:100]}'; accepted: {', '.join(sorted(allowed))}.",
            param=param,
        )
    raw = _WS.sub(b"", payload.encode("ascii", errors="replace"))
    if len(raw) * 3 // 4 > max_bytes + 3:
        raise FileTooLarge(f"The document in {param} is over the limit of {max_bytes} bytes.",
                           param=param)  # fmt: skip
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadDocument(f"{param} does not hold valid base64 data.", param=param) from None
    if not data:
        raise BadDocument(f"The document in {param} is empty.", param=param)
    sniffed = sniff_mime(data)
    if sniffed is not None and sniffed != mime:
        raise BadDocument(f"{param} declares {mime} but its content is {sniffed}.", param=param)
    return mime, data


def document_source(document: dp.DocumentURLChunk | dp.ImageURLChunk) -> tuple[str, str, bool]:
    """``(url, param, images_only)`` of an inline document chunk."""
    if isinstance(document, dp.DocumentURLChunk):
        return document.document_url, "document.document_url", False
    url = document.image_url if isinstance(document.image_url, str) else document.image_url.url
    return url, "document.image_url", True


def to_response(
    result: DocumentResult,
    model: str,
    *,
    include_images: bool,
    image_limit: int | None = None,
    image_min_size: int | None = None,
) -> dp.OCRResponse:
    """The wire answer for a document read."""
    pages: list[dp.OCRPage] = []
    budget = image_limit
    for page in result.pages:
        images: list[dp.OCRImage] = []
        for img in page.images:
            w, h = img.bottom_right_x - img.top_left_x, img.bottom_right_y - img.top_left_y
            if image_min_size is not None and min(w, h) < image_min_size:
                continue
            if budget is not None:
                if budget <= 0:
                    break
                budget -= 1
            images.append(dp.OCRImage(
                id=img.id, top_left_x=img.top_left_x, top_left_y=img.top_left_y,
                bottom_right_x=img.bottom_right_x, bottom_right_y=img.bottom_right_y,
                image_base64=img.image_base64 if include_images else None,
            ))  # fmt: skip
        pages.append(dp.OCRPage(
            index=page.index, markdown=page.markdown, images=images,
            dimensions=dp.OCRDimensions(dpi=page.dpi, height=page.height, width=page.width),
            confidence=round(float(page.confidence), 4), method=page.method,
            language=page.language,
        ))  # fmt: skip
    return dp.OCRResponse(
        pages=pages, model=model,
        usage_info=dp.OCRUsage(pages_processed=len(pages), doc_size_bytes=result.size_bytes),
    )  # fmt: skip


def usage_extra(result: DocumentResult, source: str) -> dict[str, Any]:
    """What the ledger records of one document read (``meter.extra``)."""
    return {
        "pages": len(result.pages), "page_count": result.page_count,
        "doc_size_bytes": result.size_bytes, "mime_type": result.mime_type,
        "methods": dict(Counter(p.method for p in result.pages)), "source": source,
    }  # fmt: skip
