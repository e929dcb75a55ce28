"""The keyed checks of the live ledger: record MACs, stored content, tombstones.

:func:`intramuros.ledger.chain.walk_chain` proves that records link. This
module adds what only the holder of the ledger key can check, record by record
as the walk streams them:

- **MACs.** Every record written with a key carries ``HMAC(k_mac[v], hash)``
  under its key version ``v``. A record whose MAC does not verify was written
  or rewritten without the key (``forged``); a MAC under a version that is not
  loaded cannot be vouched for (``unknown_key_version``). Records without a
  MAC are accepted only as the chain's prefix (written before the ledger had a
  key): each MAC covers its record's hash, which covers the previous hash, so
  the first MAC'd record authenticates every record before it. A record
  without a MAC after a MAC'd one fails (``unauthenticated``), with or without
  the key: that is how a tail appended by a database writer shows.
- **Content.** A stored content row must decrypt under its key version
  (``unknown_key_version`` when that version is not loaded) and match its
  record's digest (``content_mismatch``). A record whose digest is in the chain
  but whose content row is gone must be named by a later erasure, purge or
  tenant-erasure tombstone (``content_deleted``); content a tombstone erased
  must not be back (``content_mismatch``).

Memory stays bounded by the seqs whose content is missing and not yet
accounted for by a tombstone.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from intramuros.ledger.chain import ChainRow, Reason, VerifyReport, is_hex64
from intramuros.ledger.crypto import LedgerKeyError, LedgerKeys, content_aad
from intramuros.ledger.rows import StoredExtra
from intramuros.ledger.tables import TOMBSTONE_KINDS, ledger_content
from intramuros.store.db import Database

Problem = tuple[Reason, str]


def tombstoned_seqs(data_json: str) -> list[int]:
    """The seqs a tombstone record's data says it erased (``[]`` if it names none)."""
    try:
        data = json.loads(data_json)
    except ValueError:
        return []
    seqs = data.get("seqs") if isinstance(data, dict) else None
    if not isinstance(seqs, list):
        return []
    return [s for s in seqs if isinstance(s, int) and not isinstance(s, bool)]


