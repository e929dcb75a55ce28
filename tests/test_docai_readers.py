"""Document readers (``intramuros.docai.pipeline.read_document``) on the committed corpus.

Real engines throughout: pdfplumber/pypdfium2 for text layers, RapidOCR
(the models inside its wheel) and the Debian Tesseract for scans. Accuracy
is scored like ``benchmarks/docai_accuracy.py`` scores it, against
``benchmarks/docai_corpus/truth.json``; the CER limits are a few times what
the pipeline measures (see docs/docai-readers.md), far below what a broken
step gives (wrong engine, lost lines, garbled reading order: CER > 0.3).
"""

# Greek text is meant, not look-alike letters:
# ruff: noqa: RUF001

from __future__ import annotations

import importlib.util
import io
import struct
import sys
import unicodedata
import zlib
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

from intramuros.docai import errors as E
from intramuros.docai import layout, ocr_rapid, pdf
from intramuros.docai.ocr import normalise_text
from intramuros.docai.ocr_tesseract import parse_tsv
from intramuros.docai.pipeline import DocumentResult, read_document

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "benchmarks" / "docai_corpus"

# Real OCR models (RapidOCR, Tesseract) read real scans: the slow tier.
pytestmark = pytest.mark.slow


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "_bench_docai_accuracy", ROOT / "benchmarks" / "docai_accuracy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _bench()
TRUTH = bench.load_truth(CORPUS)


