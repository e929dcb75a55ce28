"""Make the labelled KYC evaluation set (benchmarks/kyc_evalset.jsonl) from the real sample lists.

True matches are real list entries transformed the way customer data differs
from list data: transliteration into Cyrillic, Greek and Arabic script, typos,
reordered tokens, dropped middle names, nicknames, legal-suffix changes, and
identifiers. Hard non-matches are other people sharing a surname or a first
name, namesakes with a different date of birth and nationality, sibling
companies and numbered vessels. Each line: ``{"category", "label", "query",
"target": {"list", "source_id"}}``. Fixed seed: the file is reproducible.

    python benchmarks/kyc_make_evalset.py        # rewrites benchmarks/kyc_evalset.jsonl
    python benchmarks/kyc_make_evalset.py --seed 2 --out /tmp/heldout.jsonl
"""

# ruff: noqa: RUF001 - the transliteration tables are Cyrillic, Greek and Arabic on purpose

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from intramuros.kyc.importers import parse_list  # noqa: E402
from intramuros.kyc.model import Entity  # noqa: E402
from intramuros.kyc.normalize import LEGAL_FORMS, fold  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sanctions"
OUT = Path(__file__).resolve().parent / "kyc_evalset.jsonl"
SEED = 20261202
PER_CATEGORY = 50

LISTS = [(DATA / "ofac", "ofac", "ofac"), (DATA / "un" / "UN_consolidated.xml", "un", "un"),
         (DATA / "opensanctions" / "us_congress_senzing.json", "opensanctions-senzing",
          "us_congress")]  # fmt: skip

_CYR = [("shch", "щ"), ("sh", "ш"), ("ch", "ч"), ("zh", "ж"), ("kh", "х"), ("ts", "ц"),
        ("yu", "ю"), ("ya", "я"), ("yo", "ё"), ("a", "а"), ("b", "б"), ("v", "в"), ("g", "г"),
        ("d", "д"), ("e", "е"), ("z", "з"), ("i", "и"), ("y", "й"), ("k", "к"), ("l", "л"),
        ("m", "м"), ("n", "н"), ("o", "о"), ("p", "п"), ("r", "р"), ("s", "с"), ("t", "т"),
        ("u", "у"), ("f", "ф"), ("h", "х"), ("c", "к"), ("w", "в"), ("x", "кс"), ("q", "к"),
        ("j", "дж")]  # fmt: skip
_GRE = [("th", "θ"), ("ch", "τσ"), ("sh", "σ"), ("ph", "φ"), ("kh", "χ"), ("ou", "ου"),
        ("a", "α"), ("b", "β"), ("g", "γ"), ("d", "δ"), ("e", "ε"), ("z", "ζ"), ("i", "ι"),
        ("k", "κ"), ("l", "λ"), ("m", "μ"), ("n", "ν"), ("o", "ο"), ("p", "π"), ("r", "ρ"),
        ("s", "σ"), ("t", "τ"), ("u", "ου"), ("f", "φ"), ("h", "χ"), ("x", "ξ"), ("y", "υ"),
        ("v", "β"), ("w", "β"), ("c", "κ"), ("j", "τζ"), ("q", "κ")]  # fmt: skip
_ARA = [("sh", "ش"), ("kh", "خ"), ("th", "ث"), ("dh", "ذ"), ("gh", "غ"), ("b", "ب"),
        ("t", "ت"), ("j", "ج"), ("h", "ه"), ("d", "د"), ("r", "ر"), ("z", "ز"), ("s", "س"),
        ("f", "ف"), ("q", "ق"), ("k", "ك"), ("l", "ل"), ("m", "م"), ("n", "ن"), ("w", "و"),
        ("y", "ي"), ("i", "ي"), ("u", "و"), ("o", "و"), ("p", "ب"), ("v", "ف"), ("g", "ج"),
        ("c", "ك"), ("x", "كس"), ("a", "ا")]  # fmt: skip
NICKNAMES = {"muhammad": "Mohd", "mohammad": "Mohd", "mohammed": "Mohd", "muhammed": "Mohd",
             "abdul": "Abd", "abdallah": "Abdullah", "abdullah": "Abdallah", "alexander": "Alex",
             "aleksandr": "Sasha", "william": "Bill", "robert": "Bob", "richard": "Rick",
             "james": "Jim", "joseph": "Joe", "michael": "Mike", "thomas": "Tom",
             "vladimir": "Volodya", "dmitry": "Dima", "dmitriy": "Dima", "nikolai": "Kolya",
             "sergey": "Seryozha", "ivan": "Vanya", "elizabeth": "Liz", "katherine": "Kate",
             "christopher": "Chris", "daniel": "Dan", "david": "Dave", "edward": "Ed",
             "jose": "Pepe", "francisco": "Paco", "ibrahim": "Ebrahim", "yusuf": "Youssef",
             "usama": "Osama", "husayn": "Hussein", "hussein": "Husain", "ali": "Aly",
             "ahmad": "Ahmed", "ahmed": "Ahmad", "mahmoud": "Mahmud", "hassan": "Hasan",
             "kim": "Gim", "jong": "Jeong", "anthony": "Tony", "charles": "Charlie",
             "steven": "Steve", "stephen": "Steve", "gregory": "Greg", "patrick": "Pat",
             "jennifer": "Jen", "deborah": "Debbie", "suzanne": "Sue", "margaret": "Maggie"}
