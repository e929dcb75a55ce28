"""Applying a tenant's personal-data policy to one call.

A call is scanned as a whole: every text field that reaches the model or the
records (see :mod:`intramuros.gate.request_texts` for the list per route) is a
:class:`TextField`, and the fields are joined, in the order the model reads
them, with a line break between two, so a value cut across two messages, two
text parts or two JSON strings is still found (the detectors take one line
break inside an identifier). Then, per category, the tenant's action:

- ``block`` refuses the call: 400 ``personal_data_blocked``, ``param`` naming
  the first field where a blocked value was found;
- ``pseudonymise`` hands the model placeholders (``<EMAIL_1>``) wherever a
  placeholder can stand (message text, tool-call arguments, tool descriptions,
  stop sequences, prompts, embeddings inputs) and gives the client the real
  values back. In a field where a placeholder would change what the field
  means (a name, an id, a JSON schema, a prompt given as token ids) it cannot
  stand, so the call is refused like a ``block``, naming that field;
- ``redact-in-logs`` and ``allow`` let the model see the text.

Whatever is written down (the ledger's record and, if kept, its content) is
redacted for every category not set to ``allow``. The end user's id (``user``,
``metadata.user``) is a field of its own: never sent to the model, it becomes
the ledger's subject in clear only if it holds no personal data of a category
the tenant does not ``allow``; otherwise only a keyed digest of it is kept
(:func:`subject_digest`), and a ``block`` category in it blocks the call.

Everything here is linear in the size of the request (see
:mod:`intramuros.gate.pii`); the serving layer runs it off the event loop for
large requests.
"""

from __future__ import annotations

import hashlib
import io
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from intramuros.errors import InvalidRequest
from intramuros.gate import pii
from intramuros.gate.policy import TenantPolicy

if TYPE_CHECKING:
    from intramuros.ledger.crypto import LedgerKeys


class PersonalDataBlocked(InvalidRequest):
    """The tenant's policy blocks a category of personal data found in the request."""

    code = "personal_data_blocked"


class PersonalDataUnchecked(InvalidRequest):
    """A field the policy must see cannot be read (token ids on a model without a tokenizer)."""

    code = "personal_data_unchecked"


FieldKind = Literal["text", "fixed", "subject", "opaque"]


@dataclass(frozen=True)
class TextField:
    """One field of a request, as the personal-data scan sees it.

    Attributes:
        param: where it is in the request (``messages[1].tool_calls[0].function.arguments``).
        pieces: its text, or the strings of a JSON value (keys, strings, numbers)
            in document order; scanned as if joined with line breaks.
        kind: ``text`` (a placeholder may replace a value in it), ``fixed``
            (the model sees it but it cannot hold a placeholder: names, ids,
            schemas, decoded token ids), ``subject`` (the end user's id: never
            sent to the model, scanned on its own), ``opaque`` (cannot be read).
        record: whether its (redacted) text is kept as ledger content.
    """

    param: str
    pieces: tuple[str, ...]
    kind: FieldKind = "text"
    record: bool = False

    @property
    def size(self) -> int:
        """Characters in the field."""
        return sum(len(p) for p in self.pieces)


# The findings' shares of one piece, five integers each: start and end in the
# piece, the category's index, and the finding's start and end in the joined text
# on the piece where it starts (-1, -1 on the pieces it continues on). Arrays of
# integers: the garbage collector never walks them.
_Spans = array
_CATEGORY_INDEX = {c: i for i, c in enumerate(pii.CATEGORIES)}