def data(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


@cache
def read(name: str, ocr: str = "auto", langs: tuple[str, ...] | None = None,
         pages: tuple[int, ...] | None = None) -> DocumentResult:
    """One document read (cached: several tests look at the same result)."""
    return read_document(data(name), filename=name, ocr=ocr,  # type: ignore[arg-type]
                         languages=list(langs) if langs else None,
                         pages=list(pages) if pages is not None else None)


def page_cer(name: str, res: DocumentResult, i: int = 0) -> float:
    truth = TRUTH[name]["pages"][res.pages[i].index if name.endswith((".pdf", ".tiff")) else 0]
    return float(bench.cer(res.pages[i].markdown, truth["text"]))


# ---------------------------------------------------------------------------
# Born-digital PDFs: the text layer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["en", "fr", "de", "el", "grc"])
def test_text_layer_reads_every_language_exactly(lang: str) -> None:
    res = read(f"{lang}.pdf")
    assert res.mime_type == "application/pdf" and res.page_count == len(res.pages) >= 2
    for i, page in enumerate(res.pages):
        assert page.method == "text-layer" and page.confidence == 1.0 and page.index == i
        assert page.dpi == 72 and (page.width, page.height) == (595, 842)  # A4 in points
        truth = TRUTH[f"{lang}.pdf"]["pages"][i]
        assert bench.cer(page.markdown, truth["text"]) < 0.005, page.markdown
        assert unicodedata.is_normalized("NFC", page.markdown)


def test_text_layer_headings_lists_and_reading_order() -> None:
    p0, p1, p2 = read("en.pdf").pages
    lines = p0.markdown.splitlines()
    assert lines[0] == "# Annual Report of the Harbour Authority"
    items = [ln for ln in lines if ln.startswith("- ")]
    assert items == [f"- {t}" for t in TRUTH["en.pdf"]["pages"][0]["text"].splitlines()[3:]]
    assert p1.markdown.startswith("# Cargo by category\n")
    # Two columns: all of the left column comes before the right one.
    text = bench.plain(p2.markdown)
    left, right = (bench.plain(t) for t in TRUTH["en.pdf"]["pages"][2]["text"].splitlines())
    assert text == f"{left} {right}"


@pytest.mark.parametrize("lang", ["en", "grc"])
def test_text_layer_tables_become_markdown_tables(lang: str) -> None:
    page = read(f"{lang}.pdf").pages[1]
    truth = TRUTH[f"{lang}.pdf"]["pages"][1]["tables"]
    assert bench.markdown_tables(page.markdown) == truth
    header = page.markdown.splitlines()[2]
    assert header == "| " + " | ".join(truth[0][0]) + " |"
    assert page.markdown.splitlines()[3] == "|" + " --- |" * len(truth[0][0])


# ---------------------------------------------------------------------------
# Scans and images: RapidOCR and Tesseract
# ---------------------------------------------------------------------------


def test_rapidocr_reads_a_clean_english_page_and_its_table() -> None:
    res = read("en_p2_300.png", "rapidocr")
    page = res.pages[0]
    assert res.mime_type == "image/png" and page.method == "ocr-rapidocr"
    assert page.language == "latin" and page.dpi == 300 and page.width == 2481
    assert page_cer("en_p2_300.png", res) < 0.03
    right, total = bench.cell_accuracy(page.markdown, TRUTH["en_p2_300.png"]["pages"][0]["tables"])
    assert total == 15 and right >= 14
    assert page.markdown.startswith("# Cargo by category")
    assert 0.5 < page.confidence <= 1.0


def test_tesseract_reads_a_skewed_noisy_french_scan() -> None:
    res = read("fr_p1_scan300.jpg", "tesseract", ("fra",))
    page = res.pages[0]
    assert res.mime_type == "image/jpeg" and page.method == "ocr-tesseract"
    assert page.language == "fra"
    assert page_cer("fr_p1_scan300.jpg", res) < 0.04
    assert "- " in page.markdown  # the bulleted list survives OCR


def test_tesseract_reads_modern_greek_in_nfc_with_mu() -> None:
    res = read("el_p1_scan300.jpg", "tesseract", ("ell",))
    md = res.pages[0].markdown
    assert res.pages[0].language == "ell"
    assert page_cer("el_p1_scan300.jpg", res) < 0.05
    assert unicodedata.is_normalized("NFC", md)
    assert "\u00b5" not in md and "με" in md  # ell's micro sign turned into mu


def test_auto_detects_ancient_greek_and_uses_tesseract() -> None:
    res = read("grc_p1_300.png")
    page = res.pages[0]
    assert page.method == "ocr-tesseract" and page.language == "grc+ell+eng"
    assert page_cer("grc_p1_300.png", res) < 0.06
    assert "Ἡροδότου" in page.markdown and unicodedata.is_normalized("NFC", page.markdown)


def test_multipage_tiff_page_subset() -> None:
    res = read("en_multipage.tiff", "tesseract", ("eng",), pages=(1,))
    assert res.mime_type == "image/tiff" and res.page_count == 2
    assert [p.index for p in res.pages] == [1]
    page = res.pages[0]
    assert page.dpi == 150
    assert page_cer("en_multipage.tiff", res) < 0.05
    right, total = bench.cell_accuracy(page.markdown,
                                       TRUTH["en_multipage.tiff"]["pages"][1]["tables"])
    assert right >= total - 2


def test_image_only_pdf_is_ocrd_and_ocr_none_returns_no_text() -> None:
    res = read("fr_scanned.pdf", "tesseract", ("fra",), pages=(0,))
    assert res.page_count == 2 and res.pages[0].method == "ocr-tesseract"
    assert page_cer("fr_scanned.pdf", res) < 0.04
    none = read("fr_scanned.pdf", "none")
    assert [p.markdown for p in none.pages] == ["", ""]
    assert all(p.confidence == 0.0 for p in none.pages)


def test_ocr_markdown_keeps_headings_paragraphs_and_lists() -> None:
    md = read("fr_p1_scan300.jpg", "tesseract", ("fra",)).pages[0].markdown
    blocks = md.strip().split("\n\n")
    assert blocks[0] == "# Rapport annuel de la coopérative laitière"
    assert [b.split()[0] for b in blocks[1:3]] == ["La", "Le"]  # two paragraphs
    items = blocks[3].splitlines()
    assert len(blocks) == 4 and len(items) == 3 and all(i.startswith("- ") for i in items)
    assert items[1] == "- Création d'une cave d'affinage supplémentaire."


def test_include_images_returns_placeholders_and_crops() -> None:
    import base64

    from PIL import Image

    plain_page = read("en_figure.pdf").pages[0]
    assert plain_page.images == [] and "![" not in plain_page.markdown
    page = read_document(data("en_figure.pdf"), filename="f.pdf", include_images=True).pages[0]
    assert page.method == "text-layer"
    assert "\n\n![img-0.jpeg](img-0.jpeg)\n\nFigure 1." in page.markdown
    (img,) = page.images
    assert img.id == "img-0.jpeg"
    # The picture is 300 x 150 points, in the page's coordinates (points).
    assert (img.bottom_right_x - img.top_left_x, img.bottom_right_y - img.top_left_y) == (300, 150)
    assert img.image_base64 is not None and img.image_base64.startswith("data:image/jpeg;base64,")
    crop = Image.open(io.BytesIO(base64.b64decode(img.image_base64.split(",", 1)[1])))
    assert crop.format == "JPEG" and abs(crop.width - 625) <= 3  # 300 pt at 150 dpi


def test_concurrent_reads_from_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(k: int) -> str:
        if k % 2:
            res = read_document(data("en.pdf"), filename="en.pdf", pages=[1])
        else:
            res = read_document(data("fr_scanned.pdf"), filename="s.pdf", pages=[1],
                                ocr="tesseract", languages=["fra"], ocr_dpi=150)
        return res.pages[0].markdown

    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(one, range(4)))
    assert out[1] == out[3] == read("en.pdf").pages[1].markdown
    assert out[0] == out[2]
    assert bench.cer(out[0], TRUTH["fr_scanned.pdf"]["pages"][1]["text"]) < 0.05


