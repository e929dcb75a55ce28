"""Detection, redaction and pseudonymisation of personal data in text.

What is detected (the ``category`` strings of :data:`CATEGORIES`):

- ``email``: RFC 5322-ish addresses with a top-level domain (``a@b.example``);
- ``phone``: international numbers (``+CC ...`` or ``00CC ...``, 8-15 digits, a
  known country code, the national length checked for the common European
  plans) and the grouped national formats of FR, DE, IT, ES, GR, NL, UK and
  US/CA. An ungrouped national number (``0612345678``) counts only after a
  phone word ("tel", "Handy", "τηλ", ...), since bare digit runs are more often
  order numbers than phones;
- ``iban``: mod-97 checked, with the length of the country (EU/EEA, CH, GB and
  the other SEPA/IBAN countries), compact or in groups of four;
- ``card``: 13-19 digits, Luhn checked, with a known issuer prefix and length
  (Visa, Mastercard, Amex, Discover, Diners, JCB, UnionPay, Maestro, Mir);
- ``ip``: IPv4 (valid octets, not a version or section number) and IPv6
  (validated by :mod:`ipaddress`);
- national identifiers, each with its check digit: ``fr_nir`` (sécurité
  sociale, Corsica 2A/2B), ``de_steuer_id`` (ISO 7064 MOD 11,10 plus the
  digit-frequency rule), ``it_codice_fiscale`` (check character, omocodia),
  ``es_dni_nie``, ``gr_afm`` (ΑΦΜ), ``nl_bsn`` (11-proef).

What is not: **person names, postal addresses and free-text health data.**
Those need a named-entity model and none is bundled (the gateway is offline),
so a prompt saying "Marie Dupont, 12 rue de la Paix" passes through unchanged.
Passport and driving-licence numbers, licence plates and dates of birth are not
detected either: they have no check digit and look like any other reference.

How precision is kept: every candidate must pass its checksum where one exists,
must stand alone (a number glued to letters or inside a longer digit run is
not a match), and the short-checksum identifiers (BSN, ΑΦΜ, DNI, Steuer-ID)
and national phone formats are dropped when they are the value of an "order",
"invoice", "ISBN" ... label or are followed by a currency. Context words
("BSN", "Tel.") are never required; they only settle ties (a nine-digit number
valid as both BSN and ΑΦΜ) and admit ungrouped phone numbers. When detectors
overlap, the longer match wins, then the one with context, then the more
specific category (IBAN > card > ... > phone).

Known gaps besides names: a codice fiscale whose seven digits were *all*
replaced by omocodia letters is not found; numbers split across lines are not
joined; a bare nine-digit number valid as BSN or ΑΦΜ (about one in five) is
reported unless a label or a currency says otherwise, and a round-looking
figure written like a phone number ("612 345 678" inhabitants) is a phone.

Speed: regular expressions compiled at import, searched over the text's
numeric clusters only (see :class:`_Scan`), plus arithmetic: about 0.1 ms for
10 kB of ordinary prose and about 3 ms for 10 kB where nearly every line holds
personal data, on one core of a 2-core EPYC (``benchmarks/pii.py``).

:class:`Pseudonymiser` swaps findings for placeholders (``<IBAN_1>``) before a
prompt leaves for the model and puts the values back in the answer, streamed
(:class:`StreamRestorer`) or not.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass

CATEGORIES: tuple[str, ...] = (
    "email",
    "phone",
    "iban",
    "card",
    "ip",
    "fr_nir",
    "de_steuer_id",
    "it_codice_fiscale",
    "es_dni_nie",
    "gr_afm",
    "nl_bsn",
)

# Which category wins when two matches of the same length overlap: the one whose
# validation is stronger (a mod-97 IBAN beats a Luhn card beats an 11-proef BSN).
_PRIORITY: dict[str, int] = {
    "email": 100,
    "iban": 95,
    "card": 90,
    "it_codice_fiscale": 85,
    "fr_nir": 80,
    "de_steuer_id": 60,
    "es_dni_nie": 55,
    "ip": 50,
    "nl_bsn": 41,  # a tie with ΑΦΜ and no Greek anywhere near: the BSN
    "gr_afm": 40,
    "phone": 30,
}


@dataclass(frozen=True)
class Finding:
    """One piece of personal data found in a text.

    Attributes:
        category: one of :data:`CATEGORIES`.
        start: offset of the first character in the text.
        end: offset one past the last character (``text[start:end] == value``).
        value: the matched text, exactly as written (spaces and dashes kept).
    """

    category: str
    start: int
    end: int
    value: str


@dataclass(frozen=True)
class _Candidate:
    category: str
    start: int
    end: int
    context: int  # 2: a label of this category is near; 1: a weaker hint; 0: none


# --------------------------------------------------------------------------
# Boundaries and context
# --------------------------------------------------------------------------

# Characters that, right before a number, make it part of something else: a word
# or code ("INV123"), a handle or address, a signed number or an amount.
_GLUE_LEFT = frozenset("_@#+$€£¥")
# Right after a number: a unit or amount, or an address.
_GLUE_RIGHT = frozenset("_@%€$£")
# Joiners: "INV-123", "3.14", "2024/123", "1,5" continue a token when followed
# (or preceded) by a letter or digit.
_JOINERS = frozenset("-./,\\:")


def _free_left(text: str, i: int, *, spaced: bool = False) -> bool:
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


def _free_right(text: str, j: int, *, spaced: bool = False) -> bool:
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


_AMOUNT_AFTER = re.compile(
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


def _label_before(text: str, start: int) -> str:
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
_CONTEXT_BEFORE = 60
_CONTEXT_AFTER = 40


def _context(
    text: str, start: int, end: int, category: str, *, before: int = _CONTEXT_BEFORE
) -> int:
    """2 if a label of ``category`` is near the match, 1 for a weaker hint, else 0."""
    window = text[max(0, start - before) : start] + " " + text[end : end + _CONTEXT_AFTER]
    pattern = _CONTEXT.get(category)
    if pattern is not None and pattern.search(window):
        return 2
    hint = _HINT.get(category)
    return 1 if hint is not None and hint.search(window) else 0


def _negated(text: str, start: int, end: int) -> bool:
    """Whether the number at ``start`` is labelled as something else, or is an amount.

    A negative label ("Order", "Rechnungs-Nr.") counts only when nothing but
    filler separates it from the number, so "invoice sent; call 06 12 34 56 78"
    still counts.
    """
    if _AMOUNT_AFTER.match(text, end) or _AMOUNT_BEFORE.search(text, max(0, start - 5), start):
        return True
    return _NEGATIVE.fullmatch(_label_before(text, start)) is not None


# --------------------------------------------------------------------------
# The numeric clusters of a text
# --------------------------------------------------------------------------

# Digits with the separators numbers are written with. Every numeric detector's
# match lies inside one such cluster, so the detectors search a string made of
# the clusters only (a few percent of ordinary prose) instead of the whole text.
_CLUSTER_RE = re.compile(r"[+(]?\d(?:[\d .\-/()]*\d)?")


class _Scan:
    """A text and its numeric clusters, gathered once per :func:`detect` call."""

    __slots__ = ("_offsets", "_shifts", "cluster_starts", "condensed", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        parts: list[str] = []
        self._offsets: list[int] = []  # where each cluster starts in ``condensed``
        self._shifts: list[int] = []  # original offset minus condensed offset
        self.cluster_starts: list[int] = []  # where each cluster starts in ``text``
        pos = 0
        for m in _CLUSTER_RE.finditer(text):
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
        real neighbours with :func:`_free_left` / :func:`_free_right`.
        """
        for m in pattern.finditer(self.condensed):
            shift = self._shifts[bisect_right(self._offsets, m.start()) - 1]
            yield m.start() + shift, m.end() + shift, m


