"""Unit tests of the limits on document work: pages, pixels, time, cancellation, fairness.

Fast and without a server (the end-to-end abuse tests are in test_abuse_docai.py):
``pages`` parsed as merged ranges, bounded before any expansion; the fair
scheduler's round robin; the read control (cancel flag, work-time budget);
Tesseract killed mid-page; the pixel budget with ``/UserUnit``; TIFF pages
counted without walking the whole chain; inline data URLs cut out of large
bodies and decoded a slice at a time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import os
import sys
import time
from pathlib import Path

import pytest

from intramuros.docai import pipeline
from intramuros.docai import protocol as dp
from intramuros.docai.control import ReadControl
from intramuros.docai.errors import (
    DocumentTimeLimit,
    ImageTooLarge,
    PageTooLarge,
    ReadCancelled,
    TooManyPages,
)
from intramuros.docai.fair import FairSlots
from intramuros.docai.inline import PLACEHOLDER, b64decode_sliced, split_body
from intramuros.docai.pipeline import DocumentResult, PageResult
from intramuros.docai.sources import decode_data_url, page_list, parse_page_ranges
from intramuros.errors import PayloadTooLarge
from intramuros.files.errors import BadDocument, InvalidPageList
from tests.test_abuse_docai import giant_page_pdf, scan_pdf

# -- pages ---------------------------------------------------------------------------------


def test_page_ranges_are_merged_not_expanded() -> None:
    assert parse_page_ranges("5-7,0, 2 ,6,3-4") == [(0, 0), (2, 7)]
    assert parse_page_ranges("0-100000,0-100000") == [(0, 100_000)]
    start = time.perf_counter()
    ranges = parse_page_ranges(",".join(["0-100000"] * 800))
    assert ranges == [(0, 100_000)] and time.perf_counter() - start < 1.0
    for bad in ("", "a", "3-1", "1-", "-1", "1--2", "\u0663", "\uff11", "1234567890", "0-100000,"):
        with pytest.raises(ValueError):
            parse_page_ranges(bad)
    with pytest.raises(ValueError, match="ranges"):
        parse_page_ranges("1," * dp.MAX_PAGE_ITEMS + "1")
    with pytest.raises(ValueError, match="characters"):
        parse_page_ranges(" " * (dp.MAX_PAGES_TEXT + 1))


def test_page_list_refuses_indexes_no_document_can_have() -> None:
    assert page_list("0-2,9", 10) == [0, 1, 2, 9]
    for bad in ("0-100000," * 800, "0-10", [10], 10, [0, -1], 10**30, []):
        with pytest.raises(InvalidPageList) as info:
            page_list(bad, 10)  # type: ignore[arg-type]
        assert info.value.param == "pages" and info.value.status == 400
    with pytest.raises(InvalidPageList, match="--docai-max-pages"):
        page_list("0-100000", 1000)
    # The wire type refuses an oversized list or string with one clear error.
    for pages in (list(range(dp.MAX_PAGE_ITEMS + 1)), "1" * (dp.MAX_PAGES_TEXT + 1)):
        with pytest.raises(ValueError, match="at most"):
            dp.OCRRequest.model_validate({"document": {"type": "file", "file_id": "f"},
                                          "pages": pages})  # fmt: skip


# -- the fair scheduler ----------------------------------------------------------------------


def test_fair_slots_serve_tenants_in_turn() -> None:
    async def scenario() -> list[str]:
        slots = FairSlots(1)
        order: list[str] = []
        await slots.acquire("a")  # a's first page holds the only slot

        async def unit(name: str) -> None:
            async with slots.turn(name[0]):
                order.append(name)

        tasks = []
        for name in ("a2", "a3", "a4", "b1", "c1", "b2"):
            tasks.append(asyncio.create_task(unit(name)))
            await asyncio.sleep(0)
        gone = asyncio.create_task(unit("c2"))
        await asyncio.sleep(0)
        gone.cancel()  # a waiter that gives up takes no slot with it
        assert slots.waiting() == {"a": 3, "b": 2, "c": 2}
        slots.release()
        await asyncio.gather(*tasks)
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert slots.waiting() == {}
        await slots.acquire("z")  # the slot came back
        return order

    assert asyncio.run(scenario()) == ["a2", "b1", "c1", "a3", "b2", "a4"]


def test_service_reads_pages_of_two_tenants_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long document and a short one: the short one is done after one page of the long."""
    from intramuros.docai.options import OcrOptions
    from intramuros.docai.service import DocaiService
    from intramuros.gate.tenants import Principal
    from intramuros.serving.service import InferenceService
    from intramuros.settings import load_settings

    log: list[str] = []

    class Doc:
        def __init__(self, name: str, pages: int) -> None:
            self.name, self.wanted = name, list(range(pages))

        def read_page(self, i: int) -> PageResult:
            time.sleep(0.02)
            log.append(f"{self.name}{i}")
            return PageResult(index=i, markdown="x", width=1, height=1, dpi=72,
                              method="text-layer", confidence=1.0)  # fmt: skip

        def result(self, pages: list[PageResult]) -> DocumentResult:
            return DocumentResult(pages=pages, page_count=len(pages), mime_type="x",
                                  size_bytes=1)  # fmt: skip

        def close(self) -> None:
            pass

    monkeypatch.setattr(pipeline, "open_document",
                        lambda data, **kw: Doc(data.decode(), 20 if data == b"A" else 2))
    core = InferenceService(load_settings(data_dir=tmp_path, preload_models=[], egress_guard=False))
    core.db.migrate()
    svc = DocaiService(core)
    opts = OcrOptions(model="intramuros-ocr", engine="auto")

    async def scenario() -> None:
        a = asyncio.create_task(svc.read(Principal(tenant="a", key_id=None, role="user"), b"A",
                                         filename="a", opts=opts, source="inline"))
        while len(log) < 2:
            await asyncio.sleep(0.005)
        await svc.read(Principal(tenant="b", key_id=None, role="user"), b"B", filename="b",
                       opts=opts, source="inline")  # fmt: skip
        assert "A19" not in log
        await a

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(svc.close())
        core.db.close()
    # B's pages alternate with A's: one page of A between B's two turns.
    assert log.index("B1") - log.index("B0") == 2 and log[-1] == "A19", log


