"""Wire types of the fine-tuning jobs API: OpenAI's shape, Mistral's spellings accepted.

A job made with Mistral's fields (``training_files``, ``hyperparameters.
training_steps``, ``auto_start``) is answered in Mistral's shape and status
names; any other in OpenAI's. Imports nothing of ours but the wire bases.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from intramuros.protocol.base import Request, Wire, at_most

Auto = Literal["auto"]
# OpenAI's statuses; ``validated`` is a job made with ``auto_start: false`` waiting for
# its start (OpenAI's clients see ``queued``).
Status = Literal["validating_files", "validated", "queued", "running", "succeeded", "failed",
                 "cancelled"]  # fmt: skip
FINISHED: tuple[str, ...] = ("succeeded", "failed", "cancelled")

MISTRAL_STATUS: dict[str, str] = {
    "validating_files": "VALIDATING", "validated": "VALIDATED", "queued": "QUEUED",
    "running": "RUNNING", "succeeded": "SUCCESS", "failed": "FAILED", "cancelled": "CANCELLED",
}  # fmt: skip
FROM_MISTRAL: dict[str, str] = {v: k for k, v in MISTRAL_STATUS.items()} | {
    "STARTED": "running", "FAILED_VALIDATION": "failed",
    "CANCELLATION_REQUESTED": "running",
}  # fmt: skip

# What a job may ask for: a run that fits a machine's working day, never an unbounded one.
MAX_EPOCHS = 50
MAX_BATCH = 256
MAX_STEPS = 100_000
MAX_SEQ_LEN = 32_768
MAX_SUFFIX = 40


class Hyperparameters(Request):
    """OpenAI's (``n_epochs``, ``batch_size``, ``learning_rate_multiplier``, each may be
    ``"auto"``) and Mistral's (``training_steps``, ``learning_rate``, ``epochs``,
    ``seq_len``) spellings."""

    n_epochs: Auto | Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = "auto"
    batch_size: Auto | Annotated[int, Field(ge=1, le=MAX_BATCH)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] = "auto"
    training_steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] | None = None
    learning_rate: Annotated[float, Field(gt=0, le=1)] | None = None
    epochs: Annotated[float, Field(gt=0, le=MAX_EPOCHS)] | None = None
    seq_len: Annotated[int, Field(ge=16, le=MAX_SEQ_LEN)] | None = None
    weight_decay: Annotated[float, Field(ge=0, le=1)] | None = None
    warmup_fraction: Annotated[float, Field(ge=0, le=1)] | None = None
    fim_ratio: Annotated[float, Field(ge=0, le=0)] | None = None  # code completion: not ours
    lora_rank: Annotated[int, Field(ge=1, le=256)] | None = None


class Supervised(Request):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(Request):
    type: Literal["supervised"] = "supervised"
    supervised: Supervised = Field(default_factory=Supervised)

    @field_validator("type", mode="before")
    @classmethod
    def _only_supervised(cls, value: Any) -> Any:
        if value in ("dpo", "reinforcement"):
            raise ValueError(f"method '{value}' is not offered here; use 'supervised'")
        return value


class TrainingFile(Request):
    """Mistral's entry of ``training_files``."""

    file_id: str = Field(max_length=64)
    weight: Annotated[float, Field(gt=0, le=1000)] = 1.0


class CreateJob(Request):
    """``POST /v1/fine_tuning/jobs``: OpenAI's body, or Mistral's."""

    model: str = Field(max_length=200)
    training_file: str | None = Field(default=None, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    training_files: Annotated[list[TrainingFile] | None, at_most(16, "training files")] = None
    validation_files: Annotated[list[str] | None, at_most(16, "validation files")] = None
    suffix: str | None = Field(default=None, max_length=MAX_SUFFIX)
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None
    metadata: Annotated[dict[str, str] | None, at_most(16, "metadata keys")] = None
    integrations: Annotated[list[Any] | None, at_most(0, "integrations")] = None
    auto_start: bool | None = None
    job_type: Literal["completion"] | None = None
    # Ours: also write a standalone GGUF (the adapter merged into the base).
    merge: bool = False
    # Ours: a bundled bench suite to score the model on, before and after training.
    suite: str | None = Field(default=None, max_length=100)

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, value: str | None) -> str | None:
        if value is not None and not all(c.isascii() and (c.isalnum() or c in "-_")
                                         for c in value):  # fmt: skip
            raise ValueError("suffix may hold letters, digits, '-' and '_' only")
        return value or None

    @property
    def mistral(self) -> bool:
        """Whether the body speaks Mistral's dialect (then so does the answer)."""
        hp = self.hyperparameters
        return (self.training_files is not None or self.auto_start is not None
                or self.job_type is not None
                or (hp is not None and (hp.training_steps is not None
                                        or hp.learning_rate is not None)))  # fmt: skip


class JobError(Wire):
    code: str
    message: str
    param: str | None = None


class Job(Wire):
    """OpenAI's ``fine_tuning.job`` (Mistral's fields ride along in its dialect)."""

    id: str
    object: str = "fine_tuning.job"
    created_at: int
    finished_at: int | None = None
    model: str
    fine_tuned_model: str | None = None
    organization_id: str
    status: str
    hyperparameters: dict[str, Any]
    method: dict[str, Any] | None = None
    training_file: str | None = None
    validation_file: str | None = None
    result_files: list[str] = Field(default_factory=list)
    trained_tokens: int | None = None
    error: JobError | None = None
    seed: int
    suffix: str | None = None
    estimated_finish: int | None = None
    integrations: list[Any] = Field(default_factory=list)
    metadata: dict[str, str] | None = None


class JobEvent(Wire):
    id: str
    object: str = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class Checkpoint(Wire):
    id: str
    object: str = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float | None]


class Page(Wire):
    object: str = "list"
    data: list[Any]
    has_more: bool
    total: int | None = None