@dataclass
class PiiDecision:
    """What was found and what was done, for one call.

    Built by :func:`inspect` (texts without names, as workloads use it) or
    :func:`inspect_fields` (a request's named fields).
    """

    policy: TenantPolicy
    found: dict[str, int] = field(default_factory=dict)
    pseudonymiser: pii.Pseudonymiser | None = None
    fields: list[TextField] = field(default_factory=list)
    # Where the call is refused, if it is: (param, reason).
    blocked_at: str | None = None
    unplaceable: tuple[str, str] | None = None  # (param, category)
    unchecked_at: str | None = None
    # The end user's id as the ledger may keep it (a digest if it holds personal data).
    subject: str | None = None
    # Ledger content, already redacted (set by the serving layer when it keeps content).
    recorded_prompt: list[str] | None = None
    _spans: list[_Spans[int]] = field(default_factory=list, repr=False)
    _owners: list[int] = field(default_factory=list, repr=False)
    _pieces: list[str] = field(default_factory=list, repr=False)
    _joined: str = field(default="", repr=False)

    def summary(self) -> dict[str, dict[str, Any]]:
        """For the ledger: counts and actions per category, never values."""
        return {c: {"count": n, "action": self.policy.action(c)} for c, n in self.found.items()}

    @property
    def refused(self) -> bool:
        """Whether :meth:`enforce` will refuse the call."""
        return bool(self._blocked_categories() or self.unplaceable or self.unchecked_at)

    def _blocked_categories(self) -> list[str]:
        return sorted(c for c in self.found if self.policy.action(c) == "block")

    def enforce(self, param: str) -> None:
        """Raise ``PersonalDataBlocked`` (400) if the call must be refused.

        ``param`` names the field when the decision does not know it (texts
        given to :func:`inspect` without names).
        """
        blocked = self._blocked_categories()
        if blocked:
            raise PersonalDataBlocked(
                "The request contains personal data that this tenant's policy blocks: "
                + ", ".join(blocked) + ".",
                param=self.blocked_at or param,
            )
        if self.unplaceable is not None:
            where, category = self.unplaceable
            raise PersonalDataBlocked(
                f"The request contains personal data ({category}) in a field where this "
                "tenant's policy (pseudonymise) cannot put a placeholder: a name, an id, a "
                "schema or token ids. Remove it from that field.",
                param=where,
            )
        if self.unchecked_at is not None:
            raise PersonalDataUnchecked(
                "This model cannot decode token ids, so they cannot be checked against this "
                "tenant's personal-data policy; send the text instead.",
                param=self.unchecked_at,
            )

    def for_model(self, text: str) -> str:
        """The text the model may see (a text not given to :func:`inspect_fields`)."""
        return self.pseudonymiser.pseudonymise(text) if self.pseudonymiser else text

    def for_client(self, text: str) -> str:
        """Model output with pseudonyms replaced by the real values."""
        return self.pseudonymiser.restore(text) if self.pseudonymiser else text

    def hidden(self) -> list[str]:
        """Categories that are never written down in clear."""
        return [c for c in pii.CATEGORIES if self.policy.action(c) != "allow"]

    def for_record(self, text: str) -> str:
        """Text as it may be kept: redacted for every category not allowed."""
        hidden = self.hidden()
        return pii.redact(text, hidden) if hidden else text

    def forget_spans(self) -> None:
        """Drop what was found where, once the request's texts are rewritten (memory)."""
        self._spans, self._owners, self._pieces, self._joined = [], [], [], ""

    def release(self) -> None:
        """Drop the values and placeholders once the call is over: only the counts stay.

        Called from a worker thread: freeing a few hundred thousand values at
        once holds the interpreter lock, which the event loop must not wait for.
        """
        self.forget_spans()
        self.pseudonymiser = None

    # -- the fields given to inspect_fields ------------------------------------

    def model_pieces(self, index: int) -> tuple[str, ...]:
        """Field ``index``'s pieces as the model may see them (placeholders in)."""
        if self.pseudonymiser is None:
            return self.fields[index].pieces
        ps = self.pseudonymiser
        return self._rewrite(
            index, ps.categories, lambda category, value: ps.placeholder(category, value)
        )

    def record_pieces(self, index: int) -> tuple[str, ...]:
        """Field ``index``'s pieces as they may be kept: redacted for every category not allowed."""
        return self._rewrite(index, frozenset(self.hidden()), lambda c, _: pii.label(c))

    def _rewrite(self, index: int, categories: frozenset[str], replacement: Any) -> tuple[str, ...]:
        f = self.fields[index]
        if not categories or f.kind in ("subject", "opaque") or not self._spans:
            return f.pieces
        wanted = {_CATEGORY_INDEX[c] for c in categories}
        out: list[str] = []
        first = bisect_right(self._owners, index - 1)
        for k in range(first, first + len(f.pieces)):
            text = self._pieces[k]
            spans = self._spans[k]
            if not any(spans[i + 2] in wanted for i in range(0, len(spans), 5)):
                out.append(text)
                continue
            parts = io.StringIO()  # its buffer is not walked by the garbage collector
            pos = 0
            for i in range(0, len(spans), 5):
                start, end, c, f_start, f_end = spans[i : i + 5]
                if c not in wanted:
                    continue
                parts.write(text[pos:start])
                # A value cut across pieces: its placeholder (or label) goes where it starts.
                if f_start >= 0:
                    parts.write(replacement(pii.CATEGORIES[c], self._joined[f_start:f_end]))
                pos = end
            parts.write(text[pos:])
            out.append(parts.getvalue())
        return tuple(out)