# --------------------------------------------------------------------------
# email
# --------------------------------------------------------------------------

_EMAIL_RE = re.compile(
    r"(?<![\w.%+\-@])"
    r"[\w%+\-]+(?:\.[\w%+\-]+)*"  # dot-atoms: no leading, trailing or double dots
    r"@"
    r"(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+"  # labels: no leading/trailing hyphen
    r"[^\W\d_]{2,24}"  # a letters-only top-level domain
    r"(?![\w\-@])"
)
# "logo@2x.png" is an image name, not an address.
_FILE_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff"})


def _emails(scan: _Scan) -> Iterator[_Candidate]:
    text = scan.text
    at = text.find("@")
    searched = 0
    while at != -1:
        # Search only around each "@": a local part is at most 64 characters.
        lo = max(searched, at - 65)
        hi = min(len(text), at + 256)
        for m in _EMAIL_RE.finditer(text, lo, hi):
            value = m.group()
            local, _, domain = value.rpartition("@")
            if len(local) > 64 or len(value) > 254:
                continue
            if m.end() < len(text) and (text[m.end()].isalnum() or text[m.end()] in "_-@"):
                continue  # cut by the window: not the whole address
            if domain.rsplit(".", 1)[1].lower() in _FILE_TLDS:
                continue
            yield _Candidate("email", m.start(), m.end(), 0)
            searched = max(searched, m.end())
        at = text.find("@", max(at + 1, searched))


# --------------------------------------------------------------------------
# phone
# --------------------------------------------------------------------------

