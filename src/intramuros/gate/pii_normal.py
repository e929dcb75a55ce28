"""The normalised view of a text that personal-data detection reads, and the way back.

Detection must see what a reader (or a model) sees, not the code points an
attacker chose. :class:`TextView` folds a text in two stages:

1. each character on its own: Unicode NFKC (full-width letters, digits and at sign,
   superscripts, circled digits), every decimal digit to ASCII (Arabic-Indic,
   Devanagari ...), dashes to ``-``, a few slashes and dots to ``/`` and ``.``;
   format and control characters (zero-width space and joiners, word joiner,
   BOM, soft hyphen, bidirectional marks) and combining marks removed;
2. runs of white space (spaces, tabs, no-break and thin spaces, ``\\r\\n``)
   collapsed to one ``" "``, or to one ``"\\n"`` when the run holds a line break.

So ``"FR76\\u00a0\\u00a03000\\u200b6000"`` reads ``"FR76 30006000"``. Every
offset in the view maps back to the original (:meth:`TextView.start_of`,
:meth:`TextView.end_of`), so a finding replaces the exact original span,
zero-width characters inside it included, and restoring a pseudonym gives
back the original spelling.

Work is linear in the text and done in bounded pieces (no single regular
expression call sees more than :data:`STEP` characters), so a worker thread
running it never holds the interpreter lock for long. An ASCII text with
ordinary white space is its own view: nothing is copied.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from bisect import bisect_right

STEP = 1 << 16

# Characters NFKC leaves alone but that are written inside numbers.
_EXTRA: dict[str, str] = {
    "\u2212": "-",  # minus sign
    "\u2044": "/",  # fraction slash
    "\u2215": "/",  # division slash
    "\u00b7": ".",  # middle dot
    "\u2219": ".",  # bullet operator
    "\u22c5": ".",  # dot operator
    "\x85": "\n",  # next line
    "\u00aa": "\u00aa",  # ordinal indicators stay, as in "n.º" (NFKC would make them letters)
    "\u00ba": "\u00ba",
}
# A line break in a run of white space makes the run a "\n".
_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e]")
# What stage 2 rewrites: a run of two or more white-space characters, or one that is
# neither a space nor a newline.
_ODD_SPACE = re.compile(r"\s{2,}|[^\S \n]")
_SPACE_RUN = re.compile(r"\s*")


def _fold_char(ch: str) -> str:
    """What one character becomes in the view (possibly nothing, possibly several)."""
    extra = _EXTRA.get(ch)
    if extra is not None:
        return extra
    category = unicodedata.category(ch)
    if category in ("Cf", "Mn", "Me", "Co", "Cs") or (category == "Cc" and not ch.isspace()):
        return ""
    if category == "Nd":
        return str(unicodedata.decimal(ch))
    if category == "Pd":
        return "-"
    if category == "Zs":
        return " "
    if category in ("Zl", "Zp"):
        return "\n"
    folded = unicodedata.normalize("NFKC", ch)
    if folded == ch:
        return ch
    return "".join(c if c == ch else _fold_char(c) for c in folded)


class _FoldTable(dict[int, str]):
    """``str.translate`` table filled on first sight of each code point."""

    def __missing__(self, code: int) -> str:
        value = _fold_char(chr(code))
        self[code] = value
        return value


_FOLD = _FoldTable()
_ASCII_FOLDABLE = "\\x00-\\x08\\x0e-\\x1b\\x7f"  # controls that are not white space
_foldable: re.Pattern[str] | None = None


def _foldable_runs() -> re.Pattern[str]:
    """Runs of characters stage 1 changes (built on first use: about 0.1 s, once).

    The character class lists every code point of the Basic Multilingual Plane
    that folds to something else, so that text which needs nothing (accented
    prose, Greek, CJK) is skipped at the speed of the regular-expression
    engine; characters beyond it (emoji, mathematical letters) are all looked at.
    """
    global _foldable
    if _foldable is None:
        ranges: list[list[int]] = []
        for code in range(0x80, 0x10000):
            if _FOLD[code] != chr(code):
                if ranges and ranges[-1][1] == code - 1:
                    ranges[-1][1] = code
                else:
                    ranges.append([code, code])
        bmp = "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)
        _foldable = re.compile(f"(?:[{_ASCII_FOLDABLE}{bmp}]|[\\U00010000-\\U0010ffff])+")
    return _foldable


_ASCII_RUNS = re.compile(f"[{_ASCII_FOLDABLE}]+")


class _Map:
    """Offsets of a derived text back to its source, as segments.

    A *linear* segment copies (or substitutes one for one) a stretch of the
    source; a *block* segment stands for a source stretch of another length
    (an expansion, a collapsed run of spaces). Removed characters leave a gap
    between two segments. Consecutive linear segments that continue each
    other are merged, so an unchanged text is one segment.
    """

    __slots__ = ("_next", "_oe", "_os", "_vs", "parts", "size")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self._vs = array("q")  # start of each segment in the derived text
        self._os = array("q")  # start in the source
        self._oe = array("q")  # end in the source for a block, -1 for a linear segment
        self._next = -1  # source offset that would continue the last linear segment

    def linear(self, text: str, source_start: int) -> None:
        if not text:
            return
        if self._next != source_start:
            self._vs.append(self.size)
            self._os.append(source_start)
            self._oe.append(-1)
        self.parts.append(text)
        self.size += len(text)
        self._next = source_start + len(text)

    def block(self, text: str, source_start: int, source_end: int) -> None:
        self._vs.append(self.size)
        self._os.append(source_start)
        self._oe.append(source_end)
        self.parts.append(text)
        self.size += len(text)
        self._next = -1

    def gap(self) -> None:
        """Source characters were dropped: the next linear piece starts a new segment."""
        self._next = -1

    def start_of(self, v: int) -> int:
        i = bisect_right(self._vs, v) - 1
        if i < 0:
            return v
        oe = self._oe[i]
        if oe != -1 and v < (self._vs[i + 1] if i + 1 < len(self._vs) else self.size):
            return self._os[i]
        if oe != -1:
            return oe + (v - (self._vs[i + 1] if i + 1 < len(self._vs) else self.size))
        return self._os[i] + (v - self._vs[i])

    def end_of(self, v: int) -> int:
        if v <= 0:
            return self.start_of(0) if v == 0 else v
        i = bisect_right(self._vs, v - 1) - 1
        if i < 0:
            return v
        oe = self._oe[i]
        if oe != -1:
            return oe
        return self._os[i] + (v - self._vs[i])


def _stage_one(text: str) -> tuple[str, _Map | None]:
    """Characters folded one by one (see the module docstring)."""
    runs = _ASCII_RUNS if text.isascii() else _foldable_runs()
    out: _Map | None = None
    done = 0
    for pos in range(0, len(text), STEP):
        for m in runs.finditer(text, pos, pos + STEP):
            if out is None:
                out = _Map()
            out.linear(text[done : m.start()], done)
            for k, ch in enumerate(m.group(), m.start()):
                folded = _FOLD[ord(ch)]
                if len(folded) == 1:
                    out.linear(folded, k)
                elif not folded:
                    out.gap()
                else:
                    out.block(folded, k, k + 1)
            done = m.end()
    if out is None:
        return text, None
    out.linear(text[done:], done)
    return "".join(out.parts), out


# Any of these in a text means some white space must be rewritten (checked with
# ``in``, far faster than a regular expression over ordinary text).
_ODD_SPACE_HINTS = ("  ", "\n\n", " \n", "\n ", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1d",
                    "\x1e", "\x1f")  # fmt: skip


def _stage_two(text: str) -> tuple[str, _Map | None]:
    """Runs of white space collapsed (see the module docstring)."""
    if not any(
        hint in text[pos : pos + STEP + 1]
        for pos in range(0, len(text), STEP)
        for hint in _ODD_SPACE_HINTS
    ):
        return text, None
    out: _Map | None = None
    done = 0
    pos = 0
    n = len(text)
    while pos < n:
        end = min(n, pos + STEP)
        m = _ODD_SPACE.search(text, pos, end)
        if m is None:
            # A run may straddle the window's end: look again from its last character.
            pos = end if end == n else max(pos + 1, end - 1)
            continue
        start, stop = m.start(), m.end()
        if stop == end and end < n:
            whole = _SPACE_RUN.match(text, start)  # the whole run, past the window
            stop = whole.end() if whole is not None else stop
        run = text[start:stop]
        replacement = "\n" if _BREAKS.search(run) else " "
        if out is None:
            out = _Map()
        out.linear(text[done:start], done)
        out.block(replacement, start, stop)
        done = pos = stop
    if out is None:
        return text, None
    out.linear(text[done:], done)
    return "".join(out.parts), out


class TextView:
    """A text as detection reads it (``text``), with offsets mapped to the original.

    Attributes:
        original: the text as given.
        text: the normalised view.
    """

    __slots__ = ("_one", "_two", "original", "text")

    def __init__(self, original: str) -> None:
        self.original = original
        folded, self._one = _stage_one(original)
        self.text, self._two = _stage_two(folded)

    @property
    def identical(self) -> bool:
        """Whether the view is the original text itself."""
        return self._one is None and self._two is None

    def start_of(self, v: int) -> int:
        """Offset in the original of the character at view offset ``v``."""
        if self._two is not None:
            v = self._two.start_of(v)
        if self._one is not None:
            v = self._one.start_of(v)
        return v

    def end_of(self, v: int) -> int:
        """Offset in the original just after the character before view offset ``v``."""
        if self._two is not None:
            v = self._two.end_of(v)
        if self._one is not None:
            v = self._one.end_of(v)
        return v
