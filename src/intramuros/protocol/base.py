"""The base classes of every wire type: requests refuse unknown fields, answers keep them.

This package imports nothing of ours: the HTTP layer, the serving layer, the
router and the workloads all speak these types.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


class Request(BaseModel):
    """A request body: unknown fields are an error, as in OpenAI's API."""

    # strict: "10" is not an integer and "yes" is not a boolean, as in OpenAI's API
    # (integers are still accepted where a float is expected).
    model_config = ConfigDict(extra="forbid", strict=True)


class Wire(BaseModel):
    """An answer: extra fields pass through (clients ignore what they do not know)."""

    model_config = ConfigDict(extra="allow")


def at_most(limit: int, what: str) -> BeforeValidator:
    """Refuse a list or object with more than ``limit`` entries before validating any.

    A pydantic length limit is checked after every item is validated: a
    request with a million stop sequences would cost a second of CPU on the
    event loop before its 400.
    """

    def check(value: Any) -> Any:
        if isinstance(value, list | dict) and len(value) > limit:
            raise ValueError(f"at most {limit} {what} are accepted, got {len(value)}")
        return value

    return BeforeValidator(check)