# ---------------------------------------------------------------------------
# Mixed PDFs: per page, text layer or OCR
# ---------------------------------------------------------------------------


def test_mixed_pdf_text_layer_then_ocr() -> None:
    res = read("de_mixed.pdf")  # auto: page 2 is a scan, German, so RapidOCR
    first, second = res.pages
    assert first.method == "text-layer" and first.confidence == 1.0
    assert second.method == "ocr-rapidocr" and second.dpi == 300
    assert page_cer("de_mixed.pdf", res, 0) < 0.005
    assert page_cer("de_mixed.pdf", res, 1) < 0.03
    truth = TRUTH["de_mixed.pdf"]["pages"][1]["tables"]
    right, total = bench.cell_accuracy(second.markdown, truth)
    assert right >= total - 1


def test_garbage_text_layer_is_replaced_by_ocr() -> None:
    res = read("de_garbage_layer.pdf", "tesseract", ("deu",))
    first, second = res.pages
    assert first.method == "text-layer"
    assert second.method == "ocr-tesseract"
    assert page_cer("de_garbage_layer.pdf", res, 1) < 0.05
    # Without OCR the junk layer is all there is, and its confidence says so.
    junk = read("de_garbage_layer.pdf", "none").pages[1]
    assert junk.method == "text-layer" and junk.confidence < 0.2
    assert bench.cer(junk.markdown, TRUTH["de_garbage_layer.pdf"]["pages"][1]["text"]) > 0.5


