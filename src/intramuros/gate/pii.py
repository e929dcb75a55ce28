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

What the detectors read is a normalised view of the text
(:mod:`intramuros.gate.pii_normal`): NFKC (full-width digits and letters
folded), every decimal digit in ASCII, zero-width, format and control
characters and combining marks removed, runs of spaces (no-break and thin
spaces included) made one space. Separators ``space - . /`` are tolerated
between the groups of identifiers, and one line break inside an identifier
(a wrapped line, two text parts, two messages: see
:mod:`intramuros.gate.privacy`), for IBANs, cards, phones and the national
identifiers. Findings are mapped back to the exact span of the original text,
so redaction and pseudonymisation replace what was written, zero-width
characters included.

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
replaced by omocodia letters is not found; an identifier glued to letters
("xFR76...") is not one; a value spelt out ("four one one one"), obfuscated
("a [at] b dot com"), split by other characters than the separators above or
by more than one line break, or cut in pieces across distant fields is not
joined; a bare nine-digit number valid as BSN or ΑΦΜ (about one in five) is
reported unless a label or a currency says otherwise, and a round-looking
figure written like a phone number ("612 345 678" inhabitants) is a phone.

Cost: linear in the text, whatever it holds (``tests/test_pii.py`` checks
hostile inputs: floods of "@", long digit runs, many distinct values). The
view is built, and the detectors run, in windows of 64 K characters (with a
margin), so no single regular-expression call or sort runs over more than one
window, and a worker thread doing this never holds the interpreter lock for
long; findings are plain tuples, which the garbage collector does not walk.
About 0.1 ms for 10 kB of English prose, 1 ms for 10 kB of French prose with
dates, 3-4 ms for 10 kB where nearly every line holds personal data, and about
1 s for a megabyte of that (``benchmarks/pii.py``, a 2-core machine).

:class:`Pseudonymiser` swaps findings for placeholders (``<IBAN_1>``) before a
prompt leaves for the model and puts the values back in the answer, streamed
(:class:`StreamRestorer`) or not; every step is linear in the text, however
many values it holds.
"""

from __future__ import annotations

import re
import time
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter

from intramuros.gate.pii_bank import card_valid, cards, iban_valid, ibans, luhn_valid
from intramuros.gate.pii_contact import emails, ips, phones
from intramuros.gate.pii_national import (
    afm_valid,
    bsn_valid,
    codice_fiscale_valid,
    codici_fiscali,
    dni_nie_valid,
    dnis,
    nine_digit_ids,
    nir_valid,
    nirs,
    steuer_id_valid,
    steuer_ids,
)
from intramuros.gate.pii_normal import STEP, TextView
from intramuros.gate.pii_scan import Candidate, Scan

__all__ = [
    "CATEGORIES",
    "Finding",
    "Pseudonymiser",
    "StreamRestorer",
    "afm_valid",
    "bsn_valid",
    "card_valid",
    "codice_fiscale_valid",
    "detect",
    "dni_nie_valid",
    "iban_valid",
    "luhn_valid",
    "nir_valid",
    "redact",
    "spans",
    "steuer_id_valid",
    "summarise",
]

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
        value: the matched text, exactly as written (spaces, dashes and any
            invisible characters inside it kept).
    """

    category: str
    start: int
    end: int
    value: str


# --------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------

_Detector = Callable[[Scan], Iterator[Candidate]]
_DETECTORS: tuple[_Detector, ...] = (
    emails,
    ibans,
    cards,
    ips,
    nirs,
    steuer_ids,
    codici_fiscali,
    dnis,
    nine_digit_ids,
    phones,
)
# The second look, with line breaks read as spaces: numbers wrapped across two lines.
# (The IBAN detector takes a line break itself; e-mail and IP addresses do not wrap.)
_WRAPPING: tuple[_Detector, ...] = (cards, nirs, steuer_ids, dnis, nine_digit_ids, phones)
# Every category but email contains a digit (after folding, an ASCII one).
_WORTH_A_LOOK = re.compile(r"[0-9@]")
_MARGIN = 1024  # more than any identifier and its context words
_BY_SPAN = itemgetter(1, 2)
_WRAP = re.compile(r"\d[.\-/)]?\n[.\-/(+]?\d")
_WRAP_REACH = 64  # more than the longest wrapped number on either side of its break


def _wanted(categories: Collection[str] | None) -> frozenset[str]:
    if categories is None:
        return frozenset(CATEGORIES)
    unknown = set(categories) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown personal-data categories: {', '.join(sorted(unknown))}")
    return frozenset(categories)


def _wrap_regions(text: str) -> list[tuple[int, int]]:
    """Where a number may run on across a line break: around each digit-break-digit."""
    regions: list[tuple[int, int]] = []
    for m in _WRAP.finditer(text):
        lo, hi = max(0, m.start() - _WRAP_REACH), min(len(text), m.end() + _WRAP_REACH)
        if regions and regions[-1][1] >= lo:
            regions[-1] = (regions[-1][0], hi)
        else:
            regions.append((lo, hi))
    return regions