# E.164 country codes are prefix-free: 1 and 7 are one digit, these are two,
# every other code is three digits.
_CC2 = frozenset(
    "20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 "  # noqa: SIM905
    "60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98".split()
)
# Numbers of digits after the country code (trunk 0 dropped), for the plans we
# know; others accept any total of 8-15 digits.
_NATIONAL_LENGTH: dict[str, tuple[int, int]] = {
    "1": (10, 10),
    "7": (10, 10),
    "30": (10, 10),
    "31": (9, 9),
    "32": (8, 9),
    "33": (9, 9),
    "34": (9, 9),
    "39": (6, 11),
    "41": (9, 9),
    "43": (4, 13),
    "44": (9, 10),
    "45": (8, 8),
    "46": (7, 13),
    "47": (8, 8),
    "48": (9, 9),
    "49": (6, 13),
    "351": (9, 9),
    "352": (4, 11),
    "353": (7, 9),
    "358": (5, 12),
}

_PHONE_INTL_RE = re.compile(
    r"(?:\+|(?<!\d)00)(?=[1-9])\d{1,3}"
    r"(?:[ .\-]?\(0\))?"  # the trunk zero some people keep: +44 (0)20 ...
    r"(?:[ .\-]?\(\d{1,5}\))?"  # an area code in brackets: +1 (415) ...
    r"[ .\-]?\d+(?:[ .\-]\d+)*"
)
_PHONE_NATIONAL_RES: tuple[re.Pattern[str], ...] = (
    # Trunk-zero numbers (FR, DE, IT landlines, NL, UK, BE, CH, AT ...):
    # "06 12 34 56 78", "030 1234567", "089/12345678", "(030) 123 456", "020 7946 0958".
    re.compile(
        r"(?<!\d)(?:\(0[1-9]\d{0,3}\)[ ]?|0[1-9]\d{0,3}(?:[ ]?/[ ]?|[ .\-]))"
        r"\d{2,9}(?:[ .\-]\d{2,8}){0,4}(?!\d)"
    ),
    # 3-3-4 (US/CA, GR, IT mobiles): "(415) 555-2671", "415-555-2671", "210 123 4567".
    re.compile(
        r"(?<!\d)(?:1[ .\-])?(?:\([2-9]\d{2}\)[ ]?|[2-9]\d{2}(?P<s>[ .\-]))\d{3}"
        r"(?(s)(?P=s)|[ .\-])\d{4}(?!\d)"
    ),
    # 3-7 / 3-6 (GR landlines and mobiles, IT mobiles): "210 1234567", "333-1234567".
    re.compile(r"(?<!\d)(?:[23]\d{2}|69\d)[ \-]\d{6,7}(?!\d)"),
    # ES: "612 34 56 78", "612 345 678", "91 123 45 67".
    re.compile(
        r"(?<!\d)(?:[6-9]\d{2}(?: \d{2}){3}|[6-9]\d{2} \d{3} \d{3}|[89]\d \d{3}(?: \d{2}){2})"
        r"(?!\d)"
    ),
)
# Ungrouped national numbers, admitted only after a phone word.
# (FR/DE/NL/UK/IT with trunk 0, ES 6-9, GR 2/69, IT mobiles 3.)
_PHONE_COMPACT_RE = re.compile(
    r"(?<!\d)(?:0[1-9]\d{8,10}|[6-9]\d{8}|69\d{8}|2\d{9}|3\d{8,9})(?!\d)"
)
_DATE_START = re.compile(r"\d{1,2}([./\-])\d{1,2}\1(?:19|20)\d{2}(?!\d)")


def _phone_groups_end(value: str) -> list[int]:
    """Offsets (in ``value``) just after each digit group, for trimming trailing groups."""
    return [m.end() for m in re.finditer(r"\d+\)?", value)]


def _intl_phone(text: str, start: int, value: str) -> _Candidate | None:
    if not _free_left(text, start):
        return None
    # "0033612345678" could be any zero-padded number: it needs grouping or context.
    if (
        value.startswith("00")
        and not re.search(r"[ .\-()]", value)
        and not _context(text, start, start + len(value), "phone")
    ):
        return None
    # Try the whole match, then drop trailing groups: "+33 6 12 34 56 78 2024".
    for cut in reversed(_phone_groups_end(value)):
        digits = re.sub(r"\D", "", value[:cut].replace("(0)", ""))
        if value.startswith("00"):
            digits = digits[2:]
        if digits[:1] in "17":
            cc = digits[:1]
        elif digits[:2] in _CC2:
            cc = digits[:2]
        else:
            cc = digits[:3]
        national = len(digits) - len(cc)
        lo, hi = _NATIONAL_LENGTH.get(cc, (8 - len(cc), 15 - len(cc)))
        if not 8 <= len(digits) <= 15 or not lo <= national <= hi:
            continue
        end = start + cut
        if not _free_right(text, end) or _AMOUNT_AFTER.match(text, end):
            return None
        return _Candidate("phone", start, end, 0)
    return None


