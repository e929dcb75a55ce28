"""PDFs: opening them safely, reading their text layer, rendering pages for OCR.

pypdfium2 (PDFium, the PDF engine of Chromium; BSD/Apache; not thread-safe,
so every call goes through ``PDFIUM_LOCK``) opens the
document, which tells encrypted from corrupted from truncated, counts the
pages and renders them. pdfplumber (on pdfminer.six; MIT) reads the text
layer: every word with its position and font size, and ruled tables with
their cells. Both are pure pip wheels.

A text layer is *usable* when it has enough characters and they look like
words (:func:`text_quality`): no ``(cid:N)`` placeholders (glyphs without a
Unicode mapping), no replacement characters, mostly alphabetic tokens. A
page whose layer fails is OCR'd; so is a page that is mostly image with
next to no text (a scan with a stamped header).
"""

from __future__ import annotations

import base64
import io
import math
import re
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from intramuros.docai.errors import (
    DocumentEmpty,
    DocumentEncrypted,
    InvalidDocument,
    OcrUnavailable,
    PageTooLarge,
)
from intramuros.docai.layout import Box, layout_markdown

if TYPE_CHECKING:
    from PIL import Image

_WORDLIKE = re.compile(
    r"^[\W_]*(?:[^\W\d_]+(?:['\u2019\-.][^\W\d_]+)*|\d+(?:[.,:/\-]\d+)*[%‰]?|[^\W\d_]+\d*|\d+[^\W\d_]{1,3})"
    r"[\W_]*$"
)
# PDFium is not thread-safe: every call into it, from any thread, holds this.
# (Only opening, counting and rendering: the text layer is pdfminer's, pure Python.)
PDFIUM_LOCK = threading.RLock()
MIN_CHARS = 20  # below this a page's text layer is taken as absent
MIN_QUALITY = 0.6
MIN_DPI = 30


def _pdfium() -> Any:
    try:
        import pypdfium2 as pdfium  # type: ignore[import-untyped]
    except ImportError as exc:
        raise OcrUnavailable("PDF support is not installed: pip install 'intramuros[docai]'") \
            from exc
    return pdfium


@contextmanager
def open_pdf(data: bytes, filename: str) -> Iterator[Any]:
    """The document opened with pypdfium2, or the reason it cannot be."""
    pdfium = _pdfium()
    try:
        with PDFIUM_LOCK:
            doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if _plumber_pages(data) == 0:
            # PDFium refuses a document with an empty page tree, and its error
            # code is then stale (the previous failure's): ask pdfminer.
            raise DocumentEmpty(filename, "the PDF has no pages") from exc
        if code == 4:  # FPDF_ERR_PASSWORD
            raise DocumentEncrypted(
                filename, "the PDF is password-protected; decrypt it and send it again"
            ) from exc
        if code == 6:  # FPDF_ERR_SECURITY: an unsupported security handler
            raise DocumentEncrypted(filename, "the PDF uses an unsupported encryption") from exc
        raise InvalidDocument(
            filename, "the PDF is corrupted or truncated (PDFium cannot parse it)"
        ) from exc
    try:
        if page_count(doc) == 0:
            raise DocumentEmpty(filename, "the PDF has no pages")
        yield doc
    finally:
        with PDFIUM_LOCK:
            doc.close()


def page_count(doc: Any) -> int:
    """How many pages ``doc`` has."""
    with PDFIUM_LOCK:
        return len(doc)


def page_size(doc: Any, index: int) -> tuple[float, float]:
    """Width and height of page ``index``, in points."""
    with PDFIUM_LOCK:
        page = doc[index]
        try:
            w, h = page.get_size()
            return float(w), float(h)
        finally:
            page.close()


def _plumber_pages(data: bytes) -> int | None:
    """The page count pdfplumber finds, or None when it cannot parse the file either."""
    with open_plumber(data) as pdf:
        return None if pdf is None else len(pdf.pages)


