"""The screening index: blocking keys so that a query never compares against every entry.

Each listed name contributes keys per token (the token itself, its phonetic
key, its consonant skeleton, its first four letters) and one for its joined
letters. A query collects the names sharing keys with it, weighted by how rare
each key is (inverse document frequency), and only the best few candidate
entities are scored in full by :mod:`intramuros.kyc.match`. An index is
immutable once built: reloading builds a new one and swaps the reference.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

from intramuros.kyc.match import Explanation, Prepared, Subject, score
from intramuros.kyc.model import Entity
from intramuros.kyc.normalize import NameForm, abjad_key, name_form, phonetic

# Names scored in full per query; more costs speed, fewer may miss a hit whose
# keys are all common (a name made only of frequent tokens).
CANDIDATES = 30
# Candidates whose key weight is below this share of the best candidate's are not scored.
RELATIVE_FLOOR = 0.3
# Keys shared by more names than this are skipped when the query has rarer ones.
COMMON_KEY = 3000


def name_keys(form: NameForm, abjad: bool = True) -> set[str]:
    """The blocking keys of one folded name.

    Consonant keys (``s:``) are short and collide a lot: listed names always
    get them, queries only when written in an abjad (Arabic, Hebrew), where
    vowels are missing and nothing else would match.
    """
    keys: set[str] = set()
    for token in form.tokens:
        if len(token) < 2 and not token.isdigit():
            continue
        keys.add("t:" + token)
        if token.isdigit():
            continue
        keys.add("p:" + phonetic(token))
        if abjad:
            keys.add("s:" + abjad_key(token))
        if len(token) >= 5:
            keys.add("f:" + token[:4])
    if len(form.tokens) > 1:
        keys.add("j:" + form.sorted_joined)
    return keys


@dataclass(frozen=True)
class Hit:
    """One entity found for a query, with its score's explanation."""

    entity: Entity
    explanation: Explanation

    @property
    def score(self) -> float:
        """The final score in [0, 1]."""
        return self.explanation.score


@dataclass
class ScreeningIndex:
    """Prepared entities of one or more lists, and the blocking postings over their names.

    Postings point at *names* (``name_entity[i]``, ``name_pos[i]``): an entity
    with thirty aliases is compared on the few that share keys with the query.
    """

    entries: list[Prepared] = field(default_factory=list)
    postings: dict[str, list[int]] = field(default_factory=dict)
    name_entity: list[int] = field(default_factory=list)
    name_pos: list[int] = field(default_factory=list)
    # The versions this index was built from: {list name: (version id, entity count)}.
    versions: dict[str, tuple[int, int]] = field(default_factory=dict)
    build_seconds: float = 0.0

    @classmethod
    def build(cls, entities: list[Entity],
              versions: dict[str, tuple[int, int]] | None = None) -> ScreeningIndex:  # fmt: skip
        """Prepare every entity and index its names."""
        started = time.perf_counter()
        entries = [Prepared.of(e) for e in entities]
        postings: dict[str, list[int]] = defaultdict(list)
        name_entity: list[int] = []
        name_pos: list[int] = []
        for idx, prepared in enumerate(entries):
            first = len(name_entity)
            for pos, (_name, form) in enumerate(prepared.forms):
                ref = len(name_entity)
                name_entity.append(idx)
                name_pos.append(pos)
                for key in name_keys(form):
                    postings[key].append(ref)
            if prepared.forms:
                for key in prepared.id_keys:
                    postings["i:" + key].append(first)
        index = cls(entries, dict(postings), name_entity, name_pos, dict(versions or {}))
        index.build_seconds = time.perf_counter() - started
        return index

    def __len__(self) -> int:
        return len(self.entries)

    def candidates(self, subject: Subject, form: NameForm,
                   limit: int = CANDIDATES) -> dict[int, list[int]]:  # fmt: skip
        """{entry: name positions} worth scoring for a query, most promising first."""
        n = len(self.name_entity) or 1
        keys = name_keys(form, abjad=form.script == "abjad") | {
            "i:" + i.key() for i in subject.identifiers if len(i.key()) >= 5}
        lists = [(key, self.postings[key]) for key in keys if key in self.postings]
        if not lists:
            return {}
        rare = [kv for kv in lists if len(kv[1]) <= COMMON_KEY]
        if rare:
            lists = rare
        tally: dict[int, float] = defaultdict(float)
        for key, post in lists:
            # identifiers first: an identical number must always be scored
            weight = 100.0 if key.startswith("i:") else math.log(1 + n / len(post))
            for ref in post:
                tally[ref] += weight
        ranked = heapq.nlargest(limit, tally.items(), key=lambda kv: kv[1])
        # names sharing far less evidence than the best one cannot outscore it
        floor = ranked[0][1] * RELATIVE_FLOOR if ranked else 0.0
        out: dict[int, list[int]] = {}
        for ref, w in ranked:
            if w < floor:
                break
            out.setdefault(self.name_entity[ref], []).append(self.name_pos[ref])
        return out

    def screen(self, subject: Subject, *, min_score: float = 0.5, limit: int = 10,
               lists: set[str] | None = None) -> list[Hit]:  # fmt: skip
        """Entities scoring at least ``min_score``, best first (at most ``limit``)."""
        org = subject.schema in ("organization", "vessel", "aircraft")
        form = name_form(subject.name, org)
        hits: list[Hit] = []
        for idx, names in self.candidates(subject, form).items():
            prepared = self.entries[idx]
            if lists is not None and prepared.entity.list_name not in lists:
                continue
            explanation = score(subject, prepared, names)
            if explanation.score >= min_score:
                hits.append(Hit(prepared.entity, explanation))
        hits.sort(key=lambda h: (-h.score, h.entity.list_name, h.entity.source_id))
        return hits[:limit]