def _national_phone(text: str, start: int, value: str, *, compact: bool) -> _Candidate | None:
    end = start + len(value)
    if not (_free_left(text, start, spaced=True) and _free_right(text, end, spaced=True)):
        return None
    digits = re.sub(r"\D", "", value)
    if not 9 <= len(digits) <= 12:
        return None
    if _DATE_START.match(value):
        return None
    # Round numbers ("600 000 000") are amounts, not subscribers.
    if len(set(digits[3:])) == 1:
        return None
    # An ungrouped number needs a phone word right before it (or just after); its
    # context also settles a tie with a nine-digit BSN or ΑΦΜ.
    context = _context(text, start, end, "phone", before=32) if compact else 0
    if compact and not context:
        return None
    if _negated(text, start, end):
        return None
    return _Candidate("phone", start, end, context)


def _phones(scan: _Scan) -> Iterator[_Candidate]:
    text = scan.text
    found: list[_Candidate | None] = []
    if "+" in scan.condensed or "00" in scan.condensed:
        found += (_intl_phone(text, s, m.group()) for s, _, m in scan.numeric(_PHONE_INTL_RE))
    for pattern in _PHONE_NATIONAL_RES:
        found += (
            _national_phone(text, s, m.group(), compact=False) for s, _, m in scan.numeric(pattern)
        )
    found += (
        _national_phone(text, s, m.group(), compact=True)
        for s, _, m in scan.numeric(_PHONE_COMPACT_RE)
    )
    yield from (c for c in found if c is not None)


# --------------------------------------------------------------------------
# IBAN
# --------------------------------------------------------------------------

# Total IBAN length per country (ISO 13616 registry): every EU/EEA country,
# CH, GB and the other countries that issue IBANs.
_IBAN_LENGTH: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
_IBAN_RE = re.compile(r"(?<![^\W_])([A-Za-z]{2})(\d{2})((?:[ ]?[A-Za-z0-9]){11,30})")


def iban_valid(compact: str) -> bool:
    """Whether ``compact`` (no spaces, any case) is a valid IBAN: length and mod 97."""
    s = compact.upper()
    if _IBAN_LENGTH.get(s[:2]) != len(s) or not s.isalnum() or not s[2:4].isdigit():
        return False
    if s[2:4] in ("00", "01", "99"):
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _ibans(scan: _Scan) -> Iterator[_Candidate]:
    text = scan.text
    for digit_start in scan.cluster_starts:
        # The check digits start a cluster, right after two letters.
        letters = text[digit_start - 2 : digit_start]
        if digit_start < 2 or not (letters.isascii() and letters.isalpha()):
            continue
        m = _IBAN_RE.match(text, digit_start - 2)
        if m is None:
            continue
        length = _IBAN_LENGTH.get(m.group(1).upper())
        if length is None:
            continue
        # Walk the greedy match until the country's length is reached.
        need = length - 4
        compact = m.group(1) + m.group(2)
        i = m.start(3)
        spaces_ok = True
        while need and i < m.end():
            if text[i] == " ":
                # Spaces only between groups of four.
                spaces_ok = spaces_ok and len(compact) % 4 == 0
            else:
                compact += text[i]
                need -= 1
            i += 1
        if need or not spaces_ok or not iban_valid(compact):
            continue
        if i < len(text) and (text[i].isalnum() or text[i] == "_"):
            continue  # glued to more letters or digits: not this IBAN
        yield _Candidate("iban", m.start(), i, 0)


# --------------------------------------------------------------------------
# Payment cards
# --------------------------------------------------------------------------

