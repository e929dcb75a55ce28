"""Documents for the docai API tests, generated here (no fixture files), and their checks.

``make_pdf`` writes a born-digital PDF by hand (base-14 Helvetica, one text
line per entry, a real text layer); ``make_png`` renders lines with DejaVu
Sans into a scan-like image; ``image_pdf`` wraps such an image in a PDF with
no text layer. The tests below check the generators themselves.
"""

from __future__ import annotations

import io
from pathlib import Path

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

INVOICE_LINES = [
    "ACME Tools GmbH",
    "Hauptstrasse 5, 10115 Berlin",
    "INVOICE",
    "Invoice number: INV-2026-0042",
    "Invoice date: 2026-11-15",
    "Bill to: Globex Corporation, 12 Rue de la Paix, 75002 Paris",
    "Description            Qty   Unit price   Amount",
    "Steel hammer             2        15.00    30.00",
    "Total net: 30.00 EUR",
    "VAT 19%: 5.70 EUR",
    "Total due: 35.70 EUR",
    "IBAN: DE89370400440532013000",
]


def _escape(text: str) -> bytes:
    raw = text.encode("cp1252", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def make_pdf(pages: list[list[str]], *, size: int = 11) -> bytes:
    """A PDF with one page per list of lines, each line a real text object."""
    objects: list[bytes] = []
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
                   b"/Encoding /WinAnsiEncoding >>")  # fmt: skip
    for i, lines in enumerate(pages):
        stream = b"BT /F1 %d Tf 1 0 0 1 56 790 Tm %d TL\n" % (size, int(size * 1.6))
        for line in lines:
            stream += b"(" + _escape(line) + b") Tj T*\n"
        stream += b"ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {5 + 2 * i} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return assemble_pdf(objects, header=b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")


def assemble_pdf(objects: list[bytes], header: bytes = b"%PDF-1.6\n") -> bytes:
    """A PDF from its objects (1 is the catalog), with a correct cross-reference table."""
    out = bytearray(header)
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)  # fmt: skip
    return bytes(out)


def locked_pdf(lines: list[str]) -> bytes:
    """A PDF under the standard security handler whose password we do not know."""
    enc = (b"/Encrypt << /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <"
           + b"22" * 32 + b"> /P -4 >> /ID [<" + b"33" * 16 + b"><" + b"33" * 16 + b">]")
    return make_pdf([lines]).replace(b"/Root 1 0 R >>", b"/Root 1 0 R " + enc + b" >>")


def make_png(lines: list[str], *, size: int = 34, width: int = 1400) -> bytes:
    """Black text on white, like a clean 200-dpi scan."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(FONT), size)
    step = int(size * 1.7)
    img = Image.new("L", (width, 80 + step * len(lines)), 255)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((60, 40 + i * step), line, fill=0, font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_pdf(png: bytes) -> bytes:
    """A PDF holding only an image (a scan: no text layer)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buf, format="PDF", resolution=200.0)
    return buf.getvalue()


def test_generated_pdf_has_its_text_layer() -> None:
    import pypdfium2

    pdf = pypdfium2.PdfDocument(make_pdf([["Hello (world)"], ["Second page"]]))
    try:
        assert len(pdf) == 2
        text = pdf[0].get_textpage().get_text_range()
        assert "Hello (world)" in text
    finally:
        pdf.close()


def test_generated_scan_has_no_text_layer() -> None:
    import pypdfium2

    pdf = pypdfium2.PdfDocument(image_pdf(make_png(["Scanned words"])))
    try:
        assert len(pdf) == 1
        assert pdf[0].get_textpage().get_text_range().strip() == ""
    finally:
        pdf.close()
