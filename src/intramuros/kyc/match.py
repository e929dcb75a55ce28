"""Scoring one subject against one listed entity, with the explanation of the score.

A score is the best name similarity over the entity's names (tokens aligned
order-independently, initials, missing middle names, fuzzy and phonetic token
similarity), plus or minus the secondary evidence: date of birth, nationality
or country, gender, entity type, and identifiers (an identical passport or IMO
number is decisive). Every term that moved the score is listed with its weight
in :class:`Explanation`, so an analyst sees why a hit is a hit.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from intramuros.kyc.errors import KycUnavailable
from intramuros.kyc.model import Entity, Identifier, Name
from intramuros.kyc.normalize import NameForm, abjad_key, country_code, name_form, phonetic

_DIGITS = re.compile(r"\d+")

# The weights of the secondary evidence (added to the name score, then clamped).
WEIGHTS: dict[str, float] = {
    "dob_exact": 0.05,
    "dob_year": 0.02,
    "dob_near": -0.04,
    "dob_mismatch": -0.18,
    "country_match": 0.03,
    "country_mismatch": -0.10,
    "gender_mismatch": -0.12,
    "type_mismatch": -0.25,
    "identifier_match": 1.0,  # decisive: the score becomes IDENTIFIER_SCORE
    "identifier_mismatch": -0.05,
    "weak_alias": -0.04,
}
IDENTIFIER_SCORE = 0.99
# Below this similarity two tokens are not considered the same word at all.
TOKEN_FLOOR = 0.72
# An initial ("J") against a full token starting with it.
INITIAL_SIM = 0.85
# Cap for consonant-only matches of one- or two-consonant words.
SHORT_SKELETON_SIM = 0.85
# An extra or missing token weighs this much when at least two tokens matched
# (a dropped middle name); otherwise it counts fully.
MISSING_WEIGHT = 0.15
ORG_MISSING_WEIGHT = 0.4


try:
    from rapidfuzz.distance import Indel, JaroWinkler

    HAVE_RAPIDFUZZ = True
except ImportError:  # pragma: no cover - the extra is part of the install
    HAVE_RAPIDFUZZ = False


def _jw(a: str, b: str) -> float:
    if not HAVE_RAPIDFUZZ:  # pragma: no cover
        raise KycUnavailable("KYC screening needs: pip install 'intramuros[kyc]'")
    return float(JaroWinkler.normalized_similarity(a, b))


def _ratio(a: str, b: str) -> float:
    if not HAVE_RAPIDFUZZ:  # pragma: no cover
        raise KycUnavailable("KYC screening needs: pip install 'intramuros[kyc]'")
    return float(Indel.normalized_similarity(a, b))


@dataclass(frozen=True)
class Subject:
    """Who is screened: a customer, a counterparty, a vessel."""

    name: str
    schema: str = "any"
    birth_date: str | None = None
    nationality: str | None = None
    country: str | None = None
    gender: str | None = None
    identifiers: tuple[Identifier, ...] = ()

    @property
    def countries(self) -> set[str]:
        """ISO codes of the subject's nationality and country."""
        codes = {country_code(self.nationality), country_code(self.country)}
        return {c for c in codes if c}


@dataclass
class TokenPair:
    """One aligned pair of tokens and how they were found alike."""

    query: str
    listed: str
    similarity: float
    how: str


@dataclass
class NameMatch:
    """The best alignment of the query name with one listed name."""

    score: float
    listed: str
    quality: str
    method: str
    pairs: list[TokenPair] = field(default_factory=list)
    unmatched_query: list[str] = field(default_factory=list)
    unmatched_listed: list[str] = field(default_factory=list)


