"""Name, date and country normalisation shared by importers, index and matcher.

Everything here is a pure function of its input. Names are folded to lower-case
ASCII (any script: Cyrillic, Greek, Arabic, Hebrew and CJK are transliterated
by ``anyascii``, with a few Greek digraphs fixed first), punctuation becomes
spaces (dots vanish, so ``S.A.`` is ``sa``), legal-form suffixes of
organisations are set apart, and each token gets a phonetic key so that
Wladimir/Vladimir or Usama/Osama land in the same index bucket.
"""

# ruff: noqa: RUF001 - Greek letters and dashes in the transliteration tables are meant

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from intramuros.kyc.errors import KycUnavailable


def _anyascii(text: str) -> str:
    try:
        from anyascii import anyascii
    except ImportError:  # pragma: no cover - the extra is part of the install
        raise KycUnavailable("KYC screening needs: pip install 'intramuros[kyc]'") from None
    return str(anyascii(text))


def _metaphone(text: str) -> str:
    try:
        import jellyfish
    except ImportError:  # pragma: no cover
        raise KycUnavailable("KYC screening needs: pip install 'intramuros[kyc]'") from None
    return str(jellyfish.metaphone(text))


# Greek digraphs anyascii renders letter by letter (omicron-upsilon -> "oy"): the usual
# romanisation of names reads them as one sound.
# chi is "kh" (as in Khasan for Hasan), not ELOT's "ch" that reads as in Chavez;
# tau-zeta writes the j of foreign names (Τζον = John).
# nu-tau and mu-pi write the d and b of foreign names (Βλαντιμίρ, Μπους) anywhere
# in the word; gamma-kappa only at its start.
_GREEK_DIGRAPHS = (("ού", "u"), ("ου", "u"), ("τζ", "j"), ("χ", "kh"), ("ντ", "d"), ("μπ", "b"))
_GREEK_INITIAL = re.compile(r"\b(μπ|ντ|γκ)")
_GREEK_INITIAL_LATIN = {"μπ": "b", "ντ": "d", "γκ": "g"}
_GREEK = re.compile(r"[\u0370-\u03ff\u1f00-\u1fff]")
_ABJAD = re.compile(r"[\u0590-\u05ff\u0600-\u06ff\u0750-\u077f\ufb50-\ufdff\ufe70-\ufeff]")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")

# Legal forms of organisations (folded, dots removed). Set apart, not compared:
# "Acme Ltd" and "ACME Limited" are the same company for screening purposes.
LEGAL_FORMS: frozenset[str] = frozenset({
    "ltd", "limited", "llc", "inc", "incorporated", "corp", "corporation", "co", "company",
    "plc", "llp", "lp", "sa", "sas", "sarl", "sae", "saog", "saoc", "sal", "sac", "srl", "spa",
    "snc", "gmbh", "mbh", "ag", "kg", "kgaa", "ug", "ohg", "bv", "nv", "oy", "oyj", "ab",
    "asa", "as", "aps", "jsc", "ojsc", "cjsc", "pjsc", "ooo", "oao", "zao", "pao", "tov",
    "pat", "ao", "pte", "pty", "bhd", "sdn", "kk", "kft", "zrt", "doo", "dd", "ad", "ead",
    "sro", "spol", "sp", "zoo", "fze", "fzco", "fzc", "fzllc", "fz", "dmcc", "wll", "est",
    "jv", "cv", "de", "rl",
})
# Joining words that carry no identity on their own (kept for display).
PARTICLES: frozenset[str] = frozenset({
    "al", "el", "ul", "bin", "ibn", "ben", "bint", "binti", "van", "von", "der", "den", "de",
    "da", "di", "del", "la", "le", "du", "dos", "das", "the", "of", "and",
})


def fold(text: str) -> str:
    """Lower-case ASCII words separated by single spaces, in any input script."""
    if _GREEK.search(text):
        lowered = text.lower()
        for greek, latin in _GREEK_DIGRAPHS:
            lowered = lowered.replace(greek, latin)
        text = _GREEK_INITIAL.sub(lambda m: _GREEK_INITIAL_LATIN[m.group(1)], lowered)
    if _CJK.search(text):
        # anyascii writes each CJK syllable capitalised and unspaced: split them.
        text = " ".join(_CAMEL.sub(" ", _anyascii(part)) for part in text.split())
    else:
        text = _anyascii(unicodedata.normalize("NFC", text))
    text = text.lower().replace(".", "").replace("'", "").replace("`", "")
    return " ".join(_NON_WORD.sub(" ", text).split())


def script_of(text: str) -> str:
    """``abjad`` (Arabic, Hebrew: vowels mostly unwritten), ``cjk``, ``greek`` or ``latin``."""
    if _ABJAD.search(text):
        return "abjad"
    if _CJK.search(text):
        return "cjk"
    if _GREEK.search(text):
        return "greek"
    return "latin"


