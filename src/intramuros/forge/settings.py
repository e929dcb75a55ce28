"""The fine-tuning workload's settings: the worker's share of the machine, per-tenant limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ForgeSettings(BaseModel):
    """The forge workload's section of the settings (flat names, like every setting)."""

    model_config = ConfigDict(extra="forbid")

    forge_worker: bool = Field(
        default=True,
        description="Forge: the server starts the training worker when a job is queued "
        "(off: jobs wait for `intramuros forge work` run elsewhere on this machine).",
    )
    forge_threads: int = Field(
        default=0, ge=0, le=256,
        description="Forge: CPU threads a training job uses (0: every core).",
    )
    forge_nice: int = Field(
        default=10, ge=0, le=19,
        description="Forge: CPU priority the training worker lowers itself to (Linux nice), "
        "so that serving keeps the machine's attention.",
    )
    forge_max_active_jobs: int = Field(
        default=2, ge=1,
        description="Forge: jobs a tenant may have not yet finished (validating, queued or "
        "running); more get 429.",
    )
    forge_monthly_trained_tokens: int = Field(
        default=50_000_000, ge=0,
        description="Forge: tokens a tenant may train on per calendar month (UTC), counted "
        "from each job's estimate when it is created; 0: no limit.",
    )
    forge_seq_len: int = Field(
        default=512, ge=16, le=32_768,
        description="Forge: default sequence length (tokens); longer examples are cut to it "
        "and listed in the data report.",
    )
    forge_checkpoint_every: int = Field(
        default=20, ge=1,
        description="Forge: steps between the adapter checkpoints a job resumes from.",
    )
    forge_eval_items: int = Field(
        default=100, ge=0, le=10_000,
        description="Forge: items of the job's bench suite (or scored validation lines) the "
        "base and the fine-tuned model answer for the task score; 0: none.",
    )
    forge_tokens_per_second: float = Field(
        default=120.0, gt=0,
        description="Forge: training speed assumed for duration estimates (tokens/s; "
        "measured on 2 cores for SmolLM2-135M).",
    )
    forge_worker_idle_seconds: float = Field(
        default=30.0, ge=0, le=3600,
        description="Forge: how long the worker waits for another job before it exits "
        "(it keeps the base model loaded meanwhile: the next job starts at once).",
    )
    forge_stale_seconds: float = Field(
        default=60.0, gt=0,
        description="Forge: a running job whose worker has not reported for this long is "
        "taken over (and resumed from its last checkpoint).",
    )
