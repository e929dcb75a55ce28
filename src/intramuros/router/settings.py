"""The router's section of the settings: route profiles and model costs.

Checked when the settings load, so a bad route is refused at start, naming the
route and the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from intramuros.router.config import parse_costs, parse_routes


class RouterSettings(BaseModel):
    """Routes (``[routes.NAME]``) and ``model_costs``, as flat settings."""

    model_config = ConfigDict(extra="forbid")

    routes: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Route profiles (TOML table [routes.NAME], or JSON): models cheapest first, tasks, "
            "min_confidence, checks, escalate, stream. `auto` always exists (default: the "
            "whole catalogue by cost). See docs/routing.md."
        ),
    )
    model_costs: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Relative cost per model for routing (TOML table or JSON); default: the weights' "
            "size in bytes; models without size or cost (upstreams) rank last."
        ),
    )

    @field_validator("routes", mode="before")
    @classmethod
    def _check_routes(cls, value: Any) -> Any:
        parsed = parse_routes(value)  # ConfigError names the route and field
        return {name: p.model_dump(mode="json") for name, p in parsed.items()}

    @field_validator("model_costs", mode="before")
    @classmethod
    def _check_costs(cls, value: Any) -> Any:
        return parse_costs(value)