SUFFIX_SWAP = {"ltd": "Limited", "limited": "Ltd.", "llc": "L.L.C.", "inc": "Incorporated",
               "company": "Co.", "co": "Company", "corporation": "Corp.", "corp": "Corporation",
               "sa": "S.A.", "gmbh": "GmbH", "jsc": "Joint Stock Company"}  # fmt: skip


def _script(name: str, table: list[tuple[str, str]], drop_vowels: bool = False) -> str:
    out = []
    for word in fold(name).split():
        if drop_vowels:  # abjad spelling: short vowels unwritten except a leading one
            word = word[0] + re.sub(r"[ae]", "", word[1:])
        for latin, letter in table:
            word = word.replace(latin, letter)
        out.append(word)
    return " ".join(out)


def _typo(rng: random.Random, name: str) -> str:
    words = name.split()
    candidates = [i for i, w in enumerate(words) if len(w) >= 5]
    if not candidates:
        return name
    i = rng.choice(candidates)
    w = list(words[i])
    pos = rng.randrange(1, len(w) - 1)
    op = rng.choice(["swap", "drop", "sub", "double"])
    if op == "swap":
        other = pos + 1 if pos + 1 < len(w) else pos - 1
        w[pos], w[other] = w[other], w[pos]
    elif op == "drop":
        del w[pos]
    elif op == "sub":
        w[pos] = rng.choice("aeioulnrst")
    else:
        w.insert(pos, w[pos])
    words[i] = "".join(w)
    return " ".join(words)


def _plain(name: str) -> str:
    """OFAC's ``LAST, First Middle`` as a customer would write it: ``First Middle Last``."""
    if "," in name:
        last, _, first = name.partition(",")
        return f"{first.strip()} {last.strip()}"
    return name


