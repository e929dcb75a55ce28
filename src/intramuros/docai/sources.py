"""Where a document comes from in an OCR request, and how pages become wire types.

Documents arrive inline as ``data:`` URLs or as ids of files uploaded earlier;
http(s) URLs are refused (this server fetches nothing). The declared media
type must be one we read and must agree with the bytes.
"""

from __future__ import annotations

import binascii
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from intramuros.docai import protocol as dp
from intramuros.docai.inline import PLACEHOLDER, b64decode_sliced
from intramuros.docai.pipeline import DocumentResult, OcrEngine
from intramuros.errors import ModelNotFound
from intramuros.files.errors import BadDocument, FileTooLarge, InvalidPageList, RemoteURLRefused
from intramuros.files.names import DOCUMENT_TYPES, IMAGE_TYPES, clean_mime, sniff_mime

# Model names of /v1/ocr and the OCR engine each selects for pages without a
# real text layer: these, and each OCR backend plug-in under its own name
# (``rapidocr``, ``tesseract``, a third party's; see docai/ocr.py).
# ``mistral-ocr-latest`` is accepted so Mistral clients work unchanged.
DEFAULT_OCR_MODEL = "intramuros-ocr"
OCR_MODELS: dict[str, OcrEngine] = {
    "intramuros-ocr": "auto",
    "mistral-ocr-latest": "auto",
    "text-layer": "none",
}


def ocr_models() -> dict[str, OcrEngine]:
    """Every model name of /v1/ocr -> its OCR engine: the aliases and the registered backends."""
    from intramuros.docai import ocr

    return {**OCR_MODELS, **{name: name for name in ocr.names() if name not in OCR_MODELS}}

_RANGE = re.compile(r"\s*([0-9]{1,9})\s*(?:-\s*([0-9]{1,9})\s*)?", re.ASCII)
_REMOTE = re.compile(r"\s*(https?|ftp|file|s3|gs)://", re.IGNORECASE)


def ocr_engine(model: str | None) -> tuple[str, OcrEngine]:
    """``(model name, engine)``; ``ModelNotFound`` for a name we do not serve."""
    name = model or DEFAULT_OCR_MODEL
    engine = ocr_models().get(name)
    if engine is None:
        raise ModelNotFound(name)
    return name, engine


def parse_page_ranges(text: str) -> list[tuple[int, int]]:
    """``"5-7,0,2,6"`` -> ``[(0, 0), (2, 2), (5, 7)]``: sorted, merged, never expanded.

    Mistral's string form of ``pages`` (0-based). Bounded before any work: at
    most ``MAX_PAGES_TEXT`` characters and ``MAX_PAGE_ITEMS`` ranges, each bound
    an ASCII number of at most 9 digits; ``ValueError`` says what is wrong.
    """
    if len(text) > dp.MAX_PAGES_TEXT:
        raise ValueError(f"the page list is {len(text):,} characters long, over the limit of "
                         f"{dp.MAX_PAGES_TEXT:,}")
    parts = text.split(",", dp.MAX_PAGE_ITEMS)
    if len(parts) > dp.MAX_PAGE_ITEMS:
        raise ValueError(f"more than {dp.MAX_PAGE_ITEMS:,} page ranges")
    spans: list[tuple[int, int]] = []
    for part in parts:
        match = _RANGE.fullmatch(part)
        if match is None:
            raise ValueError(f"cannot read page range '{part.strip()[:20]}' (e.g. 0,2,5-7)")
        lo = int(match[1])
        hi = int(match[2]) if match[2] is not None else lo
        if hi < lo:
            raise ValueError(f"bad page range '{part.strip()[:20]}' (the end is before the "
                             "start)")
        spans.append((lo, hi))
    return merge_ranges(spans)


