"""OCR backends as plug-ins: the ``intramuros.ocr`` entry-point group, and what ``auto`` picks.

A backend reads one page image into word or line boxes (:class:`OcrPage`).
It declares the scripts it reads, each with a preference (higher wins among
the installed backends), the languages it reads with the script of each, the
languages to run for a script when the caller names none, and what to install
when it is missing. A package adds one by declaring, in its pyproject::

    [project.entry-points."intramuros.ocr"]
    my-ocr = "my_package.ocr:MyBackend"

where ``MyBackend`` (a class built without arguments, or an instance) fulfils
:class:`OcrBackend` and its ``name`` is the entry point's name; pages it reads
say ``method = "ocr-my-ocr"``, and ``/v1/ocr`` serves it as model ``my-ocr``.
Ours are ``rapidocr`` (``ocr_rapid.RapidOcrBackend``) and ``tesseract``
(``ocr_tesseract.TesseractBackend``). See docs/plugins.md.

Entry points are loaded once per process (:func:`reload` forgets them). One
that cannot be loaded is reported, not fatal: asked for by name it raises
:class:`OcrUnavailable` naming the plug-in and the reason; ``auto`` passes it
by. :func:`choose` is ``auto``'s rule: among the available backends that read
every language asked for (or the page's script), the one preferring that
script most; ties go to the name first in order.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from intramuros.docai.errors import OcrUnavailable

if TYPE_CHECKING:
    from PIL import Image

    from intramuros.docai.layout import Box

log = logging.getLogger(__name__)

GROUP = "intramuros.ocr"
# Values of the ``ocr`` option that are not backends.
RESERVED = frozenset({"auto", "none"})
# ISO 15924 codes of the scripts we tell apart.
LATIN = "Latn"
GREEK = "Grek"
# Of a text's letters: above this share a script other than Latin is the text's.
SCRIPT_SHARE = 0.3
# Unicode names' first word -> ISO 15924 (letters of other scripts count under their word).
_SCRIPT_WORDS = {
    "LATIN": LATIN, "GREEK": GREEK, "CYRILLIC": "Cyrl", "ARMENIAN": "Armn", "GEORGIAN": "Geor",
    "HEBREW": "Hebr", "ARABIC": "Arab", "SYRIAC": "Syrc", "THAANA": "Thaa", "ETHIOPIC": "Ethi",
    "DEVANAGARI": "Deva", "BENGALI": "Beng", "GURMUKHI": "Guru", "GUJARATI": "Gujr",
    "TAMIL": "Taml", "TELUGU": "Telu", "KANNADA": "Knda", "MALAYALAM": "Mlym", "SINHALA": "Sinh",
    "THAI": "Thai", "LAO": "Laoo", "KHMER": "Khmr", "MYANMAR": "Mymr", "TIBETAN": "Tibt",
    "MONGOLIAN": "Mong", "HANGUL": "Hang", "HIRAGANA": "Hira", "KATAKANA": "Kana", "CJK": "Hani",
}  # fmt: skip

Checkpoint = Callable[[], None]


@dataclass
class OcrPage:
    """What an OCR backend read on one page image: word or line boxes, in pixels."""

    boxes: list[Box]
    confidence: float  # mean over the boxes, 0..1
    language: str  # what was run, e.g. "eng", "grc+ell+eng", "latin"


@runtime_checkable
class OcrBackend(Protocol):
    """An OCR backend plug-in (see the module's documentation).

    ``read`` is called from several worker threads at once; it calls
    ``checkpoint`` (when given) while it works, which raises to stop the read,
    and raises :class:`OcrUnavailable` when it cannot run here.
    """

    @property
    def name(self) -> str:
        """The plug-in name: ``ocr`` option, ``/v1/ocr`` model, ``method`` ``ocr-<name>``."""
        ...

    @property
    def scripts(self) -> Mapping[str, int]:
        """ISO 15924 script (``Latn``, ``Grek``...) -> preference (higher wins)."""
        ...

    @property
    def languages(self) -> Mapping[str, str]:
        """Language code it reads (``eng``, ``ell``...) -> that language's script."""
        ...

    @property
    def install_hint(self) -> str:
        """What to install when :meth:`available` is False (a pip extra, a Debian package)."""
        ...

    def available(self) -> bool:
        """True when it can run in this process now (cheap: called for every page)."""
        ...

    def default_languages(self, script: str) -> list[str]:
        """The languages to run for a page of ``script`` when the caller names none."""
        ...

    def read(self, image: Image.Image, dpi: int, langs: Sequence[str],
             checkpoint: Checkpoint | None) -> OcrPage:  # fmt: skip
        """Read ``image`` (mode L, upright) scanned at ``dpi`` in ``langs`` (may be empty)."""
        ...


@dataclass(frozen=True)
class Registered:
    """One entry point of the group: its backend, or why it could not be loaded."""

    name: str
    target: str
    backend: OcrBackend | None
    error: str | None = None


_lock = threading.Lock()
_registry: dict[str, Registered] | None = None


def registered() -> dict[str, Registered]:
    """Every entry point of the group by name, loaded (once per process), in name order."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = _discover()
        return _registry


def reload() -> None:
    """Forget the loaded entry points (a backend was installed, or a test changed them)."""
    global _registry
    with _lock:
        _registry = None


def _discover() -> dict[str, Registered]:
    found: dict[str, Registered] = {}
    eps = sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: (e.name, e.value))
    for ep in eps:
        prior = found.get(ep.name)
        if prior is not None:
            if prior.target != ep.value:
                found[ep.name] = Registered(ep.name, f"{prior.target} | {ep.value}", None,
                                            "declared by several packages")  # fmt: skip
            continue
        found[ep.name] = _load(ep.name, ep)
        if found[ep.name].error is not None:
            log.warning("OCR backend %s (%s) cannot be loaded: %s", ep.name, ep.value,
                        found[ep.name].error)  # fmt: skip
    return found


def _load(name: str, ep: importlib.metadata.EntryPoint) -> Registered:
    target = ep.value
    if name in RESERVED:
        return Registered(name, target, None, f"'{name}' is reserved")
    try:
        obj = ep.load()
        backend = obj() if isinstance(obj, type) else obj
    except Exception as exc:  # ImportError, AttributeError, or the plug-in's own failure
        return Registered(name, target, None, f"{type(exc).__name__}: {exc}")
    if not isinstance(backend, OcrBackend):
        return Registered(name, target, None, "it is not an OCR backend (see OcrBackend)")
    if backend.name != name:
        return Registered(name, target, None,
                          f"it names itself '{backend.name}'; the two must agree")  # fmt: skip
    return Registered(name, target, backend)


def names() -> list[str]:
    """The names of the registered backends (loaded or not)."""
    return list(registered())


def backend(name: str) -> OcrBackend:
    """The backend ``name``, ready to read: ``OcrUnavailable`` saying why not otherwise.

    (An unknown name is the caller's to refuse first: see :func:`names`.)
    """
    entry = registered().get(name)
    if entry is None:
        raise OcrUnavailable(f"No OCR backend named '{name}' is installed (entry-point group "
                             f"{GROUP}).")  # fmt: skip
    if entry.backend is None:
        raise OcrUnavailable(f"OCR backend '{name}' ({entry.target}) cannot be loaded: "
                             f"{entry.error}")  # fmt: skip
    if not entry.backend.available():
        raise OcrUnavailable(entry.backend.install_hint)
    return entry.backend


def languages() -> dict[str, str]:
    """Every language some loaded backend reads -> its script (backends in name order)."""
    out: dict[str, str] = {}
    for entry in registered().values():
        if entry.backend is not None:
            for lang, script in entry.backend.languages.items():
                out.setdefault(lang, script)
    return out


def choose(script: str, langs: Sequence[str] = (),
           exclude: frozenset[str] = frozenset()) -> OcrBackend | None:  # fmt: skip
    """``auto``'s pick: the available backend, not in ``exclude``, that reads every one of
    ``langs`` and prefers ``script`` (or, with ``langs``, their scripts) most; None if none."""
    wanted = {script} if not langs else {languages().get(lang, script) for lang in langs}
    best: tuple[int, OcrBackend] | None = None
    for entry in registered().values():
        candidate = entry.backend
        if candidate is None or candidate.name in exclude:
            continue
        if any(lang not in candidate.languages for lang in langs):
            continue
        if any(s not in candidate.scripts for s in wanted):
            continue
        rank = min(candidate.scripts[s] for s in wanted)
        if (best is None or rank > best[0]) and candidate.available():
            best = (rank, candidate)
    return best[1] if best is not None else None


def missing(script: str, langs: Sequence[str] = ()) -> OcrUnavailable:
    """The error when no installed backend reads ``script`` (or ``langs``): what to install."""
    hints = [e.backend.install_hint for e in registered().values()
             if e.backend is not None and not e.backend.available()
             and (all(lang in e.backend.languages for lang in langs) if langs
                  else script in e.backend.scripts)]  # fmt: skip
    what = f"languages {', '.join(langs)}" if langs else f"script {script}"
    if hints:
        return OcrUnavailable(f"No OCR backend here reads {what}: " + " / ".join(hints))
    return OcrUnavailable(f"No installed OCR backend reads {what} (entry-point group {GROUP}: "
                          f"{', '.join(registered()) or 'none registered'}).")  # fmt: skip


# -- scripts of text -------------------------------------------------------------------


def is_greek(ch: str) -> bool:
    """Greek and Coptic, or Greek Extended (polytonic)."""
    return "\u0370" <= ch <= "\u03ff" or "\u1f00" <= ch <= "\u1fff"


def letter_script(ch: str) -> str | None:
    """The ISO 15924 script of a letter (Latin for ASCII), or None for one we do not name
    (a letter-like sign such as U+00B5 MICRO SIGN, a script outside our table)."""
    if ch.isascii():
        return LATIN
    if is_greek(ch):
        return GREEK
    return _SCRIPT_WORDS.get(unicodedata.name(ch, "").split(" ", 1)[0])


def script_shares(text: str) -> dict[str, float]:
    """Each script's share of the letters of ``text`` (empty when it has none)."""
    counts: dict[str, int] = {}
    total = 0
    for ch in text:
        if ch.isalpha():
            total += 1
            script = letter_script(ch)
            if script is not None:
                counts[script] = counts.get(script, 0) + 1
    return {s: n / total for s, n in counts.items()} if total else {}


def text_script(text: str) -> str | None:
    """The script other than Latin that ``text`` is written in (over ``SCRIPT_SHARE`` of its
    letters; the largest such share), or None: Latin, or too little to tell."""
    shares = [(share, s) for s, share in script_shares(text).items() if s != LATIN]
    if not shares:
        return None
    share, script = max(shares)
    return script if share >= SCRIPT_SHARE else None


def greek_share(text: str) -> float:
    """The share of Greek among the letters of ``text`` (0 when it has none)."""
    letters = [c for c in text if c.isalpha()]
    return sum(1 for c in letters if is_greek(c)) / len(letters) if letters else 0.0


def normalise_text(text: str, *, greek: bool = False) -> str:
    """NFC, and MICRO SIGN as mu where the text is Greek.

    With ``greek`` (the page was read as Greek) every U+00B5 becomes U+03BC;
    otherwise only those inside a word that also has Greek letters (``5 µm``
    in an English text keeps its micro sign).
    """
    text = unicodedata.normalize("NFC", text)
    if "\u00b5" not in text:
        return text
    if greek:
        return text.replace("\u00b5", "\u03bc")
    words = text.split(" ")
    for i, w in enumerate(words):
        if "\u00b5" in w and any(is_greek(c) for c in w):
            words[i] = w.replace("\u00b5", "\u03bc")
    return " ".join(words)
