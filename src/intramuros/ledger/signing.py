"""Checking signatures of checkpoints and export manifests with public keys only.

The ledger key's holder (the gateway host) signs with Ed25519 keys derived
from its ledger keys, one per key version (see
:mod:`intramuros.ledger.crypto`). A third party holds only the public keys,
as printed by ``intramuros ledger public-key``::

    {"format": "intramuros-ledger-public-keys/1",
     "keys": {"v1": "<base64 of the 32-byte Ed25519 public key>", ...}}

and checks with them that a checkpoint or an export manifest was issued by the
key's holder and not altered since. Nothing here needs a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from intramuros.errors import InvalidRequest
from intramuros.ledger.chain import Checkpoint, Reason, canonical_json

PUBLIC_KEYS_FORMAT = "intramuros-ledger-public-keys/1"
# Each signed document type has its own prefix, so a signature over one can
# never be passed off as a signature over another.
CHECKPOINT_DOMAIN = b"intramuros-ledger-checkpoint/1\n"
MANIFEST_DOMAIN = b"intramuros-ledger-export-manifest/1\n"
SIGNATURE_BYTES = 64
_VERSION_RE = re.compile(r"[A-Za-z0-9._-]{1,50}")


def checkpoint_message(checkpoint: Checkpoint) -> bytes:
    """The bytes a checkpoint's signature covers: seq, hash, ts and key version."""
    body = {
        "seq": checkpoint.seq,
        "hash": checkpoint.hash,
        "ts": checkpoint.ts,
        "key_version": checkpoint.key_version,
    }
    return CHECKPOINT_DOMAIN + canonical_json(body).encode("utf-8")


def manifest_message(manifest: Mapping[str, Any]) -> bytes:
    """The bytes an export manifest's signature covers: every field but ``signature``."""
    body = {name: value for name, value in manifest.items() if name != "signature"}
    return MANIFEST_DOMAIN + canonical_json(body).encode("utf-8")


def decode_signature(value: Any) -> bytes | None:
    """The 64 raw bytes of a base64 Ed25519 signature, or ``None`` if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == SIGNATURE_BYTES else None


class PublicKeys:
    """The Ed25519 public keys of a ledger, by key version.

    Args:
        keys: version name to the 32 raw bytes of its public key.
    """

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for version, raw in keys.items():
            if not _VERSION_RE.fullmatch(version):
                raise InvalidRequest(
                    f"Invalid ledger key version name {version!r}.", param="public_keys"
                )
            try:
                self._keys[version] = Ed25519PublicKey.from_public_bytes(raw)
            except ValueError:
                raise InvalidRequest(
                    f"The public key of version {version!r} is not an Ed25519 key.",
                    param="public_keys",
                ) from None

    def __repr__(self) -> str:
        return f"PublicKeys(versions={self.versions})"

    @property
    def versions(self) -> list[str]:
        """Every version name, sorted."""
        return sorted(self._keys)

    def raw(self, version: str) -> bytes:
        """The 32 raw bytes of ``version``'s public key."""
        return self._keys[version].public_bytes_raw()

    def fingerprint(self, version: str) -> str:
        """The first 16 hex digits of the sha256 of a public key, to read out over the phone."""
        return hashlib.sha256(self.raw(version)).hexdigest()[:16]

    def verify(self, version: Any, message: bytes, signature: Any) -> str | None:
        """``None`` if ``signature`` is ``version``'s signature of ``message``, else why not.

        The reason is a predicate ("is signed with ...", "has a signature
        that ..."), to follow the name of what was signed.
        """
        if not isinstance(version, str) or version not in self._keys:
            return (
                f"is signed with key version {version!r}, which is not among the public "
                f"keys given ({', '.join(self.versions) or 'none'})."
            )
        raw = decode_signature(signature)
        if raw is None:
            return "has no valid signature (not a base64 Ed25519 signature)."
        try:
            self._keys[version].verify(raw, message)
        except InvalidSignature:
            return (
                f"has a signature that does not verify under key version {version!r}: it was "
                "altered, or not issued by the holder of the ledger key."
            )
        return None

    # -- the public key file -------------------------------------------------

    def to_json(self) -> str:
        """The document ``intramuros ledger public-key`` prints, with fingerprints."""
        doc = {
            "format": PUBLIC_KEYS_FORMAT,
            "keys": {v: base64.b64encode(self.raw(v)).decode("ascii") for v in self.versions},
            "fingerprints": {v: self.fingerprint(v) for v in self.versions},
        }
        return json.dumps(doc, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PublicKeys:
        """Parse :meth:`to_json` output; :class:`InvalidRequest` when it is not one."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            raise InvalidRequest(
                "The public keys are not valid JSON.", param="public_keys"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != PUBLIC_KEYS_FORMAT:
            raise InvalidRequest(
                f"The public keys are not in format {PUBLIC_KEYS_FORMAT!r}.", param="public_keys"
            )
        keys = doc.get("keys")
        if not isinstance(keys, dict) or not keys:
            raise InvalidRequest("The public keys document holds no keys.", param="public_keys")
        raw: dict[str, bytes] = {}
        for version, value in keys.items():
            try:
                raw[version] = base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidRequest(
                    f"The public key of version {version!r} is not valid base64.",
                    param="public_keys",
                ) from None
        return cls(raw)

    @classmethod
    def from_file(cls, path: Path | str) -> PublicKeys:
        """Read a public key file; :class:`InvalidRequest` when it cannot be read or parsed."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidRequest(
                f"Cannot read the public keys file {path}: {exc}", param="public_keys"
            ) from None
        return cls.from_json(text)


def checkpoint_problem(
    checkpoint: Checkpoint, public_keys: PublicKeys
) -> tuple[Reason, str] | None:
    """Why a *signed* checkpoint cannot be trusted, or ``None`` when its signature holds."""
    problem = public_keys.verify(
        checkpoint.key_version, checkpoint_message(checkpoint), checkpoint.signature
    )
    if problem is None:
        return None
    if checkpoint.key_version not in public_keys.versions:
        return "unknown_key_version", f"the checkpoint {problem}"
    return "bad_signature", f"the checkpoint {problem}"
