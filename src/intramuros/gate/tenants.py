"""Tenants, API keys and roles, stored in the platform database.

A tenant has a name (what people type: ``acme``) and an id (what every record
of every area stores as its tenant). Ids are never reused: the first tenant
named ``acme`` gets the id ``acme``; after it is deleted a new ``acme`` gets
``acme.<8 hex>``, so nothing the old one left behind (records, files, cases)
can ever be read as the new one's.

An API key reads ``im_<key id>_<secret>``. Only a salted scrypt hash of the
secret is stored; the key is shown once, at creation. Checking a key costs
one scrypt (tens of milliseconds, by design), so a key already checked is
remembered in memory by the sha256 of the whole key. An unknown key id
costs the same scrypt (against a dummy hash), so the time of a refusal does
not tell whether a key id exists.

What a key may do (its principal) and its tenant's policy are read from the
database at most once per ``cache_seconds`` (a setting, 1 s by default) and
remembered meanwhile, so that a call needs no database read before it runs.
A change made through this process (a key revoked, a tenant deleted, a
policy set) clears what is remembered at once; one made elsewhere (the
command line, another replica) is seen within ``cache_seconds``. Calls in
flight are watched apart (:mod:`intramuros.gate.keywatch`).

Roles: ``user`` calls models and reads its own tenant's records; ``admin``
manages its own tenant (keys, policy, records, KYC settings) and nothing
else; ``operator`` manages tenants and reads across them. Operator keys are
made only with the command line, on the machine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import sqlalchemy as sa

from intramuros.errors import AuthenticationError, InvalidRequest, NotFound
from intramuros.gate.policy import Limits, TenantPolicy
from intramuros.gate.tables import (
    ID_NAME_PART,
    IMPLICIT_TENANTS,
    api_keys,
    tenant_tombstones,
    tenants,
)
from intramuros.store.db import Database

Role = Literal["user", "admin", "operator"]
ROLES: tuple[str, ...] = get_args(Role)
TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_KEY_RE = re.compile(r"im_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_KEY_LENGTH = 3 + 16 + 1 + 43
# scrypt cost: about 50 ms and 16 MiB on a current CPU per check, once per key
# and process (then cached), which makes offline guessing of a stolen hash slow.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
# Checked against when the key id is unknown, so that a refusal costs the same.
_DUMMY_SALT = bytes(16)
_DUMMY_HASH = "0" * 64


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant (its id, and its name), the key, its role and models."""

    tenant: str
    key_id: str | None
    role: Role
    models: tuple[str, ...] | None = None
    limits: Limits = field(default_factory=Limits)
    tenant_name: str = ""

    @property
    def is_admin(self) -> bool:
        """Administers its own tenant (operators administer every tenant)."""
        return self.role in ("admin", "operator")

    @property
    def is_operator(self) -> bool:
        """Manages tenants and reads across them."""
        return self.role == "operator"

    def may_administer(self, tenant_id: str) -> bool:
        """Whether this key may manage ``tenant_id`` (its keys, policy, records)."""
        return self.is_operator or (self.role == "admin" and tenant_id == self.tenant)

    def may_use(self, model: str) -> bool:
        """True if the key's model list (if any) includes ``model``."""
        return self.models is None or model in self.models


@dataclass(frozen=True)
class TenantInfo:
    """A live tenant."""

    id: str
    name: str
    created_at: float
    policy: TenantPolicy

    def to_json(self) -> dict[str, Any]:
        """A JSON-able view."""
        return {"id": self.id, "name": self.name, "created_at": self.created_at,
                "policy": self.policy.model_dump()}  # fmt: skip