@contextmanager
def open_plumber(data: bytes) -> Iterator[Any | None]:
    """The document opened with pdfplumber, or None when it cannot parse what PDFium could."""
    try:
        import pdfplumber
    except ImportError as exc:
        raise OcrUnavailable("PDF support is not installed: pip install 'intramuros[docai]'") \
            from exc
    try:
        pdf = pdfplumber.open(io.BytesIO(data))
    except Exception:  # pdfminer raises many unrelated types on broken files
        yield None
        return
    try:
        yield pdf
    finally:
        pdf.close()


def text_quality(text: str) -> float:
    """How much ``text`` looks like real text, 0..1 (share of word-like tokens, by length)."""
    tokens = text.split()
    total = sum(len(t) for t in tokens)
    if not total:
        return 0.0
    bad = text.count("\ufffd") + sum(1 for c in text if unicodedata.category(c) in ("Co", "Cn"))
    # "(cid:N)" (a glyph without a Unicode mapping) is never word-like.
    good = sum(len(t) for t in tokens if _WORDLIKE.match(t) and "(cid:" not in t)
    return max(0.0, (good - 4 * bad) / total)


@dataclass
class TextPage:
    """A page's text layer, read: its boxes (words, tables, images) and how usable it is."""

    width: float  # points
    height: float
    boxes: list[Box]
    text: str
    quality: float
    image_cover: float  # share of the page covered by images
    images: list[tuple[float, float, float, float]] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """True when the layer is real text worth keeping rather than OCR'ing the page."""
        chars = len(self.text.replace(" ", ""))
        if chars == 0:
            return False
        if chars < MIN_CHARS:
            # A short page (a title, "Delivery note DN-88"): real when it is word-like and
            # no picture carries the page (a scan's stray OCR fragment sits on an image).
            return self.image_cover < 0.1 and self.quality >= MIN_QUALITY
        if self.image_cover >= 0.5 and len(self.text) < 200:
            return False
        return self.quality >= MIN_QUALITY


def read_text_layer(plumber_page: Any, include_images: bool) -> TextPage:
    """Words (with font size), ruled tables (as cells) and images of one pdfplumber page."""
    width, height = float(plumber_page.width), float(plumber_page.height)
    try:
        tables = plumber_page.find_tables()
    except Exception:  # a malformed drawing must not lose the page's text
        tables = []
    boxes: list[Box] = []
    bboxes = []
    for t in tables:
        rows = [[unicodedata.normalize("NFC", c or "") for c in row] for row in t.extract()]
        if len(rows) < 2 or max(len(r) for r in rows) < 2:
            continue  # a box drawn around a paragraph is not a table
        x0, top, x1, bottom = t.bbox
        bboxes.append((x0, top, x1, bottom))
        boxes.append(Box(x0, top, x1, bottom, kind="table", rows=rows, size=11.0))
    words = plumber_page.extract_words(extra_attrs=["size"], keep_blank_chars=False)
    texts = []
    for w in words:
        text = unicodedata.normalize("NFC", w["text"])
        cx, cy = (w["x0"] + w["x1"]) / 2, (w["top"] + w["bottom"]) / 2
        texts.append(text)
        if any(a <= cx <= c and b <= cy <= d for a, b, c, d in bboxes):
            continue
        boxes.append(Box(float(w["x0"]), float(w["top"]), float(w["x1"]), float(w["bottom"]),
                         text, size=float(w.get("size") or (w["bottom"] - w["top"]))))
    area = width * height or 1.0
    imgs = []
    cover = 0.0
    for im in plumber_page.images:
        x0, top = max(0.0, float(im["x0"])), max(0.0, float(im["top"]))
        x1, bottom = min(width, float(im["x1"])), min(height, float(im["bottom"]))
        if x1 <= x0 or bottom <= top:
            continue
        cover += (x1 - x0) * (bottom - top) / area
        imgs.append((x0, top, x1, bottom))
    if include_images:
        for n, (x0, top, x1, bottom) in enumerate(imgs):
            boxes.append(Box(x0, top, x1, bottom, kind="image",
                             text=f"![img-{n}.jpeg](img-{n}.jpeg)"))
    joined = " ".join(texts)
    return TextPage(width, height, boxes, joined, text_quality(joined), min(cover, 1.0), imgs)