@dataclass
class Explanation:
    """Why an entity scored what it scored."""

    score: float
    name: NameMatch
    features: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The explanation as JSON-ready data."""
        n = self.name
        return {
            "score": round(self.score, 4),
            "name": {
                "score": round(n.score, 4), "listed": n.listed, "quality": n.quality,
                "method": n.method,
                "pairs": [{"query": p.query, "listed": p.listed,
                           "similarity": round(p.similarity, 4), "how": p.how} for p in n.pairs],
                "unmatched_query": n.unmatched_query, "unmatched_listed": n.unmatched_listed,
            },
            "features": self.features,
        }  # fmt: skip


@functools.lru_cache(maxsize=500_000)
def token_similarity(a: str, b: str, abjad: bool = False,
                     initials: bool = True) -> tuple[float, str]:  # fmt: skip
    """Similarity of two folded tokens in [0, 1], and which rule gave it.

    ``initials``: a one-letter token may stand for a first name (persons only;
    in "SILVIA I" or "UNIT A" it is a number or a letter, not an initial).
    """
    if a == b:
        return 1.0, "exact"
    if a.isdigit() or b.isdigit():
        return 0.0, "number"  # numbered vessels and sibling companies: exact or nothing
    if _DIGITS.findall(a) != _DIGITS.findall(b):
        return 0.0, "number"  # VALFAJR7 is not VALFAJR8
    if len(a) == 1 or len(b) == 1:
        if not initials:
            return 0.0, "letter"
        return (INITIAL_SIM, "initial") if a[0] == b[0] else (0.0, "initial")
    # Jaro-Winkler alone is generous to short unrelated words (putin/tyurin):
    # averaged with the edit-distance ratio it keeps typos high and strangers low.
    best, how = (_jw(a, b) + _ratio(a, b)) / 2, "fuzzy"
    if abjad:
        sa, sb = abjad_key(a), abjad_key(b)
        cons = (_jw(sa, sb) + _ratio(sa, sb)) / 2
        if min(len(sa), len(sb)) <= 2:
            # two consonants (s-f, m-r) fit too many names to count as the same word
            cons = min(cons, SHORT_SKELETON_SIM)
        if cons > best:
            best, how = cons, "consonants"
    if min(len(a), len(b)) >= 3 and phonetic(a) == phonetic(b):
        # Same sound key: halfway to certain, from how alike the letters already are
        # (Wladimir/Vladimir high, Tanaka/Tung, whose keys collide, not enough).
        sounded = (best + 1.0) / 2
        if sounded > best:
            best, how = sounded, "phonetic"
    return best, how


def compare_names(query: NameForm, listed: NameForm, quality: str = "primary",
                  person: bool = True) -> NameMatch:  # fmt: skip
    """Align two names token by token, in any order; score in [0, 1].

    ``person``: names of people (initials count, missing middle names are
    cheap); else an organisation's, vessel's or aircraft's name, where a missing
    word weighs more.
    """
    abjad = query.script == "abjad" or listed.script == "abjad"
    q, e = list(query.tokens), list(listed.tokens)
    if not q or not e:
        return NameMatch(0.0, listed.original, quality, "tokens", [], q, e)
    scored = []
    for i, a in enumerate(q):
        for j, b in enumerate(e):
            sim, how = token_similarity(a, b, abjad, person)
            if sim >= TOKEN_FLOOR:
                scored.append((sim, i, j, how))
    scored.sort(key=lambda t: (-t[0], t[1], t[2]))
    used_q: set[int] = set()
    used_e: set[int] = set()
    pairs: list[TokenPair] = []
    for sim, i, j, how in scored:
        if i in used_q or j in used_e:
            continue
        used_q.add(i)
        used_e.add(j)
        pairs.append(TokenPair(q[i], e[j], sim, how))
    left_q = [t for i, t in enumerate(q) if i not in used_q]
    left_e = [t for j, t in enumerate(e) if j not in used_e]
    strong = sum(1 for p in pairs if p.how != "initial")
    # Tokens left on both sides conflict (another surname, another company word):
    # each such pair counts fully. Tokens left on one side only are a missing
    # middle name or an extra word: cheap once two tokens matched.
    conflicts = min(len(left_q), len(left_e))
    missing = (MISSING_WEIGHT if person else ORG_MISSING_WEIGHT) if strong >= 2 else 1.0
    extra = left_q[conflicts:] if len(left_q) > len(left_e) else left_e[conflicts:]
    # Inexact pairs count by their square: one 0.82 token among exact ones is a
    # different name far more often than a typo (typos stay above 0.9).
    total = sum(p.similarity if p.how == "exact" else p.similarity ** 2 for p in pairs)
    denom = (len(pairs) + conflicts
             + sum(1.0 if t.isdigit() else missing for t in extra))  # fmt: skip
    token_score = total / denom if denom else 0.0
    match = NameMatch(token_score, listed.original, quality, "tokens", pairs, left_q, left_e)
    # Spacing differences (AlQaida / Al Qaida, CJK syllables): compare the joined
    # letters too, unless numbers differ (they must match exactly).
    if len(q) != len(e) and query.digits == listed.digits:
        joined = max(_ratio(query.joined, listed.joined),
                     _ratio(query.sorted_joined, listed.sorted_joined))  # fmt: skip
        if joined * 0.98 > token_score:
            match.score, match.method = joined * 0.98, "joined"
    return match


def _is_org(schema: str) -> bool:
    return schema in ("organization", "vessel", "aircraft")


@dataclass
class Prepared:
    """An entity with its names folded once, ready for many comparisons."""

    entity: Entity
    forms: list[tuple[Name, NameForm]]
    countries: set[str]
    id_keys: dict[str, str]

    @classmethod
    def of(cls, entity: Entity) -> Prepared:
        """Fold the entity's names and collect its countries and identifier keys."""
        org = _is_org(entity.schema)
        forms = [(n, name_form(n.value, org)) for n in entity.names]
        countries = {c for c in (country_code(x) for x in entity.nationalities) if c}
        ids = {i.key(): i.kind for i in entity.identifiers if len(i.key()) >= 5}
        return cls(entity, [f for f in forms if f[1].tokens], countries, ids)


