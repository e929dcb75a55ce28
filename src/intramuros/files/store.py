"""The Files API's store: tenant-scoped files, encrypted at rest in the data dir.

Each file's bytes are one AES-256-GCM ciphertext at
``<data-dir>/files/<tenant>/<id[5:7]>/<id>.bin``; its metadata (name, purpose,
size, sha256 of the plaintext, key version) is a row of the ``files`` table.
The associated data binds the ciphertext to its file id and tenant, so a blob
copied under another id or tenant fails authentication instead of decrypting;
the plaintext's sha256 is checked again on every read.

Keys reuse the ledger's machinery (:class:`intramuros.ledger.LedgerKeys`,
versioned, rotatable). New files are encrypted with, in this order: the key
file of ``files_key_file``; the ledger key (``ledger_key_file`` or
``INTRAMUROS_LEDGER_KEY``); else ``<data-dir>/files.key``, created with mode
0600 on first use, so the Files API works out of the box. The version stored
with each file says which key set (``files:`` or ``ledger:``) it was written
with, so configuring a ledger key later leaves older files readable.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from intramuros.errors import ConfigError
from intramuros.files.errors import FileNotFound, FileStoreError, FileTooLarge
from intramuros.files.settings import FilesSettings
from intramuros.files.tables import files
from intramuros.fsutil import write_atomic
from intramuros.ledger.chain import canonical_json
from intramuros.ledger.crypto import LedgerKeyError, LedgerKeys, generate_key_file
from intramuros.platform.interface import UnitOfWork
from intramuros.settings import Settings, section

FILE_ID_RE = re.compile(r"file-[0-9a-f]{24}")
_MAGIC = b"IMFILE1\n"
_NONCE = 12
_AAD_PREFIX = b"intramuros-file/1\n"
# Mistral's clients want a sample_type on every file.
_SAMPLE_TYPES = {"batch": "batch_request", "batch_output": "batch_result",
                 "fine-tune": "instruct"}  # fmt: skip


@dataclass(frozen=True)
class FileRecord:
    """One stored file's metadata (never its bytes)."""

    id: str
    tenant: str
    filename: str
    purpose: str
    bytes: int
    sha256: str
    mime_type: str
    created_at: float
    key_id: str | None = None
    expires_at: float | None = None

    def to_wire(self) -> dict[str, Any]:
        """OpenAI's FileObject (plus Mistral's ``source``/``mimetype`` and our ``sha256``)."""
        return {
            "id": self.id, "object": "file", "bytes": self.bytes,
            "created_at": int(self.created_at), "filename": self.filename,
            "purpose": self.purpose, "status": "processed", "status_details": None,
            "expires_at": None if self.expires_at is None else int(self.expires_at),
            "sha256": self.sha256, "mimetype": self.mime_type,
            "source": "upload", "num_lines": None, "deleted": False,
            "sample_type": _SAMPLE_TYPES.get(self.purpose, "document"),
        }  # fmt: skip


