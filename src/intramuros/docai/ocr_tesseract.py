"""OCR with Tesseract, through its command-line program (Debian ``tesseract-ocr``).

The language packs come from Debian too (``tesseract-ocr-eng``, ``-fra``,
``-deu``, ``-ita``, ``-spa``, ``-ell``, ``-grc``; Apache-2.0, trained by the
Tesseract project); nothing is downloaded. We run the program once per page
with the image on stdin and read its TSV output: words with their boxes, line
numbers and confidences. Words get the height of their line as their size,
so the layout step can tell headings from body text.

Output text is NFC-normalised, and MICRO SIGN (U+00B5), which the ``ell``
model emits for mu, becomes GREEK SMALL LETTER MU (U+03BC) in Greek text.
:class:`TesseractBackend` is the ``tesseract`` plug-in of ``intramuros.ocr``
(see :mod:`intramuros.docai.ocr`).
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from intramuros.docai.errors import InvalidOcrOption, OcrUnavailable
from intramuros.docai.layout import Box
from intramuros.docai.ocr import GREEK as GREEK_SCRIPT
from intramuros.docai.ocr import LATIN, OcrPage, normalise_text

if TYPE_CHECKING:
    from PIL import Image

LANGUAGES = ("eng", "fra", "deu", "ita", "spa", "ell", "grc")
GREEK = frozenset({"ell", "grc"})
# Greek pages in auto mode: polytonic model first, then modern Greek, then
# English for the Latin bits (numbers, percent signs, names): the best mean
# CER over our modern and ancient Greek pages.
AUTO_GREEK = ("grc", "ell", "eng")
TIMEOUT_S = 180.0  # one page; a pathological image must not hold a worker forever
_POLL_S = 0.2  # how often a running Tesseract is checked for a cancelled read
INSTALL_HINT = "Tesseract OCR is not installed on this server (Debian package tesseract-ocr)."


class TesseractBackend:
    """The ``tesseract`` OCR backend (entry point of ``intramuros.ocr``).

    It reads Latin and Greek with the Debian language packs above; ``auto``
    prefers it for Greek (RapidOCR's bundled models read none) and RapidOCR for
    Latin (more accurate in our benchmark; Tesseract is several times faster).
    """

    name = "tesseract"
    scripts: Mapping[str, int] = {LATIN: 10, GREEK_SCRIPT: 20}
    languages: Mapping[str, str] = {
        lang: GREEK_SCRIPT if lang in GREEK else LATIN for lang in LANGUAGES
    }
    install_hint = INSTALL_HINT

    def available(self) -> bool:
        """True when the ``tesseract`` program is on the PATH (packs are checked per read)."""
        return shutil.which("tesseract") is not None

    def default_languages(self, script: str) -> list[str]:
        """``grc+ell+eng`` for Greek, ``eng`` otherwise."""
        return list(AUTO_GREEK) if script == GREEK_SCRIPT else ["eng"]

    def read(self, image: Image.Image, dpi: int, langs: Sequence[str],
             checkpoint: Callable[[], None] | None) -> OcrPage:  # fmt: skip
        """Read ``image`` in ``langs`` (``eng`` if none), after a median filter from 200 dpi."""
        # A 3x3 median filter removes scanner dust, which Tesseract reads as
        # punctuation (CER on our 300 dpi scans: 0.013 -> 0.000); at low
        # resolution it would erase thin strokes, so only from 200 dpi.
        from PIL import ImageFilter

        clean = image.filter(ImageFilter.MedianFilter(3)) if dpi >= 200 else image
        if checkpoint is not None:
            checkpoint()
        return ocr(clean, list(langs) or ["eng"], dpi, checkpoint=checkpoint)


@functools.lru_cache(maxsize=1)
def installed_languages() -> frozenset[str]:
    """The language packs the ``tesseract`` program has (empty if it is not installed)."""
    exe = shutil.which("tesseract")
    if exe is None:
        return frozenset()
    proc = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=30,
                          check=False)
    lines = (proc.stdout or proc.stderr).splitlines()
    return frozenset(ln.strip() for ln in lines[1:] if ln.strip())


def check_languages(langs: list[str], filename: str = "document") -> str:
    """``langs`` as Tesseract's ``-l`` value, after checking each is known and installed."""
    for lang in langs:
        if lang not in LANGUAGES:
            raise InvalidOcrOption(
                filename, f"unknown OCR language '{lang}'; known: {', '.join(LANGUAGES)}",
                param="languages",
            )
    have = installed_languages()
    if not have:
        raise OcrUnavailable(INSTALL_HINT)
    missing = [lang for lang in langs if lang not in have]
    if missing:
        raise OcrUnavailable(
            f"Tesseract has no language pack for {', '.join(missing)} on this server "
            f"(Debian packages {', '.join('tesseract-ocr-' + m for m in missing)})."
        )
    return "+".join(langs)


def run_tesseract(args: list[str], data: bytes, checkpoint: Callable[[], None] | None) -> tuple[
        int, bytes, bytes]:  # fmt: skip
    """Run Tesseract on ``data``: ``(exit status, stdout, stderr)``.

    A helper thread feeds stdin and collects the output (``communicate``
    with a timeout cannot resume writing its input when called again); this
    thread polls: when ``checkpoint`` raises (the read was cancelled or ran
    out of time), or after ``TIMEOUT_S``, Tesseract is killed at once.
    """
    env = dict(os.environ, OMP_THREAD_LIMIT="1")  # parallelism is across pages, not inside
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)  # fmt: skip
    outcome: list[tuple[bytes, bytes]] = []
    talker = threading.Thread(target=lambda: outcome.append(proc.communicate(data)),
                              name="tesseract-io", daemon=True)  # fmt: skip
    talker.start()
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while True:
            talker.join(_POLL_S)
            if not talker.is_alive():
                break
            if checkpoint is not None:
                checkpoint()
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(args, TIMEOUT_S)
    finally:
        if talker.is_alive():  # stopped early: end the process, then its reader
            proc.kill()
            talker.join()
    if not outcome:
        raise OcrUnavailable("Tesseract's output could not be read.")
    out, err = outcome[0]
    return proc.returncode, out, err


