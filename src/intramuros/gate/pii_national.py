"""Detectors of national identifiers, each with its check digit.

``fr_nir`` (sécurité sociale, Corsica 2A/2B), ``de_steuer_id`` (ISO 7064
MOD 11,10 plus the digit-frequency rule), ``it_codice_fiscale`` (check
character, omocodia), ``es_dni_nie``, ``gr_afm`` (ΑΦΜ), ``nl_bsn`` (11-proef).
They read the normalised view (see :mod:`intramuros.gate.pii_normal`);
grouped numbers take a space, ``.`` or ``-`` between their groups.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator

from intramuros.gate.pii_scan import (
    Candidate,
    Scan,
    context_level,
    free_left,
    free_right,
    negated,
)

_NIR_RE = re.compile(
    r"(?<!\d)[1-478][ .\-]?\d{2}[ .\-]?(?:0[1-9]|1[0-2]|[2-9]\d)[ .\-]?(?:\d{2}|2[AaBb])[ .\-]?"
    r"\d{3}[ .\-]?\d{3}[ .\-]?\d{2}(?!\d)"
)
_SEPARATORS = re.compile(r"[ .\-/]")


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


_CORSICA = re.compile(r"\d[ .\-]?2[AaBb][ .\-]?\d")


def nirs(scan: Scan) -> Iterator[Candidate]:
    text = scan.text
    matches: Iterable[tuple[int, int, re.Match[str]]] = scan.numeric(_NIR_RE)
    if _CORSICA.search(text):  # "2A"/"2B" break the numeric clusters: search the text
        matches = ((m.start(), m.end(), m) for m in _NIR_RE.finditer(text))
    for start, end, m in matches:
        if not (free_left(text, start, spaced=True) and free_right(text, end, spaced=True)):
            continue
        if nir_valid(_SEPARATORS.sub("", m.group())):
            yield ("fr_nir", start, end, context_level(text, start, end, "fr_nir"))


_STEUER_RE = re.compile(r"(?<!\d)[1-9]\d(?P<s>[ .\-/]?)\d{3}(?P=s)\d{3}(?P=s)\d{3}(?!\d)")


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


def steuer_ids(scan: Scan) -> Iterator[Candidate]:
    text = scan.text
    for start, end, m in scan.numeric(_STEUER_RE):
        if not (free_left(text, start, spaced=True) and free_right(text, end, spaced=True)):
            continue
        if not steuer_id_valid(_SEPARATORS.sub("", m.group())):
            continue
        if negated(text, start, end):
            continue
        yield ("de_steuer_id", start, end, 0)


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


def codici_fiscali(scan: Scan) -> Iterator[Candidate]:
    """Codici fiscali: one pass of the pattern, where a text has digits glued to letters.

    A code with every digit replaced by omocodia letters is not reported: a
    16-letter word in capitals would too often pass the check letter.
    """
    text = scan.text
    if not any(at and text[at - 1].isalpha() for at in scan.cluster_starts):
        return  # every run of digits in a code follows a letter
    for m in _CF_RE.finditer(text):
        value = m.group()
        if not (value.isupper() or value.islower()):
            continue  # mixed case is a word, not a code
        if any(ch.isdigit() for ch in value) and codice_fiscale_valid(value):
            yield ("it_codice_fiscale", m.start(), m.end(), 0)


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


def dnis(scan: Scan) -> Iterator[Candidate]:
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
        if not free_left(text, start) or not dni_nie_valid(text[start:end]):
            continue
        if negated(text, start, end):
            continue
        yield ("es_dni_nie", start, end, 0)


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


def nine_digit_ids(scan: Scan) -> Iterator[Candidate]:
    text = scan.text
    for start, end, m in scan.numeric(_NINE_RE):
        if not (free_left(text, start) and free_right(text, end)):
            continue
        value = m.group()
        digits = value.replace(".", "")
        found = []
        if bsn_valid(digits):
            found.append("nl_bsn")
        if "." not in value and afm_valid(digits):
            found.append("gr_afm")
        for category in found:
            if negated(text, start, end):
                continue
            yield (category, start, end, context_level(text, start, end, category))
