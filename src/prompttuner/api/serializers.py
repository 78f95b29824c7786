"""How stored rows are shown: the JSON of a job, a file and an event in API responses.

These never raise on a stored value, whatever wrote it: a number that is not finite (JSON has no NaN or
infinity) is shown as null, and so is the ISO form of a time no calendar date can show.
"""

from __future__ import annotations

from typing import Any

from prompttuner.state.models import DataFile, EventRow, Job
from prompttuner.state.serial import finite, iso_time, json_safe


def job_json(row: Job) -> dict[str, Any]:
    q = row.quote
    slo = row.slo()
    gpu_s = finite(row.gpu_seconds)
    out = {
        "id": row.id,
        "object": "prompt_tuning.job",
        "model": row.model,
        "status": row.phase,
        "created_at": row.created_at,
        "deadline": row.deadline,
        "deadline_iso": iso_time(row.deadline),
        "training_file": row.training_file,
        "validation_file": row.validation_file,
        "labels": row.labels,
        "description": row.description,
        "target_accuracy": row.target_accuracy,
        "max_steps": row.max_steps,
        "hyperparameters": row.hyperparameters,
        "bank_warm_start": row.bank_warm_start,
        "best_effort": row.best_effort,
        "init": row.init,
        "quote": q,
        "progress": {
            "steps_done": row.steps_done,
            "accuracy": row.accuracy,
            "loss": row.loss,
            "checkpoint_step": row.checkpoint_step,
        },
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "deadline_met": row.deadline_met,
        "target_reached": row.target_reached,
        "slo_met": slo.slo_met if slo is not None else None,  # the target reached by the deadline
        "gpu_seconds": round(gpu_s, 3) if gpu_s is not None else None,
        "prompt": f"/v1/jobs/{row.id}/prompt" if row.prompt_path else None,
        "error": row.error,
    }
    return json_safe(out)  # type: ignore[no-any-return]


def file_json(f: DataFile) -> dict[str, Any]:
    out = {
        "id": f.id,
        "object": "file",
        "filename": f.filename,
        "bytes": f.bytes,
        "rows": f.rows,
        "labels": f.labels,
        "created_at": f.created_at,
    }
    return json_safe(out)  # type: ignore[no-any-return]


def event_json(e: EventRow) -> dict[str, Any]:
    out = {"id": e.id, "time": e.time, "kind": e.kind, "worker": e.worker_id, "data": e.data}
    return json_safe(out)  # type: ignore[no-any-return]