_VOWELS = re.compile(r"[aeiouy]+")


def skeleton(token: str) -> str:
    """The consonants of a token (what an abjad spelling keeps): ``muhammad`` -> ``mhmmd``."""
    stripped = _VOWELS.sub("", token)
    return stripped or token


_ABJAD_RULES = (("ph", "f"), ("p", "b"), ("v", "f"), ("w", ""), ("q", "k"), ("c", "k"),
                ("g", "j"))  # Arabic jim writes the g of foreign (and Egyptian) names


def abjad_key(token: str) -> str:
    """What survives an Arabic or Hebrew spelling: consonants, p as b, v as f, no doubles.

    ``putin`` and the transliterated ``bwtyn`` both give ``btn``.
    """
    t = token
    for old, new in _ABJAD_RULES:
        t = t.replace(old, new)
    t = _VOWELS.sub("", t) or t[:1]  # all vowels (yue, yw): keep the first letter
    out: list[str] = []
    for ch in t:
        if not out or out[-1] != ch:
            out.append(ch)
    return "".join(out) or token


# Transliteration habits merged before Metaphone: Cyrillic "dzh" for j, Greek beta
# for b, sh/s and kh/h (scripts without the distinction), w/v, ph/f, q/k.
_PHONETIC_RULES = (("dzh", "j"), ("dj", "j"), ("ph", "f"), ("w", "v"), ("b", "v"), ("ck", "k"),
                   ("q", "k"), ("kh", "h"), ("dh", "d"), ("tch", "ch"), ("sch", "sh"),
                   ("sh", "s"), ("j", "y"), ("ou", "u"), ("ee", "i"))  # fmt: skip


@functools.lru_cache(maxsize=200_000)
def phonetic(token: str) -> str:
    """A sound key for one token, tolerant to transliteration habits.

    Spelling conventions (w/v, ph/f, q/k, kh/h, j/y, a leading vowel) are merged
    first, then jellyfish's Metaphone encodes the rest.
    """
    if token.isdigit():
        return token
    t = token
    for old, new in _PHONETIC_RULES:
        t = t.replace(old, new)
    key = _metaphone(t) or t
    return ("A" + key[1:]) if key[:1] in "AEIOU" else key


@dataclass(frozen=True)
class NameForm:
    """A name ready for comparison: its identifying tokens and what was set apart."""

    original: str
    tokens: tuple[str, ...]
    legal_forms: tuple[str, ...]
    script: str
    # derived once (names are compared many times)
    joined: str = ""  # the tokens without spaces, in the given order
    sorted_joined: str = ""  # the tokens without spaces, sorted (order-independent)
    digits: tuple[str, ...] = ()  # the numeric tokens, sorted

    def __post_init__(self) -> None:
        object.__setattr__(self, "joined", "".join(self.tokens))
        object.__setattr__(self, "sorted_joined", "".join(sorted(self.tokens)))
        object.__setattr__(self, "digits", tuple(sorted(t for t in self.tokens if t.isdigit())))


_LONG_LEGAL_FORMS = ("limited", "company", "corporation", "incorporated", "establishment")


@functools.lru_cache(maxsize=50_000)
def _is_legal_form(word: str) -> bool:
    """A legal form, or a misspelt long one (``LIMTIED``, ``CORPORTION``)."""
    if word in LEGAL_FORMS:
        return True
    if len(word) < 6:
        return False
    from rapidfuzz.distance import Indel

    return any(Indel.normalized_similarity(word, form) >= 0.85 for form in _LONG_LEGAL_FORMS)


@functools.lru_cache(maxsize=100_000)
def name_form(name: str, organisation: bool = False) -> NameForm:
    """Fold and split a name; for organisations, set legal forms apart.

    Particles (al, bin, van, de...) are dropped when other tokens remain: they
    are too common to identify anyone, and lists write them inconsistently.
    """
    words = fold(name).split()
    legal: list[str] = []
    if organisation:
        kept = [w for w in words if not _is_legal_form(w)]
        legal = [w for w in words if _is_legal_form(w)]
        if kept:
            words = kept
        else:
            legal = []
    core = [w for w in words if w not in PARTICLES]
    if core:
        words = core
    return NameForm(name, tuple(words), tuple(legal), script_of(name))


# -- dates -------------------------------------------------------------------

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, start=1)}
_DAY_MONTH_YEAR = re.compile(r"\b(\d{1,2})\s+([A-Za-z]{3})[a-z]*\.?\s+(\d{4})\b")
_MONTH_YEAR = re.compile(r"\b([A-Za-z]{3})[a-z]*\.?\s+(\d{4})\b")
_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_DMY_NUMERIC = re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{4})\b")
_RANGE = re.compile(r"\b(\d{4})\s*(?:to|-|–)\s*(\d{4})\b")
_YEAR = re.compile(r"\b(1[89]\d{2}|20\d{2})\b")


