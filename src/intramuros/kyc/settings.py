"""The KYC workload's settings: thresholds, list refresh, summaries."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class KycSettings(BaseModel):
    """The kyc workload's section of the settings (flat names: ``--kyc-...`` flags,
    ``INTRAMUROS_...`` variables and TOML keys, like every setting)."""

    model_config = ConfigDict(extra="forbid")

    kyc_threshold: float = Field(
        default=0.82, gt=0.0, le=1.0,
        description="KYC: default score from which a match alerts and opens a case "
        "(tenants may set their own).",
    )
    kyc_min_score: float = Field(
        default=0.7, ge=0.0, le=1.0,
        description="KYC: lowest score returned as a (non-alerting) match.",
    )
    kyc_refresh_seconds: float = Field(
        default=2.0, ge=0.0,
        description="KYC: how often (seconds) the server checks for re-imported lists and "
        "swaps in the new index; 0 checks before every screening.",
    )
    kyc_matcher_processes: int = Field(
        default=1, ge=0, le=32,
        description="KYC: processes that match names for the server, each with its own copy "
        "of the lists' index, so that matching runs beside the server rather than in its "
        "threads; 0 matches in the server's own threads.",
    )
    kyc_summary_model: str = Field(
        default="smollm2-135m-instruct",
        description="KYC: chat model that drafts case summaries (marked machine-drafted).",
    )
