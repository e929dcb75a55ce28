"""Verifying a ledger export with nothing but the export, a checkpoint and public keys.

This is what a third party (an auditor, a regulator) runs: it needs neither
the database nor the ledger key. See :mod:`intramuros.ledger.export` for the
format and :mod:`intramuros.ledger.signing` for the public keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from intramuros.errors import InvalidRequest
from intramuros.ledger.chain import (
    GENESIS_HASH,
    HASHED_FIELDS,
    ChainRow,
    Checkpoint,
    MalformedRow,
    Reason,
    VerifyReport,
    is_hex64,
    walk_chain,
)
from intramuros.ledger.export import EXPORT_FORMAT, MANIFEST_FILE, RECORDS_FILE
from intramuros.ledger.signing import PublicKeys, checkpoint_problem, manifest_message

_FULL_KEYS = frozenset((*HASHED_FIELDS, "prev_hash", "hash"))
_REDACTED_KEYS = frozenset(("seq", "redacted", "body_hash", "prev_hash", "hash"))


def verify_export(
    path: Path | str,
    *,
    checkpoint: Checkpoint | None = None,
    public_keys: PublicKeys | None = None,
) -> VerifyReport:
    """Re-verify an export directory on its own: every hash, every link, the manifest.

    Needs neither the database nor the ledger key. With ``public_keys`` (from
    ``intramuros ledger public-key``), the manifest must carry a valid
    signature and signed head, and the report is ``authenticated``: the
    records are the ones the key's holder exported. Without them, only
    linkage is checked. With a ``checkpoint`` whose seq lies in the slice, the
    record there must carry the checkpoint's hash; a signed checkpoint is
    checked against ``public_keys`` and refused when its signature fails.
    Never raises for a bad export: the report says what is wrong.
    """
    directory = Path(path)
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
        records_bytes_sha = _sha256_file(directory / RECORDS_FILE)
    except (OSError, ValueError) as exc:
        return _refuse("malformed", f"cannot read the export: {exc}")
    problem = _manifest_problem(manifest)
    if problem:
        return _refuse("malformed", problem)
    warnings: list[str] = []
    refusal = _check_signatures(manifest, public_keys, warnings)
    if refusal is not None:
        return refusal
    signed: bool | None = None
    if checkpoint is not None:
        signed = False
        if checkpoint.signed and public_keys is not None:
            cp_problem = checkpoint_problem(checkpoint, public_keys)
            if cp_problem is not None:
                return _refuse(*cp_problem, checkpoint_signed=False)
            signed = True
        elif checkpoint.signed:
            warnings.append("the checkpoint's signature was not checked: no public keys given.")
        else:
            warnings.append("the checkpoint is unsigned: it proves nothing about who took it.")
        first, last = manifest["first_seq"], manifest["last_seq"]
        if first is None or not first <= checkpoint.seq <= last:
            warnings.append(
                f"the checkpoint (record {checkpoint.seq}) lies outside this export "
                f"(records {first} to {last}): it was not compared."
            )
    first_seq = manifest["first_seq"] or 1
    report = walk_chain(
        _FileSource(directory / RECORDS_FILE),
        start_seq=first_seq,
        start_prev=manifest["first_prev_hash"] or GENESIS_HASH,
        checkpoint=checkpoint,
        detect_truncation=False,
    )
    report = replace(report, checkpoint_signed=signed, warnings=tuple(warnings))
    if not report.ok:
        return report
    expected = (manifest["count"], manifest["last_seq"] or 0, manifest["last_hash"] or GENESIS_HASH)
    found = (report.checked, report.head_seq, report.head_hash)
    if expected != found:
        return replace(
            report,
            ok=False,
            reason="manifest_mismatch",
            detail=(
                f"the manifest promises {expected[0]} records ending at "
                f"{expected[1]}, the file holds {found[0]} ending at "
                f"{found[1]}."
            ),
        )
    if records_bytes_sha != manifest["records_sha256"]:
        # The chain inside holds, yet the bytes differ from what was exported
        # (reformatted, or lines changed together with the manifest's hashes).
        return replace(
            report,
            ok=False,
            reason="manifest_mismatch",
            detail=f"{RECORDS_FILE} does not hash to the manifest's sha256.",
        )
    return replace(report, authenticated=public_keys is not None)


def load_checkpoint(text: str) -> Checkpoint:
    """A checkpoint from ``ledger checkpoint`` output, or from an export's ``manifest.json``.

    An export's signed head is a checkpoint too: a third party can keep it and
    check later exports (or the live ledger) against it.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise InvalidRequest("The checkpoint is not valid JSON.", param="checkpoint") from None
    if isinstance(doc, dict) and doc.get("format") == EXPORT_FORMAT:
        doc = doc.get("signed_head")
        if not isinstance(doc, dict):
            raise InvalidRequest("This export's manifest has no signed head.", param="checkpoint")
    if not isinstance(doc, dict):
        raise InvalidRequest("The checkpoint must be a JSON object.", param="checkpoint")
    return Checkpoint.from_dict(doc)


def _refuse(reason: Reason, detail: str, *, checkpoint_signed: bool | None = None) -> VerifyReport:
    return VerifyReport(
        ok=False, checked=0, reason=reason, detail=detail, checkpoint_signed=checkpoint_signed
    )


