"""What every personal-data detector shares: candidates, boundaries, labels, numeric clusters.

Detectors read the normalised view of a text (see :mod:`intramuros.gate.pii_normal`):
white space is already one ``" "`` or ``"\\n"``, digits are ASCII, dashes are ``-``.
All work here is bounded per call (a label is looked for at most 40 characters
back, a context word 60 characters around), so a detector costs time linear
in the text.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator

# A possible finding, in view offsets, before overlaps are settled:
# (category, start, end, context), context 2 when a label of the category is near,
# 1 for a weaker hint, 0 for none. A plain tuple of atoms, which the garbage
# collector stops tracking: a request may hold hundreds of thousands of them, and
# tracked objects would make every full collection (the interpreter lock held
# throughout) longer.
Candidate = tuple[str, int, int, int]


# --------------------------------------------------------------------------
# Boundaries
# --------------------------------------------------------------------------

# Characters that, right before a number, make it part of something else: a word
# or code ("INV123"), a handle or address, a signed number or an amount.
_GLUE_LEFT = frozenset("_@#+$€£¥")
# Right after a number: a unit or amount, or an address.
_GLUE_RIGHT = frozenset("_@%€$£")
# Joiners: "INV-123", "3.14", "2024/123", "1,5" continue a token when followed
# (or preceded) by a letter or digit.
_JOINERS = frozenset("-./,\\:")


def free_left(text: str, i: int, *, spaced: bool = False) -> bool:
    """Whether a match starting at ``i`` stands alone on its left.

    With ``spaced``, a digit followed by one space also glues ("12 345678901"
    is one number written in groups), which matters for grouped formats.
    """
    if i == 0:
        return True
    c = text[i - 1]
    if c.isalnum() or c in _GLUE_LEFT:
        return False
    if i >= 2:
        p = text[i - 2]
        if c in _JOINERS and c != ":" and p.isalnum():
            return False
        if spaced and c == " " and p.isdigit():
            return False
    return True


def free_right(text: str, j: int, *, spaced: bool = False) -> bool:
    """Whether a match ending at ``j`` stands alone on its right."""
    if j >= len(text):
        return True
    c = text[j]
    if c.isalnum() or c in _GLUE_RIGHT:
        return False
    if j + 1 < len(text):
        n = text[j + 1]
        if c in _JOINERS and (n.isdigit() or (n.isalpha() and c != ",")):
            return False
        if spaced and c == " " and n.isdigit():
            return False
    return True


# --------------------------------------------------------------------------
# Labels and context
# --------------------------------------------------------------------------

AMOUNT_AFTER = re.compile(
    r"\s?(?:€|\$|£|%|‰|(?:eur|euro|euros|usd|gbp|chf|dollars?|pounds?|ευρώ)\b)", re.I
)
_AMOUNT_BEFORE = re.compile(r"(?:€|\$|£|\b(?:eur|usd|gbp|chf))\s?$", re.I)

# Labels that make the following number something other than personal data,
# matched against the whole label word ("Bestellnummer", "Rechnungs-Nr.").
_NEGATIVE = re.compile(
    r"order|orders|invoice|inv|ref|reference|référence|réf|ticket|tracking|commande|facture"
    r"|bestel\w*|rechnung\w*|auftrag\w*|ordine|fattura|pedido|factura|albarán|παραγγελ\w*"
    r"|τιμολ\w*|factuur\w*|isbn|issn|ean|gtin|sku|article|artikel\w*|articolo"
    r"|artículo|item|lot|batch|serial|série|serie|serien\w*|booking|buchung\w*|prenotazione"
    r"|reserva|reservering|réservation|κράτηση|pnr|contract|contrat|vertrag\w*|contratto"
    r"|contrato|policy|police|polizza|póliza|dossier|case|kunden\w*|customer|cliente|klant\w*"
    r"|πελάτη|paket\w*|parcel|colis|pacco|sendung\w*|shipment|quote|devis|angebot\w*",
    re.I,
)
# What may stand between a label and its number: "n°", "Nr.", "number", ": ".
_FILLER_WORDS = frozenset(
    "number nummer numéro numero número num nr nb no n id code del des van der de di du "  # noqa: SIM905
    "αριθμός αρ".split()  # noqa: RUF001
)
_FILL_CHARS = frozenset(" \t\r\n:#.-\u2013\u2014°º/()")


def label_before(text: str, start: int) -> str:
    """The word labelling the number at ``start`` (lower case), skipping filler; or ""."""
    lo = max(0, start - 40)
    i = start
    while i > lo:
        while i > lo and text[i - 1] in _FILL_CHARS:
            i -= 1
        j = i
        while j > lo and text[j - 1].isalpha():
            j -= 1
        word = text[j:i].lower()
        if word not in _FILLER_WORDS:
            return word
        i = j
    return ""


# Words that label a value of the category (matched as word starts: "Telefonnummer").
# They only matter where two readings compete: an ungrouped phone number, a
# nine-digit BSN/ΑΦΜ (or ES mobile), a NIR that is also an Amex number.
_CONTEXT: dict[str, re.Pattern[str]] = {
    "phone": re.compile(
        r"\b(?:tel\b|tel\.|tél\w*|telef\w*|teléf\w*|phone\w*|mobi\w*|mob\b|cell\w*|call\w*"
        r"|fax\b|portable|joignable|handy\w*|rufnummer|anruf\w*|chiam\w*|móvil|llam\w*"
        r"|τηλ\w*|κινητ\w*|bel\b|bellen|whatsapp|sms\b)",
        re.I,
    ),
    "fr_nir": re.compile(r"\b(?:sécu\w*|secu\w*|nir\b|insee|social security)", re.I),
    "gr_afm": re.compile(r"(?:αφμ|α\.φ\.μ|\bafm\b|φορολογ)", re.I),  # noqa: RUF001
    "nl_bsn": re.compile(r"\b(?:bsn|burgerservice\w*|sofi\w*)", re.I),
}
# Weaker hints: Greek script near a nine-digit number that is both a valid BSN
# and a valid ΑΦΜ makes it the ΑΦΜ.
_HINT: dict[str, re.Pattern[str]] = {
    "gr_afm": re.compile(r"[\u0370-\u03ff]{3}"),
}
CONTEXT_BEFORE = 60
_CONTEXT_AFTER = 40


def context_level(
    text: str, start: int, end: int, category: str, *, before: int = CONTEXT_BEFORE
) -> int:
    """2 if a label of ``category`` is near the match, 1 for a weaker hint, else 0."""
    window = text[max(0, start - before) : start] + " " + text[end : end + _CONTEXT_AFTER]
    pattern = _CONTEXT.get(category)
    if pattern is not None and pattern.search(window):
        return 2
    hint = _HINT.get(category)
    return 1 if hint is not None and hint.search(window) else 0


def negated(text: str, start: int, end: int) -> bool:
    """Whether the number at ``start`` is labelled as something else, or is an amount.

    A negative label ("Order", "Rechnungs-Nr.") counts only when nothing but
    filler separates it from the number, so "invoice sent; call 06 12 34 56 78"
    still counts.
    """
    if AMOUNT_AFTER.match(text, end) or _AMOUNT_BEFORE.search(text, max(0, start - 5), start):
        return True
    return _NEGATIVE.fullmatch(label_before(text, start)) is not None


# --------------------------------------------------------------------------
# The numeric clusters of a text
# --------------------------------------------------------------------------

# Digits with the separators numbers are written with. Every numeric detector's
# match lies inside one such cluster, so the detectors search a string made of
# the clusters only (a few percent of ordinary prose) instead of the whole text.
_CLUSTER_RE = re.compile(r"[+(]?\d(?:[\d .\-/()]*\d)?")


class Scan:
    """A view text and its numeric clusters, gathered once per window.

    With ``lines`` (the same text with its line breaks, when ``text`` has them
    turned into spaces) and ``regions`` (where to look), only the clusters that
    cross a line break are kept: that is the second look, for numbers wrapped
    across two lines. A cluster cut short by a region's edge is harmless: every
    detector checks a match's real neighbours in ``text``.
    """

    __slots__ = ("_offsets", "_shifts", "cluster_starts", "condensed", "text")

    def __init__(
        self,
        text: str,
        lines: str | None = None,
        regions: Iterable[tuple[int, int]] | None = None,
    ) -> None:
        self.text = text
        parts: list[str] = []
        self._offsets: list[int] = []  # where each cluster starts in ``condensed``
        self._shifts: list[int] = []  # original offset minus condensed offset
        self.cluster_starts: list[int] = []  # where each cluster starts in ``text``
        pos = 0
        for lo, hi in regions if regions is not None else ((0, len(text)),):
            for m in _CLUSTER_RE.finditer(text, lo, hi):
                if lines is not None and lines.find("\n", m.start(), m.end()) == -1:
                    continue
                self._offsets.append(pos)
                self._shifts.append(m.start() - pos)
                self.cluster_starts.append(m.start())
                parts.append(m.group())
                pos += len(m.group()) + 1
        # Clusters never contain a newline, so no match can run from one to the next.
        self.condensed = "\n".join(parts)

    def numeric(self, pattern: re.Pattern[str]) -> Iterator[tuple[int, int, re.Match[str]]]:
        """Matches of ``pattern`` in the clusters, with their offsets in the text.

        The pattern's own look-arounds only see the cluster; callers check the
        real neighbours with :func:`free_left` / :func:`free_right`.
        """
        for m in pattern.finditer(self.condensed):
            shift = self._shifts[bisect_right(self._offsets, m.start()) - 1]
            yield m.start() + shift, m.end() + shift, m
