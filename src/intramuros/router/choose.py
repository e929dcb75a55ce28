"""Which route a request takes, and the models it may try, cheapest first.

Pure logic over catalogue records and the caller's principal: no engine is
touched here. Capability and context checks that need the request and a
model's tokenizer happen in ``router/service.py``, with the same conversion
code the core service uses, so the router never disagrees with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from intramuros.catalog.records import Capability, ModelRecord
from intramuros.errors import InvalidRequest
from intramuros.gate.tenants import Principal
from intramuros.router.config import AUTO, TASK_RE, RouteProfile


@dataclass(frozen=True)
class Resolution:
    """The route a request takes: its name, its profile, and why it was picked."""

    route: str
    profile: RouteProfile
    task: str | None = None
    note: str | None = None


@dataclass
class Skip:
    """A route member that was not tried, and why (shown in ``usage.routing``)."""

    model: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """The attempt-shaped view: outcome ``skipped``."""
        return {"model": self.model, "outcome": "skipped", "reason": self.reason,
                "confidence": None}  # fmt: skip


@dataclass
class Ladder:
    """The models a route may try for this caller, cheapest first, and those left out."""

    models: list[ModelRecord] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    # Members the key may not use: kept out of the answer (as `/v1/models` hides
    # them), written to the ledger.
    denied: list[str] = field(default_factory=list)


def is_route(model: str, routes: Mapping[str, RouteProfile]) -> bool:
    """True when ``model`` names a route (``auto`` always does)."""
    return model == AUTO or model in routes


def task_of(metadata: Mapping[str, Any] | None) -> str | None:
    """``metadata.task``, checked: a short tag, or a 400 naming ``metadata.task``."""
    if not metadata or "task" not in metadata or metadata["task"] is None:
        return None
    task = metadata["task"]
    if not isinstance(task, str) or not TASK_RE.fullmatch(task):
        raise InvalidRequest(
            "metadata.task must be a tag of 1-64 letters, digits or . _ : - "
            "(starting with a letter or digit).",
            param="metadata.task",
        )
    return task


def resolve(
    model: str, metadata: Mapping[str, Any] | None, routes: Mapping[str, RouteProfile]
) -> Resolution:
    """The route for a request whose ``model`` is a route name (see ``is_route``).

    ``auto`` with a ``metadata.task`` goes to the route that lists the task;
    a task no route lists stays on ``auto`` (said in the decision's note).
    A named route ignores the task tag: the client chose the route itself.
    """
    task = task_of(metadata)
    if model != AUTO:
        return Resolution(model, routes[model], task)
    if task is not None:
        for name, profile in routes.items():
            if task in profile.tasks:
                return Resolution(name, profile, task, note=f"task '{task}' -> route '{name}'")
    profile = routes.get(AUTO, RouteProfile())
    note = f"no route for task '{task}'; route 'auto'" if task is not None else None
    return Resolution(AUTO, profile, task, note)


def cost_of(record: ModelRecord, costs: Mapping[str, float]) -> float:
    """A model's relative cost: configured, else its weights' size; unknown ranks last."""
    if record.name in costs:
        return costs[record.name]
    if record.size_bytes is not None:
        return float(record.size_bytes)
    return math.inf


def ladder(
    profile: RouteProfile,
    records: Iterable[ModelRecord],
    who: Principal,
    costs: Mapping[str, float],
    kind: Capability | None = None,
) -> Ladder:
    """The route's members this caller may use, cheapest first.

    A profile's ``models`` keep the order the operator wrote (it is the
    escalation order); without ``models`` the whole catalogue is sorted by
    ``cost_of`` (ties by name, so the order is stable), keeping only the
    models of the request's ``kind`` (chat, completion, embeddings): a
    speech model is no candidate worth listing for a chat request.
    """
    by_name = {r.name: r for r in records}
    out = Ladder()
    if profile.models is not None:
        ordered: list[ModelRecord] = []
        for name in profile.models:
            record = by_name.get(name)
            if record is None:
                out.skipped.append(Skip(name, "not in the catalogue"))
            else:
                ordered.append(record)
    else:
        pool = [r for r in by_name.values() if kind is None or r.has(kind)]
        ordered = sorted(pool, key=lambda r: (cost_of(r, costs), r.name))
    for record in ordered:
        if who.may_use(record.name):
            out.models.append(record)
        else:
            out.denied.append(record.name)
    return out