def _pair(category: str, label: int, entity: Entity, query: dict[str, Any]) -> dict[str, Any]:
    return {"category": category, "label": label, "query": query,
            "target": {"list": entity.list_name, "source_id": entity.source_id}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED, help="another seed: a held-out set")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    entities: list[Entity] = []
    for path, fmt, name in LISTS:
        entities += parse_list(path, fmt, name).entities
    persons = [e for e in entities if e.schema == "person" and len(fold(e.caption).split()) >= 2]
    orgs = [e for e in entities if e.schema == "organization" and len(fold(e.caption).split()) >= 2]
    vessels = [e for e in entities if e.schema == "vessel"]
    rng.shuffle(persons)
    rng.shuffle(orgs)
    pairs: list[dict[str, Any]] = []

    def take(pool: list[Entity], category: str, label: int, make: Any) -> None:
        made = 0
        for e in pool:
            if made >= PER_CATEGORY:
                break
            query = make(e)
            if query is None or fold(query["name"]) == "":
                continue
            pairs.append(_pair(category, label, e, query))
            made += 1

    def person_q(e: Entity, name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "type": "person", **extra}

    take(persons, "exact", 1, lambda e: person_q(e, _plain(e.caption)))
    take(persons[100:], "cyrillic", 1, lambda e: person_q(e, _script(_plain(e.caption), _CYR)))
    take(persons[200:], "greek", 1, lambda e: person_q(e, _script(_plain(e.caption), _GRE)))
    take(persons[300:], "arabic", 1,
         lambda e: person_q(e, _script(_plain(e.caption), _ARA, drop_vowels=True)))
    take(persons[400:], "typo", 1, lambda e: person_q(e, _typo(rng, _plain(e.caption))))

    def reorder(e: Entity) -> dict[str, Any] | None:
        words = _plain(e.caption).split()
        shuffled = words[:]
        while len(words) > 1 and shuffled == words:
            rng.shuffle(shuffled)
        return person_q(e, " ".join(shuffled))

    take(persons[500:], "reorder", 1, reorder)

    def drop_middle(e: Entity) -> dict[str, Any] | None:
        words = _plain(e.caption).split()
        if len(words) < 3:
            return None
        del words[rng.randrange(1, len(words) - 1)]
        return person_q(e, " ".join(words))

    take(persons[600:], "dropped_middle", 1, drop_middle)

    def nickname(e: Entity) -> dict[str, Any] | None:
        words = _plain(e.caption).split()
        for i, w in enumerate(words):
            if fold(w) in NICKNAMES:
                words[i] = NICKNAMES[fold(w)]
                return person_q(e, " ".join(words))
        return None

    take(persons, "nickname", 1, nickname)

    def with_dob(e: Entity) -> dict[str, Any] | None:
        full = [d for d in e.birth_dates if len(d) == 10]
        if not full:
            return None
        q = person_q(e, _typo(rng, _plain(e.caption)), birth_date=full[0])
        if e.nationalities:
            q["nationality"] = e.nationalities[0]
        return q

    take(persons[700:], "typo_with_dob", 1, with_dob)

    def suffix(e: Entity) -> dict[str, Any] | None:
        words = e.caption.replace(",", " ").split()
        for i, w in enumerate(words):
            key = fold(w).replace(" ", "")
            if key in SUFFIX_SWAP:
                words[i] = SUFFIX_SWAP[key]
                return {"name": " ".join(words), "type": "organization"}
        if fold(words[-1]) not in LEGAL_FORMS:
            return {"name": e.caption + rng.choice([" Ltd", " LLC", " S.A.", " GmbH"]),
                    "type": "organization"}
        return None

    take(orgs, "legal_suffix", 1, suffix)
    take(orgs[200:], "org_typo", 1,
         lambda e: {"name": _typo(rng, e.caption), "type": "organization"})

    def imo(e: Entity) -> dict[str, Any] | None:
        ids = [i for i in e.identifiers if i.kind == "imo"]
        if not ids:
            return None
        return {"name": _typo(rng, e.caption + " Star"), "type": "vessel",
                "identifiers": [{"type": "imo", "value": ids[0].value}]}

    take(vessels, "identifier", 1, imo)

    # -- hard non-matches ---------------------------------------------------
    first_names = sorted({_plain(e.caption).split()[0] for e in persons if "," in e.caption})
    surnames = sorted({e.caption.split(",")[0].strip() for e in persons if "," in e.caption})

    def same_surname(e: Entity) -> dict[str, Any] | None:
        if "," not in e.caption:
            return None
        last, _, first = e.caption.partition(",")
        other = rng.choice(first_names)
        if fold(other) in fold(first) or fold(first) in fold(other):
            return None
        return person_q(e, f"{other} {last.strip()}")

    take(persons[800:], "neg_same_surname", 0, same_surname)

    def same_first(e: Entity) -> dict[str, Any] | None:
        if "," not in e.caption:
            return None
        last, _, first = e.caption.partition(",")
        other = rng.choice(surnames)
        if fold(other) in fold(last) or fold(last) in fold(other):
            return None
        return person_q(e, f"{first.strip()} {other}")

    take(persons[900:], "neg_same_first_name", 0, same_first)

    def namesake(e: Entity) -> dict[str, Any] | None:
        full = [d for d in e.birth_dates if len(d) == 10]
        if not full or not e.nationalities or len(e.birth_dates) > 1:
            return None
        year = int(full[0][:4]) + rng.choice([-1, 1]) * rng.randint(8, 25)
        other = "FR" if e.nationalities[0] != "FR" else "DE"
        return person_q(e, _plain(e.caption), birth_date=f"{year}{full[0][4:]}",
                        nationality=other)

    take(persons[1000:], "neg_namesake_other_dob_country", 0, namesake)

    org_words = sorted({w for e in orgs for w in fold(e.caption).split()
                        if len(w) >= 6 and w not in LEGAL_FORMS})  # fmt: skip

    def sibling(e: Entity) -> dict[str, Any] | None:
        words = e.caption.replace(",", " ").split()
        core = [i for i, w in enumerate(words) if len(fold(w)) >= 4 and fold(w) not in LEGAL_FORMS]
        if len(core) < 2:
            return None
        i = max(core, key=lambda k: len(words[k]))
        words[i] = rng.choice(org_words).upper()
        return {"name": " ".join(words), "type": "organization"}

    take(orgs[400:], "neg_sibling_company", 0, sibling)

    def numbered(e: Entity) -> dict[str, Any] | None:
        m = re.search(r"\d+", e.caption)
        if m:
            n = int(m.group()) + rng.randint(1, 5)
            return {"name": e.caption[:m.start()] + str(n) + e.caption[m.end():], "type": "vessel"}
        return {"name": e.caption + f" {rng.randint(2, 9)}", "type": "vessel"}

    numbered_pool = sorted(vessels, key=lambda e: not re.search(r"\d", e.caption))
    take(numbered_pool, "neg_numbered_vessel", 0, numbered)
    with args.out.open("w", encoding="utf-8") as fh:
        for pair in pairs:
            fh.write(json.dumps(pair, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair["category"]] = counts.get(pair["category"], 0) + 1
    print(f"wrote {len(pairs)} pairs to {args.out}: {counts}")


if __name__ == "__main__":
    main()
