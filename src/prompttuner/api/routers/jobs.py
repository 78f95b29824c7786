"""``/v1/jobs``: create, list, get and cancel jobs; their events and their tuned prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import select

from prompttuner.api.deps import Auth, ServiceDep, own_job
from prompttuner.api.errors import ApiError
from prompttuner.api.job_creation import submit_job
from prompttuner.api.schemas import JobCreate
from prompttuner.api.serializers import event_json, job_json
from prompttuner.core.types import JobPhase
from prompttuner.state.models import EventRow, Job

router = APIRouter(tags=["jobs"])


@router.post("/v1/jobs", status_code=201)
def create_job(service: ServiceDep, t: Auth, body: JobCreate) -> JSONResponse:
    """Create a job; 201 with its quote, or 422 with the tightest feasible deadline."""
    job_id = submit_job(service, t, body)
    with service.store.session() as s:
        return JSONResponse(job_json(s.get(Job, job_id)), 201)  # type: ignore[arg-type]


@router.get("/v1/jobs")
def list_jobs(service: ServiceDep, t: Auth, status: str | None = None, limit: int = 100) -> dict[str, Any]:
    with service.store.session() as s:
        q = select(Job).where(Job.tenant_id == t.id)
        if status:
            q = q.where(Job.phase == status)
        rows = s.scalars(q.order_by(Job.created_at.desc()).limit(max(1, min(limit, 1000))))
        return {"object": "list", "data": [job_json(r) for r in rows]}


@router.get("/v1/jobs/{job_id}")
def get_job(service: ServiceDep, t: Auth, job_id: str) -> dict[str, Any]:
    with service.store.session() as s:
        return job_json(own_job(s, t, job_id))


@router.get("/v1/jobs/{job_id}/events")
def job_events(
    service: ServiceDep, t: Auth, job_id: str, after: int = 0, limit: int = 1000
) -> dict[str, Any]:
    """State changes, allocations and progress, oldest first (``after``: the last id you saw)."""
    with service.store.session() as s:
        own_job(s, t, job_id)
        rows = s.scalars(
            select(EventRow)
            .where(EventRow.job_id == job_id, EventRow.id > after)
            .order_by(EventRow.id)
            .limit(max(1, min(limit, 10_000)))
        )
        return {"object": "list", "data": [event_json(e) for e in rows]}


@router.post("/v1/jobs/{job_id}/cancel")
def cancel_job(service: ServiceDep, t: Auth, job_id: str) -> dict[str, Any]:
    with service.store.session() as s:
        row = own_job(s, t, job_id)
        if JobPhase(row.phase).terminal:
            raise ApiError(409, f"job {job_id} already ended ({row.phase})", param="job")
    service.controller.cancel(job_id)
    with service.store.session() as s:
        return job_json(own_job(s, t, job_id))


@router.get("/v1/jobs/{job_id}/prompt")
def job_prompt(service: ServiceDep, t: Auth, job_id: str) -> FileResponse:
    """The tuned soft prompt (safetensors)."""
    with service.store.session() as s:
        row = own_job(s, t, job_id)
        if row.prompt_path is None or not Path(row.prompt_path).exists():
            raise ApiError(409, f"job {job_id} has no prompt yet ({row.phase})", param="job")
        return FileResponse(
            row.prompt_path, media_type="application/octet-stream", filename=f"{job_id}.safetensors"
        )