def _dob_relation(query: str, listed: list[str]) -> str | None:
    """``exact``, ``year`` (agree as far as both go), ``near`` (±1 year) or ``mismatch``."""
    if not listed:
        return None
    best = "mismatch"
    for value in listed:
        if value == query:
            return "exact"
        qy, ly = query[:4], value[:4]
        n = min(len(query), len(value))
        if qy == ly and query[:n] == value[:n]:
            best = "year"
        elif best == "mismatch" and qy.isdigit() and ly.isdigit() and abs(int(qy) - int(ly)) == 1:
            best = "near"
    return best


def score(subject: Subject, prepared: Prepared, names: list[int] | None = None) -> Explanation:
    """Score ``subject`` against one prepared entity (see the module docstring).

    ``names``: positions in ``prepared.forms`` worth comparing (the index's
    candidates); default all of them.
    """
    entity = prepared.entity
    org = _is_org(subject.schema) or (subject.schema == "any" and _is_org(entity.schema))
    form = name_form(subject.name, org)  # cached: folded once per query and kind
    best: NameMatch | None = None
    forms = prepared.forms if names is None else [prepared.forms[i] for i in names]
    person = not _is_org(entity.schema) and not _is_org(subject.schema)
    for name, listed in forms:
        match = compare_names(form, listed, name.quality, person)
        if name.quality == "weak":
            match.score += WEIGHTS["weak_alias"]
        if best is None or match.score > best.score:
            best = match
    if best is None:
        best = NameMatch(0.0, entity.caption, "primary", "tokens")
    features: list[dict[str, Any]] = []
    if best.quality == "weak":
        features.append({"feature": "weak_alias", "weight": WEIGHTS["weak_alias"],
                         "detail": "the list calls this alias low quality"})  # fmt: skip
    total = best.score
    extra = _secondary(subject, prepared, features)
    total += extra
    if any(f["feature"] == "identifier_match" for f in features):
        total = max(total, IDENTIFIER_SCORE)
    return Explanation(max(0.0, min(1.0, total)), best, features)


def _secondary(subject: Subject, prepared: Prepared, features: list[dict[str, Any]]) -> float:
    entity = prepared.entity
    total = 0.0

    def add(feature: str, **detail: Any) -> None:
        nonlocal total
        weight = WEIGHTS[feature]
        if feature != "identifier_match":
            total += weight
        features.append({"feature": feature, "weight": weight, **detail})

    if subject.birth_date and entity.birth_dates:
        relation = _dob_relation(subject.birth_date, entity.birth_dates)
        if relation is not None:
            add(f"dob_{relation}", query=subject.birth_date, listed=entity.birth_dates)
    codes = subject.countries
    if codes and prepared.countries:
        if codes & prepared.countries:
            add("country_match", query=sorted(codes), listed=sorted(prepared.countries))
        else:
            add("country_mismatch", query=sorted(codes), listed=sorted(prepared.countries))
    if subject.gender and entity.gender and subject.gender[:1].lower() != entity.gender[:1].lower():
        add("gender_mismatch", query=subject.gender, listed=entity.gender)
    if (subject.schema not in ("any", "unknown") and entity.schema != "unknown"
            and subject.schema != entity.schema):  # fmt: skip
        add("type_mismatch", query=subject.schema, listed=entity.schema)
    if subject.identifiers and prepared.id_keys:
        keys = {i.key(): i for i in subject.identifiers if len(i.key()) >= 5}
        same = keys.keys() & prepared.id_keys.keys()
        if same:
            key = sorted(same)[0]
            add("identifier_match", kind=prepared.id_keys[key], value=keys[key].value)
        else:
            kinds = {_kind_family(i.kind) for i in keys.values()}
            if kinds & {_kind_family(k) for k in prepared.id_keys.values()}:
                add("identifier_mismatch", kinds=sorted(kinds))
    return total


def _kind_family(kind: str) -> str:
    k = kind.lower()
    for family in ("passport", "imo", "national", "tax", "registration", "swift", "mmsi"):
        if family in k:
            return family
    return k