class ChainVerifier:
    """The keyed row checks of one verification walk, and what they counted.

    Args:
        db: the database (to look up content a tombstone says it erased).
        keys: the ledger keys, or ``None``: then only the structure is checked
            (no record without a MAC after a MAC'd one) and nothing is
            authenticated.
    """

    def __init__(self, db: Database, keys: LedgerKeys | None) -> None:
        self.db = db
        self.keys = keys
        self.macs_checked = 0
        self.legacy_records = 0
        self.content_checked = 0
        self.content_unchecked = 0
        self.first_mac_seq: int | None = None
        self.head_has_mac = False
        # Records whose content row is missing, awaiting the tombstone that erased them.
        self.pending: set[int] = set()

    # -- row checks, in the order walk_chain runs them -------------------------

    def check_mac(self, row: ChainRow) -> Problem | None:
        """The record's MAC (or its lawful absence)."""
        extra = _extra(row)
        version, mac = extra.mac_version, extra.mac
        if version is None and mac is None:
            if self.first_mac_seq is not None:
                return (
                    "unauthenticated",
                    (
                        f"it carries no MAC, yet the chain is keyed since record "
                        f"{self.first_mac_seq}: it was written without the ledger key."
                    ),
                )
            self.legacy_records += 1
            self.head_has_mac = False
            return None
        if not isinstance(version, str) or not is_hex64(mac):
            return "forged", "its MAC is malformed."
        assert isinstance(mac, str)
        if self.first_mac_seq is None:
            self.first_mac_seq = row.seq
        self.head_has_mac = True
        if self.keys is None:
            return None
        if not self.keys.has(version):
            return (
                "unknown_key_version",
                (
                    f"its MAC is under ledger key version {version!r}, which is not loaded "
                    f"(loaded: {', '.join(self.keys.versions)}); keep every version in the "
                    "key file when rotating."
                ),
            )
        if not self.keys.record_mac_matches(version, row.hash, mac):
            return (
                "forged",
                (
                    f"its MAC does not verify under key version {version!r}: the record was "
                    "written or rewritten without the ledger key (or the key loaded as "
                    f"{version!r} is not the one it was written with)."
                ),
            )
        self.macs_checked += 1
        return None

    def check_content(self, row: ChainRow) -> Problem | None:
        """The record's stored content, or the tombstone accounting for its absence."""
        assert row.fields is not None
        digest = row.fields["content_digest"]
        stored = _extra(row).content
        if stored is None:
            if digest is not None:
                self.pending.add(row.seq)
        else:
            problem = self._check_stored(row, digest, stored)
            if problem is not None:
                return problem
        if row.fields["kind"] in TOMBSTONE_KINDS:
            return self._check_tombstone(row)
        return None

    def final_check(self) -> tuple[int, Reason, str] | None:
        """Content still missing once the whole chain was walked."""
        if not self.pending:
            return None
        seq = min(self.pending)
        more = len(self.pending) - 1
        return (
            seq,
            "content_deleted",
            (
                f"record {seq} had stored content (its digest is in the chain), but the content "
                "row is gone and no erasure, purge or tenant erasure record names it: it was "
                "deleted outside the ledger" + (f" (and {more} more like it)." if more else ".")
            ),
        )

    # -- the outcome -----------------------------------------------------------

    def finish(self, report: VerifyReport) -> VerifyReport:
        """``report`` with the counts, and whether what passed is authenticated."""
        warnings = list(report.warnings)
        authenticated = False
        if self.keys is None:
            warnings.append(
                "no ledger key is loaded: only linkage was checked, and anyone able to write "
                "the database could have written records that link."
            )
        elif report.ok:
            authenticated = report.head_seq == 0 or self.head_has_mac
            if not authenticated:
                warnings.append(
                    f"records 1 to {report.head_seq} carry no MAC (written before the ledger "
                    "had a key): appending any record with the key (or taking a checkpoint "
                    "with `intramuros ledger checkpoint`) authenticates them."
                )
        return replace(
            report,
            authenticated=authenticated,
            macs_checked=self.macs_checked,
            legacy_records=self.legacy_records,
            content_checked=self.content_checked,
            content_unchecked=self.content_unchecked,
            warnings=tuple(warnings),
        )

    # -- internals -------------------------------------------------------------

    def _check_stored(
        self, row: ChainRow, digest: Any, stored: tuple[str, bytes, bytes]
    ) -> Problem | None:
        assert row.fields is not None
        if digest is None:
            return "content_mismatch", "content is stored for a record written without content."
        version, nonce, ciphertext = stored
        if self.keys is None:
            self.content_unchecked += 1
            return None
        if not self.keys.has(version):
            return (
                "unknown_key_version",
                (
                    f"its stored content is under ledger key version {version!r}, which is not "
                    f"loaded (loaded: {', '.join(self.keys.versions)})."
                ),
            )
        try:
            plaintext = self.keys.decrypt(
                version, nonce, ciphertext, content_aad(row.seq, row.fields["tenant"])
            )
        except LedgerKeyError:
            return (
                "content_mismatch",
                (
                    f"its stored content does not authenticate under key version {version!r}: "
                    "it was altered or copied from another record (or a different key is "
                    "loaded under that version)."
                ),
            )
        if not hmac.compare_digest(self.keys.digest(plaintext, version), str(digest)):
            return "content_mismatch", "its stored content does not match the record's digest."
        self.content_checked += 1
        return None

    def _check_tombstone(self, row: ChainRow) -> Problem | None:
        assert row.fields is not None
        named = [s for s in tombstoned_seqs(row.fields["data"]) if s < row.seq]
        elsewhere = [s for s in named if s not in self.pending]
        self.pending.difference_update(named)
        if not elsewhere:
            return None
        # Named, yet its content was there when the walk passed it: either it
        # was erased since (fine), or it was put back after the erasure.
        query = sa.select(ledger_content.c.seq).where(ledger_content.c.seq.in_(elsewhere))
        with self.db.begin() as conn:
            back = sorted(int(s) for s in conn.execute(query).scalars())
        if back:
            return (
                "content_mismatch",
                (
                    f"it erased the content of record {back[0]}, but that content is stored "
                    "again (restored from a copy after the erasure)."
                ),
            )
        return None


def _extra(row: ChainRow) -> StoredExtra:
    extra = row.extra
    assert isinstance(extra, StoredExtra)
    return extra