# ---------------------------------------------------------------------------
# Bad input: each a clear error naming the file and the reason
# ---------------------------------------------------------------------------


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` (a decompression bomb: tiny, huge when decoded)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _pdf_with_pages(n: int, size: tuple[float, float] = (595, 842)) -> bytes:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument.new()
    for _ in range(n):
        doc.new_page(*size)
    buf = io.BytesIO()
    doc.save(buf)
    doc.close()
    return buf.getvalue()


BAD = [
    ("empty.pdf", b"", E.DocumentEmpty, "0 bytes"),
    ("notes.pdf", b"Dear colleague, please find attached", E.InvalidDocument, "not a PDF"),
    ("corrupt.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 20, E.InvalidDocument, "corrupted"),
    ("truncated.pdf", data("en.pdf")[:20000], E.InvalidDocument, "truncated"),
    ("locked.pdf", data("bad_encrypted.pdf"), E.DocumentEncrypted, "password"),
    ("zero.pdf", _pdf_with_pages(0), E.DocumentEmpty, "no pages"),
    ("archive.zip", b"PK\x03\x04" + b"\x00" * 40, E.UnsupportedDocument, "not a PDF or"),
    ("bomb.png", _png_header(100_000, 100_000), E.ImageTooLarge, "pixels"),
    ("broken.png", data("en_p1_150.png")[:3000], E.InvalidDocument, "truncated"),
]


@pytest.mark.parametrize(("name", "blob", "exc", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_documents_raise_clear_errors(name: str, blob: bytes, exc: type[E.DocumentError],
                                          reason: str) -> None:
    with pytest.raises(exc) as info:
        read_document(blob, filename=name)
    err = info.value
    assert isinstance(err, E.ClientError) and err.code == exc.code
    assert err.filename == name and f"'{name}'" in err.message and reason in err.message
    assert err.param == "document"


def test_error_codes_are_stable() -> None:
    assert {c.code for c in (E.InvalidDocument, E.DocumentEncrypted, E.DocumentEmpty,
                             E.TooManyPages, E.ImageTooLarge, E.UnsupportedDocument)} == {
        "invalid_document", "document_encrypted", "document_empty", "too_many_pages",
        "image_too_large", "unsupported_document"}
    assert E.TooManyPages.status == 413 and E.UnsupportedDocument.status == 415


def test_too_many_pages() -> None:
    with pytest.raises(E.TooManyPages, match=r"'big.pdf'.*1001 pages.*limit of 1000"):
        read_document(_pdf_with_pages(1001), filename="big.pdf")
    with pytest.raises(E.TooManyPages, match=r"3 pages, over the limit of 2"):
        read_document(data("en.pdf"), filename="en.pdf", max_pages=2, pages=[0])


def test_pixel_limit_on_images_and_tiff_frames() -> None:
    with pytest.raises(E.ImageTooLarge, match=r"'scan.png'.*1241x1754.*limit of 1,000,000"):
        read_document(data("en_p1_150.png"), filename="scan.png", max_pixels=1_000_000)
    with pytest.raises(E.ImageTooLarge, match=r"'fax\.tiff'"):
        read_document(data("en_multipage.tiff"), filename="fax.tiff", max_pixels=1_000_000)


def test_huge_pdf_page_is_rendered_smaller_or_refused() -> None:
    poster = _pdf_with_pages(1, size=(72 * 50, 72 * 50))  # 50 x 50 inches, blank: OCR'd
    res = read_document(poster, filename="poster.pdf", ocr="tesseract", max_pixels=4_000_000)
    page = res.pages[0]
    assert page.dpi == 40 and page.width * page.height <= 4_000_000 and page.markdown == ""
    with pytest.raises(E.ImageTooLarge, match=r"'poster.pdf'.*50 x 50 inches.*30 dpi"):
        read_document(poster, filename="poster.pdf", ocr="tesseract", max_pixels=1_000_000)


def test_bad_options() -> None:
    with pytest.raises(E.InvalidPages, match=r"page 3 does not exist.*3 pages \(0 to 2\)") as i:
        read_document(data("en.pdf"), filename="en.pdf", pages=[0, 3])
    assert i.value.param == "pages"
    with pytest.raises(E.InvalidPages):
        read_document(data("en.pdf"), filename="en.pdf", pages=[-1])
    with pytest.raises(E.InvalidOcrOption, match="unknown OCR engine 'paddle'") as j:
        read_document(data("en.pdf"), filename="en.pdf", ocr="paddle")  # type: ignore[arg-type]
    assert j.value.param == "ocr"
    with pytest.raises(E.InvalidOcrOption, match="unknown OCR language 'klingon'") as k:
        read_document(data("en.pdf"), filename="en.pdf", languages=["klingon"])
    assert k.value.param == "languages"
    with pytest.raises(E.InvalidOcrOption, match="ocr_dpi must be between 50 and 600") as m:
        read_document(data("en.pdf"), filename="en.pdf", ocr_dpi=5000)
    assert m.value.param == "ocr_dpi"


def test_a_png_named_pdf_is_read_as_png_and_pages_dedupe() -> None:
    res = read_document(data("en_p1_150.png"), filename="scan.pdf", ocr="none", pages=[0, 0])
    assert res.mime_type == "image/png" and [p.index for p in res.pages] == [0]


# ---------------------------------------------------------------------------
# Units: normalisation, garbage detection, layout, model integrity
# ---------------------------------------------------------------------------


def test_normalise_nfc_and_micro_sign() -> None:
    decomposed = unicodedata.normalize("NFD", "Ἡροδότου")
    assert normalise_text(decomposed) == "Ἡροδότου" and decomposed != "Ἡροδότου"
    assert normalise_text("\u00b5ε τα ευρή\u00b5ατα", greek=True) == "με τα ευρήματα"
    # Without Greek context the micro sign stays (5 µm), inside Greek words it goes.
    assert normalise_text("5 \u00b5m and ευρή\u00b5ατα") == "5 \u00b5m and ευρήματα"


def test_tsv_parsing_sizes_words_by_their_line() -> None:
    tsv = ("level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight"
           "\tconf\ttext\n"
           "4\t1\t1\t1\t1\t0\t10\t10\t200\t40\t-1\t\n"
           "5\t1\t1\t1\t1\t1\t10\t12\t80\t30\t96.5\t\u00b5ε\n"
           "5\t1\t1\t1\t1\t2\t100\t10\t90\t38\t90\tτα\n")
    page = parse_tsv(tsv, "ell")
    assert [b.text for b in page.boxes] == ["με", "τα"]
    assert [b.size for b in page.boxes] == [40.0, 40.0]
    assert page.confidence == pytest.approx(0.9325)


def test_text_quality_tells_prose_from_junk() -> None:
    assert pdf.text_quality("The harbour handled more cargo this year, 12% more.") > 0.9
    assert pdf.text_quality("Ἡροδότου Ἁλικαρνησσέος ἱστορίης ἀπόδεξις ἥδε") > 0.9
    assert pdf.text_quality("*7+7X>5|0XX|x4}^~00x57z0]z=0z#8|z2 $*1]={$9&Xq<%~}X39") < 0.2
    assert pdf.text_quality("(cid:12)(cid:45) (cid:3)(cid:77)(cid:9)") == 0.0
    assert pdf.text_quality("") == 0.0


def _box(x0: float, y0: float, text: str, size: float = 10.0) -> layout.Box:
    return layout.Box(x0, y0, x0 + 6 * len(text), y0 + size, text, size)


def test_layout_columns_paragraphs_headings_and_tables() -> None:
    boxes = [_box(0, 0, "Title of the page", 20)]
    for i in range(3):  # two columns of three lines
        boxes.append(_box(0, 40 + i * 14, f"left column line {i}"))
        boxes.append(_box(300, 40 + i * 14, f"right column line {i}"))
    boxes.append(_box(0, 120, "•"))
    boxes.append(_box(12, 120, "an item"))
    boxes.append(layout.Box(0, 150, 600, 200, kind="table", rows=[["a", "b|c"], ["1", "2"]]))
    md = layout.layout_markdown(boxes, col_gap=18)
    assert md == ("# Title of the page\n\n"
                  "left column line 0 left column line 1 left column line 2\n\n"
                  "right column line 0 right column line 1 right column line 2\n\n- an item\n\n"
                  "| a | b\\|c |\n| --- | --- |\n| 1 | 2 |\n")


def test_join_lines_undoes_hyphenation_only_before_lowercase() -> None:
    assert layout.join_lines(["a long exam-", "ple here"]) == "a long example here"
    assert layout.join_lines(["Jean-", "Paul"]) == "Jean- Paul"


def test_find_grids_on_a_drawn_table() -> None:
    import numpy as np

    img = np.full((600, 800), 255, dtype=np.uint8)
    for y in (100, 200, 300):
        img[y:y + 3, 100:700] = 0
    for x in (100, 400, 697):
        img[100:303, x:x + 3] = 0
    img[140:160, 150:250] = 0  # a blob of "text" inside a cell: not a rule
    grids = layout.find_grids(img, dpi=150)
    assert len(grids) == 1
    g = grids[0]
    assert [round(y, -1) for y in g.ys] == [100, 200, 300]
    assert [round(x, -1) for x in g.xs] == [100, 400, 700]
    rows, rest = layout.fill_grid(g, [_box(150, 140, "x"), _box(450, 240, "|y|"),
                                      _box(10, 10, "out")])
    assert rows == [["x", ""], ["", "y"]] and [b.text for b in rest] == ["out"]


def test_rapidocr_models_are_verified(monkeypatch: pytest.MonkeyPatch) -> None:
    from intramuros.errors import ModelIntegrityError

    paths = ocr_rapid.verify_models()
    assert set(paths) == {"det", "rec", "cls"} and all(p.is_file() for p in paths.values())
    monkeypatch.setattr(ocr_rapid, "_verified", set())
    monkeypatch.setitem(ocr_rapid.MODELS, "rec", (ocr_rapid.MODELS["rec"][0], "0" * 64))
    with pytest.raises(ModelIntegrityError, match=r"PP-OCRv6_rec_small\.onnx"):
        ocr_rapid.verify_models()


def test_transparent_and_rotated_images_become_upright_text_on_white() -> None:
    from PIL import Image

    from intramuros.docai import images

    rgba = Image.new("RGBA", (40, 20), (0, 0, 0, 0))  # transparent black
    rgba.paste((0, 0, 0, 255), (5, 5, 10, 10))  # one opaque black square
    gray = images.to_gray(rgba)
    assert gray.getpixel((0, 0)) == 255 and gray.getpixel((7, 7)) == 0
    photo = Image.new("L", (40, 20), 255)
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", exif=exif.tobytes())
    assert images.to_gray(Image.open(io.BytesIO(buf.getvalue()))).size == (20, 40)


def test_rapidocr_runs_with_the_network_cut_off(tmp_path: Path) -> None:
    """A fresh process, sockets disabled: the models come from the wheel, nothing is fetched."""
    import subprocess

    from PIL import Image

    crop = tmp_path / "title.png"
    Image.open(CORPUS / "en_p1_300.png").crop((200, 200, 2300, 450)).save(crop)
    script = (
        "import socket, sys\n"
        "def refuse(*a, **k):\n"
        "    raise OSError('network access attempted')\n"
        "socket.socket.connect = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from intramuros.docai.pipeline import read_document\n"
        f"res = read_document(open({str(crop)!r}, 'rb').read(), ocr='rapidocr')\n"
        "print(res.pages[0].markdown)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Annual Report of the Harbour Authority" in proc.stdout


def test_upside_down_and_sideways_scans_are_turned() -> None:
    from PIL import Image

    img = Image.open(CORPUS / "en_p1_150.png")
    truth = TRUTH["en_p1_150.png"]["pages"][0]["text"]
    for angle in (180, 90):
        buf = io.BytesIO()
        img.rotate(angle, expand=True).save(buf, format="PNG", dpi=(150, 150))
        res = read_document(buf.getvalue(), filename="turned.png", ocr="tesseract")
        assert bench.cer(res.pages[0].markdown, truth) < 0.03, angle
        assert res.pages[0].confidence > 0.8