_CARD_RE = re.compile(
    r"(?<!\d)(?:\d{13,19}"
    r"|\d{4}(?P<s>[ \-])\d{4}(?P=s)\d{4}(?P=s)\d{1,4}(?:(?P=s)\d{1,3})?"
    r"|3\d{3}(?P<t>[ \-])\d{6}(?P=t)\d{4,5})(?!\d)"
)


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn (mod 10) check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_brand_ok(d: str) -> bool:
    """Whether the issuer prefix (IIN) and length match a known card brand."""
    n = len(d)
    p2, p3, p4, p6 = int(d[:2]), int(d[:3]), int(d[:4]), int(d[:6])
    if d[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if 2200 <= p4 <= 2204:  # Mir
        return 16 <= n <= 19
    if p2 in (34, 37):  # American Express
        return n == 15
    if 300 <= p3 <= 305 or p2 in (36, 38, 39) or p4 == 3095:  # Diners Club
        return 14 <= n <= 19
    if 3528 <= p4 <= 3589:  # JCB
        return 16 <= n <= 19
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925:  # Discover
        return 16 <= n <= 19
    if p2 == 62:  # UnionPay
        return 16 <= n <= 19
    if p2 in (50, 56, 57, 58, 67, 63):  # Maestro
        return 13 <= n <= 19
    return False


def card_valid(digits: str) -> bool:
    """Whether ``digits`` is a plausible payment card number: length, issuer, Luhn."""
    return (
        digits.isdigit()
        and 13 <= len(digits) <= 19
        and _card_brand_ok(digits)
        and luhn_valid(digits)
    )


def _cards(scan: _Scan) -> Iterator[_Candidate]:
    text = scan.text
    for start, _, m in scan.numeric(_CARD_RE):
        if not _free_left(text, start, spaced=True):
            continue
        value = m.group()
        ends = [len(value)]
        sep = m.group("s")
        if sep and value.count(sep) == 4:
            ends.append(value.rfind(sep))  # 4-4-4-4 followed by an unrelated short group
        for cut in ends:
            end = start + cut
            digits = value[:cut].replace(" ", "").replace("-", "")
            if not card_valid(digits):
                continue
            if not _free_right(text, end, spaced=cut == len(value)):
                break
            if len(digits) == 13 and _negated(text, start, end):
                break  # EAN-13 barcodes starting with 4 look like old 13-digit Visas
            yield _Candidate("card", start, end, 0)
            break


# --------------------------------------------------------------------------
# IP addresses
# --------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4_RE = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
_IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?"
    r"(?![\w:]|\.\d)"
)
# Words after which a dotted quad is a version, section or OID, not an address.
_NOT_IP_BEFORE = re.compile(
    r"(?:\bv|version|\bver\.?|release|build|firmware|\bfw|versión|versione|έκδοση|versie"
    r"|section|§|chapter|chapitre|article|\bart\.?|paragraph|clause|abschnitt|kapitel|capitolo"
    r"|sección|capítulo|hoofdstuk|άρθρο|oid|==|~=|>=|<=)\s*[:=]?\s*$",
    re.I,
)


def _ip_free_right(text: str, j: int) -> bool:
    """Like :func:`_free_right`, but a port or path may follow: "10.0.0.1:8080/admin"."""
    if j >= len(text):
        return True
    c = text[j]
    if c.isalnum() or c in "_@%":
        return False
    # "1.2.3.4.5" and "1.2.3.4-beta" are not addresses.
    return not (c in ".-" and j + 1 < len(text) and text[j + 1].isalnum())


def _ips(scan: _Scan) -> Iterator[_Candidate]:
    text = scan.text
    if "." in scan.condensed:
        for start, end, _ in scan.numeric(_IPV4_RE):
            if _NOT_IP_BEFORE.search(text, max(0, start - 16), start):
                continue
            if not (_free_left(text, start) and _ip_free_right(text, end)):
                continue
            yield _Candidate("ip", start, end, 0)
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6_RE.finditer(text):
            value = m.group()
            # Clock times ("12:30:45") and words like "dead::beef" are not addresses.
            if not any(ch.isdigit() for ch in value) or value.strip(":") == "":
                continue
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                continue
            yield _Candidate("ip", m.start(), m.end(), 0)


# --------------------------------------------------------------------------
# National identifiers
# --------------------------------------------------------------------------

_NIR_RE = re.compile(
    r"(?<!\d)[1-478][ ]?\d{2}[ ]?(?:0[1-9]|1[0-2]|[2-9]\d)[ ]?(?:\d{2}|2[AaBb])[ ]?"
    r"\d{3}[ ]?\d{3}[ ]?\d{2}(?!\d)"
)


def nir_valid(nir: str) -> bool:
    """Whether a French NIR (15 characters, spaces removed) has the right key."""
    s = nir.upper()
    if len(s) != 15 or not s[13:].isdigit():
        return False
    body = s[:13]
    shift = 0
    if body[5:7] == "2A":
        body, shift = body[:5] + "19" + body[7:], 1_000_000
    elif body[5:7] == "2B":
        body, shift = body[:5] + "18" + body[7:], 2_000_000
    if not body.isdigit():
        return False
    return 97 - (int(body) - shift) % 97 == int(s[13:])


_CORSICA = re.compile(r"\d[ ]?2[AaBb][ ]?\d")


def _nirs(scan: _Scan) -> Iterator[_Candidate]:
    text = scan.text
    matches: Iterable[tuple[int, int, re.Match[str]]] = scan.numeric(_NIR_RE)
    if _CORSICA.search(text):  # "2A"/"2B" break the numeric clusters: search the text
        matches = ((m.start(), m.end(), m) for m in _NIR_RE.finditer(text))
    for start, end, m in matches:
        if not (_free_left(text, start, spaced=True) and _free_right(text, end, spaced=True)):
            continue
        if nir_valid(m.group().replace(" ", "")):
            yield _Candidate("fr_nir", start, end, _context(text, start, end, "fr_nir"))


