"""The hash chain: canonical JSON, record hashes, checkpoints and verification.

Everything here is pure (no database, no keys), so the same code verifies the
live ledger and an exported slice on an auditor's laptop.

A record's hash is::

    body_hash = sha256(canonical_json({"seq", "ts", "kind", "tenant", "key_id",
                                       "subject", "data", "content_digest"}))
    hash      = sha256(prev_hash + body_hash)      # both as 64 lowercase hex chars

with ``prev_hash`` of record 1 being 64 zeros. ``data`` enters as the stored
JSON text, so the hash covers exactly the bytes kept. Hashing the body first
(rather than ``prev_hash`` followed by the body itself) lets a per-tenant
export replace other tenants' records by their ``body_hash`` and still be
re-linked end to end without revealing them.

The hash chain alone proves only that the records link: anyone who can write
the database can append or rewrite records and recompute every hash. What
binds the chain to the ledger key is a MAC over each record's hash and a
signature over checkpoints; both are checked by the callers that hold keys
(:mod:`intramuros.ledger.verifier`, :mod:`intramuros.ledger.signing`), through
the row checks :func:`walk_chain` accepts.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from intramuros.errors import InvalidRequest

GENESIS_HASH = "0" * 64

# The fields a record hash covers, in the order they are documented.
HASHED_FIELDS = ("seq", "ts", "kind", "tenant", "key_id", "subject", "data", "content_digest")

Reason = Literal[
    "edited",  # a record's fields (or its hash) no longer match
    "deleted",  # a record is missing: a gap in seq, or later records renumbered
    "inserted",  # a record that was never appended sits in the chain
    "reordered",  # records are not where they were appended
    "truncated",  # records after a checkpoint are gone
    "checkpoint_mismatch",  # the chain up to a checkpoint was rewritten wholesale
    "content_mismatch",  # stored content does not belong to its record
    "content_deleted",  # stored content is gone and no erasure or purge names it
    "malformed",  # a row or export line cannot be read at all
    "manifest_mismatch",  # an export's records do not match its manifest
    "forged",  # a record's MAC does not verify: written or rewritten without the key
    "unauthenticated",  # a MAC or signature that must be there is missing
    "unknown_key_version",  # a MAC, content or signature under a key version not loaded
    "bad_signature",  # a checkpoint or manifest signature does not verify
]


def canonical_json(obj: Any) -> str:
    """The one JSON spelling of ``obj``: sorted keys, no spaces, UTF-8, no NaN.

    Floats are written the way Python's ``repr`` writes them (shortest
    round-trip form), so a float read back from the JSON or the database
    gives the same text again.
    """
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def body_hash(fields: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a record's hashed fields."""
    body = {name: fields[name] for name in HASHED_FIELDS}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def record_hash(prev_hash: str, body: str) -> str:
    """sha256 (hex) of ``prev_hash`` followed by ``body`` (a :func:`body_hash`)."""
    return hashlib.sha256((prev_hash + body).encode("ascii")).hexdigest()