def merge_ranges(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges sorted, with overlapping and touching ones merged."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def parse_pages(text: str, max_pages: int = 10_000) -> list[int]:
    """``"0,2,5-7"`` -> ``[0, 2, 5, 6, 7]``: ranges expanded once they are known to be bounded.

    ``ValueError`` for a malformed list or a page index at or over
    ``max_pages`` (no document has that page: it would be refused).
    """
    ranges = parse_page_ranges(text)
    if ranges and ranges[-1][1] >= max_pages:
        raise ValueError(f"page {ranges[-1][1]} is beyond the limit of {max_pages} pages per "
                         "document (--docai-max-pages; pages are 0-based)")
    return [i for lo, hi in ranges for i in range(lo, hi + 1)]


def page_list(pages: int | Sequence[int] | str | None, max_pages: int) -> list[int] | None:
    """Mistral's ``pages`` (an index, a list, or "0,2-4"; 0-based) as a sorted unique list.

    Every form is bounded before it is expanded: an index at or over
    ``max_pages`` (``docai_max_pages``) can never exist, so it is refused here,
    and the list then has at most ``max_pages`` entries.
    """
    if pages is None:
        return None
    if isinstance(pages, str):
        try:
            return parse_pages(pages, max_pages) or _no_pages()
        except ValueError as exc:
            raise InvalidPageList(f"pages: {exc}.", param="pages") from None
    wanted = [pages] if isinstance(pages, int) else pages
    if not wanted:
        _no_pages()
    if len(wanted) > dp.MAX_PAGE_ITEMS:
        raise InvalidPageList(f"pages lists more than {dp.MAX_PAGE_ITEMS:,} page indexes.",
                              param="pages")  # fmt: skip
    for i, index in enumerate(wanted):
        if index < 0:
            raise InvalidPageList(f"pages[{i}] is {index}; page indexes start at 0.",
                                  param="pages")  # fmt: skip
        if index >= max_pages:
            raise InvalidPageList(
                f"pages[{i}] is {str(index)[:20]}, beyond the limit of {max_pages} pages per "
                "document (--docai-max-pages; pages are 0-based).", param="pages")
    return sorted(set(wanted))


def _no_pages() -> list[int]:
    raise InvalidPageList("pages must list at least one page index (0-based).", param="pages")


def decode_data_url(url: str, *, param: str, images_only: bool, max_bytes: int,
                    inline: list[bytes] | None = None) -> tuple[str, bytes]:  # fmt: skip
    """``(media type, bytes)`` of a base64 ``data:`` URL holding a document we read.

    ``inline``: the payload cut out of a large JSON body (see
    :mod:`intramuros.docai.inline`), which ``url`` then holds as the placeholder.
    Decoding goes a slice at a time, so a large document does not hold the
    interpreter (run this in a worker thread).
    """
    if _REMOTE.match(url):
        raise RemoteURLRefused(
            f"{param} is a remote URL; this server fetches nothing over the network. Send the "
            "document inline as a data: URL (data:application/pdf;base64,...) or upload it to "
            '/v1/files and pass {"type": "file", "file_id": ...}.',
            param=param,
        )
    head, comma, payload = url.partition(",")
    if not comma or not head[:5].lower() == "data:":
        raise BadDocument(f"{param} must be a data: URL (data:<media type>;base64,<data>).",
                          param=param)  # fmt: skip
    parts = [part.strip() for part in head[5:].split(";")]
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
    if inline is not None and payload == PLACEHOLDER:
        pieces = inline
    else:
        pieces = [payload.encode("ascii", errors="replace")]
    # A loose bound first (base64 is 4/3 of the bytes, plus line breaks), so an
    # oversized payload is refused before it is decoded; the exact one after.
    if sum(len(piece) for piece in pieces) * 3 // 4 > max_bytes * 11 // 10 + 1024:
        raise _too_large(param, max_bytes)
    try:
        data = b64decode_sliced(pieces)
    except (binascii.Error, ValueError):
        raise BadDocument(f"{param} does not hold valid base64 data.", param=param) from None
    if len(data) > max_bytes:
        raise _too_large(param, max_bytes)
    if not data:
        raise BadDocument(f"The document in {param} is empty.", param=param)
    sniffed = sniff_mime(data)
    if sniffed is not None and sniffed != mime:
        raise BadDocument(f"{param} declares {mime} but its content is {sniffed}.", param=param)
    return mime, data


def _too_large(param: str, max_bytes: int) -> FileTooLarge:
    return FileTooLarge(f"The document in {param} is over the limit of {max_bytes} bytes "
                        "(--files-max-bytes).", param=param)  # fmt: skip


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