_STEUER_RE = re.compile(r"(?<!\d)[1-9]\d(?P<s>[ ]?)\d{3}(?P=s)\d{3}(?P=s)\d{3}(?!\d)")


def steuer_id_valid(digits: str) -> bool:
    """Whether an 11-digit German Steuer-ID passes the frequency rule and MOD 11,10."""
    if len(digits) != 11 or not digits.isdigit() or digits[0] == "0":
        return False
    counts = Counter(digits[:10])
    repeated = [d for d, n in counts.items() if n > 1]
    # Exactly one digit occurs twice or three times; the rest at most once.
    if len(repeated) != 1 or counts[repeated[0]] > 3:
        return False
    if counts[repeated[0]] == 3 and repeated[0] * 3 in digits[:10]:
        return False  # three identical digits in a row are never issued
    product = 10
    for ch in digits[:10]:
        s = (int(ch) + product) % 10 or 10
        product = (s * 2) % 11
    check = (11 - product) % 10
    return check == int(digits[10])


def _steuer_ids(scan: _Scan) -> Iterator[_Candidate]:
    text = scan.text
    for start, end, m in scan.numeric(_STEUER_RE):
        if not (_free_left(text, start, spaced=True) and _free_right(text, end, spaced=True)):
            continue
        if not steuer_id_valid(m.group().replace(" ", "")):
            continue
        if _negated(text, start, end):
            continue
        yield _Candidate("de_steuer_id", start, end, 0)


_CF_RE = re.compile(
    r"(?<![^\W_])[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}[A-Z]"
    r"[0-9LMNPQRSTUV]{3}[A-Z](?![^\W_])",
    re.I,
)
_CF_ODD = dict(zip("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    [1, 0, 5, 7, 9, 13, 15, 17, 19, 21,
     1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10,
     22, 25, 24, 23], strict=True))  # fmt: skip
_OMOCODIA = str.maketrans("LMNPQRSTUV", "0123456789")


def codice_fiscale_valid(cf: str) -> bool:
    """Whether a 16-character Italian codice fiscale has a valid day and check letter."""
    s = cf.upper()
    if len(s) != 16 or not s.isalnum():
        return False
    day = int(s[9:11].translate(_OMOCODIA)) if s[9:11].translate(_OMOCODIA).isdigit() else 0
    if not (1 <= day <= 31 or 41 <= day <= 71):
        return False
    total = 0
    for i, ch in enumerate(s[:15]):
        if i % 2 == 0:  # 1st, 3rd, ... character (1-based odd positions)
            total += _CF_ODD[ch]
        else:
            total += int(ch) if ch.isdigit() else ord(ch) - 65
    return chr(65 + total % 26) == s[15]


# Where a code's first digit can be: the year (6, or 7 after omocodia), the day
# (9, 10) or the town (12-14). A code with every digit replaced is not found.
_CF_DIGIT_OFFSETS = (6, 7, 9, 10, 12, 13, 14)


def _codici_fiscali(scan: _Scan) -> Iterator[_Candidate]:
    text = scan.text
    tried: set[int] = set()
    for digit_start in scan.cluster_starts:
        if digit_start == 0 or not text[digit_start - 1].isalpha():
            continue  # every run of digits in a code follows a letter
        for offset in _CF_DIGIT_OFFSETS:
            start = digit_start - offset
            if start < 0 or start in tried or not text[start].isalpha():
                continue
            tried.add(start)
            m = _CF_RE.match(text, start)
            if m is None:
                continue
            value = m.group()
            if not (value.isupper() or value.islower()):
                continue  # mixed case is a word, not a code
            if codice_fiscale_valid(value):
                yield _Candidate("it_codice_fiscale", m.start(), m.end(), 0)


# The digits (searched in the clusters), then the NIE prefix and the letter around them.
_DNI_DIGITS_RE = re.compile(r"(?<![\d.])(?:\d{8}|\d{2}\.\d{3}\.\d{3}|\d{7})(?![\d.]\d)")
_DNI_LETTER_RE = re.compile(r"(?P<sep>[ \-]?)(?P<letter>[A-Za-z])(?![^\W_])")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_nie_valid(value: str) -> bool:
    """Whether a Spanish DNI (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter) is valid."""
    s = re.sub(r"[ .\-]", "", value).upper()
    if len(s) != 9:
        return False
    body = str("XYZ".index(s[0])) + s[1:8] if s[0] in "XYZ" else s[:8]
    if not body.isdigit():
        return False
    return _DNI_LETTERS[int(body) % 23] == s[8]


