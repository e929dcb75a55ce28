"""Stop sequences over streamed text: shared by the engines that stream text themselves."""

from __future__ import annotations

from collections.abc import Sequence


def find_stop(text: str, stops: Sequence[str], emitted: int) -> int | None:
    """Index of the earliest stop sequence in ``text`` not yet passed, or None.

    Only the tail that could hold a new match is searched: what was emitted,
    less the longest stop sequence, was already searched.
    """
    if not stops:
        return None
    start = max(0, emitted - max(len(s) for s in stops))
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might be the start of a stop sequence (not sent yet)."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if stop.startswith(text[-n:]):
                best = n
                break
    return best
