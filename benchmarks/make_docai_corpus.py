"""Generate the document-reading evaluation corpus and its ground truth.

Usage::

    python benchmarks/make_docai_corpus.py [--out benchmarks/docai_corpus]

Needs ``reportlab`` (generation only: the corpus is committed, so neither CI
nor the tests need it) and the DejaVu fonts (Debian ``fonts-dejavu-core``),
whose Greek Extended block covers polytonic Greek.

For each language (English, French, German, modern Greek, ancient Greek) it
writes a born-digital PDF (headings, paragraphs, a bulleted list, a ruled
table; English also has a two-column page), then rasterises every page with
pypdfium2 at 300 and 150 dpi (clean PNG) and makes a "scan" at 300 dpi
(skewed 0.8 degree, blur, noise, dust, JPEG). It also writes a mixed PDF (a text
page and a scanned page), a PDF whose text layer is garbage over a real scan,
an image-only PDF, a multi-page TIFF, a page with a picture and a
password-protected PDF.

``truth.json`` holds, per document and page, the text in reading order
(headings, paragraphs, list items, then table cells row by row) and the
tables' cells. The random generator is seeded: re-running gives the same
images.
"""

# ruff: noqa: RUF001  (the corpus is Greek on purpose)
from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "docai_corpus"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")