def parse_dates(text: str) -> list[str]:
    """ISO dates (``YYYY[-MM[-DD]]``) found in a free-text date such as OFAC's.

    ``20 Dec 1977`` -> ``1977-12-20``; ``Dec 1977`` -> ``1977-12``; ``circa
    1977`` -> ``1977``; ``1960 to 1962`` -> each year. Unreadable text gives [].
    """
    out: list[str] = []
    for m in _ISO.finditer(text):
        out.append(f"{m.group(1)}-{m.group(2)}-{m.group(3)}")
    for m in _DAY_MONTH_YEAR.finditer(text):
        month = _MONTHS.get(m.group(2).lower())
        if month:
            out.append(f"{m.group(3)}-{month:02d}-{int(m.group(1)):02d}")
    for m in _DMY_NUMERIC.finditer(text):
        day, month = int(m.group(1)), int(m.group(2))
        if 1 <= month <= 12 and 1 <= day <= 31:
            out.append(f"{m.group(3)}-{month:02d}-{day:02d}")
    if out:
        return out
    for m in _MONTH_YEAR.finditer(text):
        month = _MONTHS.get(m.group(1).lower())
        if month:
            out.append(f"{m.group(2)}-{month:02d}")
    if out:
        return out
    for m in _RANGE.finditer(text):
        first, last = int(m.group(1)), int(m.group(2))
        if 0 <= last - first <= 15:
            out.extend(str(y) for y in range(first, last + 1))
    if out:
        return out
    return [m.group(1) for m in _YEAR.finditer(text)]


# -- countries ---------------------------------------------------------------

# Spellings used by OFAC, the UN and customers that ISO's own names do not cover.
_COUNTRY_ALIASES = {
    "korea north": "KP", "north korea": "KP", "dprk": "KP", "korea south": "KR",
    "south korea": "KR", "russia": "RU", "burma": "MM", "syria": "SY", "iran": "IR",
    "venezuela": "VE", "bolivia": "BO", "tanzania": "TZ", "vietnam": "VN", "laos": "LA",
    "moldova": "MD", "palestine": "PS", "west bank": "PS", "gaza": "PS", "uk": "GB",
    "great britain": "GB", "england": "GB", "united states": "US", "usa": "US",
    "united states of america": "US", "us": "US", "turkey": "TR", "czech republic": "CZ",
    "macedonia": "MK", "ivory coast": "CI", "cote divoire": "CI", "cape verde": "CV",
    "swaziland": "SZ", "brunei": "BN", "taiwan": "TW", "kosovo": "XK",
    "congo democratic republic of the": "CD", "democratic republic of the congo": "CD",
    "drc": "CD", "congo republic of the": "CG", "republic of the congo": "CG",
    "the gambia": "GM", "gambia the": "GM", "bahamas the": "BS", "micronesia": "FM",
    "vatican": "VA", "holy see": "VA", "sudan south": "SS", "russian": "RU", "iranian": "IR",
    "syrian": "SY", "iraqi": "IQ", "afghan": "AF", "pakistani": "PK", "american": "US",
    "british": "GB", "chinese": "CN", "cuban": "CU", "lebanese": "LB", "yemeni": "YE",
    "libyan": "LY", "somali": "SO", "saudi": "SA", "emirati": "AE", "uae": "AE",
    "german": "DE", "french": "FR", "italian": "IT", "spanish": "ES", "greek": "GR",
    "ukrainian": "UA", "belarusian": "BY", "mexican": "MX", "colombian": "CO",
}  # fmt: skip


@functools.lru_cache(maxsize=1)
def _country_table() -> dict[str, str]:
    try:
        import pycountry
    except ImportError:  # pragma: no cover
        raise KycUnavailable("KYC screening needs: pip install 'intramuros[kyc]'") from None
    table: dict[str, str] = {}
    for c in pycountry.countries:
        code = str(c.alpha_2)
        table[code.lower()] = code
        table[str(c.alpha_3).lower()] = code
        for attr in ("name", "official_name", "common_name"):
            value = getattr(c, attr, None)
            if value:
                table[fold(str(value))] = code
                # "Korea, Republic of" -> also "republic of korea"
                if "," in str(value):
                    head, _, tail = str(value).partition(",")
                    table[fold(f"{tail} {head}")] = code
    table.update(_COUNTRY_ALIASES)
    return table


@functools.lru_cache(maxsize=10_000)
def country_code(text: str | None) -> str | None:
    """ISO alpha-2 code of a country name, code or demonym; the folded text if unknown."""
    if not text:
        return None
    key = fold(text)
    if not key:
        return None
    table = _country_table()
    if key in table:
        return table[key]
    if key.startswith("the ") and key[4:] in table:
        return table[key[4:]]
    return key
