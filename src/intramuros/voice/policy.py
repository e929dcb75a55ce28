"""The tenant's personal-data policy on speech: the request's ``prompt`` and the transcript.

The prompt is text the client sends: it is inspected like a chat message
before any audio is decoded (``block``: 400 naming ``prompt``). The
transcript is what the model heard: under ``block`` it is refused too
(400 naming ``file``; in a stream, an error event ends it). A streamed
transcript is screened before it leaves: :class:`TranscriptGuard` holds each
segment back until enough text follows it to see any value that starts in it
whole, so a blocked value is refused before any part of it is sent, even when
Whisper splits it across segments. Whatever the ledger keeps (prompt and
transcript, when the tenant stores content) is redacted for every category
not set to ``allow``.

``pseudonymise`` acts as ``redact-in-logs`` for speech: the model hears the
values in the audio whatever its prompt says, so placeholders in the prompt
would hide nothing and only spoil its spelling; the client gets the
transcript as heard, the records are redacted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from intramuros.engines.base import TranscriptionEvent, TranscriptSegment
from intramuros.gate import pii, privacy
from intramuros.gate.policy import TenantPolicy
from intramuros.gate.privacy import PersonalDataBlocked, PiiDecision

# Characters of transcript that must follow a segment before it is released: longer
# than any identifier we detect, spaced out as speech is transcribed.
HOLD_CHARS = 256


def blocks_any(policy: TenantPolicy) -> bool:
    """Whether the policy blocks some category (only then is a transcript screened)."""
    return any(policy.action(c) == "block" for c in pii.CATEGORIES)


def blocked_in(decision: PiiDecision) -> list[str]:
    """The categories found that the policy blocks."""
    return sorted(c for c in decision.found if decision.policy.action(c) == "block")


def inspect_call(prompt: str | None, transcript: str | None, policy: TenantPolicy) -> PiiDecision:
    """The decision on a whole call: its prompt and its transcript, scanned together."""
    return privacy.inspect([t for t in (prompt, transcript) if t], policy)


def transcript_blocked(categories: list[str]) -> PersonalDataBlocked:
    """The refusal of a transcript holding blocked personal data."""
    names = ", ".join(categories)
    return PersonalDataBlocked(
        f"The transcript contains personal data that this tenant's policy blocks: {names}.",
        param="file",
    )


class TranscriptGuard:
    """Refuses a transcript holding personal data the tenant blocks, before any of it leaves.

    Under a policy that blocks nothing, segments pass straight through.
    Otherwise each new segment is scanned together with the segments still
    held and the last ``hold`` characters released; a segment is released
    once at least ``hold`` characters follow it. Each scan covers at most
    ``2 * hold`` characters plus one segment, so screening stays linear in
    the transcript. On a refusal, :attr:`decision` holds the decision on the
    prompt and the whole transcript so far (for the ledger), and
    :class:`PersonalDataBlocked` is raised with ``param="file"``.
    """

    def __init__(self, policy: TenantPolicy, prompt: str | None = None,
                 hold: int = HOLD_CHARS) -> None:  # fmt: skip
        self.policy = policy
        self.prompt = prompt
        self.hold = hold
        self.active = blocks_any(policy)
        self.decision: PiiDecision | None = None
        self._held: deque[TranscriptSegment] = deque()
        self._held_chars = 0
        self._tail = ""
        self._seen: list[str] = []

    def screen(self, events: Iterable[TranscriptionEvent]) -> Iterator[TranscriptionEvent]:
        """``events`` with segments released only once screened (see the class)."""
        for event in events:
            if not self.active or not isinstance(event, TranscriptSegment):
                yield event
                continue
            self._held.append(event)
            self._held_chars += len(event.text)
            self._seen.append(event.text)
            self._check()
            while self._held and self._held_chars - len(self._held[0].text) >= self.hold:
                yield self._release()
        while self._held:
            yield self._release()

    def _release(self) -> TranscriptSegment:
        seg = self._held.popleft()
        self._held_chars -= len(seg.text)
        self._tail = (self._tail + seg.text)[-self.hold :]
        return seg

    def _check(self) -> None:
        window = self._tail + "".join(s.text for s in self._held)
        found = blocked_in(privacy.inspect([window], self.policy))
        if found:
            self.decision = inspect_call(self.prompt, "".join(self._seen), self.policy)
            for category in found:  # the record names what was refused, whatever the joins
                self.decision.found.setdefault(category, 1)
            raise transcript_blocked(found)
