"""Errors of small-first routing (mapped to OpenAI's error shape like every other)."""

from __future__ import annotations

from intramuros.errors import ClientError, PermissionDenied


class NoEligibleModel(ClientError):
    """No model of the route can serve this request (capabilities, context length)."""

    code = "no_eligible_model"


class RouteForbidden(PermissionDenied):
    """The caller's key may use none of the route's models (403)."""

    code = "no_allowed_model"
