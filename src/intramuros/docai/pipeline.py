"""Documents in, pages of markdown out: the contract between the API/batch side and the readers.

``read_document`` takes the bytes of one document (PDF, PNG, JPEG, TIFF, ...)
and returns one ``PageResult`` per requested page: markdown, page size, how
the text was obtained (``text-layer`` or ``ocr-rapidocr`` / ``ocr-tesseract``)
and a confidence. Bad documents raise ``intramuros.docai.errors`` exceptions
(client errors naming the document and the reason).

(Interface fixed by the lead; the implementation is the readers' owner's.)

How a page is read:

* **PDF page with a usable text layer** (enough characters, word-like, no
  ``(cid:N)`` glyphs; see ``pdf.text_quality``): the text layer, laid out
  (reading order by XY-cut, headings by font size, bullet lists, ruled tables
  as markdown tables). ``method="text-layer"``, ``confidence=1.0``,
  ``width``/``height`` in points (``dpi=72``), ``language=None``.
* **PDF page without one** (scanned, image-only, garbage layer) and
  **images** (PNG, JPEG, TIFF incl. multi-page, GIF, BMP, WebP): OCR of the
  page image, deskewed (up to 3 degrees; a page read with low confidence is
  checked for a 90/180/270 degree turn and read again upright), ruled tables
  found on the image and filled with the OCR'd words. PDF pages are rendered
  at ``ocr_dpi`` (lowered if needed to stay within ``max_pixels``); images
  are read at their own size and ``dpi`` is what they declare (300 if
  nothing). ``method`` is
  ``ocr-rapidocr`` or ``ocr-tesseract``, ``confidence`` the engine's mean word
  confidence, ``language`` what was run (``"latin"`` for RapidOCR, the
  Tesseract ``-l`` value such as ``"ell"`` or ``"eng"``).
* With ``ocr="none"`` a page without a usable text layer returns whatever
  text layer it has (maybe empty) with ``confidence`` = its text quality.

OCR backends are plug-ins (:mod:`intramuros.docai.ocr`, entry-point group
``intramuros.ocr``): ``ocr`` is ``auto``, ``none`` or the name of one
(``rapidocr``, ``tesseract``, or a third party's); ``languages`` are the codes
the installed backends declare. Choosing the backend with ``ocr="auto"``: by
script and language (:func:`intramuros.docai.ocr.choose`), among the installed
backends. With ``languages``: the one that reads them all and prefers their
scripts most (run with exactly those). Without: the one preferred for the
document's script when it is known (a text layer on an earlier page, or an
earlier OCR pass, over ``SCRIPT_SHARE`` of its letters in a script other
than Latin), run with its default languages for that script; otherwise a
first pass with the one preferred for Latin, and if what it read is mostly
another script, the page is read again by the one preferred for that script.
With ours that gives: Greek goes to Tesseract (``grc+ell+eng``, or exactly
the Greek ``languages`` given), because RapidOCR's bundled models read no
Greek (its alphabet has some Greek letters, enough to tell the script);
anything else goes to RapidOCR, the more accurate of the two on Latin
scripts in our benchmark (Tesseract is several times faster: ask for it with
``ocr="tesseract"``; its default language is then ``eng``). A backend that
cannot run here (not installed) is passed by for the next; asked for by name
it is a 503 naming what to install. ``languages`` other than Greek do not
change RapidOCR, which reads all Latin-script languages with one model.

All text is NFC; U+00B5 in Greek text becomes U+03BC.

Other behaviour callers rely on:

* ``mime_type`` comes from the bytes (magic numbers), never the filename.
* ``pages`` is honoured in the order given, duplicates dropped; an index out
  of range raises ``InvalidPages`` (``param="pages"``). ``max_pages`` is
  checked against the document's page count first, whatever ``pages`` asks.
* ``include_images``: for text-layer pages, ``images`` lists the pictures
  (``img-N.jpeg``, box in points like the page, a JPEG data URI cropped from
  a 150 dpi render) and the markdown gets ``![img-N.jpeg](img-N.jpeg)`` where
  each one sits; OCR'd pages have none (the page is the image).
* Thread-safe: call it from several threads at once (PDFium calls are
  serialised by a lock, RapidOCR has one engine per thread, Tesseract is a
  subprocess). For throughput use processes; each OCR engine uses one core.
* Errors: see ``intramuros.docai.errors`` (all ``ClientError`` with
  ``param="document"``, except ``OcrUnavailable``, a 503).

Added (optional) parameters: ``ocr_dpi`` (default 300), the resolution PDF
pages are rendered at for OCR; ``checkpoint``, called between pages and
between the steps of a page, which raises to stop the read (a cancelled
request, a work-time limit: see :mod:`intramuros.docai.control`). For reading
page by page under a scheduler, :func:`open_document` returns the open
document; :func:`read_document` is a loop over it.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from intramuros.docai import images as imgs
from intramuros.docai import ocr as backends
from intramuros.docai import pdf as pdfmod
from intramuros.docai.errors import (
    InvalidOcrOption,
    InvalidPages,
    OcrUnavailable,
    TooManyPages,
)
from intramuros.docai.layout import (
    Box,
    deskew,
    fill_grid,
    find_bullets,
    find_grids,
    layout_markdown,
    table_box,
)
from intramuros.docai.ocr import OcrPage

if TYPE_CHECKING:
    from PIL import Image

# "auto", "none", or the name of an OCR backend plug-in (see intramuros.docai.ocr).
OcrEngine = str
# Called between pages and between the steps of a page; raises to stop the read.
Checkpoint = Callable[[], None]
# Most pixels of one page image. A page being OCR'd costs about 15 bytes per
# pixel at its peak (grayscale, the RGB copy RapidOCR takes, deskew, table
# rules), so this bounds one page's memory to a few hundred MB; an A4 page at
# 300 dpi is 8.7 M pixels, A3 17.4 M.
DEFAULT_MAX_PIXELS = 25_000_000
# Under this OCR confidence the page's orientation is checked (Tesseract OSD)
# and, if it is sideways or upside down, the page is turned and read again.
# Upright pages score 0.85-1.0 here; upside-down ones 0.35 (Tesseract) to 0.7.
TURN_CHECK_BELOW = 0.8


@dataclass
class PageImage:
    """An image found on a page (returned when ``include_image_base64``)."""

    id: str
    top_left_x: int
    top_left_y: int
    bottom_right_x: int
    bottom_right_y: int
    image_base64: str | None = None


@dataclass
class PageResult:
    """One page of a document, read."""

    index: int  # 0-based, as in Mistral's OCR API
    markdown: str
    width: int  # pixels (at ``dpi``)
    height: int
    dpi: int
    method: str  # "text-layer", "ocr-rapidocr", "ocr-tesseract"
    confidence: float  # 0..1 (1.0 for a real text layer)
    language: str | None = None  # what OCR was run with, e.g. "eng", "ell+grc"
    images: list[PageImage] = field(default_factory=list)


@dataclass
class DocumentResult:
    """A whole document, read: its pages and what it was."""

    pages: list[PageResult]
    page_count: int  # pages in the document (not only the ones read)
    mime_type: str
    size_bytes: int


def read_document(
    data: bytes,
    *,
    filename: str = "document",
    pages: Sequence[int] | None = None,
    ocr: OcrEngine = "auto",
    languages: Sequence[str] | None = None,
    include_images: bool = False,
    max_pages: int = 1000,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    ocr_dpi: int = 300,
    checkpoint: Checkpoint | None = None,
) -> DocumentResult:
    """Read ``data`` into markdown pages (synchronous, CPU-bound: call it in a worker thread).

    ``pages``: 0-based page indexes to read (None: all). ``ocr``: which OCR engine
    for pages without a usable text layer (``auto`` picks by script/language;
    ``none`` never OCRs). ``languages``: Tesseract language codes (``eng``,
    ``fra``, ``deu``, ``ita``, ``spa``, ``ell``, ``grc``); None: detect/default.
    ``max_pages``: a document with more pages is refused (``TooManyPages``),
    whatever ``pages`` asks for. ``max_pixels``: the most pixels of one page
    image: an image (or TIFF frame) over it is refused (``ImageTooLarge``),
    checked from its header before decoding; a PDF page is rendered at a lower
    dpi to fit (its box times ``/UserUnit``), and refused (``PageTooLarge``)
    when even 30 dpi is over. ``ocr_dpi``: rendering resolution of PDF pages
    for OCR. ``checkpoint``: called between pages and between the steps of a
    page; it raises to stop the read (see :mod:`intramuros.docai.control`).
    """
    doc = open_document(data, filename=filename, pages=pages, ocr=ocr, languages=languages,
                        include_images=include_images, max_pages=max_pages,
                        max_pixels=max_pixels, ocr_dpi=ocr_dpi, checkpoint=checkpoint)
    try:
        out = []
        for i in doc.wanted:
            doc.check()
            out.append(doc.read_page(i))
        return doc.result(out)
    finally:
        doc.close()


def open_document(
    data: bytes,
    *,
    filename: str = "document",
    pages: Sequence[int] | None = None,
    ocr: OcrEngine = "auto",
    languages: Sequence[str] | None = None,
    include_images: bool = False,
    max_pages: int = 1000,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    ocr_dpi: int = 300,
    checkpoint: Checkpoint | None = None,
) -> OpenDocument:
    """``data`` opened for reading page by page (options as :func:`read_document`).

    The caller reads ``doc.wanted`` with ``doc.read_page(i)`` (each call in
    any worker thread, one at a time) and must call ``doc.close()``. Opening
    checks the options, the type, the page count and the pages asked for.
    """
    choices = ocr_choices()
    if ocr not in choices:
        raise InvalidOcrOption(filename, f"unknown OCR engine '{str(ocr)[:64]}'; use one of "
                               f"{', '.join(choices)}", param="ocr")
    if not 50 <= ocr_dpi <= 600:
        raise InvalidOcrOption(filename, f"ocr_dpi must be between 50 and 600, not {ocr_dpi}",
                               param="ocr_dpi")
    if not isinstance(data, bytes):
        data = bytes(data)  # bytearray, memoryview
    langs = list(languages or [])
    known = backends.languages()
    for lang in langs:
        if lang not in known:
            raise InvalidOcrOption(filename, f"unknown OCR language '{str(lang)[:64]}'; known: "
                                   f"{', '.join(known)}", param="languages")
    mime = imgs.sniff(data, filename)
    reader = _Reader(filename, ocr, langs, max_pixels, include_images, checkpoint)
    doc = OpenDocument(data, mime, reader, ocr_dpi)
    try:
        if mime == "application/pdf":
            doc.open_pdf(pages, max_pages)
        else:
            doc.open_image(pages, max_pages)
        doc.check()
    except BaseException:
        doc.close()
        raise
    return doc


def ocr_choices() -> list[str]:
    """The values of the ``ocr`` option: ``auto``, ``none`` and every registered backend."""
    return ["auto", *backends.names(), "none"]


class OpenDocument:
    """One document, open: what it is, which pages to read, and how to read each.

    ``read_page`` and ``close`` hold the document's lock, so a ``close`` from
    one thread waits for a page being read in another (PDFium must not free a
    document under a page being rendered).
    """

    def __init__(self, data: bytes, mime: str, reader: _Reader, ocr_dpi: int) -> None:
        self.data = data
        self.mime_type = mime
        self.filename = reader.filename
        self.page_count = 0
        self.wanted: list[int] = []
        self._reader = reader
        self._ocr_dpi = ocr_dpi
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        self._pdf: Any = None
        self._plumber: Any = None
        self._image: Image.Image | None = None
        self._image_dpi = 300
        self._closed = False

    def check(self) -> None:
        """Run the caller's checkpoint (it raises to stop the read)."""
        self._reader.check()

    def open_pdf(self, pages: Sequence[int] | None, max_pages: int) -> None:
        self._pdf = self._stack.enter_context(pdfmod.open_pdf(self.data, self.filename))
        self.page_count = pdfmod.page_count(self._pdf)
        self.wanted = _select(pages, self.page_count, max_pages, self.filename)
        self.check()
        self._plumber = self._stack.enter_context(pdfmod.open_plumber(self.data))

    def open_image(self, pages: Sequence[int] | None, max_pages: int) -> None:
        reader = self._reader
        self._image = imgs.open_image(self.data, self.filename, reader.max_pixels)
        self._stack.callback(self._image.close)
        count = imgs.frame_count(self._image, max_pages)
        if count is None:
            raise TooManyPages(self.filename, f"it has more than {max_pages} pages, the limit "
                               "(--docai-max-pages)")
        self.page_count = count
        self.wanted = _select(pages, self.page_count, max_pages, self.filename)
        self._image_dpi = imgs.image_dpi(self._image)

    def read_page(self, i: int) -> PageResult:
        """Page ``i`` (one of ``wanted``), read."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the document is closed")
            reader = self._reader
            reader.check()
            if self._image is not None:
                frame = imgs.frame(self._image, i, self.filename, reader.max_pixels)
                return reader.ocr_page(i, frame, self._image_dpi)
            tp, unit = None, 1.0
            if self._plumber is not None:
                try:
                    page = self._plumber.pages[i]
                    try:
                        unit = pdfmod.user_unit(page)
                        tp = pdfmod.read_text_layer(page, reader.include_images)
                    finally:
                        page.close()  # drop pdfminer's parsed objects: long PDFs
                except Exception:  # pdfminer on a damaged page: fall back to OCR
                    tp = None
            reader.check()
            return reader.pdf_page(self._pdf, i, tp, self._ocr_dpi, unit)

    def result(self, pages: list[PageResult]) -> DocumentResult:
        """The document's result from its pages, read."""
        return DocumentResult(pages=pages, page_count=self.page_count, mime_type=self.mime_type,
                              size_bytes=len(self.data))

    def close(self) -> None:
        """Free the document (after a page being read, if one is)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._stack.close()


def _select(pages: Sequence[int] | None, count: int, max_pages: int, filename: str) -> list[int]:
    if count > max_pages:
        raise TooManyPages(filename, f"it has {count} pages, over the limit of {max_pages} "
                           "(--docai-max-pages)")
    if pages is None:
        return list(range(count))
    out: list[int] = []
    seen: set[int] = set()
    for p in pages:
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < count:
            raise InvalidPages(filename, f"page {p!r} does not exist: the document has "
                               f"{count} page{'s' if count != 1 else ''} (0 to {count - 1})")
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


class _Reader:
    """Reads pages of one document with one set of options."""

    def __init__(self, filename: str, ocr: str, langs: list[str], max_pixels: int,
                 include_images: bool, checkpoint: Checkpoint | None = None) -> None:
        self.filename = filename
        self.ocr = ocr
        self.langs = langs
        self.max_pixels = max_pixels
        self.include_images = include_images
        self.checkpoint = checkpoint
        # The document's script other than Latin, once known (from a text layer or an
        # OCR pass): later pages of a Greek document go straight to Tesseract.
        self.script: str | None = None
        # Backends that could not run here (OcrUnavailable): auto passes them by.
        self.failed: frozenset[str] = frozenset()

    def check(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint()

    def pdf_page(self, doc: Any, i: int, tp: pdfmod.TextPage | None, ocr_dpi: int,
                 unit: float = 1.0) -> PageResult:
        # What PDFium renders: the page box it uses (its size, rotation applied),
        # scaled by /UserUnit here (PDFium ignores it; see pdf.render).
        box_w, box_h = pdfmod.page_size(doc, i)
        w, h = (box_w, box_h) if tp is None else (tp.width, tp.height)
        if tp is not None and (tp.usable or self.ocr == "none"):
            if tp.usable:
                self.script = backends.text_script(tp.text) or self.script
            md = pdfmod.text_markdown(tp)
            images: list[PageImage] = []
            if self.include_images and tp.images:
                dpi = pdfmod.fit_dpi(box_w, box_h, 150, self.max_pixels, self.filename, i, unit)
                page_img = pdfmod.render(doc, i, dpi, self.filename, unit=unit,
                                         max_pixels=self.max_pixels)
                for n, bb in enumerate(tp.images):
                    images.append(PageImage(
                        id=f"img-{n}.jpeg", top_left_x=round(bb[0]), top_left_y=round(bb[1]),
                        bottom_right_x=round(bb[2]), bottom_right_y=round(bb[3]),
                        image_base64=pdfmod.crop_base64(page_img, bb, dpi)))
            return PageResult(index=i, markdown=md, width=round(w), height=round(h), dpi=72,
                              method="text-layer",
                              confidence=1.0 if tp.usable else round(tp.quality, 3),
                              images=images)
        if self.ocr == "none":  # no text layer could be read at all
            return PageResult(index=i, markdown="", width=round(w), height=round(h), dpi=72,
                              method="text-layer", confidence=0.0)
        # The pixel budget is checked on the page box before anything is rendered.
        dpi = pdfmod.fit_dpi(box_w, box_h, ocr_dpi, self.max_pixels, self.filename, i, unit)
        image = pdfmod.render(doc, i, dpi, self.filename, unit=unit, max_pixels=self.max_pixels)
        return self.ocr_page(i, image, dpi)

    def ocr_page(self, i: int, image: Image.Image, dpi: int) -> PageResult:
        if self.ocr == "none":
            return PageResult(index=i, markdown="", width=image.width, height=image.height,
                              dpi=dpi, method="none", confidence=0.0)
        self.check()
        upright, _angle = deskew(image)
        self.check()
        engine, page = self._run_ocr(upright, dpi)
        self.check()
        if page.confidence < TURN_CHECK_BELOW:
            # Low confidence: maybe a page scanned sideways or upside down.
            from intramuros.docai import ocr_tesseract

            turn = ocr_tesseract.detect_rotation(upright, dpi, self.checkpoint)
            if turn:
                # Deskew again: the first pass measured skew on a sideways page.
                self.check()
                turned, _angle = deskew(image.rotate(-turn, expand=True, fillcolor=255))
                self.check()
                engine2, page2 = self._run_ocr(turned, dpi)
                if page2.confidence > page.confidence:
                    upright, engine, page = turned, engine2, page2
            self.check()
        md = ocr_markdown(upright, page, dpi)
        return PageResult(index=i, markdown=md, width=image.width, height=image.height, dpi=dpi,
                          method=f"ocr-{engine}", confidence=round(page.confidence, 3),
                          language=page.language)

    def _run_ocr(self, image: Image.Image, dpi: int) -> tuple[str, OcrPage]:
        if self.ocr != "auto":
            chosen = backends.backend(self.ocr)
            langs = self.langs or chosen.default_languages(backends.LATIN)
            return chosen.name, chosen.read(image, dpi, langs, self.checkpoint)
        if self.langs:
            return self._auto(backends.LATIN, image, dpi, self.langs)
        script = self.script
        if script is not None and backends.choose(script, (), self.failed) is not None:
            return self._auto(script, image, dpi, [])
        # Script unknown: read as Latin, then look at what came out. RapidOCR's
        # alphabet has some Greek letters: a Greek page comes out as broken
        # Greek, which is enough to tell the script.
        name, first = self._auto(backends.LATIN, image, dpi, [])
        found = backends.text_script(" ".join(b.text for b in first.boxes))
        better = backends.choose(found, (), self.failed) if found is not None else None
        if found is None or better is None:
            return name, first
        self.script = found
        if better.name == name and (better.default_languages(found)
                                    == better.default_languages(backends.LATIN)):  # fmt: skip
            return name, first
        self.check()
        return self._auto(found, image, dpi, [])

    def _auto(self, script: str, image: Image.Image, dpi: int,
              langs: list[str]) -> tuple[str, OcrPage]:  # fmt: skip
        """Read with the backend ``auto`` picks for ``script``/``langs``; the next one when
        it cannot run here (``OcrUnavailable``), remembered for the rest of the document."""
        last: OcrUnavailable | None = None
        while (chosen := backends.choose(script, langs, self.failed)) is not None:
            try:
                return chosen.name, chosen.read(
                    image, dpi, langs or chosen.default_languages(script), self.checkpoint)
            except OcrUnavailable as exc:
                self.failed |= {chosen.name}
                last = exc
        raise last or backends.missing(script, langs)


def ocr_markdown(image: Image.Image, page: OcrPage, dpi: int) -> str:
    """OCR boxes of one page image as markdown, ruled tables found on the image itself."""
    import numpy as np

    gray = np.asarray(image)
    boxes: list[Box] = list(page.boxes)
    body = statistics.median(b.size for b in boxes) if boxes else None
    boxes += find_bullets(gray, boxes)
    grids = find_grids(gray, dpi)
    placed: list[Box] = []
    for g in grids:
        rows, boxes = fill_grid(g, boxes)
        if sum(1 for r in rows for c in r if c) >= 2:
            placed.append(table_box(g, rows, size=float(dpi) / 6))
    # A column gutter is at least a quarter inch.
    return layout_markdown(boxes + placed, col_gap=dpi / 4, ocr=True, body=body)