def _check_signatures(
    manifest: dict[str, Any], public_keys: PublicKeys | None, warnings: list[str]
) -> VerifyReport | None:
    """The manifest's signature and signed head, when public keys are given."""
    signature = manifest.get("signature")
    if public_keys is None:
        if signature is not None:
            warnings.append("the export is signed, but no public keys were given: not checked.")
        return None
    if signature is None:
        return _refuse(
            "unauthenticated",
            "the export is not signed (it was written without the ledger key, or its signature "
            "was removed): its records cannot be authenticated.",
        )
    problem = public_keys.verify(
        signature.get("key_version"), manifest_message(manifest), signature.get("value")
    )
    if problem is not None:
        reason: Reason = (
            "unknown_key_version"
            if signature.get("key_version") not in public_keys.versions
            else "bad_signature"
        )
        return _refuse(reason, f"the manifest {problem}")
    raw_head = manifest.get("signed_head")
    try:
        head = Checkpoint.from_dict(raw_head) if isinstance(raw_head, dict) else None
    except InvalidRequest:
        head = None
    if head is None:
        return _refuse("unauthenticated", "the signed manifest carries no valid signed head.")
    # Covered by the manifest's signature already; checked again so that the
    # signed head holds on its own when kept as a checkpoint.
    head_problem = checkpoint_problem(head, public_keys) if head.signed else None
    if not head.signed:
        return _refuse("unauthenticated", "the manifest's signed head is unsigned.")
    if head_problem is not None:
        return _refuse(head_problem[0], f"the manifest's signed head: {head_problem[1]}")
    if (head.seq, head.hash) != (manifest["last_seq"], manifest["last_hash"]):
        return _refuse(
            "manifest_mismatch",
            f"the signed head (record {head.seq}) is not the export's last record "
            f"({manifest['last_seq']}).",
        )
    return None


class _FileSource:
    """An export's ``records.jsonl`` as a :class:`~intramuros.ledger.chain.RowSource`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self) -> Iterator[ChainRow]:
        with self.path.open("r", encoding="utf-8", newline="\n") as fh:
            for number, line in enumerate(fh, start=1):
                yield _parse_line(line, number)

    def at(self, seq: int) -> ChainRow | None:
        # Linear scans: these run only to diagnose a failure already found.
        return next((row for row in self._quiet_rows() if row.seq == seq), None)

    def with_prev(self, prev_hash: str) -> list[ChainRow]:
        return [row for row in self._quiet_rows() if row.prev_hash == prev_hash]

    def _quiet_rows(self) -> Iterator[ChainRow]:
        with self.path.open("r", encoding="utf-8", newline="\n") as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    yield _parse_line(line, number)
                except MalformedRow:
                    continue


def _parse_line(line: str, number: int) -> ChainRow:
    try:
        doc = json.loads(line)
    except ValueError:
        raise MalformedRow(None, f"line {number} of {RECORDS_FILE} is not JSON.") from None
    if not isinstance(doc, dict):
        raise MalformedRow(None, f"line {number} of {RECORDS_FILE} is not a JSON object.")
    seq = doc.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise MalformedRow(None, f"line {number} of {RECORDS_FILE} has no integer seq.")
    if not is_hex64(doc.get("prev_hash")) or not is_hex64(doc.get("hash")):
        raise MalformedRow(seq, f"record {seq} (line {number}) lacks a valid prev_hash or hash.")
    if doc.get("redacted") is True:
        if set(doc) != _REDACTED_KEYS or not is_hex64(doc["body_hash"]):
            raise MalformedRow(seq, f"record {seq} (line {number}) is not a valid redacted line.")
        return ChainRow(seq, doc["prev_hash"], doc["hash"], doc["body_hash"])
    if set(doc) != _FULL_KEYS:
        raise MalformedRow(seq, f"record {seq} (line {number}) does not have the record fields.")
    try:
        return ChainRow.from_fields(
            {name: doc[name] for name in HASHED_FIELDS}, doc["prev_hash"], doc["hash"]
        )
    except (TypeError, ValueError) as exc:
        raise MalformedRow(seq, f"record {seq} (line {number}) cannot be hashed: {exc}") from None


def _manifest_problem(manifest: Any) -> str | None:
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        return f"{MANIFEST_FILE} is not an {EXPORT_FORMAT} manifest."
    if not isinstance(manifest.get("count"), int):
        return f"{MANIFEST_FILE} lacks an integer count."
    for name in ("first_seq", "last_seq"):
        if manifest.get(name) is not None and not isinstance(manifest.get(name), int):
            return f"{MANIFEST_FILE} has a non-integer {name}."
    if (manifest.get("first_seq") is None) != (manifest.get("last_seq") is None):
        return f"{MANIFEST_FILE} has only one of first_seq and last_seq."
    for name in ("first_prev_hash", "last_hash"):
        if manifest.get(name) is not None and not is_hex64(manifest.get(name)):
            return f"{MANIFEST_FILE} has an invalid {name}."
    if not is_hex64(manifest.get("records_sha256")):
        return f"{MANIFEST_FILE} lacks the sha256 of {RECORDS_FILE}."
    signature = manifest.get("signature")
    if signature is not None and not isinstance(signature, dict):
        return f"{MANIFEST_FILE} has a malformed signature."
    return None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
