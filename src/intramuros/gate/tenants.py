"""Tenants, API keys and roles, stored in the platform database.

An API key reads ``im_<key id>_<secret>``. Only a salted scrypt hash of the
secret is stored; the key is shown once, at creation. Checking a key costs
one scrypt (tens of milliseconds, by design), so a key already checked is
remembered in memory by the sha256 of the whole key; revocation and expiry
are read from the database on every request all the same.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa

from intramuros.errors import AuthenticationError, InvalidRequest, NotFound
from intramuros.gate.policy import Limits, TenantPolicy
from intramuros.store.db import Database, api_keys, tenants

Role = Literal["user", "admin"]
TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_KEY_RE = re.compile(r"im_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# scrypt cost: about 50 ms and 16 MiB on a current CPU per check, once per key
# and process (then cached), which makes offline guessing of a stolen hash slow.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant, the key and its role and allowed models."""

    tenant: str
    key_id: str | None
    role: Role
    models: tuple[str, ...] | None = None
    limits: Limits = field(default_factory=Limits)

    @property
    def is_admin(self) -> bool:
        """Admins manage tenants and keys and may read every tenant's records."""
        return self.role == "admin"

    def may_use(self, model: str) -> bool:
        """True if the key's model list (if any) includes ``model``."""
        return self.models is None or model in self.models


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed (never its secret)."""

    id: str
    tenant: str
    role: Role
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    models: tuple[str, ...] | None
    limits: Limits

    def to_json(self) -> dict[str, Any]:
        """A JSON-able view."""
        return {
            "id": self.id, "tenant": self.tenant, "role": self.role,
            "created_at": self.created_at, "expires_at": self.expires_at,
            "revoked_at": self.revoked_at, "models": list(self.models) if self.models else None,
            "limits": self.limits.model_dump(),
        }  # fmt: skip


def _hash(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT).hex()


class Tenants:
    """Tenant and key management, and key checking."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._checked: dict[str, str] = {}  # sha256(full key) -> key id

    # -- tenants -------------------------------------------------------------

    def create(self, name: str, policy: TenantPolicy | None = None) -> None:
        """A new tenant; names are lower-case slugs."""
        if not TENANT_RE.fullmatch(name):
            raise InvalidRequest(
                "A tenant name is 1-63 characters: lower-case letters, digits, - and _.",
                param="name",
            )
        with self.db.begin() as conn:
            if conn.execute(sa.select(tenants.c.name).where(tenants.c.name == name)).first():
                raise InvalidRequest(f"Tenant '{name}' already exists.", param="name")
            conn.execute(tenants.insert().values(
                name=name, created_at=time.time(),
                policy=(policy or TenantPolicy()).model_dump_json()))  # fmt: skip

    def names(self) -> list[str]:
        """All tenant names."""
        with self.db.begin() as conn:
            return [r[0] for r in conn.execute(sa.select(tenants.c.name).order_by(tenants.c.name))]

    def policy(self, name: str) -> TenantPolicy:
        """The tenant's policy; ``NotFound`` if there is no such tenant."""
        with self.db.begin() as conn:
            row = conn.execute(sa.select(tenants.c.policy).where(tenants.c.name == name)).first()
        if row is None:
            raise NotFound(f"No tenant '{name}'.", param="tenant")
        return TenantPolicy.model_validate_json(row[0])

    def set_policy(self, name: str, policy: TenantPolicy) -> None:
        """Replace the tenant's policy."""
        self.policy(name)
        with self.db.begin() as conn:
            conn.execute(tenants.update().where(tenants.c.name == name)
                         .values(policy=policy.model_dump_json()))  # fmt: skip

    def delete(self, name: str) -> None:
        """Delete a tenant and revoke its keys (its ledger records stay)."""
        self.policy(name)
        now = time.time()
        with self.db.begin() as conn:
            conn.execute(api_keys.update().where(api_keys.c.tenant == name,
                                                 api_keys.c.revoked_at.is_(None))
                         .values(revoked_at=now))  # fmt: skip
            conn.execute(tenants.delete().where(tenants.c.name == name))
        self._checked.clear()

    # -- keys ------------------------------------------------------------------

    def create_key(
        self,
        tenant: str,
        *,
        role: Role = "user",
        expires_in: float | None = None,
        models: tuple[str, ...] | None = None,
        limits: Limits | None = None,
    ) -> tuple[str, KeyInfo]:
        """A new key: ``(the key, shown once, its info)``."""
        self.policy(tenant)
        if role not in ("user", "admin"):
            raise InvalidRequest("role must be 'user' or 'admin'.", param="role")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        now = time.time()
        info = KeyInfo(id=key_id, tenant=tenant, role=role, created_at=now,
                       expires_at=now + expires_in if expires_in else None, revoked_at=None,
                       models=models or None, limits=limits or Limits())  # fmt: skip
        with self.db.begin() as conn:
            conn.execute(api_keys.insert().values(
                id=key_id, tenant=tenant, role=role, salt=salt.hex(), hash=_hash(secret, salt),
                created_at=now, expires_at=info.expires_at, revoked_at=None,
                models=json.dumps(list(models)) if models else None,
                limits=info.limits.model_dump_json()))  # fmt: skip
        return f"im_{key_id}_{secret}", info

    def keys(self, tenant: str | None = None) -> list[KeyInfo]:
        """Keys (of one tenant, or all), newest first."""
        query = sa.select(api_keys).order_by(api_keys.c.created_at.desc())
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        with self.db.begin() as conn:
            return [_info(row) for row in conn.execute(query).mappings()]

    def revoke(self, key_id: str, *, tenant: str | None = None) -> None:
        """Revoke a key at once (``NotFound`` if unknown, or of another tenant)."""
        query = api_keys.update().where(api_keys.c.id == key_id,
                                        api_keys.c.revoked_at.is_(None))  # fmt: skip
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        with self.db.begin() as conn:
            if not conn.execute(query.values(revoked_at=time.time())).rowcount:
                raise NotFound(f"No active key '{key_id}'.", param="key_id")

    def authenticate(self, token: str | None) -> Principal:
        """The principal for a bearer token; ``AuthenticationError`` otherwise."""
        match = _KEY_RE.fullmatch(token or "")
        if match is None:
            raise AuthenticationError()
        key_id, secret = match.groups()
        with self.db.begin() as conn:
            query = sa.select(api_keys).where(api_keys.c.id == key_id)
            row = conn.execute(query).mappings().first()
        if row is None:
            raise AuthenticationError()
        fingerprint = hashlib.sha256(token.encode()).hexdigest()  # type: ignore[union-attr]
        if self._checked.get(fingerprint) != key_id:
            expected = row["hash"]
            if not hmac.compare_digest(_hash(secret, bytes.fromhex(row["salt"])), expected):
                raise AuthenticationError()
            self._checked[fingerprint] = key_id
        now = time.time()
        if row["revoked_at"] is not None or (row["expires_at"] is not None
                                             and row["expires_at"] <= now):  # fmt: skip
            raise AuthenticationError()
        info = _info(row)
        return Principal(tenant=info.tenant, key_id=info.id, role=info.role, models=info.models,
                         limits=info.limits)  # fmt: skip


def _info(row: Any) -> KeyInfo:
    models = json.loads(row["models"]) if row["models"] else None
    return KeyInfo(
        id=row["id"], tenant=row["tenant"], role=row["role"], created_at=row["created_at"],
        expires_at=row["expires_at"], revoked_at=row["revoked_at"],
        models=tuple(models) if models else None,
        limits=Limits.model_validate_json(row["limits"]) if row["limits"] else Limits(),
    )  # fmt: skip


def parse_duration(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``45s`` -> seconds."""
    m = re.fullmatch(r"\s*(\d{1,6})\s*([dhms])\s*", text)
    if m is None:
        raise InvalidRequest(f"Cannot read duration '{text}' (e.g. 90d, 12h, 30m).",
                             param="expires")  # fmt: skip
    return int(m.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[m.group(2)]