def _dnis(scan: _Scan) -> Iterator[_Candidate]:
    text = scan.text
    for start, end, m in scan.numeric(_DNI_DIGITS_RE):
        if len(m.group()) == 7:  # a NIE: X, Y or Z before, maybe with a separator
            if start >= 2 and text[start - 1] in " -" and text[start - 2] in "XYZxyz":
                start -= 2
            elif start >= 1 and text[start - 1] in "XYZxyz":
                start -= 1
            else:
                continue
        tail = _DNI_LETTER_RE.match(text, end)
        if tail is None:
            continue
        if tail.group("sep") == " " and not tail.group("letter").isupper():
            continue  # "12345678 a nombre de ...": a word, not a control letter
        end = tail.end()
        if not _free_left(text, start) or not dni_nie_valid(text[start:end]):
            continue
        if _negated(text, start, end):
            continue
        yield _Candidate("es_dni_nie", start, end, 0)


_NINE_RE = re.compile(r"(?<!\d)(?:\d{9}|\d{4}\.\d{2}\.\d{3})(?!\d)")


def afm_valid(digits: str) -> bool:
    """Whether a 9-digit Greek ΑΦΜ has the right mod-11 check digit."""
    if len(digits) != 9 or not digits.isdigit() or digits == "0" * 9:
        return False
    total = sum(int(d) << (8 - i) for i, d in enumerate(digits[:8]))
    return total % 11 % 10 == int(digits[8])


def bsn_valid(digits: str) -> bool:
    """Whether a 9-digit Dutch BSN passes the 11-proef (weights 9..2, -1)."""
    if len(digits) != 9 or not digits.isdigit() or digits == "0" * 9:
        return False
    total = sum(int(d) * (9 - i) for i, d in enumerate(digits[:8])) - int(digits[8])
    return total % 11 == 0


def _nine_digit_ids(scan: _Scan) -> Iterator[_Candidate]:
    text = scan.text
    for start, end, m in scan.numeric(_NINE_RE):
        if not (_free_left(text, start) and _free_right(text, end)):
            continue
        value = m.group()
        digits = value.replace(".", "")
        found = []
        if bsn_valid(digits):
            found.append("nl_bsn")
        if "." not in value and afm_valid(digits):
            found.append("gr_afm")
        for category in found:
            if _negated(text, start, end):
                continue
            yield _Candidate(category, start, end, _context(text, start, end, category))


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------

_DETECTORS: tuple[Callable[[_Scan], Iterator[_Candidate]], ...] = (
    _emails,
    _ibans,
    _cards,
    _ips,
    _nirs,
    _steuer_ids,
    _codici_fiscali,
    _dnis,
    _nine_digit_ids,
    _phones,
)
_ANY_DIGIT = re.compile(r"\d")


def _wanted(categories: Collection[str] | None) -> frozenset[str]:
    if categories is None:
        return frozenset(CATEGORIES)
    unknown = set(categories) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown personal-data categories: {', '.join(sorted(unknown))}")
    return frozenset(categories)


def _resolve(candidates: list[_Candidate]) -> list[_Candidate]:
    """Non-overlapping candidates: longer first, then with context, then more specific."""
    ranked = sorted(
        set(candidates),
        key=lambda c: (c.start - c.end, -c.context, -_PRIORITY[c.category], c.start, c.category),
    )
    # ``chosen`` stays sorted and non-overlapping: only the neighbours can overlap.
    starts: list[int] = []
    chosen: list[_Candidate] = []
    for c in ranked:
        i = bisect_right(starts, c.start)
        if i > 0 and chosen[i - 1].end > c.start:
            continue
        if i < len(chosen) and chosen[i].start < c.end:
            continue
        starts.insert(i, c.start)
        chosen.insert(i, c)
    return chosen


def detect(text: str, categories: Collection[str] | None = None) -> list[Finding]:
    """The personal data in ``text``: non-overlapping findings sorted by start.

    All detectors run whatever ``categories`` asks for, so that overlaps are
    settled the same way (a card number is never reported as a phone because
    only phones were asked for); the result is then filtered to
    ``categories`` (default: all). Raises ``ValueError`` for an unknown category.
    """
    wanted = _wanted(categories)
    if not wanted or not text or (_ANY_DIGIT.search(text) is None and "@" not in text):
        return []  # every category but email contains a digit
    scan = _Scan(text)
    candidates: list[_Candidate] = []
    for detector in _DETECTORS:
        candidates.extend(detector(scan))
    return [
        Finding(c.category, c.start, c.end, text[c.start : c.end])
        for c in _resolve(candidates)
        if c.category in wanted
    ]