def subject_digest(value: str, keys: LedgerKeys | None) -> str:
    """What the ledger keeps of an end-user id that holds personal data.

    ``hmac:<hex>`` under the ledger key's digest key when one is configured
    (it changes with the key version; see ``ledger rotate``), else
    ``sha256:<hex>``, which anyone can recompute from a guessed value.
    """
    data = b"intramuros-subject/1\n" + value.encode("utf-8", "surrogatepass")
    if keys is not None:
        return "hmac:" + keys.digest(data)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def subject_digests(value: str, keys: LedgerKeys | None) -> list[str]:
    """Every form :func:`subject_digest` may have given ``value``: one per key version
    loaded, and the unkeyed one (for erasure by subject, whichever key was current)."""
    data = b"intramuros-subject/1\n" + value.encode("utf-8", "surrogatepass")
    keyed = [] if keys is None else ["hmac:" + keys.digest(data, v) for v in keys.versions]
    return [*keyed, "sha256:" + hashlib.sha256(data).hexdigest()]


def provisional_subject(value: str | None, keys: LedgerKeys | None) -> str | None:
    """The subject to record before the tenant's policy is known (a refused call).

    A value holding anything that looks like personal data is kept as its digest.
    """
    if value is None or not pii.detect(value):
        return value
    return subject_digest(value, keys)


def _needs_to_look(policy: TenantPolicy) -> bool:
    actions = {policy.pii_default, *policy.pii.values()}
    return bool(actions & {"block", "pseudonymise"})


def inspect_fields(
    fields: Sequence[TextField], policy: TenantPolicy, *, keys: LedgerKeys | None = None
) -> PiiDecision:
    """Scan a request's fields and decide; see :meth:`PiiDecision.enforce` for refusing."""
    decision = PiiDecision(policy=policy, fields=list(fields))
    pieces: list[str] = []
    owners: list[int] = []
    for index, f in enumerate(fields):
        if f.kind == "opaque":
            if decision.unchecked_at is None and _needs_to_look(policy):
                decision.unchecked_at = f.param
        elif f.kind != "subject":
            pieces.extend(f.pieces)
            owners.extend([index] * len(f.pieces))
    starts: list[int] = []
    pos = 0
    for p in pieces:
        starts.append(pos)
        pos += len(p) + 1
    joined = "\n".join(pieces)
    spans: list[_Spans[int]] = [array("q") for _ in pieces]
    pseudo_found = False
    for category, f_start, f_end in pii.spans(joined):
        decision.found[category] = decision.found.get(category, 0) + 1
        first = bisect_right(starts, f_start) - 1
        last = bisect_right(starts, f_end - 1) - 1
        action = policy.action(category)
        if action == "block" and decision.blocked_at is None:
            decision.blocked_at = fields[owners[first]].param
        for k in range(first, last + 1):
            start = max(f_start, starts[k]) - starts[k]
            end = min(f_end, starts[k] + len(pieces[k])) - starts[k]
            if end <= start:
                continue
            spans[k].extend((start, end, _CATEGORY_INDEX[category],
                             f_start if k == first else -1, f_end if k == first else -1))
            if (action == "pseudonymise" and decision.unplaceable is None
                    and fields[owners[k]].kind != "text"):
                decision.unplaceable = (fields[owners[k]].param, category)
        pseudo_found = pseudo_found or action == "pseudonymise"
    decision._spans, decision._owners, decision._pieces = spans, owners, pieces
    decision._joined = joined
    for f in fields:
        if f.kind == "subject" and f.pieces:
            _inspect_subject(decision, f, keys)
    pseudo = [c for c in pii.CATEGORIES if policy.action(c) == "pseudonymise"]
    if pseudo_found and not decision.refused:
        decision.pseudonymiser = pii.Pseudonymiser(pseudo)
        decision.pseudonymiser.reserve(joined)
    return decision


def _inspect_subject(decision: PiiDecision, f: TextField, keys: LedgerKeys | None) -> None:
    value = f.pieces[0]
    policy = decision.policy
    findings = pii.detect(value)
    for finding in findings:
        category = finding.category
        decision.found[category] = decision.found.get(category, 0) + 1
        if policy.action(category) == "block" and decision.blocked_at is None:
            decision.blocked_at = f.param
    if any(policy.action(x.category) != "allow" for x in findings):
        decision.subject = subject_digest(value, keys)
    else:
        decision.subject = value


def inspect(texts: Iterable[str], policy: TenantPolicy) -> PiiDecision:
    """Scan texts (joined, as one request's) and decide; see :meth:`PiiDecision.enforce`.

    For callers whose texts have no field names (OCR pages, transcripts): the
    ``param`` given to ``enforce`` names them all. Their text for the model is
    :meth:`PiiDecision.for_model`, for the records :meth:`PiiDecision.for_record`.
    """
    return inspect_fields([TextField("", (text,)) for text in texts], policy)