def text_markdown(page: TextPage) -> str:
    """The page's text layer as markdown (reading order, headings, lists, tables)."""
    # A column gutter is at least 2 body-text heights wide (points).
    return layout_markdown(page.boxes, col_gap=18.0)


def user_unit(plumber_page: Any) -> float:
    """The page's ``/UserUnit`` (the size of one unit in 1/72 inch; PDF 1.6), 1.0 if none or odd."""
    try:
        from pdfminer.pdftypes import resolve1

        value = float(resolve1(plumber_page.page_obj.attrs.get("UserUnit", 1.0)))
    except Exception:  # a malformed value: the default, as PDF readers do
        return 1.0
    return value if math.isfinite(value) and value > 0 else 1.0


def fit_dpi(width_pt: float, height_pt: float, dpi: int, max_pixels: int, filename: str,
            index: int, unit: float = 1.0) -> int:
    """``dpi``, lowered if needed so the rendered page stays within ``max_pixels``.

    The page is ``width_pt`` x ``height_pt`` units of ``unit``/72 inch (its box
    and ``/UserUnit``). Checked before anything is rendered: a page that does
    not fit even at ``MIN_DPI`` is refused (``PageTooLarge``).
    """
    w_in, h_in = width_pt * unit / 72, height_pt * unit / 72
    if not (math.isfinite(w_in) and math.isfinite(h_in)) or w_in <= 0 or h_in <= 0:
        raise InvalidDocument(filename, f"page {index} has no area (its page box is empty)")
    px = (w_in * dpi) * (h_in * dpi)
    if px <= max_pixels:
        return dpi
    fitted = int(dpi * (max_pixels / px) ** 0.5)
    if fitted < MIN_DPI:
        scaled = f" (its box times /UserUnit {unit:g})" if unit != 1.0 else ""
        raise PageTooLarge(
            filename,
            f"page {index} is {w_in:.0f} x {h_in:.0f} inches{scaled}: even at {MIN_DPI} dpi "
            f"it is {w_in * MIN_DPI * h_in * MIN_DPI:,.0f} pixels, over the limit of "
            f"{max_pixels:,} pixels per page (--docai-max-pixels)",
        )
    return fitted


def render(doc: Any, index: int, dpi: int, filename: str = "document", *, unit: float = 1.0,
           max_pixels: int | None = None) -> Image.Image:
    """Page ``index`` rendered to a grayscale image at ``dpi`` (of ``unit``/72-inch units).

    PDFium ignores ``/UserUnit``: the scale carries it. With ``max_pixels``,
    the bitmap's size is checked against it once more before PDFium allocates it.
    """
    pdfium = _pdfium()
    scale = dpi * unit / 72
    with PDFIUM_LOCK:
        try:
            page = doc[index]
        except pdfium.PdfiumError as exc:
            raise InvalidDocument(filename, f"page {index} of the PDF is damaged") from exc
        try:
            if max_pixels is not None:
                w, h = page.get_size()
                if math.ceil(w * scale) * math.ceil(h * scale) > max_pixels * 1.01 + 4096:
                    raise PageTooLarge(filename, f"page {index} would render to more than "
                                       f"{max_pixels:,} pixels (--docai-max-pixels)")
            bitmap = page.render(scale=scale, grayscale=True)
            return bitmap.to_pil().convert("L")  # type: ignore[no-any-return]
        except pdfium.PdfiumError as exc:
            raise InvalidDocument(filename, f"page {index} of the PDF cannot be rendered") \
                from exc
        finally:
            page.close()


def crop_base64(page_img: Image.Image, bbox_pt: tuple[float, float, float, float],
                dpi: int) -> str:
    """A region of a rendered page (bbox in points) as a JPEG data URI."""
    s = dpi / 72
    x0, top, x1, bottom = bbox_pt
    crop = page_img.crop((int(x0 * s), int(top * s), int(x1 * s) + 1, int(bottom * s) + 1))
    buf = io.BytesIO()
    crop.convert("RGB").save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
