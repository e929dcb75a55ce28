"""OCR backends as plug-ins: the entry-point group, ``auto``'s choice, broken plug-ins."""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from PIL import Image

from intramuros.docai import ocr
from intramuros.docai.errors import OcrUnavailable
from intramuros.docai.layout import Box
from intramuros.docai.pipeline import ocr_choices


class CyrillicBackend:
    """A third party's backend: reads Cyrillic only, and says so."""

    name = "cyrillic-ocr"
    scripts: Mapping[str, int] = {"Cyrl": 10}
    languages: Mapping[str, str] = {"rus": "Cyrl", "ukr": "Cyrl"}
    install_hint = "pip install cyrillic-ocr"
    reads: list[Sequence[str]] = []

    def available(self) -> bool:
        return True

    def default_languages(self, script: str) -> list[str]:
        return ["rus"]

    def read(self, image: Image.Image, dpi: int, langs: Sequence[str],
             checkpoint: Any) -> ocr.OcrPage:  # fmt: skip
        self.reads.append(list(langs))
        return ocr.OcrPage(boxes=[Box(0, 0, 10, 10, "привет")], confidence=0.9,
                           language="+".join(langs))  # fmt: skip


@pytest.fixture()
def group(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[md.EntryPoint]]:
    """The installed backends plus whatever a test appends."""
    extra: list[md.EntryPoint] = []
    real = md.entry_points

    def entry_points(**kw: Any) -> Any:
        found = list(real(**kw))
        if kw.get("group") == ocr.GROUP:
            found += extra
        return md.EntryPoints(found)

    monkeypatch.setattr(md, "entry_points", entry_points)
    ocr.reload()
    yield extra
    ocr.reload()


def test_ours_are_plugins_and_auto_chooses_by_script(group: list[md.EntryPoint]) -> None:
    assert ocr.names() == ["rapidocr", "tesseract"]
    assert ocr_choices() == ["auto", "rapidocr", "tesseract", "none"]
    greek = ocr.choose(ocr.GREEK)
    assert greek is not None and greek.name == "tesseract"  # RapidOCR reads no Greek
    latin = ocr.choose(ocr.LATIN)
    assert latin is not None and latin.name == "rapidocr"
    # Asked for a language only one reads: that one.
    by_lang = ocr.choose(ocr.LATIN, ["ell"])
    assert by_lang is not None and by_lang.name == "tesseract"
    # Nothing installed reads Cyrillic: a clear error saying so.
    assert ocr.choose("Cyrl") is None
    assert "Cyrl" in ocr.missing("Cyrl").message


def test_a_third_party_backend_is_chosen_for_its_script(group: list[md.EntryPoint]) -> None:
    group.append(md.EntryPoint("cyrillic-ocr", f"{__name__}:CyrillicBackend", ocr.GROUP))
    ocr.reload()
    assert "cyrillic-ocr" in ocr_choices()
    chosen = ocr.choose("Cyrl")
    assert chosen is not None and chosen.name == "cyrillic-ocr"
    assert ocr.languages()["ukr"] == "Cyrl"
    page = ocr.backend("cyrillic-ocr").read(Image.new("L", (20, 20)), 300, ["ukr"], None)
    assert page.boxes[0].text == "привет" and page.language == "ukr"
    # Latin still goes to ours.
    latin = ocr.choose(ocr.LATIN)
    assert latin is not None and latin.name == "rapidocr"


@pytest.mark.parametrize(("name", "target", "why"), [
    ("gone-ocr", "no_such_package.ocr:Backend", "ModuleNotFoundError"),
    ("not-ocr", "intramuros.docai.ocr:GROUP", "not an OCR backend"),
    ("misnamed", f"{__name__}:CyrillicBackend", "names itself 'cyrillic-ocr'"),
    ("auto", f"{__name__}:CyrillicBackend", "reserved"),
])  # fmt: skip
def test_a_broken_backend_is_named_and_auto_passes_it_by(
    group: list[md.EntryPoint], name: str, target: str, why: str
) -> None:
    group.append(md.EntryPoint(name, target, ocr.GROUP))
    ocr.reload()
    with pytest.raises(OcrUnavailable) as caught:
        ocr.backend(name)
    assert target in caught.value.message and why in caught.value.message
    chosen = ocr.choose(ocr.LATIN)
    assert chosen is not None and chosen.name == "rapidocr"