@dataclass(frozen=True)
class TenantTombstone:
    """A deleted tenant: its id is retired for good; ``purged_at`` once its data is gone."""

    id: str
    name: str
    deleted_at: float
    actor: str
    purged_at: float | None = None


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
    tenant_name: str = ""

    def active(self, now: float) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able view."""
        return {
            "id": self.id, "tenant": self.tenant_name or self.tenant, "tenant_id": self.tenant,
            "role": self.role, "created_at": self.created_at, "expires_at": self.expires_at,
            "revoked_at": self.revoked_at, "models": list(self.models) if self.models else None,
            "limits": self.limits.model_dump(),
        }  # fmt: skip


def _hash(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT).hex()


def _check_name(name: str) -> None:
    if not TENANT_RE.fullmatch(name):
        raise InvalidRequest(
            "A tenant name is 1-63 characters: lower-case letters, digits, - and _.",
            param="name",
        )


class Tenants:
    """Tenant and key management, and key checking."""

    def __init__(self, db: Database, cache_seconds: float = 1.0) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self._checked: dict[str, str] = {}  # sha256(full key) -> key id
        # sha256(full key) -> (principal, monotonic time it is good until)
        self._principals: dict[str, tuple[Principal, float]] = {}
        # tenant id -> (policy, monotonic time it is good until)
        self._policies: dict[str, tuple[TenantPolicy, float]] = {}

    def forget(self) -> None:
        """Drop every remembered principal and policy (after a change of keys or tenants)."""
        self._principals.clear()
        self._policies.clear()

    def cached_principal(self, token: str | None) -> Principal | None:
        """The principal of ``token`` if it was authenticated in the last ``cache_seconds``;
        None otherwise (then :meth:`authenticate`, which reads the database). Cheap: no I/O."""
        if not token or len(token) > _KEY_LENGTH:
            return None
        hit = self._principals.get(hashlib.sha256(token.encode()).hexdigest())
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def cached_policy(self, tenant_id: str) -> TenantPolicy | None:
        """The tenant's policy if read in the last ``cache_seconds``; None otherwise."""
        hit = self._policies.get(tenant_id)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    # -- tenants -------------------------------------------------------------

    def create(self, name: str, policy: TenantPolicy | None = None) -> TenantInfo:
        """A new tenant; names are lower-case slugs, ids never reused."""
        _check_name(name)
        policy = policy or TenantPolicy()
        now = time.time()
        with self.db.begin() as conn:
            if conn.execute(sa.select(tenants.c.name).where(tenants.c.name == name)).first():
                raise InvalidRequest(f"Tenant '{name}' already exists.", param="name")
            tenant_id = name
            while _id_taken(conn, tenant_id):
                tenant_id = f"{name[:ID_NAME_PART]}.{secrets.token_hex(4)}"
            conn.execute(tenants.insert().values(name=name, id=tenant_id, created_at=now,
                                                 policy=policy.model_dump_json()))  # fmt: skip
        return TenantInfo(id=tenant_id, name=name, created_at=now, policy=policy)

    def all(self) -> list[TenantInfo]:
        """Every live tenant, by name."""
        with self.db.begin() as conn:
            rows = conn.execute(sa.select(tenants).order_by(tenants.c.name)).mappings().all()
        return [_tenant(row) for row in rows]

    def names(self) -> list[str]:
        """All live tenant names."""
        return [t.name for t in self.all()]

    def ids(self) -> list[str]:
        """All live tenant ids."""
        return [t.id for t in self.all()]

    def get(self, name: str) -> TenantInfo:
        """The live tenant called ``name``; ``NotFound`` if there is none."""
        with self.db.begin() as conn:
            row = conn.execute(sa.select(tenants).where(tenants.c.name == name)).mappings().first()
        if row is None:
            raise NotFound(f"No tenant '{name}'.", param="tenant")
        return _tenant(row)

    def by_id(self, tenant_id: str) -> TenantInfo:
        """The live tenant whose id is ``tenant_id``; ``NotFound`` otherwise."""
        with self.db.begin() as conn:
            row = conn.execute(
                sa.select(tenants).where(tenants.c.id == tenant_id)).mappings().first()
        if row is None:
            raise NotFound(f"No tenant '{tenant_id}'.", param="tenant")
        return _tenant(row)

    def resolve(self, name: str) -> str:
        """The id of the live tenant called ``name``."""
        return self.get(name).id

    def resolve_or_implicit(self, name: str) -> str:
        """As :meth:`resolve`, but an implicit tenant (``default``, which has no row)
        answers its own name."""
        try:
            return self.resolve(name)
        except NotFound:
            if name in IMPLICIT_TENANTS:
                return name
            raise

    def policy(self, tenant_id: str) -> TenantPolicy:
        """The policy of the tenant whose id is ``tenant_id``; ``NotFound`` if none."""
        policy = self.by_id(tenant_id).policy
        if self.cache_seconds > 0:
            self._policies[tenant_id] = (policy, time.monotonic() + self.cache_seconds)
        return policy

    def set_policy(self, tenant_id: str, policy: TenantPolicy) -> None:
        """Replace the policy of the tenant whose id is ``tenant_id``."""
        with self.db.begin() as conn:
            updated = conn.execute(tenants.update().where(tenants.c.id == tenant_id)
                                   .values(policy=policy.model_dump_json())).rowcount  # fmt: skip
        self.forget()
        if not updated:
            raise NotFound(f"No tenant '{tenant_id}'.", param="tenant")

    def delete(self, name: str, *, actor: str) -> TenantTombstone:
        """Retire a tenant: its keys are deleted and its id is never given again.

        Its data (records, files, cases, ledger content) is deleted afterwards
        by :func:`intramuros.serving.tenancy.purge_tenant`; until then the
        tombstone's ``purged_at`` is null and the purge schedule retries.
        """
        now = time.time()
        with self.db.begin() as conn:
            row = conn.execute(sa.select(tenants).where(tenants.c.name == name)).mappings().first()
            if row is None:
                raise NotFound(f"No tenant '{name}'.", param="tenant")
            tenant_id = str(row["id"])
            conn.execute(api_keys.delete().where(api_keys.c.tenant == tenant_id))
            conn.execute(tenants.delete().where(tenants.c.id == tenant_id))
            conn.execute(tenant_tombstones.insert().values(
                id=tenant_id, name=name, created_at=row["created_at"], deleted_at=now,
                actor=actor[:200]))  # fmt: skip
        self._checked.clear()
        self.forget()
        return TenantTombstone(id=tenant_id, name=name, deleted_at=now, actor=actor)

    def tombstones(self, *, pending_only: bool = False) -> list[TenantTombstone]:
        """Deleted tenants (only those whose data is not yet purged, with ``pending_only``)."""
        query = sa.select(tenant_tombstones).order_by(tenant_tombstones.c.deleted_at)
        if pending_only:
            query = query.where(tenant_tombstones.c.purged_at.is_(None))
        with self.db.begin() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            TenantTombstone(id=r["id"], name=r["name"], deleted_at=r["deleted_at"],
                            actor=r["actor"], purged_at=r["purged_at"])
            for r in rows
        ]  # fmt: skip

    def mark_purged(self, tenant_id: str, counts: dict[str, int]) -> None:
        """Note that every area has deleted the data of the deleted tenant ``tenant_id``."""
        with self.db.begin() as conn:
            conn.execute(tenant_tombstones.update()
                         .where(tenant_tombstones.c.id == tenant_id)
                         .values(purged_at=time.time(), purged=json.dumps(counts)))  # fmt: skip

    # -- keys ------------------------------------------------------------------

    def create_key(
        self,
        tenant_id: str,
        *,
        role: Role = "user",
        expires_in: float | None = None,
        models: tuple[str, ...] | None = None,
        limits: Limits | None = None,
    ) -> tuple[str, KeyInfo]:
        """A new key for the tenant whose id is ``tenant_id``: ``(the key, its info)``."""
        tenant = self.by_id(tenant_id)
        if role not in ROLES:
            raise InvalidRequest("role must be 'user', 'admin' or 'operator'.", param="role")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        now = time.time()
        info = KeyInfo(id=key_id, tenant=tenant_id, role=role, created_at=now,
                       expires_at=now + expires_in if expires_in else None, revoked_at=None,
                       models=models or None, limits=limits or Limits(),
                       tenant_name=tenant.name)  # fmt: skip
        with self.db.begin() as conn:
            conn.execute(api_keys.insert().values(
                id=key_id, tenant=tenant_id, role=role, salt=salt.hex(),
                hash=_hash(secret, salt), created_at=now, expires_at=info.expires_at,
                revoked_at=None, models=json.dumps(list(models)) if models else None,
                limits=info.limits.model_dump_json()))  # fmt: skip
        return f"im_{key_id}_{secret}", info

    def keys(self, tenant_id: str | None = None) -> list[KeyInfo]:
        """Keys (of one tenant, or all), newest first."""
        query = _keys_query().order_by(api_keys.c.created_at.desc())
        if tenant_id is not None:
            query = query.where(api_keys.c.tenant == tenant_id)
        with self.db.begin() as conn:
            return [_info(row) for row in conn.execute(query).mappings()]

    def key(self, key_id: str) -> KeyInfo:
        """One key by id; ``NotFound`` if unknown."""
        with self.db.begin() as conn:
            row = conn.execute(_keys_query().where(api_keys.c.id == key_id)).mappings().first()
        if row is None:
            raise NotFound(f"No key '{key_id}'.", param="key_id")
        return _info(row)

    def revoke(self, key_id: str, *, tenant_id: str | None = None) -> None:
        """Revoke a key at once (``NotFound`` if unknown, or of another tenant)."""
        query = api_keys.update().where(api_keys.c.id == key_id,
                                        api_keys.c.revoked_at.is_(None))  # fmt: skip
        if tenant_id is not None:
            query = query.where(api_keys.c.tenant == tenant_id)
        with self.db.begin() as conn:
            revoked = conn.execute(query.values(revoked_at=time.time())).rowcount
        self.forget()
        if not revoked:
            raise NotFound(f"No active key '{key_id}'.", param="key_id")

    def active_keys(self, key_ids: Iterable[str]) -> set[str]:
        """Which of ``key_ids`` are still neither revoked, expired nor deleted."""
        wanted = sorted(set(key_ids))
        if not wanted:
            return set()
        now = time.time()
        query = sa.select(api_keys.c.id, api_keys.c.revoked_at, api_keys.c.expires_at).where(
            api_keys.c.id.in_(wanted))
        with self.db.begin() as conn:
            rows = conn.execute(query).all()
        return {r.id for r in rows
                if r.revoked_at is None and (r.expires_at is None or r.expires_at > now)}

    def authenticate(self, token: str | None) -> Principal:
        """The principal for a bearer token; ``AuthenticationError`` otherwise.

        Every refusal after the token's shape is checked costs one scrypt,
        whether the key id exists or not.
        """
        match = _KEY_RE.fullmatch(token or "")
        if match is None:
            raise AuthenticationError()
        key_id, secret = match.groups()
        with self.db.begin() as conn:
            row = conn.execute(_keys_query().where(api_keys.c.id == key_id)).mappings().first()
        fingerprint = hashlib.sha256(match.group(0).encode()).hexdigest()
        if row is None or self._checked.get(fingerprint) != key_id:
            salt, expected = ((bytes.fromhex(row["salt"]), row["hash"]) if row is not None
                              else (_DUMMY_SALT, _DUMMY_HASH))  # fmt: skip
            if not hmac.compare_digest(_hash(secret, salt), expected) or row is None:
                raise AuthenticationError()
            self._checked[fingerprint] = key_id
        info = _info(row)
        if not info.active(time.time()) or not info.tenant_name:
            raise AuthenticationError()  # revoked, expired, or its tenant is gone
        who = Principal(tenant=info.tenant, key_id=info.id, role=info.role, models=info.models,
                        limits=info.limits, tenant_name=info.tenant_name)  # fmt: skip
        if self.cache_seconds > 0:
            until = time.monotonic() + self.cache_seconds
            if info.expires_at is not None:  # never remembered past its expiry
                until = min(until, time.monotonic() + info.expires_at - time.time())
            self._principals[fingerprint] = (who, until)
        return who