def _window(view: str, lo: int, hi: int, keep_from: int, keep_to: int) -> list[Candidate]:
    """Candidates in ``view[lo:hi]`` starting in ``[keep_from, keep_to)``, in view offsets."""
    text = view[lo:hi]
    if _WORTH_A_LOOK.search(text) is None:
        return []
    scan = Scan(text)
    found = [c for detector in _DETECTORS for c in detector(scan)]
    regions = _wrap_regions(text)
    if regions:
        wrapped = Scan(text.replace("\n", " "), lines=text, regions=regions)
        if wrapped.cluster_starts:
            found += (
                c for detector in _WRAPPING for c in detector(wrapped)
                if text.count("\n", c[1], c[2]) == 1
            )  # fmt: skip
    if lo or keep_from or keep_to < len(text):
        found = [(c[0], c[1] + lo, c[2] + lo, c[3]) for c in found
                 if keep_from <= c[1] + lo < keep_to]  # fmt: skip
    # Sorted window by window (a sort of the whole list at once would hold the
    # interpreter lock for as long as it takes).
    found.sort(key=_BY_SPAN)
    return found


def _candidates(view: str) -> list[Candidate]:
    """Every candidate, sorted by start (then end)."""
    n = len(view)
    if n <= STEP + 2 * _MARGIN:
        return _window(view, 0, n, 0, n)
    found: list[Candidate] = []
    for a in range(0, n, STEP):
        b = min(n, a + STEP)
        found += _window(view, max(0, a - _MARGIN), min(n, b + _MARGIN), a, b)
        # Between two windows, hand the interpreter lock to a thread waiting for it
        # (the event loop) at once, rather than at the end of the switch interval.
        time.sleep(0)
    return found


def _rank(c: Candidate) -> tuple[int, int, int, int, str]:
    return (c[1] - c[2], -c[3], -_PRIORITY[c[0]], c[1], c[0])


def _resolve(candidates: list[Candidate], size: int) -> list[Candidate]:
    """Non-overlapping candidates: longer first, then with context, then more specific.

    ``candidates`` are sorted by start. Those that overlap no other (nearly
    all) are kept as they are; only each group of overlapping ones is ranked.
    """
    chosen: list[Candidate] = []
    group: list[Candidate] = []
    reach = -1
    for c in [*candidates, ("", size + 1, size + 1, 0)]:
        if c[1] >= reach and group:
            chosen += group if len(group) == 1 else _settle(group)
            group = []
        group.append(c)
        reach = max(reach, c[2])
    return chosen


def _settle(group: list[Candidate]) -> list[Candidate]:
    lo = min(c[1] for c in group)
    taken = bytearray(max(c[2] for c in group) - lo)
    kept: list[Candidate] = []
    for c in sorted(set(group), key=_rank):
        if taken.find(1, c[1] - lo, c[2] - lo) != -1:
            continue
        taken[c[1] - lo : c[2] - lo] = b"\x01" * (c[2] - c[1])
        kept.append(c)
    return sorted(kept, key=_BY_SPAN)


def _worth_a_look(text: str) -> bool:
    if not text.isascii():
        return True  # full-width digits and at signs ...: the view will tell
    return any(_WORTH_A_LOOK.search(text, pos, pos + STEP) for pos in range(0, len(text), STEP))


def spans(text: str, categories: Collection[str] | None = None) -> list[tuple[str, int, int]]:
    """``(category, start, end)`` of each finding in ``text`` (see :func:`detect`).

    Plain tuples: for callers handling a great many findings at once.
    """
    wanted = _wanted(categories)
    if not wanted or not text or not _worth_a_look(text):
        return []
    view = TextView(text)
    found: list[tuple[str, int, int]] = []
    last = 0
    for category, vstart, vend, _ in _resolve(_candidates(view.text), len(view.text)):
        if category not in wanted:
            continue
        start, end = view.start_of(vstart), view.end_of(vend)
        if start < last or end <= start:
            continue  # two findings inside one expanded character ("½"): keep the first
        found.append((category, start, end))
        last = end
    return found


def detect(text: str, categories: Collection[str] | None = None) -> list[Finding]:
    """The personal data in ``text``: non-overlapping findings sorted by start.

    All detectors run whatever ``categories`` asks for, so that overlaps are
    settled the same way (a card number is never reported as a phone because
    only phones were asked for); the result is then filtered to
    ``categories`` (default: all). Offsets and values are those of ``text``
    itself, though detection reads its normalised view. Raises ``ValueError``
    for an unknown category.
    """
    return [Finding(c, s, e, text[s:e]) for c, s, e in spans(text, categories)]


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
    return _replace(text, detect(text, categories), lambda f: label(f.category))


