"""A page whose text layer is one short line is read from the layer, not OCR'd into nothing."""

from __future__ import annotations

from intramuros.docai.pipeline import read_document
from tests.test_docai_docs import make_pdf


def test_one_line_page_keeps_its_text_layer() -> None:
    data = make_pdf([["Delivery note DN-88"], ["Invoice 2024-17", "Total 120.00 EUR"]])
    result = read_document(data, filename="notes.pdf")
    first, second = result.pages
    assert first.method == "text-layer"
    assert "Delivery note DN-88" in first.markdown
    assert second.method == "text-layer" and "Invoice 2024-17" in second.markdown


def test_short_garbage_layer_is_not_trusted() -> None:
    # Symbol soup is not word-like: the page is not taken from its layer.
    data = make_pdf([["%%# @@ ~~ ^^"]])
    page = read_document(data, filename="soup.pdf", ocr="none").pages[0]
    assert page.method != "text-layer" or page.confidence < 1.0
