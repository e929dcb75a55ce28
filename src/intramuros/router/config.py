"""Route profiles: which models a virtual model (``auto`` or a named route) may use.

A route lists models cheapest first; a request sent to the route goes to the
first one that can serve it, and is retried once on the next one up when the
answer fails its checks. Profiles come from the ``routes`` setting (a TOML
table, or JSON in ``INTRAMUROS_ROUTES`` / ``--routes``) and are validated when
the settings load: a bad profile stops the server at start with a message
naming the route and the field. Checks that need the catalogue (does every
member exist? does a route shadow a model's name?) run when the server
starts, in :func:`check_against_catalog`.

This module imports only pydantic: ``settings.py`` calls it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from intramuros.errors import ConfigError

AUTO = "auto"
Check = Literal["json", "schema", "tool_call", "empty"]
ALL_CHECKS: tuple[Check, ...] = ("json", "schema", "tool_call", "empty")
StreamMode = Literal["buffer", "direct"]

# Same alphabet as model names (catalog.NAME_RE), so a route name can go in `model`.
ROUTE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
TASK_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# A mean token log-probability below -100 means probability e^-100: no real threshold.
MIN_CONFIDENCE_FLOOR = -100.0


class RouteProfile(BaseModel):
    """One route profile, as configured.

    ``models`` is the escalation ladder, cheapest first; ``None`` means every
    model in the catalogue, ordered by cost (see ``model_costs``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[str, ...] | None = Field(
        default=None, description="Models, cheapest first; default: the whole catalogue by cost."
    )
    tasks: tuple[str, ...] = Field(
        default=(), description="Task tags (client's metadata.task) that `auto` sends here."
    )
    min_confidence: float | None = Field(
        default=None,
        description="Escalate when the answer's mean token log-probability is below this.",
    )
    checks: tuple[Check, ...] = Field(
        default=ALL_CHECKS, description="Answer checks that trigger an escalation."
    )
    escalate: bool = Field(default=True, description="Retry once on the next model up.")
    stream: StreamMode = Field(
        default="buffer",
        description=(
            "buffer: validate the whole answer, then send it as SSE chunks; "
            "direct: stream the first eligible model's answer, unchecked."
        ),
    )
    description: str = Field(default="", max_length=500)


def _field_of(loc: tuple[int | str, ...]) -> str:
    """pydantic's location inside one profile -> ``models[1]``-style field name."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(profile)"


def _fail(route: str, field: str, problem: str) -> ConfigError:
    return ConfigError(f"Invalid route configuration: route '{route}', field '{field}': {problem}")


def _loaded(raw: Any, what: str) -> Any:
    """A JSON string (from the environment or a flag) decoded; anything else as is."""
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"Invalid route configuration: {what} is not valid JSON: {exc}."
            ) from None
    return raw


def parse_profile(name: str, raw: Any) -> RouteProfile:
    """One profile, validated; ``ConfigError`` names the route and field at fault."""
    if not isinstance(name, str) or not ROUTE_NAME_RE.fullmatch(name):
        raise _fail(str(name)[:80], "(name)", "a route name is 1-128 letters, digits or . _ : - "
                    "starting with a letter or digit")  # fmt: skip
    if not isinstance(raw, Mapping):
        raise _fail(name, "(profile)", "a route profile is a table (models, tasks, ...)")
    try:
        profile = RouteProfile.model_validate(dict(raw))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise _fail(name, _field_of(tuple(err["loc"])), err["msg"]) from None
    if profile.models is not None:
        if not profile.models:
            raise _fail(name, "models", "must list at least one model (or be left out)")
        for i, model in enumerate(profile.models):
            if not ROUTE_NAME_RE.fullmatch(model):
                raise _fail(name, f"models[{i}]", f"'{model[:80]}' is not a valid model name")
            if model in profile.models[:i]:
                raise _fail(name, f"models[{i}]", f"'{model}' is listed twice")
            if model == AUTO:
                raise _fail(name, f"models[{i}]", "a route cannot contain the route 'auto'")
    for i, task in enumerate(profile.tasks):
        if not TASK_RE.fullmatch(task):
            raise _fail(name, f"tasks[{i}]", "a task tag is 1-64 letters, digits or . _ : -")
    if profile.min_confidence is not None:
        value = profile.min_confidence
        if not math.isfinite(value) or not MIN_CONFIDENCE_FLOOR <= value <= 0:
            raise _fail(name, "min_confidence", "a mean token log-probability: between "
                        f"{MIN_CONFIDENCE_FLOOR:g} and 0 (e.g. -1.5), got {value}")  # fmt: skip
    if len(set(profile.checks)) != len(profile.checks):
        raise _fail(name, "checks", "a check is listed twice")
    return profile


def parse_routes(raw: Any) -> dict[str, RouteProfile]:
    """The ``routes`` setting (mapping name -> profile, or its JSON text), validated."""
    raw = _loaded(raw, "routes")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError("Invalid route configuration: routes must be a table of profiles.")
    routes = {name: parse_profile(name, profile) for name, profile in raw.items()}
    owner: dict[str, str] = {}
    for name, profile in routes.items():
        for i, task in enumerate(profile.tasks):
            if task in owner:
                raise _fail(name, f"tasks[{i}]", f"task '{task}' is already routed by "
                            f"route '{owner[task]}'")  # fmt: skip
            owner[task] = name
    return routes


def parse_costs(raw: Any) -> dict[str, float]:
    """The ``model_costs`` setting (model -> relative cost, or its JSON text), validated."""
    raw = _loaded(raw, "model_costs")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError("Invalid route configuration: model_costs must be a table.")
    costs: dict[str, float] = {}
    for model, value in raw.items():
        if not isinstance(model, str) or not ROUTE_NAME_RE.fullmatch(model):
            raise ConfigError(f"Invalid route configuration: model_costs: '{str(model)[:80]}' "
                              "is not a model name.")  # fmt: skip
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or not math.isfinite(value) or value < 0:
            raise ConfigError(f"Invalid route configuration: model_costs.{model}: a cost is a "
                              f"number >= 0, got {value!r}.")  # fmt: skip
        costs[model] = float(value)
    return costs


def check_against_catalog(routes: Mapping[str, RouteProfile], models: Iterable[str]) -> None:
    """At start: every route member is in the catalogue; no route shadows a model."""
    names = set(models)
    if AUTO in names:
        raise ConfigError(f"Invalid route configuration: a catalogue model is named '{AUTO}', "
                          "the virtual model's name; rename it.")  # fmt: skip
    for route, profile in routes.items():
        if route in names:
            raise _fail(route, "(name)", f"'{route}' is also a model in the catalogue; a route "
                        "must have a name of its own")  # fmt: skip
        for i, model in enumerate(profile.models or ()):
            if model in routes:
                raise _fail(route, f"models[{i}]", f"'{model}' is a route; list models only")
            if model not in names:
                raise _fail(route, f"models[{i}]", f"model '{model}' is not in the catalogue "
                            "(see `intramuros models list`)")  # fmt: skip