def _id_taken(conn: sa.Connection, tenant_id: str) -> bool:
    for column in (tenants.c.id, tenant_tombstones.c.id):
        if conn.execute(sa.select(column).where(column == tenant_id)).first():
            return True
    return False


def _keys_query() -> sa.Select[Any]:
    """Keys with their tenant's name (null when the tenant is gone)."""
    return sa.select(api_keys, tenants.c.name.label("tenant_name")).select_from(
        api_keys.outerjoin(tenants, tenants.c.id == api_keys.c.tenant))


def _tenant(row: Any) -> TenantInfo:
    return TenantInfo(id=row["id"] or row["name"], name=row["name"], created_at=row["created_at"],
                      policy=TenantPolicy.model_validate_json(row["policy"]))  # fmt: skip


def _info(row: Any) -> KeyInfo:
    models = json.loads(row["models"]) if row["models"] else None
    return KeyInfo(
        id=row["id"], tenant=row["tenant"], role=row["role"], created_at=row["created_at"],
        expires_at=row["expires_at"], revoked_at=row["revoked_at"],
        models=tuple(models) if models else None,
        limits=Limits.model_validate_json(row["limits"]) if row["limits"] else Limits(),
        tenant_name=row["tenant_name"] or "",
    )  # fmt: skip


def parse_duration(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``45s`` -> seconds."""
    m = re.fullmatch(r"\s*(\d{1,6})\s*([dhms])\s*", text)
    if m is None:
        raise InvalidRequest(f"Cannot read duration '{text}' (e.g. 90d, 12h, 30m).",
                             param="expires")  # fmt: skip
    return int(m.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[m.group(2)]
