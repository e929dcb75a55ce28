"""Detectors of bank data: IBANs (mod 97, length per country) and payment cards (Luhn, issuer).

Both read the normalised view (see :mod:`intramuros.gate.pii_normal`), where
full-width characters, odd spaces and zero-width characters are already gone.
Separators (space, ``-``, ``.``, ``/``) are tolerated between the groups of
four an IBAN is printed in, and a single line break anywhere in it (a wrapped
line, or two parts of a message); cards take the same separators between
their groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from intramuros.gate.pii_scan import Candidate, Scan, free_left, free_right, negated

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
# Letters as an IBAN holds them: ASCII in either case, and the Cyrillic and Greek
# capitals that print like Latin ones (a Cyrillic "ES91 ..." reads as an IBAN).
_LETTERS: dict[str, str] = {
    **{c: c.upper() for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    **dict(zip("АВЕЅІЈКМНОРСТХУ" "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",  # noqa: RUF001
               "ABESIJKMHOPCTXY" "ABEZHIKMNOPTYX", strict=True)),
}  # fmt: skip
_DIGITS = frozenset("0123456789")
_GROUP_SEPARATORS = frozenset(" .-/")


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


def _iban_at(text: str, start: int, digits_at: int, country: str) -> Candidate | None:
    """The IBAN whose country code starts at ``start`` and check digits at ``digits_at``."""
    length = _IBAN_LENGTH.get(country)
    if length is None or (start > 0 and text[start - 1].isalnum()):
        return None
    compact = [country]
    size = 2
    newline = False
    i = digits_at
    n = len(text)
    while size < length and i < n:
        c = text[i]
        if c in _DIGITS:
            compact.append(c)
        elif size >= 4 and c in _LETTERS:
            compact.append(_LETTERS[c])
        elif c == "\n" and not newline and size >= 4:
            newline = True  # a wrapped line or two parts: once, anywhere after the check digits
            i += 1
            continue
        elif (
            c in _GROUP_SEPARATORS and size % 4 == 0 and i + 1 < n
            and (text[i + 1].isalnum() or (text[i + 1] == "\n" and not newline))
        ):
            i += 1  # between groups of four only (a line break may follow)
            continue
        else:
            return None
        size += 1
        i += 1
    if size < length or (i < n and (text[i].isalnum() or text[i] == "_")):
        return None  # too short, or glued to more letters or digits
    return ("iban", start, i, 0) if iban_valid("".join(compact)) else None


def ibans(scan: Scan) -> Iterator[Candidate]:
    """IBANs: two letters, two check digits (starting a numeric cluster), the BBAN."""
    text = scan.text
    for at in scan.cluster_starts:
        if at < 2 or not text[at].isdigit():
            continue
        if text[at - 1] in _LETTERS:
            if text[at - 2] not in _LETTERS:
                continue
            found = _iban_at(text, at - 2, at, _LETTERS[text[at - 2]] + _LETTERS[text[at - 1]])
        elif (
            at >= 3 and text[at - 1] in " -" and text[at - 3] in _LETTERS
            and text[at - 2] in _LETTERS and text[at - 3 : at - 1].isupper()
        ):  # "FR 76 3000 ...": a capital country code, set apart
            found = _iban_at(text, at - 3, at, _LETTERS[text[at - 3]] + _LETTERS[text[at - 2]])
        else:
            continue
        if found is not None:
            yield found


# --------------------------------------------------------------------------
# Payment cards
# --------------------------------------------------------------------------

# Grouped numbers take one separator throughout, or a space where a line was
# wrapped (the second look reads line breaks as spaces).
_CARD_RE = re.compile(
    r"(?<!\d)(?:\d{13,19}"
    r"|\d{4}(?P<s>[ .\-/])\d{4}(?:(?P=s)| )\d{4}(?:(?P=s)| )\d{1,4}(?:(?:(?P=s)| )\d{1,3})?"
    r"|3\d{3}(?P<t>[ .\-/])\d{6}(?:(?P=t)| )\d{4,5})(?!\d)"
)
_NOT_DIGIT = re.compile(r"\D")


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
        digits.isascii()
        and digits.isdigit()
        and 13 <= len(digits) <= 19
        and _card_brand_ok(digits)
        and luhn_valid(digits)
    )


def cards(scan: Scan) -> Iterator[Candidate]:
    """Card numbers, compact or in groups (4-4-4-4, 4-6-5 ...)."""
    text = scan.text
    for start, _, m in scan.numeric(_CARD_RE):
        if not free_left(text, start, spaced=True):
            continue
        value = m.group()
        ends = [len(value)]
        if m.group("s") and len(_NOT_DIGIT.findall(value)) == 4:
            # 4-4-4-4 followed by an unrelated short group
            ends.append(max(value.rfind(m.group("s")), value.rfind(" ")))
        for cut in ends:
            end = start + cut
            digits = _NOT_DIGIT.sub("", value[:cut])
            if not card_valid(digits):
                continue
            if not free_right(text, end, spaced=cut == len(value)):
                break
            if len(digits) == 13 and negated(text, start, end):
                break  # EAN-13 barcodes starting with 4 look like old 13-digit Visas
            yield ("card", start, end, 0)
            break