def _replace(text: str, findings: Iterable[Finding], repl: Callable[[Finding], str]) -> str:
    parts: list[str] = []
    pos = 0
    for f in findings:
        parts.append(text[pos : f.start])
        parts.append(repl(f))
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)


def redact(text: str, categories: Collection[str] | None = None) -> str:
    """``text`` with each finding replaced by its category in capitals: ``[EMAIL]``, ``[IBAN]``."""
    return _replace(text, detect(text, categories), lambda f: f"[{f.category.upper()}]")


def summarise(findings: Iterable[Finding]) -> dict[str, int]:
    """Counts per category, in :data:`CATEGORIES` order, for logs (never the values)."""
    counts = Counter(f.category for f in findings)
    return {c: counts[c] for c in CATEGORIES if counts[c]}


_PLACEHOLDER_RE = re.compile(r"<[A-Z][A-Z_]*_\d+>")


class Pseudonymiser:
    """Per-request: replaces findings by stable placeholders like ``<EMAIL_1>``, ``<IBAN_2>``.

    The same value always gets the same placeholder within one Pseudonymiser
    (across every text it is given, e.g. all the messages of one chat
    request); :meth:`restore` puts the real values back, in the model's answer.
    Values are matched exactly as written: "DE89 3704 ..." and "DE89370400..."
    get two placeholders, so that restoring gives back each one's own spelling.

    A placeholder is never one that already appears in the text being
    pseudonymised, so a prompt that quotes "<EMAIL_1>" literally survives the
    round trip.
    """

    def __init__(self, categories: Collection[str] | None = None) -> None:
        self._categories = _wanted(categories)
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counts: Counter[str] = Counter()
        self._findings: list[Finding] = []

    @property
    def findings(self) -> list[Finding]:
        """Every finding replaced so far (offsets are in the text each came from)."""
        return list(self._findings)

    @property
    def mapping(self) -> dict[str, str]:
        """Placeholder -> original value, for the restorer (a copy)."""
        return dict(self._by_placeholder)

    def _placeholder(self, f: Finding, text: str) -> str:
        key = (f.category, f.value)
        existing = self._by_value.get(key)
        if existing is not None:
            return existing
        while True:
            self._counts[f.category] += 1
            placeholder = f"<{f.category.upper()}_{self._counts[f.category]}>"
            if placeholder not in text:
                break
        self._by_value[key] = placeholder
        self._by_placeholder[placeholder] = f.value
        return placeholder

    def pseudonymise(self, text: str) -> str:
        """``text`` with each finding replaced by its placeholder."""
        findings = detect(text, self._categories)
        self._findings.extend(findings)
        return _replace(text, findings, lambda f: self._placeholder(f, text))

    def restore(self, text: str) -> str:
        """``text`` with every placeholder this Pseudonymiser issued replaced by its value.

        Placeholders it did not issue (or mangled ones) are left as they are.
        """
        if "<" not in text or not self._by_placeholder:
            return text
        table = self._by_placeholder
        return _PLACEHOLDER_RE.sub(lambda m: table.get(m.group(), m.group()), text)

    def stream_restorer(self) -> StreamRestorer:
        """A restorer for one streamed answer; it sees placeholders issued later too."""
        return StreamRestorer(self)


class StreamRestorer:
    """For streamed model output: :meth:`feed` returns what is safe to emit now.

    The text returned has placeholders restored. A placeholder split across
    chunks (``"<EM"``, ``"AIL_1>"``) is held back until it is complete, or until
    it can no longer be one of the placeholders issued (then it is emitted as
    is); :meth:`flush` returns whatever is still held at the end of the stream.
    Only a tail starting with ``<`` is ever held, and never more than the
    longest placeholder, so the delay is a few characters at most.
    """

    def __init__(self, pseudonymiser: Pseudonymiser) -> None:
        self._owner = pseudonymiser
        self._buffer = ""

    def _hold_from(self) -> int:
        """Where the possibly-unfinished placeholder at the end of the buffer starts."""
        buf = self._buffer
        i = buf.rfind("<")
        if i == -1:
            return len(buf)
        tail = buf[i:]
        # Placeholders hold one "<" and one ">": an earlier "<" cannot start one that
        # is still open, and a tail with ">" is complete (or not a placeholder).
        if ">" in tail:
            return len(buf)
        for placeholder in self._owner._by_placeholder:
            if len(placeholder) > len(tail) and placeholder.startswith(tail):
                return i
        return len(buf)

    def feed(self, chunk: str) -> str:
        """Take the next chunk; return the restored text that can be emitted now."""
        self._buffer += chunk
        cut = self._hold_from()
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return self._owner.restore(out)

    def flush(self) -> str:
        """End of stream: return (restored) whatever was held back."""
        out, self._buffer = self._buffer, ""
        return self._owner.restore(out)
