"""Detectors of contact data: e-mail addresses, phone numbers, IP addresses.

Each detector takes a :class:`~intramuros.gate.pii_scan.Scan` of a normalised
view and yields :class:`~intramuros.gate.pii_scan.Candidate` values; see
:mod:`intramuros.gate.pii` for what is detected and why.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from intramuros.gate.pii_scan import (
    AMOUNT_AFTER,
    Candidate,
    Scan,
    context_level,
    free_left,
    free_right,
    negated,
)

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
# Where, read backwards from an "@", the local part's run of characters ends.
_NOT_LOCAL = re.compile(r"[^\w.%+\-]")
# "logo@2x.png" is an image name, not an address.
_FILE_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff"})


def emails(scan: Scan) -> Iterator[Candidate]:
    """E-mail addresses, in time linear in the text however many "@" it holds.

    Every address holds exactly one "@". Where they are few, each is looked
    at on its own: its local part lies between the previous "@" (or 65
    characters back) and it, its domain within 256 characters after it. Where
    they are many (a list of addresses, a flood of "@"), one pass of the
    regular expression over the text is cheaper.
    """
    text = scan.text
    n = len(text)
    count = text.count("@")
    if not count:
        return
    matches = _EMAIL_RE.finditer(text) if count * 128 > n else _around_each_at(text)
    for m in matches:
        value = m.group()
        local, _, domain = value.rpartition("@")
        if len(local) > 64 or len(value) > 254:
            continue
        if m.end() < n and (text[m.end()].isalnum() or text[m.end()] in "_-@"):
            continue  # cut short: not the whole address
        if domain.rsplit(".", 1)[1].lower() in _FILE_TLDS:
            continue
        yield ("email", m.start(), m.end(), 0)


def _around_each_at(text: str) -> Iterator[re.Match[str]]:
    n = len(text)
    previous = -1
    at = text.find("@")
    while at != -1:
        if at == 0 or not (text[at - 1].isalnum() or text[at - 1] in "_%+-"):
            previous, at = at, text.find("@", at + 1)  # nothing (or a dot) before it
            continue
        lo = max(previous + 1, at - 65)
        back = _NOT_LOCAL.search(text[lo:at][::-1])
        start = at - (back.start() if back is not None else at - lo)
        previous = at
        at = text.find("@", at + 1)
        m = _EMAIL_RE.match(text, start, min(n, previous + 256))
        if m is not None:
            yield m


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
    r"[ .\-]?\d{1,15}(?:[ .\-]\d{1,15}){0,15}"  # bounded: a number has at most 15 digits
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


def _intl_phone(text: str, start: int, value: str) -> Candidate | None:
    if not free_left(text, start):
        return None
    # "0033612345678" could be any zero-padded number: it needs grouping or context.
    if (
        value.startswith("00")
        and not re.search(r"[ .\-()]", value)
        and not context_level(text, start, start + len(value), "phone")
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
        if not free_right(text, end) or AMOUNT_AFTER.match(text, end):
            return None
        return ("phone", start, end, 0)
    return None


def _national_phone(text: str, start: int, value: str, *, compact: bool) -> Candidate | None:
    end = start + len(value)
    if not (free_left(text, start, spaced=True) and free_right(text, end, spaced=True)):
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
    context = context_level(text, start, end, "phone", before=32) if compact else 0
    if compact and not context:
        return None
    if negated(text, start, end):
        return None
    return ("phone", start, end, context)


def phones(scan: Scan) -> Iterator[Candidate]:
    text = scan.text
    found: list[Candidate | None] = []
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


def ips(scan: Scan) -> Iterator[Candidate]:
    text = scan.text
    if "." in scan.condensed:
        for start, end, _ in scan.numeric(_IPV4_RE):
            if _NOT_IP_BEFORE.search(text, max(0, start - 16), start):
                continue
            if not (free_left(text, start) and _ip_free_right(text, end)):
                continue
            yield ("ip", start, end, 0)
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
            yield ("ip", m.start(), m.end(), 0)