# -- stopping a read ----------------------------------------------------------------------------


def test_closing_the_service_stops_the_reads_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At shutdown a long document stops at its next step; it does not hold the server."""
    from intramuros.docai.errors import ServerStopping
    from intramuros.docai.options import OcrOptions
    from intramuros.docai.service import DocaiService
    from intramuros.gate.tenants import Principal
    from intramuros.serving.service import InferenceService
    from intramuros.settings import load_settings

    read: list[int] = []

    class Endless:
        wanted = list(range(1000))

        def read_page(self, i: int) -> PageResult:
            time.sleep(0.05)
            read.append(i)
            return PageResult(index=i, markdown="", width=1, height=1, dpi=72,
                              method="text-layer", confidence=1.0)  # fmt: skip

        def close(self) -> None:
            pass

    monkeypatch.setattr(pipeline, "open_document", lambda data, **kw: Endless())
    core = InferenceService(load_settings(data_dir=tmp_path, preload_models=[], egress_guard=False))
    core.db.migrate()
    svc = DocaiService(core)

    async def scenario() -> None:
        who = Principal(tenant="a", key_id=None, role="user")
        task = asyncio.create_task(svc.read(who, b"x", filename="long.pdf", source="inline",
                                            opts=OcrOptions(model="m", engine="auto")))
        while len(read) < 3:
            await asyncio.sleep(0.01)
        await svc.close()
        with pytest.raises(ServerStopping):
            await task

    try:
        asyncio.run(scenario())
    finally:
        core.db.close()
    assert len(read) < 10, read


def test_read_control_cancel_and_work_time() -> None:
    control = ReadControl("scan.pdf", max_seconds=0.2)
    control.check()
    time.sleep(0.3)  # waiting for a turn is not work
    control.check()
    with control.working():
        time.sleep(0.1)
    control.check()
    with control.working(), pytest.raises(DocumentTimeLimit) as info:
        time.sleep(0.15)
        control.check()  # mid-step: the step running now counts
    assert "--docai-max-seconds" in info.value.message and info.value.status == 422
    stop = ReadControl()
    stop.cancel(ReadCancelled("gone"))
    stop.cancel(ReadCancelled("second reason"))
    with pytest.raises(ReadCancelled, match="gone"):
        stop.check()


def test_a_read_stops_between_pages() -> None:
    calls = 0

    def checkpoint() -> None:
        nonlocal calls
        calls += 1
        if calls > 6:
            raise ReadCancelled("stop")

    with pytest.raises(ReadCancelled):
        pipeline.read_document(scan_pdf(50), filename="long.pdf", ocr="none",
                               checkpoint=checkpoint)  # fmt: skip
    assert calls == 7  # opening, then a few pages: not the fifty


def test_tesseract_is_killed_when_the_read_stops() -> None:
    from intramuros.docai import ocr_tesseract

    start = time.perf_counter()

    def checkpoint() -> None:
        if time.perf_counter() - start > 0.5:
            raise ReadCancelled("stop")

    sleeper = [sys.executable, "-c", "import sys, time; sys.stdin.read(); time.sleep(30)"]
    with pytest.raises(ReadCancelled):
        ocr_tesseract.run_tesseract(sleeper, b"x" * 1_000_000, checkpoint)
    assert time.perf_counter() - start < 5
    # A page image larger than the pipe, read late: the input is still all written.
    slow_echo = [sys.executable, "-c", "import sys, time; time.sleep(0.6); "
                 "sys.stdout.buffer.write(sys.stdin.buffer.read())"]  # fmt: skip
    page = os.urandom(2_000_000)
    assert ocr_tesseract.run_tesseract(slow_echo, page, lambda: None) == (0, page, b"")


# -- pixels ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pixel_budget_counts_user_unit_before_rendering() -> None:
    from intramuros.docai import pdf as pdfmod

    assert pdfmod.fit_dpi(595, 842, 300, 25_000_000, "a4.pdf", 0) == 300
    assert pdfmod.fit_dpi(595, 842, 300, 25_000_000, "a4.pdf", 0, unit=2.0) == 254
    with pytest.raises(PageTooLarge, match=r"200 x 200 inches.*--docai-max-pixels"):
        pdfmod.fit_dpi(14_400, 14_400, 300, 25_000_000, "big.pdf", 0)
    with pytest.raises(PageTooLarge, match=r"/UserUnit 10"):
        pdfmod.fit_dpi(1440, 1440, 300, 25_000_000, "big.pdf", 0, unit=10.0)
    with pytest.raises(pdfmod.InvalidDocument):
        pdfmod.fit_dpi(0, 842, 300, 25_000_000, "flat.pdf", 0)
    for pdf in (giant_page_pdf(), giant_page_pdf(1440, 10)):
        with pytest.raises(PageTooLarge):
            pipeline.read_document(pdf, filename="giant.pdf")
    # A page with /UserUnit 2 is twice the size it says: rendered so, and counted so.
    page = pipeline.read_document(giant_page_pdf(144, 2), filename="u.pdf", ocr_dpi=100,
                                  ocr="rapidocr").pages[0]  # fmt: skip
    assert (page.width, page.height, page.dpi) == (400, 400, 100)
    page = pipeline.read_document(giant_page_pdf(1440, 2), filename="u.pdf", ocr="rapidocr",
                                  max_pixels=4_000_000).pages[0]  # fmt: skip
    assert 30 <= page.dpi <= 50 and page.width * page.height <= 4_000_000


def test_tiff_pages_are_counted_without_walking_the_whole_chain() -> None:
    from PIL import Image

    from intramuros.docai import images

    buf = io.BytesIO()
    frames = [Image.new("L", (40, 40), 255) for _ in range(6)]
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    img = images.open_image(buf.getvalue(), "fax.tiff", 1_000_000)
    assert images.frame_count(img, 6) == 6 and images.frame_count(img, 5) is None
    assert images.frame_count(img, 100) == 6
    with pytest.raises(TooManyPages, match="more than 3 pages"):
        pipeline.read_document(buf.getvalue(), filename="fax.tiff", max_pages=3)
    buf = io.BytesIO()
    big = Image.new("1", (3000, 3000), 1)
    frames[0].convert("1").save(buf, format="TIFF", save_all=True, append_images=[big],
                                compression="group4")  # fmt: skip
    with pytest.raises(ImageTooLarge, match=r"page 1 of the image is 3000x3000"):
        pipeline.read_document(buf.getvalue(), filename="fax.tiff", max_pixels=5_000_000)


# -- inline documents ------------------------------------------------------------------------------


def test_large_bodies_have_their_data_url_cut_out_and_decoded_by_slices() -> None:
    pdf = os.urandom(3_000_000)
    encoded = base64.b64encode(pdf).decode()
    body = json.dumps({"document": {"type": "document_url",
                                    "document_url": "data:application/pdf;base64," + encoded},
                       "pages": "0-2"}).encode()  # fmt: skip
    split = split_body(body)
    assert split.parsed["document"]["document_url"] == "data:application/pdf;base64," + PLACEHOLDER
    assert split.parsed["pages"] == "0-2" and split.payload is not None
    assert b64decode_sliced(split.payload) == pdf
    # ``\/`` escapes (PHP's encoder) are undone; other escapes are refused.
    escaped = body.replace(b"/", b"\\/")
    assert b64decode_sliced(split_body(escaped).payload or []) == pdf
    with pytest.raises(BadDocument):
        split_body(body[:300] + b"\\n" + body[300:])
    # Options apart from the document are small, or refused.
    with pytest.raises(PayloadTooLarge):
        split_body(json.dumps({"pages": list(range(300_000))}).encode())
    with pytest.raises(json.JSONDecodeError):  # the rest is not JSON
        split_body(b'{"d": "data:image/png;base64,' + b"QUJD" * 50_000 + b'", ' + b" " * 10**6)
    small = json.dumps({"pages": [1]}).encode()
    assert split_body(small).parsed == {"pages": [1]} and split_body(small).payload is None


def test_decode_data_url_uses_the_cut_out_payload_and_stays_strict() -> None:
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(200_000)
    url = "data:image/png;base64," + PLACEHOLDER
    pieces = [base64.b64encode(png)]
    assert decode_data_url(url, param="p", images_only=True, max_bytes=10**6,
                           inline=pieces) == ("image/png", png)  # fmt: skip
    with pytest.raises(BadDocument, match="base64"):  # the placeholder alone is no document
        decode_data_url(url, param="p", images_only=True, max_bytes=10**6)
    for bad in (b"QQ=", b"QQ==QUJD", b"QUJD" * 65536 + b"QQ==" + b"QUJD", b"Q!=="):
        with pytest.raises(binascii.Error):
            b64decode_sliced([bad])
    assert b64decode_sliced([b"QU\nJD", b" QQ=="]) == b"ABCA"
