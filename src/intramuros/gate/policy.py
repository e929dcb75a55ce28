"""A tenant's policy: personal data, content keeping, retention, limits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PiiAction = Literal["allow", "redact-in-logs", "pseudonymise", "block"]


class Limits(BaseModel):
    """Request and token limits; ``None`` means unlimited."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(default=None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(default=None, ge=1, description="Tokens (prompt + output) per minute.")
    monthly_tokens: int | None = Field(
        default=None, ge=1, description="Tokens per calendar month (UTC)."
    )


class TenantPolicy(BaseModel):
    """What the gate does with one tenant's calls.

    ``pii`` maps a personal-data category (see ``intramuros.gate.pii``) to an
    action; categories not listed get ``pii_default``. ``redact-in-logs`` is
    the default: the model sees the text, but nothing personal is ever written
    to the ledger, logs or metrics in clear.
    """

    model_config = ConfigDict(extra="forbid")

    pii_default: PiiAction = "redact-in-logs"
    pii: dict[str, PiiAction] = Field(default_factory=dict)
    store_content: bool = Field(
        default=False,
        description="Keep prompt and output text in the ledger (encrypted at rest).",
    )
    retention_days: int | None = Field(
        default=None, ge=1, description="Days stored text is kept before the purge erases it."
    )
    limits: Limits = Field(default_factory=Limits)

    def action(self, category: str) -> PiiAction:
        """The action for one category."""
        return self.pii.get(category, self.pii_default)
