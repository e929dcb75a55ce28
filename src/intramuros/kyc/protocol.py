"""Wire types of the KYC routes (pydantic only; no engine or store code)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SubjectType = Literal["person", "organization", "vessel", "aircraft", "any"]


class IdentifierIn(BaseModel):
    """A document number of the subject."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=60, description="passport, imo, national id...")
    value: str = Field(min_length=1, max_length=100)


class SubjectIn(BaseModel):
    """Who to screen."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=300)
    type: SubjectType = "any"
    birth_date: str | None = Field(default=None, description="YYYY, YYYY-MM or YYYY-MM-DD")
    nationality: str | None = Field(default=None, max_length=100)
    country: str | None = Field(default=None, max_length=100)
    gender: Literal["male", "female"] | None = None
    identifiers: list[IdentifierIn] = Field(default_factory=list, max_length=20)
    customer_id: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="Your id of the customer: stored for re-screening after list updates.",
    )

    @field_validator("name")
    @classmethod
    def _name_has_letters(cls, value: str) -> str:
        if not any(ch.isalnum() for ch in value):
            raise ValueError("name must contain letters or digits")
        return value

    @field_validator("birth_date")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        from intramuros.kyc.model import is_iso_date

        if value is not None and not is_iso_date(value):
            raise ValueError("birth_date must be YYYY, YYYY-MM or YYYY-MM-DD")
        return value


class ScreenRequest(SubjectIn):
    """POST /v1/kyc/screen."""

    lists: list[str] | None = Field(default=None, max_length=50,
                                    description="Only these lists (default: all).")  # fmt: skip
    limit: int = Field(default=10, ge=1, le=100)


class BatchRequest(BaseModel):
    """POST /v1/kyc/screen/batch."""

    model_config = ConfigDict(extra="forbid")

    subjects: list[SubjectIn] = Field(min_length=1, max_length=1000)
    lists: list[str] | None = Field(default=None, max_length=50)
    limit: int = Field(default=5, ge=1, le=100)


class MatchOut(BaseModel):
    """One listed entity found, with the score's explanation."""

    list_name: str = Field(alias="list", serialization_alias="list")
    source_id: str
    name: str
    schema_: str = Field(alias="schema", serialization_alias="schema")
    score: float
    alert: bool
    programs: list[str]
    birth_dates: list[str]
    nationalities: list[str]
    explanation: dict[str, Any]

    model_config = ConfigDict(populate_by_name=True)


class ScreenResponse(BaseModel):
    """Ranked matches; a case id when some match reached the tenant's threshold."""

    object: Literal["kyc.screening"] = "kyc.screening"
    subject: dict[str, Any]
    threshold: float
    matches: list[MatchOut]
    case_id: str | None
    lists: dict[str, dict[str, int]]
    took_ms: float


class BatchResponse(BaseModel):
    """One result per subject, in order."""

    object: Literal["list"] = "list"
    data: list[ScreenResponse]
    screenings_per_second: float


class DecisionRequest(BaseModel):
    """POST /v1/kyc/cases/{id}/decision."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["true_match", "false_positive", "escalate"]
    note: str = Field(default="", max_length=10_000)


class ThresholdRequest(BaseModel):
    """PUT /v1/kyc/threshold (admin)."""

    model_config = ConfigDict(extra="forbid")

    tenant: str | None = Field(default=None, min_length=1, max_length=64)
    threshold: float = Field(gt=0.0, le=1.0)


class SummaryRequest(BaseModel):
    """POST /v1/kyc/cases/{id}/summary."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1, max_length=200,
                              description="Chat model (default: kyc_summary_model).")