# Per language: title, paragraphs of page 1, list items, subheading of page 2,
# table (header row first), closing paragraph of page 2.
TEXTS: dict[str, dict[str, Any]] = {
    "en": {
        "tess": "eng",
        "title": "Annual Report of the Harbour Authority",
        "paras": [
            "The harbour handled more cargo this year than in any year since records began. "
            "Container traffic rose by twelve percent, while bulk grain shipments remained "
            "steady despite a dry summer in the northern provinces.",
            "Work on the new eastern quay started in March. The contractor expects to finish "
            "the foundations before the winter storms, and the cranes will be delivered in "
            "the spring of next year.",
        ],
        "items": [
            "Dredging of the main channel to a depth of sixteen metres.",
            "A second rail link between the quays and the inland depot.",
            "Shore power for ferries at berths four and five.",
        ],
        "sub": "Cargo by category",
        "table": [
            ["Category", "Tonnes", "Change"],
            ["Containers", "48210", "+12%"],
            ["Grain", "13955", "+1%"],
            ["Timber", "7420", "-3%"],
            ["Vehicles", "2318", "+8%"],
        ],
        "closing": "All figures are provisional until the auditors have signed the accounts. "
        "The board will publish the final report in June.",
    },
    "fr": {
        "tess": "fra",
        "title": "Rapport annuel de la coopérative laitière",
        "paras": [
            "La coopérative a collecté cette année davantage de lait que prévu. Les éleveurs "
            "des vallées ont bénéficié d'un printemps précoce, et la qualité du fromage affiné "
            "a été saluée lors du concours régional.",
            "Le conseil d'administration a décidé de moderniser la fromagerie. Les travaux "
            "débuteront à l'automne et dureront environ huit mois, sans interrompre la "
            "production.",
        ],
        "items": [
            "Remplacement des cuves de maturation en acier inoxydable.",
            "Création d'une cave d'affinage supplémentaire.",
            "Formation des apprentis à l'hygiène et à la sécurité.",
        ],
        "sub": "Production par fromage",
        "table": [
            ["Fromage", "Tonnes", "Évolution"],
            ["Comté", "1250", "+4%"],
            ["Morbier", "310", "+2%"],
            ["Raclette", "185", "-1%"],
            ["Bleu de Gex", "92", "+6%"],
        ],
        "closing": "Les chiffres définitifs seront présentés à l'assemblée générale du mois de "
        "mai, après la clôture des comptes.",
    },
    "de": {
        "tess": "deu",
        "title": "Jahresbericht der Stadtwerke",
        "paras": [
            "Die Stadtwerke haben im vergangenen Jahr mehr Strom aus erneuerbaren Quellen "
            "erzeugt als je zuvor. Die neuen Solaranlagen auf den Dächern der Schulen lieferten "
            "über den Sommer zuverlässig Energie für die öffentlichen Gebäude.",
            "Der Ausbau des Fernwärmenetzes wurde im Herbst fortgesetzt. Bis zum Ende des "
            "nächsten Jahres sollen weitere zweitausend Haushalte angeschlossen werden.",
        ],
        "items": [
            "Sanierung der Wasserleitungen in der Altstadt.",
            "Zwei zusätzliche Ladestationen für Elektrobusse.",
            "Größere Speicherbecken für das Klärwerk.",
        ],
        "sub": "Erzeugung nach Quelle",
        "table": [
            ["Quelle", "Gigawattstunden", "Anteil"],
            ["Sonne", "184", "31%"],
            ["Wind", "226", "38%"],
            ["Wasser", "97", "16%"],
            ["Gas", "89", "15%"],
        ],
        "closing": "Die geprüften Zahlen werden dem Stadtrat im Frühjahr vorgelegt und danach "
        "veröffentlicht.",
    },
    "el": {
        "tess": "ell",
        "title": "Ετήσια έκθεση του δημοτικού μουσείου",
        "paras": [
            "Το μουσείο δέχθηκε φέτος περισσότερους επισκέπτες από κάθε άλλη χρονιά. Η νέα "
            "αίθουσα με τα ευρήματα της ανασκαφής άνοιξε τον Μάιο και προσέλκυσε πολλά σχολεία "
            "από όλη την περιφέρεια.",
            "Η συντήρηση των ψηφιδωτών συνεχίστηκε με τη βοήθεια του πανεπιστημίου. Οι "
            "εργασίες θα ολοκληρωθούν μέσα στον επόμενο χειμώνα.",
        ],
        "items": [
            "Ψηφιοποίηση του αρχείου φωτογραφιών.",
            "Νέες πινακίδες σε τρεις γλώσσες.",
            "Εκπαιδευτικά προγράμματα για μικρά παιδιά.",
        ],
        "sub": "Επισκέπτες ανά μήνα",
        "table": [
            ["Μήνας", "Επισκέπτες", "Μεταβολή"],
            ["Ιανουάριος", "1840", "+5%"],
            ["Απρίλιος", "3925", "+11%"],
            ["Ιούλιος", "6310", "+9%"],
            ["Οκτώβριος", "2870", "+3%"],
        ],
        "closing": "Τα οριστικά στοιχεία θα παρουσιαστούν στο δημοτικό συμβούλιο τον Μάρτιο.",
    },
    "grc": {
        "tess": "grc",
        "title": "Ἡροδότου Ἱστορίαι",
        "paras": [
            "Ἡροδότου Ἁλικαρνησσέος ἱστορίης ἀπόδεξις ἥδε, ὡς μήτε τὰ γενόμενα ἐξ ἀνθρώπων τῷ "
            "χρόνῳ ἐξίτηλα γένηται, μήτε ἔργα μεγάλα τε καὶ θωμαστά, τὰ μὲν Ἕλλησι, τὰ δὲ "
            "βαρβάροισι ἀποδεχθέντα, ἀκλεᾶ γένηται.",
            "Μῆνιν ἄειδε θεὰ Πηληϊάδεω Ἀχιλῆος οὐλομένην, ἣ μυρί᾽ Ἀχαιοῖς ἄλγε᾽ ἔθηκε, πολλὰς "
            "δ᾽ ἰφθίμους ψυχὰς Ἄϊδι προΐαψεν ἡρώων.",
        ],
        "items": [
            "Ἄνδρα μοι ἔννεπε, Μοῦσα, πολύτροπον.",
            "Ἐν ἀρχῇ ἦν ὁ λόγος.",
            "Γνῶθι σεαυτόν.",
        ],
        "sub": "Πάπυροι",
        "table": [
            ["Πάπυρος", "Αἰών", "Στίχοι"],
            ["Ὀξυρύγχου", "βʹ", "24"],
            ["Ἑρκουλανέου", "αʹ", "17"],
            ["Φαγιούμ", "γʹ", "9"],
        ],
        "closing": "Πάντα ῥεῖ καὶ οὐδὲν μένει· ὁ ἥλιος νέος ἐφ᾽ ἡμέρῃ ἐστίν.",
    },
}