# --------------------------------------------------------------------------
# Checkpoints and reports
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """The head of the chain at one moment, to be kept outside the database.

    Attributes:
        seq: the last record's seq (0 for an empty ledger).
        hash: the last record's hash (:data:`GENESIS_HASH` for an empty ledger).
        ts: when the checkpoint was taken (unix time).
        key_version: the ledger key version that signed it (``None``: unsigned).
        signature: base64 Ed25519 signature over seq, hash, ts and key_version
            (see :func:`intramuros.ledger.signing.checkpoint_message`).
    """

    seq: int
    hash: str
    ts: float
    key_version: str | None = None
    signature: str | None = None

    @property
    def signed(self) -> bool:
        """Whether the checkpoint carries a signature (checking it needs a public key)."""
        return self.signature is not None

    def to_json(self) -> str:
        """One line of JSON to print, store or hand to a third party."""
        doc: dict[str, Any] = {"seq": self.seq, "hash": self.hash, "ts": self.ts}
        if self.signed:
            doc.update(key_version=self.key_version, signature=self.signature)
        return canonical_json(doc)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """Parse :meth:`to_json` output; :class:`InvalidRequest` when it is not one."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            raise InvalidRequest("The checkpoint is not valid JSON.", param="checkpoint") from None
        if not isinstance(doc, dict):
            raise InvalidRequest("The checkpoint must be a JSON object.", param="checkpoint")
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Checkpoint:
        """A checkpoint from its parsed JSON; :class:`InvalidRequest` when it is not one."""
        seq, hash_, ts = doc.get("seq"), doc.get("hash"), doc.get("ts")
        if (
            not isinstance(seq, int)
            or isinstance(seq, bool)
            or seq < 0
            or not is_hex64(hash_)
            or not isinstance(ts, int | float)
            or isinstance(ts, bool)
            or not math.isfinite(ts)
        ):
            raise InvalidRequest(
                "The checkpoint needs seq (integer >= 0), hash (64 hex) and ts (number).",
                param="checkpoint",
            )
        version, signature = doc.get("key_version"), doc.get("signature")
        if (version is None) != (signature is None) or not (
            version is None or (isinstance(version, str) and isinstance(signature, str))
        ):
            raise InvalidRequest(
                "A signed checkpoint needs both key_version and signature (strings).",
                param="checkpoint",
            )
        assert isinstance(hash_, str)
        return cls(seq=seq, hash=hash_, ts=float(ts), key_version=version, signature=signature)


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of verifying a ledger or an export.

    Attributes:
        ok: every check passed.
        checked: records verified good before the first bad one (all of them when ok).
        first_bad_seq: the seq of the first bad (or first missing) record, if any.
        reason: what is wrong with it (see :data:`Reason`), if anything.
        detail: one sentence for humans.
        head_seq: the last record walked (0 when none).
        head_hash: that record's hash.
        content_checked: content rows decrypted and matched against their digest.
        content_unchecked: content rows that could not be checked because no
            ledger key was loaded at all.
        authenticated: whether the checks covered authenticity, not only
            linkage: a ledger key was loaded and every record up to the head
            is authenticated by a MAC (its own, or for a keyless prefix, that
            of the first MAC'd record after it); for an export, the manifest's
            signature verified under a public key given. ``ok`` without
            ``authenticated`` means only that the records link: anyone able to
            write them could have rewritten them consistently.
        macs_checked: record MACs verified.
        legacy_records: records without a MAC at the start of the chain
            (written before the ledger had a key).
        checkpoint_signed: for a verification against a checkpoint, whether
            that checkpoint's signature was checked and held (``None``: no
            checkpoint given).
        warnings: things that are not failures but limit what was shown.
    """

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: Reason | None = None
    detail: str = ""
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    content_checked: int = 0
    content_unchecked: int = 0
    authenticated: bool = False
    macs_checked: int = 0
    legacy_records: int = 0
    checkpoint_signed: bool | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able values."""
        return asdict(self)


# --------------------------------------------------------------------------
# Walking a chain
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainRow:
    """One record as the verifier sees it.

    ``fields`` are the hashed fields as stored; ``None`` for a redacted export
    line, which carries only its ``body_hash``. ``extra`` is whatever the
    source wants to pass to its content check (the encrypted content).
    """

    seq: int
    prev_hash: str
    hash: str
    body_hash: str
    fields: dict[str, Any] | None = None
    extra: Any = field(default=None, compare=False)

    @classmethod
    def from_fields(
        cls, fields: dict[str, Any], prev_hash: str, hash_: str, extra: Any = None
    ) -> ChainRow:
        """A full row; its body hash is computed from ``fields``."""
        return cls(int(fields["seq"]), prev_hash, hash_, body_hash(fields), dict(fields), extra)

    def consistent(self) -> bool:
        """Whether the stored hash matches the stored fields and prev_hash."""
        return record_hash(self.prev_hash, self.body_hash) == self.hash

    def consistent_at(self, seq: int) -> bool:
        """Whether this row would be consistent had it been appended as ``seq``."""
        if self.fields is None:
            return False
        return record_hash(self.prev_hash, body_hash({**self.fields, "seq": seq})) == self.hash


class RowSource(Protocol):
    """Where the verifier reads rows: the database, or an export file."""

    def rows(self) -> Iterator[ChainRow]:
        """Every row, in the order stored (by seq)."""
        ...

    def at(self, seq: int) -> ChainRow | None:
        """The row stored under ``seq``, if any (used to diagnose a failure)."""
        ...

    def with_prev(self, prev_hash: str) -> list[ChainRow]:
        """The rows whose prev_hash is ``prev_hash`` (used to diagnose a failure)."""
        ...


class MalformedRow(Exception):
    """Raised by a row source for a row it cannot read."""

    def __init__(self, seq: int | None, detail: str) -> None:
        super().__init__(detail)
        self.seq = seq
        self.detail = detail


# A check of one row that links correctly: ``(reason, sentence)`` when it fails.
RowCheck = Callable[[ChainRow], tuple[Reason, str] | None]
# A check once every row has passed: ``(first bad seq, reason, sentence)`` when it fails.
FinalCheck = Callable[[], tuple[int, Reason, str] | None]


def walk_chain(
    source: RowSource,
    *,
    start_seq: int = 1,
    start_prev: str = GENESIS_HASH,
    checkpoint: Checkpoint | None = None,
    detect_truncation: bool = True,
    checks: Sequence[RowCheck] = (),
    final_check: FinalCheck | None = None,
) -> VerifyReport:
    """Verify every row of ``source`` and name the first bad record.

    Each row must carry the next seq, hash consistently with its own fields,
    and link to the previous row's hash. When one does not, the neighbours are
    examined to tell an edit from a deletion, an insertion or a swap. Then
    each of ``checks`` runs on the row (record MACs, stored content), in
    order; ``final_check`` runs once the last row passed (content deleted
    without a tombstone can only be told at the end). With a ``checkpoint``,
    the row at its seq must have its hash, and (with ``detect_truncation``)
    the chain must reach it. Memory stays bounded: rows are streamed.
    """
    expected_seq, expected_prev = start_seq, start_prev
    head_seq, head_hash = start_seq - 1, start_prev

    def fail(reason: Reason, seq: int | None, detail: str) -> VerifyReport:
        checked = max(0, (seq if seq is not None else expected_seq) - start_seq)
        return VerifyReport(
            ok=False,
            checked=checked,
            first_bad_seq=seq,
            reason=reason,
            detail=detail,
            head_seq=head_seq,
            head_hash=head_hash,
        )

    try:
        for row in source.rows():
            k = expected_seq
            if row.seq > k:
                # Only a file can hold k further down; the database reads by seq.
                if source.at(k) is not None:
                    return fail("reordered", k, f"record {k} comes after record {row.seq}.")
                missing = f"record {k}" if row.seq == k + 1 else f"records {k} to {row.seq - 1}"
                return fail("deleted", k, f"{missing} missing: the chain jumps to {row.seq}.")
            if row.seq < k:
                return fail("reordered", row.seq, f"record {row.seq} appears again after {k - 1}.")
            if not row.consistent():
                return fail(*_diagnose_inconsistent(source, row, expected_prev))
            if row.prev_hash != expected_prev:
                return fail(*_diagnose_unlinked(source, row, expected_prev, start_seq))
            if checkpoint is not None and row.seq == checkpoint.seq and row.hash != checkpoint.hash:
                return fail(
                    "checkpoint_mismatch",
                    row.seq,
                    (
                        f"record {row.seq} hashes to {row.hash[:16]}..., the checkpoint says "
                        f"{checkpoint.hash[:16]}...: the chain up to it was rewritten."
                    ),
                )
            for check in checks:
                problem = check(row)
                if problem is not None:
                    reason, detail = problem
                    if reason in ("forged", "unauthenticated"):
                        reason, detail = _diagnose_unkeyed(source, row, expected_prev, problem)
                    return fail(reason, row.seq, f"record {row.seq}: {detail}")
            head_seq, head_hash = row.seq, row.hash
            expected_seq, expected_prev = row.seq + 1, row.hash
    except MalformedRow as exc:
        return fail("malformed", exc.seq, exc.detail)

    if final_check is not None:
        late = final_check()
        if late is not None:
            return fail(late[1], late[0], late[2])

    if checkpoint is not None and detect_truncation and checkpoint.seq > head_seq:
        return fail(
            "truncated",
            head_seq + 1,
            (
                f"the chain ends at record {head_seq}, but a checkpoint taken at "
                f"{checkpoint.ts:.0f} saw record {checkpoint.seq}."
            ),
        )
    return VerifyReport(
        ok=True, checked=head_seq - start_seq + 1, head_seq=head_seq, head_hash=head_hash
    )


def _diagnose_unkeyed(
    source: RowSource, row: ChainRow, expected_prev: str, problem: tuple[Reason, str]
) -> tuple[Reason, str]:
    """Row ``k`` links but was not written with the key: inserted, rewritten, or forged?"""
    nxt = source.at(row.seq + 1)
    if nxt is None:
        return problem
    # The genuine record k was pushed up to k+1: it still links to k-1.
    if nxt.prev_hash == expected_prev and nxt.consistent_at(row.seq):
        return (
            "inserted",
            f"it was not appended by the ledger ({problem[1]}); the genuine one follows.",
        )
    # Record k+1 still links to the original record k: k was rewritten in place.
    if nxt.consistent() and nxt.prev_hash != row.hash:
        return (
            "edited",
            f"it was rewritten with a recomputed hash ({problem[1]}); record {nxt.seq} still "
            "links to the original.",
        )
    return problem


def _diagnose_inconsistent(
    source: RowSource, row: ChainRow, expected_prev: str
) -> tuple[Reason, int, str]:
    """Row ``k`` does not hash to its stored hash: why?"""
    k = row.seq
    # The record appended as k is elsewhere: it still links to k-1 and hashes
    # correctly once given back seq k.
    for other in source.with_prev(expected_prev):
        if other.seq != k and other.consistent_at(k):
            return "reordered", k, f"record {k} was moved to seq {other.seq}."
    # This row is the genuine record k-1, pushed up by one: a record was
    # inserted before it (and it passed, because it was forged with a valid hash).
    if row.consistent_at(k - 1):
        return (
            "inserted",
            k - 1,
            (
                f"record {k - 1} was not appended by the ledger; the genuine record {k - 1} "
                f"now sits at seq {k}."
            ),
        )
    # This row is the genuine record k+1, moved down: record k was deleted and
    # the later records renumbered to hide the gap.
    if row.consistent_at(k + 1):
        return "deleted", k, f"record {k} was deleted and the records after it renumbered."
    return (
        "edited",
        k,
        f"record {k} no longer matches its hash: it was edited after it was written.",
    )


def _diagnose_unlinked(
    source: RowSource, row: ChainRow, expected_prev: str, start_seq: int
) -> tuple[Reason, int, str]:
    """Row ``k`` hashes fine but does not link to row ``k-1``: why?"""
    k = row.seq
    # Row k is a forgery pushed in before the genuine record k (now at k+1,
    # still linking to k-1).
    nxt = source.at(k + 1)
    if nxt is not None and nxt.prev_hash == expected_prev and nxt.consistent_at(k):
        return "inserted", k, f"record {k} was not appended by the ledger; the genuine one follows."
    if k == start_seq:
        return "edited", k, f"record {k} does not start from the expected previous hash."
    # Row k is genuine, so row k-1 (which passed) was rewritten with a
    # recomputed hash.
    return (
        "edited",
        k - 1,
        (
            f"record {k - 1} was rewritten with a recomputed hash; record {k} still links to "
            "the original."
        ),
    )


_HEX64 = re.compile(r"[0-9a-f]{64}")


def is_hex64(value: Any) -> bool:
    """Whether ``value`` is a lowercase hex sha256."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None