def ocr(image: Image.Image, langs: list[str], dpi: int, filename: str = "document", *,
        checkpoint: Callable[[], None] | None = None) -> OcrPage:  # fmt: skip
    """Read ``image`` (mode L) with Tesseract in ``langs``; word boxes in image pixels."""
    lang = check_languages(langs, filename)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    exe = shutil.which("tesseract") or "tesseract"
    try:
        code, out, err = run_tesseract(
            [exe, "stdin", "stdout", "-l", lang, "--psm", "3", "--dpi", str(dpi), "tsv"],
            buf.getvalue(), checkpoint,
        )
    except subprocess.TimeoutExpired as exc:
        raise OcrUnavailable(f"Tesseract took longer than {TIMEOUT_S:.0f} s on one page.") from exc
    if code != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise OcrUnavailable(f"Tesseract failed (exit {code}): {last[0]}")
    return parse_tsv(out.decode("utf-8", errors="replace"), lang)


def parse_tsv(tsv: str, lang: str) -> OcrPage:
    """Tesseract's TSV output as word boxes, each sized by its line's height."""
    greek = any(code in GREEK for code in lang.split("+"))
    lines: dict[tuple[int, int, int, int], int] = {}
    words: list[tuple[tuple[int, int, int, int], Box]] = []
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12:
            continue
        try:
            level, page, block, par, line = (int(c) for c in cols[:5])
            left, top, width, height = (int(c) for c in cols[6:10])
            conf = float(cols[10])
        except ValueError:
            continue
        key = (page, block, par, line)
        if level == 4:
            lines[key] = height
        elif level == 5:
            text = normalise_text(cols[11].strip(), greek=greek)
            if text:
                words.append((key, Box(float(left), float(top), float(left + width),
                                       float(top + height), text, conf=max(conf, 0.0) / 100)))
    boxes = []
    for key, b in words:
        b.size = float(lines.get(key, b.height))
        boxes.append(b)
    confidence = sum(b.conf for b in boxes) / len(boxes) if boxes else 0.0
    return OcrPage(boxes=boxes, confidence=confidence, language=lang)



def detect_rotation(image: Image.Image, dpi: int,
                    checkpoint: Callable[[], None] | None = None) -> int:
    """Degrees (90, 180, 270) the page must turn clockwise to be upright; 0 if it is or unknown.

    Tesseract's orientation detection (``--psm 0``, the ``osd`` data); a
    low-confidence answer (under 2, Tesseract's own rule of thumb) counts as 0.
    """
    exe = shutil.which("tesseract")
    if exe is None or "osd" not in installed_languages():
        return 0
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    try:
        _code, out, _err = run_tesseract([exe, "stdin", "stdout", "--psm", "0", "--dpi", str(dpi)],
                                buf.getvalue(), checkpoint)  # fmt: skip
    except subprocess.TimeoutExpired:
        return 0
    rotate, conf = 0, 0.0
    for line in out.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        try:
            if key == "Rotate":
                rotate = int(value)
            elif key == "Orientation confidence":
                conf = float(value)
        except ValueError:
            return 0
    return rotate if rotate in (90, 180, 270) and conf >= 2.0 else 0
