"""Word and character error rates, for benchmarks and accuracy tests.

Both texts are normalised the same way first: Unicode NFKC, lower case,
punctuation removed, whitespace collapsed. Accents are kept: "a" for "à" is
an error. The rate is the edit distance over the reference length.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_PUNCT = re.compile(r"[^\w\s']|_", re.UNICODE)


def normalise(text: str) -> str:
    """Lower case, no punctuation (apostrophes split words), single spaces."""
    text = unicodedata.normalize("NFKC", text).lower().replace("'", " ").replace("\u2019", " ")
    return " ".join(_PUNCT.sub(" ", text).split())


def _distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (r != h)))  # fmt: skip
        previous = current
    return previous[-1]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` (0 is perfect; may exceed 1)."""
    ref, hyp = normalise(reference).split(), normalise(hypothesis).split()
    if not ref:
        return 0.0 if not hyp else 1.0
    return _distance(ref, hyp) / len(ref)


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate (spaces count as characters)."""
    ref, hyp = list(normalise(reference)), list(normalise(hypothesis))
    if not ref:
        return 0.0 if not hyp else 1.0
    return _distance(ref, hyp) / len(ref)