def label(category: str) -> str:
    """What a redacted value of ``category`` reads: ``[EMAIL]``, ``[IBAN]``, ..."""
    return f"[{category.upper()}]"


def summarise(findings: Iterable[Finding]) -> dict[str, int]:
    """Counts per category, in :data:`CATEGORIES` order, for logs (never the values)."""
    counts = Counter(f.category for f in findings)
    return {c: counts[c] for c in CATEGORIES if counts[c]}


# --------------------------------------------------------------------------
# Pseudonyms
# --------------------------------------------------------------------------

_NAMES = {c: c.upper() for c in CATEGORIES}
# Bounded: a category's name, then at most nine digits.
_PLACEHOLDER_RE = re.compile(
    "<(?:" + "|".join(sorted(_NAMES.values(), key=len, reverse=True)) + r")_\d{1,9}>"
)


class Pseudonymiser:
    """Per-request: replaces findings by stable placeholders like ``<EMAIL_1>``, ``<IBAN_2>``.

    The same value always gets the same placeholder within one Pseudonymiser
    (across every text it is given, e.g. all the messages of one chat
    request); :meth:`restore` puts the real values back, in the model's answer.
    Values are matched exactly as written: "DE89 3704 ..." and "DE89370400..."
    get two placeholders, so that restoring gives back each one's own spelling.

    A placeholder is never one that already appears in a text it was given
    (see :meth:`reserve`), so a prompt that quotes "<EMAIL_1>" literally
    survives the round trip.
    """

    def __init__(self, categories: Collection[str] | None = None) -> None:
        self._categories = _wanted(categories)
        # Keyed by strings and holding strings, these dicts are never walked by the
        # garbage collector, however many values a request holds.
        self._by_value: dict[str, dict[str, str]] = {}  # category -> value -> placeholder
        self._by_placeholder: dict[str, str] = {}
        self._counts: Counter[str] = Counter()
        self._issued: dict[str, array[int]] = {}  # name -> numbers issued, ascending
        self._taken: set[str] = set()
        self._findings: list[Finding] = []

    @property
    def categories(self) -> frozenset[str]:
        """The categories this pseudonymiser replaces."""
        return self._categories

    @property
    def findings(self) -> list[Finding]:
        """Every finding replaced by :meth:`pseudonymise` (offsets in the text each came from)."""
        return list(self._findings)

    @property
    def mapping(self) -> dict[str, str]:
        """Placeholder -> original value, for the restorer (a copy)."""
        return dict(self._by_placeholder)

    def reserve(self, text: str) -> None:
        """Never issue a placeholder that ``text`` already holds literally."""
        if "<" in text:
            self._taken.update(_PLACEHOLDER_RE.findall(text))

    def placeholder(self, category: str, value: str) -> str:
        """The placeholder of ``value`` (issued now if it is new)."""
        values = self._by_value.setdefault(category, {})
        existing = values.get(value)
        if existing is not None:
            return existing
        name = _NAMES[category]
        while True:
            self._counts[category] += 1
            number = self._counts[category]
            placeholder = f"<{name}_{number}>"
            if placeholder not in self._taken:
                break
        issued = self._issued.get(name)
        if issued is None:
            issued = self._issued[name] = array("q")
        issued.append(number)
        values[value] = placeholder
        self._by_placeholder[placeholder] = value
        return placeholder

    def pseudonymise(self, text: str) -> str:
        """``text`` with each finding replaced by its placeholder."""
        findings = detect(text, self._categories)
        self.reserve(text)
        self._findings.extend(findings)
        return _replace(text, findings, lambda f: self.placeholder(f.category, f.value))

    def restore(self, text: str) -> str:
        """``text`` with every placeholder this Pseudonymiser issued replaced by its value.

        Placeholders it did not issue (or mangled ones) are left as they are.
        """
        if "<" not in text or not self._by_placeholder:
            return text
        table = self._by_placeholder
        return _PLACEHOLDER_RE.sub(lambda m: table.get(m.group(), m.group()), text)

    def could_start(self, tail: str) -> bool:
        """Whether ``tail`` ("<", "<EM", "<IBAN_1") is the start of a placeholder issued.

        Looks at the categories and at the numbers issued, not at each
        placeholder: constant time however many were issued.
        """
        for name, numbers in self._issued.items():
            prefix = f"<{name}_"
            if len(tail) <= len(prefix):
                if prefix.startswith(tail):
                    return True
                continue
            if not tail.startswith(prefix):
                continue
            digits = tail[len(prefix) :]
            if len(digits) > 9 or not (digits.isascii() and digits.isdigit()) or digits[0] == "0":
                continue
            first = int(digits)
            for extra in range(10 - len(digits)):  # numbers with these leading digits
                lo, hi = first * 10**extra, (first + 1) * 10**extra
                i = bisect_left(numbers, lo)
                if i < len(numbers) and numbers[i] < hi:
                    return True
        return False

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
        if ">" in tail or not self._owner.could_start(tail):
            return len(buf)
        return i

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