COLUMNS_LEFT = (
    "Reading order matters when a page has two columns. This left column must be read "
    "from top to bottom before the right column begins, otherwise sentences from both "
    "columns are mixed together and the text no longer makes sense."
)
COLUMNS_RIGHT = (
    "The right column continues the argument. A reader that follows the lines straight "
    "across the page would join half a sentence from the left with half a sentence from "
    "the right, which is exactly the mistake we want to catch."
)


def _fonts() -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    pdfmetrics.registerFont(TTFont("DejaVuSerif", str(FONT_DIR / "DejaVuSerif.ttf")))
    pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(FONT_DIR / "DejaVuSans-Bold.ttf")))


def _styles() -> dict[str, Any]:
    from reportlab.lib.styles import ParagraphStyle

    return {
        "h1": ParagraphStyle("h1", fontName="DejaVuSans-Bold", fontSize=20, leading=26,
                             spaceAfter=14),
        "h2": ParagraphStyle("h2", fontName="DejaVuSans-Bold", fontSize=14, leading=18,
                             spaceBefore=6, spaceAfter=10),
        "body": ParagraphStyle("body", fontName="DejaVuSerif", fontSize=11, leading=15,
                               spaceAfter=9),
        "cell": ParagraphStyle("cell", fontName="DejaVuSerif", fontSize=11, leading=14),
    }


