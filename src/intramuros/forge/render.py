"""A stored job as the client that made it reads it: OpenAI's object, or Mistral's."""

from __future__ import annotations

from typing import Any

from intramuros.forge import protocol as p
from intramuros.forge.jobs import JobRow

# The worker's status for a job between steps: OpenAI and Mistral only know these.
_OPENAI_STATUS = {"validated": "queued"}


def render_job(row: JobRow) -> dict[str, Any]:
    """The job in its dialect (``row.dialect``), with our evaluation under ``intramuros``."""
    hyper = row.hyper or {}
    asked = row.requested
    openai_hp = {
        "n_epochs": hyper.get("n_epochs", asked.get("n_epochs", "auto")),
        "batch_size": hyper.get("batch_size", asked.get("batch_size", "auto")),
        "learning_rate_multiplier": hyper.get("learning_rate_multiplier",
                                              asked.get("learning_rate_multiplier", "auto")),
    }  # fmt: skip
    result = row.result or {}
    ours = {
        "report": row.report, "evaluation": result.get("evaluation"),
        "lineage": result.get("lineage"), "hyperparameters": hyper or None,
        "cancel_requested": row.cancel_requested, "adapter_sha256": result.get("sha256"),
        "files": result.get("files"),
    }  # fmt: skip
    error = p.JobError(**row.error) if row.error else None
    if row.dialect == "mistral":
        return {
            "id": row.id, "object": "job", "job_type": "completion", "model": row.model,
            "status": ("CANCELLATION_REQUESTED" if row.cancel_requested
                       and row.status == "running" else p.MISTRAL_STATUS[row.status]),
            "auto_start": row.auto_start,
            "created_at": int(row.created_at), "modified_at": int(row.modified_at),
            "training_files": [row.training_file],
            "validation_files": [row.validation_file] if row.validation_file else [],
            "hyperparameters": {
                "training_steps": hyper.get("training_steps"),
                "learning_rate": hyper.get("learning_rate", asked.get("learning_rate")),
                "epochs": hyper.get("n_epochs", asked.get("epochs")),
                "seq_len": hyper.get("seq_len", asked.get("seq_len")),
            },
            "fine_tuned_model": row.fine_tuned_model, "suffix": row.suffix,
            "integrations": [], "trained_tokens": row.trained_tokens,
            "metadata": {"expected_duration_seconds": (row.report or {}).get(
                "training", {}).get("estimated_seconds")},
            "error": error.model_dump() if error else None, "intramuros": ours,
        }  # fmt: skip
    job = p.Job(
        id=row.id, created_at=int(row.created_at),
        finished_at=int(row.finished_at) if row.finished_at else None, model=row.model,
        fine_tuned_model=row.fine_tuned_model, organization_id=row.tenant,
        status=_OPENAI_STATUS.get(row.status, row.status), hyperparameters=openai_hp,
        method={"type": "supervised", "supervised": {"hyperparameters": openai_hp}},
        training_file=row.training_file, validation_file=row.validation_file,
        result_files=list(result.get("result_files", [])), trained_tokens=row.trained_tokens,
        error=error, seed=row.seed, suffix=row.suffix,
        estimated_finish=int(row.estimated_finish) if row.estimated_finish
        and row.status not in p.FINISHED else None,
        metadata=row.metadata,
    )  # fmt: skip
    return job.model_dump() | {"intramuros": ours}
