"""Ledger exports an auditor can verify without the database or the keys.

An export is a directory with two files:

``records.jsonl``
    One record per line, as stored (``data`` is the stored JSON text; content
    is never exported), for every seq from the first to the last record that
    matches the filters. Records in that range that do not match (another
    tenant's, say) are *redacted*: only ``seq``, ``body_hash``, ``prev_hash``
    and ``hash`` are written, which is enough to re-link the chain across them
    without revealing them.

``manifest.json``
    The filters, the counts, the first seq and its ``prev_hash``, the last
    seq and its ``hash``, and the sha256 of ``records.jsonl``.

:func:`verify_export` re-checks every hash and link of the slice, and the
manifest. The slice's last hash can then be compared with a checkpoint the
operator kept elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from intramuros.errors import InvalidRequest
from intramuros.ledger.chain import (
    GENESIS_HASH,
    HASHED_FIELDS,
    ChainRow,
    Checkpoint,
    MalformedRow,
    VerifyReport,
    canonical_json,
    is_hex64,
    walk_chain,
)
from intramuros.ledger.tables import ledger_records
from intramuros.store.db import Database

EXPORT_FORMAT = "intramuros-ledger-export/1"
RECORDS_FILE = "records.jsonl"
MANIFEST_FILE = "manifest.json"
HASH_SCHEME = (
    "hash = sha256_hex(prev_hash + body_hash); body_hash = sha256_hex(utf8(canonical JSON of "
    "{seq, ts, kind, tenant, key_id, subject, data, content_digest})); canonical JSON = sorted "
    "keys, separators ',' and ':', non-ASCII kept as UTF-8, floats in shortest round-trip form; "
    "the first record's prev_hash is 64 zeros; redacted lines give body_hash directly"
)
_FULL_KEYS = frozenset((*HASHED_FIELDS, "prev_hash", "hash"))
_REDACTED_KEYS = frozenset(("seq", "redacted", "body_hash", "prev_hash", "hash"))
_PAGE = 1000


def export_ledger(
    db: Database,
    out_dir: Path,
    *,
    tenant: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Path:
    """Write an export of the records matching the filters into ``out_dir``; return it.

    ``since`` is inclusive and ``until`` exclusive (unix times). Refuses a
    directory that already holds an export.
    """
    records_path, manifest_path = out_dir / RECORDS_FILE, out_dir / MANIFEST_FILE
    if records_path.exists() or manifest_path.exists():
        raise InvalidRequest(f"{out_dir} already holds a ledger export.", param="out_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    r = ledger_records.c
    conditions: list[sa.ColumnElement[bool]] = []
    if tenant is not None:
        conditions.append(r.tenant == tenant)
    if since is not None:
        conditions.append(r.ts >= since)
    if until is not None:
        conditions.append(r.ts < until)

    def matches(row: Any) -> bool:
        return (
            (tenant is None or row.tenant == tenant)
            and (since is None or row.ts >= since)
            and (until is None or row.ts < until)
        )

    with db.begin() as conn:
        lo, hi = conn.execute(
            sa.select(sa.func.min(r.seq), sa.func.max(r.seq)).where(*conditions)
        ).one()
    digest = hashlib.sha256()
    count = matched = 0
    first_prev: str | None = None
    last_hash: str | None = None
    tmp = records_path.with_name(RECORDS_FILE + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        last = (int(lo) - 1) if lo is not None else 0
        while lo is not None:
            query = (
                sa.select(ledger_records)
                .where(r.seq > last, r.seq <= int(hi))
                .order_by(r.seq)
                .limit(_PAGE)
            )
            with db.begin() as conn:
                rows = conn.execute(query).all()
            if not rows:
                break
            for row in rows:
                chain_row = ChainRow.from_fields(
                    {name: getattr(row, name) for name in HASHED_FIELDS}, row.prev_hash, row.hash
                )
                if matches(row):
                    line = {
                        **(chain_row.fields or {}),
                        "prev_hash": row.prev_hash,
                        "hash": row.hash,
                    }
                    matched += 1
                else:
                    line = {
                        "seq": chain_row.seq,
                        "redacted": True,
                        "body_hash": chain_row.body_hash,
                        "prev_hash": row.prev_hash,
                        "hash": row.hash,
                    }
                text = canonical_json(line) + "\n"
                fh.write(text)
                digest.update(text.encode("utf-8"))
                count += 1
                if first_prev is None:
                    first_prev = row.prev_hash
                last_hash = row.hash
            last = int(rows[-1].seq)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, records_path)
    manifest = {
        "format": EXPORT_FORMAT,
        "hash_scheme": HASH_SCHEME,
        "filters": {"tenant": tenant, "since": since, "until": until},
        "count": count,
        "matched": matched,
        "redacted": count - matched,
        "first_seq": int(lo) if lo is not None else None,
        "last_seq": int(hi) if hi is not None else None,
        "first_prev_hash": first_prev,
        "last_hash": last_hash,
        "records_sha256": digest.hexdigest(),
        "generated_at": time.time(),
    }
    manifest_path.write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return out_dir


def verify_export(path: Path | str, *, checkpoint: Checkpoint | None = None) -> VerifyReport:
    """Re-verify an export directory on its own: every hash, every link, the manifest.

    Needs neither the database nor the keys. With a ``checkpoint`` whose seq
    lies in the slice, the record there must carry the checkpoint's hash.
    Never raises for a bad export: the report says what is wrong.
    """
    directory = Path(path)
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
        records_bytes_sha = _sha256_file(directory / RECORDS_FILE)
    except (OSError, ValueError) as exc:
        return VerifyReport(
            ok=False, checked=0, reason="malformed", detail=f"cannot read the export: {exc}"
        )
    problem = _manifest_problem(manifest)
    if problem:
        return VerifyReport(ok=False, checked=0, reason="malformed", detail=problem)
    first_seq = manifest["first_seq"] or 1
    report = walk_chain(
        _FileSource(directory / RECORDS_FILE),
        start_seq=first_seq,
        start_prev=manifest["first_prev_hash"] or GENESIS_HASH,
        checkpoint=checkpoint,
        detect_truncation=False,
    )
    if not report.ok:
        return report
    expected = (manifest["count"], manifest["last_seq"] or 0, manifest["last_hash"] or GENESIS_HASH)
    found = (report.checked, report.head_seq, report.head_hash)
    if expected != found:
        return VerifyReport(
            ok=False,
            checked=report.checked,
            reason="manifest_mismatch",
            detail=(
                f"the manifest promises {expected[0]} records ending at "
                f"{expected[1]}, the file holds {found[0]} ending at "
                f"{found[1]}."
            ),
            head_seq=report.head_seq,
            head_hash=report.head_hash,
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
    return report


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
    for name in ("first_prev_hash", "last_hash"):
        if manifest.get(name) is not None and not is_hex64(manifest.get(name)):
            return f"{MANIFEST_FILE} has an invalid {name}."
    if not is_hex64(manifest.get("records_sha256")):
        return f"{MANIFEST_FILE} lacks the sha256 of {RECORDS_FILE}."
    return None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
