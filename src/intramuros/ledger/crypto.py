"""Ledger keys: content encryption and digests, record MACs, checkpoint signatures.

Keys never touch the database. They come from a key file (several versions,
one of them current) or from ``INTRAMUROS_LEDGER_KEY`` (one key, version
``env``). The key file is JSON::

    {
      "format": "intramuros-ledger-keys/1",
      "current": "v2",
      "keys": {
        "v1": {"key": "<base64 of 32 random bytes>", "created_at": 1767225600.0},
        "v2": {"key": "<base64 of 32 random bytes>", "created_at": 1769904000.0}
      }
    }

Rotation adds a version and makes it current; older versions stay in the file
so content written under them still decrypts, records MAC'd under them still
verify and checkpoints signed under them still check. Each version's 32 bytes
are a master key from which four sub-keys are derived with HKDF-SHA256, each
with its own ``info`` string, so the same bytes never serve two algorithms:

- AES-256-GCM for stored content;
- HMAC-SHA256 for content digests;
- HMAC-SHA256 for record MACs (``mac = HMAC(k, ascii(record hash))``);
- an Ed25519 seed for signing checkpoints and export manifests. Its public key
  (:meth:`LedgerKeys.public_keys`) goes to third parties; deriving it means
  there is no second secret to keep.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from intramuros.errors import ConfigError, ServerError
from intramuros.fsutil import write_atomic
from intramuros.ledger.chain import canonical_json
from intramuros.ledger.signing import PublicKeys

KEY_FILE_FORMAT = "intramuros-ledger-keys/1"
ENV_VAR = "INTRAMUROS_LEDGER_KEY"
ENV_VERSION = "env"
KEY_BYTES = 32
NONCE_BYTES = 12

# Domain-separates the AAD from any other use of the same key.
_AAD_PREFIX = b"intramuros-ledger-content/1\n"
_VERSION_RE = re.compile(r"[A-Za-z0-9._-]{1,50}")
_AES_INFO = b"intramuros-ledger/aes-256-gcm"
_DIGEST_INFO = b"intramuros-ledger/content-digest"
_CHAIN_INFO = b"intramuros-ledger/record-mac"
_SIGN_INFO = b"intramuros-ledger/ed25519-signing-seed"


class LedgerKeyMissing(ServerError):
    """Content was to be stored or read, but no ledger key is configured."""

    code = "ledger_key_missing"


class LedgerKeyError(ServerError):
    """Content cannot be decrypted: its key version is not loaded, or the key is wrong.

    AES-GCM cannot tell a wrong key from altered ciphertext; the message says
    both.
    """

    code = "ledger_key_error"


def content_aad(seq: int, tenant: str | None) -> bytes:
    """The AES-GCM associated data of a record's content: its seq and tenant.

    Binding both means a ciphertext copied onto another record (or another
    tenant's record) fails authentication instead of decrypting.
    """
    return _AAD_PREFIX + canonical_json({"seq": seq, "tenant": tenant}).encode("utf-8")


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


class LedgerKeys:
    """The versioned ledger keys of one installation.

    Args:
        keys: version name to 32-byte master key.
        current: the version new content is encrypted and digested with.
    """

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if not keys:
            raise ConfigError("A ledger key set needs at least one key.")
        for version, key in keys.items():
            if not _VERSION_RE.fullmatch(version):
                raise ConfigError(f"Invalid ledger key version name {version!r}.")
            if len(key) != KEY_BYTES:
                raise ConfigError(
                    f"Ledger key {version!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}."
                )
        if current not in keys:
            raise ConfigError(f"The current ledger key version {current!r} is not in the key set.")
        self._aead = {v: AESGCM(_derive(k, _AES_INFO)) for v, k in keys.items()}
        self._mac = {v: _derive(k, _DIGEST_INFO) for v, k in keys.items()}
        self._chain = {v: _derive(k, _CHAIN_INFO) for v, k in keys.items()}
        self._signer = {
            v: Ed25519PrivateKey.from_private_bytes(_derive(k, _SIGN_INFO)) for v, k in keys.items()
        }
        self.current = current

    def __repr__(self) -> str:
        # Never the key bytes: this object ends up in logs and tracebacks.
        return f"LedgerKeys(versions={self.versions}, current={self.current!r})"

    @property
    def versions(self) -> list[str]:
        """Every loaded version name, sorted."""
        return sorted(self._aead)

    def has(self, version: str | None) -> bool:
        """Whether ``version`` is loaded (cheap: the verifier asks it for every record)."""
        return version in self._aead

    # -- loading -------------------------------------------------------------

    @classmethod
    def from_file(cls, path: Path | str) -> LedgerKeys:
        """Load a key file written by :func:`generate_key_file` / :func:`rotate`.

        Refuses a file that others can read or anyone but its owner can write.
        """
        path = Path(path)
        try:
            st = path.stat()
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"Cannot read the ledger key file {path}: {exc.strerror}") from None
        # Like ssh with private keys: a key file readable by every local user
        # is a leaked key. Group read stays allowed for secret mounts that use
        # a group (e.g. Kubernetes fsGroup with mode 0440).
        if st.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
            raise ConfigError(
                f"The ledger key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                "it must not be readable by others nor writable by its group "
                "(chmod 600, or defaultMode 0400 for a Kubernetes secret)."
            )
        return cls._from_document(_parse_key_file(text, path))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LedgerKeys | None:
        """The key in ``INTRAMUROS_LEDGER_KEY`` (base64 of 32 bytes) as version ``env``.

        ``None`` when the variable is unset or empty.
        """
        value = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
        if not value:
            return None
        key = _b64_key(value, f"{ENV_VAR}")
        return cls({ENV_VERSION: key}, ENV_VERSION)

    @classmethod
    def load(
        cls, path: Path | str | None = None, *, environ: Mapping[str, str] | None = None
    ) -> LedgerKeys | None:
        """The key file at ``path`` if given, else the environment key, else ``None``."""
        if path is not None:
            return cls.from_file(path)
        return cls.from_env(environ)

    @classmethod
    def _from_document(cls, doc: dict[str, Any]) -> LedgerKeys:
        keys = {
            version: _b64_key(entry["key"], f"key {version!r}")
            for version, entry in doc["keys"].items()
        }
        return cls(keys, doc["current"])

    # -- using ---------------------------------------------------------------

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes, bytes]:
        """Encrypt under the current version: ``(version, nonce, ciphertext)``.

        The nonce is 12 random bytes; rotate keys well before 2**32 contents
        per version (NIST SP 800-38D's bound for random nonces).
        """
        nonce = secrets.token_bytes(NONCE_BYTES)
        return self.current, nonce, self._aead[self.current].encrypt(nonce, plaintext, aad)

    def decrypt(self, version: str, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Decrypt and authenticate; :class:`LedgerKeyError` when that fails."""
        aead = self._aead.get(version)
        if aead is None:
            raise LedgerKeyError(
                f"Ledger content was encrypted with key version {version!r}, which is not "
                f"loaded (loaded: {', '.join(self.versions)}). Keep old versions in the key "
                "file when rotating."
            )
        try:
            return aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise LedgerKeyError(
                f"Ledger content does not decrypt with key version {version!r}: the loaded "
                "key is not the one it was written with, or the stored content was altered."
            ) from None

    def digest(self, plaintext: bytes, version: str | None = None) -> str:
        """Hex HMAC-SHA256 of ``plaintext`` under ``version`` (default: current)."""
        mac = self._mac[version or self.current]
        return hmac.new(mac, plaintext, hashlib.sha256).hexdigest()

    def digest_matches(self, plaintext: bytes, digest: str) -> bool:
        """Whether ``digest`` is the digest of ``plaintext`` under any loaded version.

        Erased content keeps no key version, so every version is tried.
        """
        return any(hmac.compare_digest(self.digest(plaintext, v), digest) for v in self._mac)

    def record_mac(self, record_hash: str, version: str | None = None) -> tuple[str, str]:
        """``(version, hex HMAC-SHA256 of the record hash)`` under ``version`` (default: current).

        The record hash covers the record's fields and the previous hash, so
        the MAC of one record authenticates the whole chain before it too.
        """
        version = version or self.current
        mac = hmac.new(self._chain[version], record_hash.encode("ascii"), hashlib.sha256)
        return version, mac.hexdigest()

    def record_mac_matches(self, version: str, record_hash: str, mac: str) -> bool:
        """Whether ``mac`` is the MAC of ``record_hash`` under ``version`` (a loaded one)."""
        return hmac.compare_digest(self.record_mac(record_hash, version)[1], mac)

    def sign(self, message: bytes, version: str | None = None) -> tuple[str, str]:
        """``(version, base64 Ed25519 signature)`` of ``message`` (default: current version)."""
        version = version or self.current
        signature = self._signer[version].sign(message)
        return version, base64.b64encode(signature).decode("ascii")

    def public_keys(self) -> PublicKeys:
        """The Ed25519 public key of every loaded version: what a third party needs."""
        return PublicKeys(
            {v: signer.public_key().public_bytes_raw() for v, signer in self._signer.items()}
        )


# --------------------------------------------------------------------------
# The key file
# --------------------------------------------------------------------------


def generate_key_file(path: Path | str) -> LedgerKeys:
    """Create a key file with one fresh key, version ``v1``, mode 0600.

    Refuses to overwrite an existing file (that would lose the keys of every
    record written so far): use :func:`rotate` to add a key.
    """
    path = Path(path)
    if path.exists():
        raise ConfigError(
            f"The ledger key file {path} already exists; rotate it instead of replacing it."
        )
    doc = {"format": KEY_FILE_FORMAT, "current": "v1", "keys": {"v1": _new_entry()}}
    _write_private(path, doc, exclusive=True)
    return LedgerKeys._from_document(doc)


def rotate(path: Path | str) -> LedgerKeys:
    """Add a fresh key version to the key file and make it current.

    Old versions stay, so existing content still decrypts. The file is
    replaced atomically (a crash leaves the old or the new file, never half
    of one). Returns the new key set; its ``current`` is the new version.
    """
    path = Path(path)
    LedgerKeys.from_file(path)  # the same checks (mode, content) as loading
    doc = _parse_key_file(path.read_text(encoding="utf-8"), path)
    numbers = [int(v[1:]) for v in doc["keys"] if re.fullmatch(r"v[0-9]+", v)]
    version = f"v{max(numbers, default=0) + 1}"
    doc["keys"][version] = _new_entry()
    doc["current"] = version
    _write_private(path, doc, exclusive=False)
    return LedgerKeys._from_document(doc)


def _new_entry() -> dict[str, Any]:
    return {
        "key": base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii"),
        "created_at": time.time(),
    }


def _b64_key(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"Ledger {what} must be a base64 string.")
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"Ledger {what} is not valid base64.") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"Ledger {what} decodes to {len(key)} bytes; it must be {KEY_BYTES}.")
    return key


def _parse_key_file(text: str, path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"The ledger key file {path} is not valid JSON: {exc.msg}.") from None
    if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
        raise ConfigError(f"The ledger key file {path} is not in format {KEY_FILE_FORMAT!r}.")
    keys = doc.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise ConfigError(f"The ledger key file {path} holds no keys.")
    for version, entry in keys.items():
        if not isinstance(entry, dict) or "key" not in entry:
            raise ConfigError(f"Key {version!r} in the ledger key file {path} has no 'key'.")
    if doc.get("current") not in keys:
        raise ConfigError(f"The ledger key file {path} names no valid current key version.")
    return doc


def _write_private(path: Path, doc: dict[str, Any], *, exclusive: bool) -> None:
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")
    try:
        # 0600 from the first byte; exclusive: never clobber keys.
        write_atomic(path, data, mode=0o600, exclusive=exclusive)
    except FileExistsError:
        raise ConfigError(f"The ledger key file {path} already exists.") from None
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