class KeyRing:
    """The key sets files may be encrypted with, and the one new content uses."""

    def __init__(self, sets: dict[str, LedgerKeys], current: str) -> None:
        self.sets = sets
        self.current = current

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """See the module docstring for the order keys are chosen in."""
        sets: dict[str, LedgerKeys] = {}
        ledger = LedgerKeys.load(settings.ledger_key_file)
        if ledger is not None:
            sets["ledger"] = ledger
        key_file = section(settings, FilesSettings).files_key_file
        own = key_file or settings.data_dir / "files.key"
        if key_file is not None or own.exists():
            sets["files"] = LedgerKeys.from_file(own)
        if "files" not in sets and ledger is None:
            sets["files"] = _create_key_file(own)
        current = "files" if key_file is not None or "ledger" not in sets \
            else "ledger"  # fmt: skip
        return cls(sets, current)

    def seal(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes, bytes]:
        """``(tagged version, nonce, ciphertext)`` under the current key."""
        version, nonce, ciphertext = self.sets[self.current].encrypt(plaintext, aad)
        return f"{self.current}:{version}", nonce, ciphertext

    def open(self, tagged: str, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Decrypt what :meth:`seal` produced; ``FileStoreError`` if it does not."""
        source, _, version = tagged.partition(":")
        keys = self.sets.get(source)
        if keys is None:
            raise FileStoreError(
                f"Stored content was encrypted with the {source} key, which is not configured."
            )
        try:
            return keys.decrypt(version, nonce, ciphertext, aad)
        except LedgerKeyError as exc:
            raise FileStoreError(exc.message) from None


def _create_key_file(path: Path) -> LedgerKeys:
    try:
        return generate_key_file(path)
    except ConfigError:
        if path.exists():  # another process created it first
            return LedgerKeys.from_file(path)
        raise


def file_aad(file_id: str, tenant: str) -> bytes:
    """The associated data of a file's ciphertext."""
    return _AAD_PREFIX + canonical_json({"id": file_id, "tenant": tenant}).encode("utf-8")


Order = Literal["asc", "desc"]


class FileStore:
    """Tenant-scoped files: put, get, list, read, delete."""

    def __init__(self, db: UnitOfWork, root: Path, keys: KeyRing, max_bytes: int) -> None:
        self.db = db
        self.root = root
        self.keys = keys
        self.max_bytes = max_bytes

    @classmethod
    def from_settings(cls, settings: Settings, db: UnitOfWork) -> FileStore:
        """The store of an installation: under ``<data-dir>/files``."""
        return cls(db, settings.data_dir / "files", KeyRing.from_settings(settings),
                   section(settings, FilesSettings).files_max_bytes)  # fmt: skip

    def _path(self, tenant: str, file_id: str) -> Path:
        # Only ids we minted (and tenants the gate validated) ever become paths.
        if not FILE_ID_RE.fullmatch(file_id):
            raise FileNotFound(file_id)
        return self.root / tenant / file_id[5:7] / f"{file_id}.bin"

    def put(
        self,
        tenant: str,
        data: bytes,
        *,
        filename: str,
        purpose: str,
        mime_type: str,
        key_id: str | None = None,
        expires_after: float | None = None,
    ) -> FileRecord:
        """Store ``data`` for ``tenant``; the file is on disk before its row exists.

        ``expires_after`` (seconds): the file is gone for clients from then on,
        and :meth:`purge` deletes it.
        """
        if len(data) > self.max_bytes:
            raise FileTooLarge(
                f"The file is {len(data)} bytes; the limit is {self.max_bytes} bytes.",
                param="file",
            )
        file_id = "file-" + secrets.token_hex(12)
        now = time.time()
        record = FileRecord(
            id=file_id, tenant=tenant, filename=filename, purpose=purpose, bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(), mime_type=mime_type,
            created_at=now, key_id=key_id,
            expires_at=None if expires_after is None else now + expires_after,
        )  # fmt: skip
        version, nonce, ciphertext = self.keys.seal(data, file_aad(file_id, tenant))
        path = self._path(tenant, file_id)
        write_atomic(path, _MAGIC + nonce + ciphertext)
        try:
            with self.db.begin() as conn:
                conn.execute(files.insert().values(
                    id=file_id, tenant=tenant, key_id=key_id, filename=filename,
                    purpose=purpose, bytes=record.bytes, sha256=record.sha256,
                    mime_type=mime_type, created_at=record.created_at, key_version=version,
                    expires_at=record.expires_at,
                ))  # fmt: skip
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return record

    def get(self, tenant: str, file_id: str, *, param: str = "file_id") -> FileRecord:
        """The metadata of one of ``tenant``'s files (``FileNotFound`` otherwise)."""
        if not FILE_ID_RE.fullmatch(file_id):
            raise FileNotFound(file_id, param=param)
        with self.db.begin() as conn:
            row = conn.execute(
                sa.select(files).where(files.c.id == file_id, files.c.tenant == tenant, _live())
            ).mappings().first()  # fmt: skip
        if row is None:
            raise FileNotFound(file_id, param=param)
        return _record(row)

    def read(
        self, tenant: str, file_id: str, *, param: str = "file_id"
    ) -> tuple[FileRecord, bytes]:
        """A file's metadata and its decrypted bytes, checked against the recorded sha256."""
        record = self.get(tenant, file_id, param=param)
        with self.db.begin() as conn:
            version = conn.execute(
                sa.select(files.c.key_version).where(files.c.id == file_id)
            ).scalar_one()  # fmt: skip
        try:
            blob = self._path(tenant, file_id).read_bytes()
        except OSError:
            raise FileStoreError(f"The content of file {file_id} is missing from the store.") \
                from None  # fmt: skip
        if not blob.startswith(_MAGIC):
            raise FileStoreError(f"The stored content of file {file_id} is not ours.")
        body = blob[len(_MAGIC):]
        data = self.keys.open(version, body[:_NONCE], body[_NONCE:], file_aad(file_id, tenant))
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise FileStoreError(f"The content of file {file_id} does not match its sha256.")
        return record, data

    def list_files(
        self,
        tenant: str,
        *,
        purpose: str | None = None,
        limit: int = 10000,
        after: str | None = None,
        order: Order = "desc",
        offset: int = 0,
    ) -> tuple[list[FileRecord], bool]:
        """``tenant``'s files, newest first by default, and whether more follow."""
        query = sa.select(files).where(files.c.tenant == tenant, _live())
        if purpose is not None:
            query = query.where(files.c.purpose == purpose)
        if after is not None:
            cursor = self.get(tenant, after, param="after")
            key = sa.tuple_(files.c.created_at, files.c.id)
            mark = sa.tuple_(sa.literal(cursor.created_at), sa.literal(cursor.id))
            query = query.where(key < mark if order == "desc" else key > mark)
        if order == "desc":
            query = query.order_by(files.c.created_at.desc(), files.c.id.desc())
        else:
            query = query.order_by(files.c.created_at.asc(), files.c.id.asc())
        with self.db.begin() as conn:
            rows = list(conn.execute(query.offset(offset).limit(limit + 1)).mappings())
        return [_record(r) for r in rows[:limit]], len(rows) > limit

    def count(self, tenant: str, purpose: str | None = None) -> int:
        """How many files ``tenant`` has (of ``purpose``)."""
        query = sa.select(sa.func.count()).select_from(files).where(files.c.tenant == tenant,
                                                                    _live())  # fmt: skip
        if purpose is not None:
            query = query.where(files.c.purpose == purpose)
        with self.db.begin() as conn:
            return int(conn.execute(query).scalar_one())

    def delete(self, tenant: str, file_id: str) -> FileRecord:
        """Remove a file: its row first (it is gone for clients), then its ciphertext."""
        record = self.get(tenant, file_id)
        with self.db.begin() as conn:
            gone = conn.execute(
                files.delete().where(files.c.id == file_id, files.c.tenant == tenant)
            ).rowcount  # fmt: skip
        if not gone:
            raise FileNotFound(file_id)
        with contextlib.suppress(FileNotFoundError):
            self._path(tenant, file_id).unlink()
        return record

    def purge(
        self, *, tenant: str | None = None, created_before: float | None = None,
        now: float | None = None,
    ) -> dict[str, list[str]]:  # fmt: skip
        """Delete expired files and, with ``created_before``, ``tenant``'s older ones.

        Rows go first (clients stop seeing the files), then the ciphertexts.
        Returns the ids removed, by tenant. ``created_before`` needs ``tenant``:
        retention is a per-tenant policy.
        """
        if created_before is not None and tenant is None:
            raise ValueError("created_before applies to one tenant")
        moment = time.time() if now is None else now
        due = sa.and_(files.c.expires_at.is_not(None), files.c.expires_at <= moment)
        if created_before is not None:
            due = sa.or_(due, files.c.created_at < created_before)
        if tenant is not None:
            due = sa.and_(files.c.tenant == tenant, due)
        removed: dict[str, list[str]] = {}
        with self.db.begin() as conn:
            rows = list(conn.execute(sa.select(files.c.id, files.c.tenant).where(due)))
            ids = [r.id for r in rows]
            for start in range(0, len(ids), 500):
                conn.execute(files.delete().where(files.c.id.in_(ids[start:start + 500])))
        for row in rows:
            removed.setdefault(row.tenant, []).append(row.id)
            with contextlib.suppress(FileNotFoundError):
                self._path(row.tenant, row.id).unlink()
        return removed


def _live() -> sa.ColumnElement[bool]:
    """Files not expired at this moment (an expired file is gone before it is purged)."""
    return sa.or_(files.c.expires_at.is_(None), files.c.expires_at > time.time())


def _record(row: Any) -> FileRecord:
    return FileRecord(
        id=row["id"], tenant=row["tenant"], filename=row["filename"], purpose=row["purpose"],
        bytes=int(row["bytes"]), sha256=row["sha256"], mime_type=row["mime_type"],
        created_at=float(row["created_at"]), key_id=row["key_id"],
        expires_at=None if row["expires_at"] is None else float(row["expires_at"]),
    )  # fmt: skip