def _table(rows: list[list[str]]) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    t = Table(rows, hAlign="LEFT")
    t.setStyle(TableStyle([
        ("FONT", (0, 0), (-1, -1), "DejaVuSerif", 11),
        ("FONT", (0, 0), (-1, 0), "DejaVuSans-Bold", 11),
        ("GRID", (0, 0), (-1, -1), 0.8, colors.black),
        ("LEFTPADDING", (0, 0), (-1, -1), 8),
        ("RIGHTPADDING", (0, 0), (-1, -1), 8),
        ("TOPPADDING", (0, 0), (-1, -1), 5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
    ]))
    return t


def make_pdf(lang: str, *, encrypt: str | None = None) -> tuple[bytes, list[dict[str, Any]]]:
    """One language's born-digital PDF and its per-page ground truth."""
    from reportlab.lib.pagesizes import A4
    from reportlab.platypus import (
        Frame,
        ListFlowable,
        ListItem,
        PageBreak,
        PageTemplate,
        Paragraph,
        Spacer,
    )
    from reportlab.platypus.doctemplate import BaseDocTemplate, NextPageTemplate

    t = TEXTS[lang]
    st = _styles()
    buf = io.BytesIO()
    doc = BaseDocTemplate(buf, pagesize=A4, leftMargin=60, rightMargin=60, topMargin=60,
                          bottomMargin=60, title=t["title"], author="intramuros corpus",
                          encrypt=encrypt, invariant=1)
    w, h = A4
    one = Frame(60, 60, w - 120, h - 120, id="one")
    gap = 30
    colw = (w - 120 - gap) / 2
    two = [Frame(60, 60, colw, h - 120, id="left"),
           Frame(60 + colw + gap, 60, colw, h - 120, id="right")]
    doc.addPageTemplates([PageTemplate("one", [one]), PageTemplate("two", two)])

    story: list[Any] = [Paragraph(t["title"], st["h1"])]
    story += [Paragraph(p, st["body"]) for p in t["paras"]]
    story.append(ListFlowable([ListItem(Paragraph(i, st["body"]), leftIndent=18)
                               for i in t["items"]], bulletType="bullet", start="•",
                              leftIndent=18))
    story.append(PageBreak())
    story.append(Paragraph(t["sub"], st["h2"]))
    story.append(_table(t["table"]))
    story.append(Spacer(1, 16))
    story.append(Paragraph(t["closing"], st["body"]))
    truth = [
        {"text": "\n".join([t["title"], *t["paras"], *t["items"]]), "tables": [],
         "headings": [t["title"]]},
        {"text": "\n".join([t["sub"], *(" ".join(r) for r in t["table"]), t["closing"]]),
         "tables": [t["table"]], "headings": [t["sub"]]},
    ]
    if lang == "en":
        story += [NextPageTemplate("two"), PageBreak(), Paragraph(COLUMNS_LEFT, st["body"]),
                  _frame_break(), Paragraph(COLUMNS_RIGHT, st["body"])]
        truth.append({"text": COLUMNS_LEFT + "\n" + COLUMNS_RIGHT, "tables": [],
                      "headings": []})
    doc.build(story)
    return buf.getvalue(), truth


def _frame_break() -> Any:
    from reportlab.platypus import FrameBreak

    return FrameBreak()


def render(pdf: bytes, dpi: int) -> list[Any]:
    """Every page of ``pdf`` as a grayscale PIL image at ``dpi``."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(pdf)
    try:
        return [doc[i].render(scale=dpi / 72, grayscale=True).to_pil().convert("L")
                for i in range(len(doc))]
    finally:
        doc.close()


def scanned(img: Any, rng: random.Random) -> Any:
    """A scan-like copy: slight skew, sensor noise, a little blur."""
    import numpy as np
    from PIL import Image, ImageFilter

    angle = rng.choice([-0.8, 0.8])
    out = img.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)
    out = out.filter(ImageFilter.GaussianBlur(0.6))
    arr = np.asarray(out, dtype=np.float32)
    gen = np.random.default_rng(rng.randrange(1 << 30))
    arr = arr + gen.normal(0, 5, arr.shape)  # sensor noise (kept low: it does not compress)
    speck = gen.random(arr.shape)
    arr[speck < 0.002] = 40  # dust
    arr[speck > 0.998] = 255  # dropouts
    arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "L")


def image_pdf(images: list[Any]) -> bytes:
    """A PDF of page images only (no text layer), as a scanner writes it."""
    buf = io.BytesIO()
    images[0].save(buf, format="PDF", save_all=True, append_images=images[1:],
                   resolution=150.0)
    return buf.getvalue()


def mixed_pdf(text_pdf: bytes, scan: Any, garbage: str | None = None) -> bytes:
    """Page 1 of ``text_pdf`` (real text), then ``scan`` as an image page.

    With ``garbage``, the image page also carries an invisible text layer of
    that junk (a broken OCR layer, as some scanners produce).
    """
    import pypdfium2 as pdfium
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, invariant=1)
    w, h = A4
    jpg = io.BytesIO()
    scan.save(jpg, format="JPEG", quality=60)  # embedded as a JPEG, as scanners do
    jpg.seek(0)
    c.drawImage(ImageReader(jpg), 0, 0, w, h)
    if garbage:
        txt = c.beginText(60, h - 80)
        txt.setTextRenderMode(3)  # invisible, like an OCR layer
        txt.setFont("Helvetica", 11)
        for line in garbage.splitlines():
            txt.textLine(line)
        c.drawText(txt)
    c.showPage()
    c.save()
    out = pdfium.PdfDocument.new()
    first = pdfium.PdfDocument(text_pdf)
    second = pdfium.PdfDocument(buf.getvalue())
    out.import_pages(first, [0])
    out.import_pages(second, [0])
    res = io.BytesIO()
    out.save(res)
    for d in (first, second, out):
        d.close()
    return res.getvalue()


FIGURE_TITLE = "Water levels in the harbour basin"
FIGURE_TEXT = ("The chart below shows the mean water level for each quarter. The levels stayed "
               "within the safe range all year.")
FIGURE_CAPTION = "Figure 1. Mean water level by quarter, in centimetres above chart datum."


def figure_pdf() -> bytes:
    """A page with a heading, a paragraph, a picture (a bar chart) and its caption."""
    from PIL import Image, ImageDraw
    from reportlab.lib.pagesizes import A4
    from reportlab.platypus import Image as RLImage
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    chart = Image.new("RGB", (600, 300), "white")
    draw = ImageDraw.Draw(chart)
    for i, v in enumerate((180, 220, 160, 240)):
        draw.rectangle((60 + i * 130, 280 - v, 150 + i * 130, 280), fill=(40, 90, 160))
    draw.line((40, 280, 580, 280), fill="black", width=3)
    png = io.BytesIO()
    chart.save(png, format="PNG")
    png.seek(0)
    st = _styles()
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=60, rightMargin=60, topMargin=60,
                            bottomMargin=60, invariant=1)
    doc.build([Paragraph(FIGURE_TITLE, st["h1"]), Paragraph(FIGURE_TEXT, st["body"]),
               RLImage(png, width=300, height=150), Paragraph(FIGURE_CAPTION, st["body"])])
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    _fonts()
    rng = random.Random(20261202)
    truth: dict[str, Any] = {}
    for lang in TEXTS:
        pdf, pages = make_pdf(lang)
        (out / f"{lang}.pdf").write_bytes(pdf)
        truth[f"{lang}.pdf"] = {"lang": lang, "tess": TEXTS[lang]["tess"], "kind": "born-digital",
                                "pages": pages}
        for dpi in (300, 150):
            for i, img in enumerate(render(pdf, dpi)):
                name = f"{lang}_p{i + 1}_{dpi}.png"
                img.save(out / name, optimize=True)
                truth[name] = {"lang": lang, "tess": TEXTS[lang]["tess"],
                               "kind": f"clean-{dpi}", "pages": [pages[i]]}
                if dpi == 300:
                    name = f"{lang}_p{i + 1}_scan300.jpg"
                    scanned(img, rng).save(out / name, quality=60)
                    truth[name] = {"lang": lang, "tess": TEXTS[lang]["tess"],
                                   "kind": "scan-300", "pages": [pages[i]]}

    en_pdf, en_pages = make_pdf("en")
    en150 = render(en_pdf, 150)
    # A multi-page TIFF (1-bit, Group 4, as fax and archive scanners write them).
    tif = io.BytesIO()
    bw = [im.point(lambda v: 255 if v > 160 else 0).convert("1") for im in en150[:2]]
    bw[0].save(tif, format="TIFF", save_all=True, append_images=bw[1:], compression="group4",
               dpi=(150, 150))
    (out / "en_multipage.tiff").write_bytes(tif.getvalue())
    truth["en_multipage.tiff"] = {"lang": "en", "tess": "eng", "kind": "tiff-150",
                                  "pages": en_pages[:2]}
    # An image-only PDF (a scanner's output): two pages, no text layer.
    fr_pdf, fr_pages = make_pdf("fr")
    fr150 = render(fr_pdf, 150)
    (out / "fr_scanned.pdf").write_bytes(image_pdf(fr150))
    truth["fr_scanned.pdf"] = {"lang": "fr", "tess": "fra", "kind": "image-pdf",
                               "pages": fr_pages}
    # Mixed: page 1 real text, page 2 a scan; and the same with a garbage OCR layer.
    de_pdf, de_pages = make_pdf("de")
    de_scan = scanned(render(de_pdf, 200)[1], rng)
    (out / "de_mixed.pdf").write_bytes(mixed_pdf(de_pdf, de_scan))
    truth["de_mixed.pdf"] = {"lang": "de", "tess": "deu", "kind": "mixed", "pages": de_pages}
    junk = "\n".join("".join(rng.choice("#%&@$^~*+=<>|{}[]0123456789xqzXQZ") for _ in range(60))
                     for _ in range(12))
    (out / "de_garbage_layer.pdf").write_bytes(mixed_pdf(de_pdf, de_scan, garbage=junk))
    truth["de_garbage_layer.pdf"] = {"lang": "de", "tess": "deu", "kind": "garbage-layer",
                                     "pages": de_pages}
    # A born-digital page with a picture (for include_images).
    (out / "en_figure.pdf").write_bytes(figure_pdf())
    truth["en_figure.pdf"] = {"lang": "en", "tess": "eng", "kind": "figure", "pages": [
        {"text": "\n".join([FIGURE_TITLE, FIGURE_TEXT, FIGURE_CAPTION]), "tables": [],
         "headings": [FIGURE_TITLE]}]}
    # Password-protected (user password "secret").
    enc, _ = make_pdf("en", encrypt="secret")
    (out / "bad_encrypted.pdf").write_bytes(enc)

    (out / "truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1) + "\n",
                                    encoding="utf-8")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {len(list(out.iterdir()))} files, {total / 1e6:.1f} MB, to {out}")


if __name__ == "__main__":
    main()
