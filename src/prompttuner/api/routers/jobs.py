"""``/v1/jobs``: create, list, get and cancel jobs; their events and their tuned prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import select

from prompttuner.api.deps import Auth, ServiceDep, own_job
from prompttuner.api.errors import AUTH_ERRORS, ApiError, responses
from prompttuner.api.job_creation import quote_request, submit_job
from prompttuner.api.schemas import ID_PATTERN, INT64_MAX, MAX_ID_CHARS, JobCreate
from prompttuner.api.serializers import event_json, job_json
from prompttuner.core.types import JobPhase
from prompttuner.state.models import EventRow, Job

router = APIRouter(tags=["jobs"])

JobId = Annotated[str, PathParam(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]


@router.post("/v1/jobs", status_code=201, responses=responses(*AUTH_ERRORS, 404, 413, 422, 503))
def create_job(service: ServiceDep, t: Auth, body: JobCreate) -> JSONResponse:
    """Create a job; 201 with its quote, or 422 with the tightest feasible deadline.

    404: the training or validation file does not exist; 503: the model cannot be loaded here.
    """
    job_id = submit_job(service, t, body)
    with service.store.session() as s:
        return JSONResponse(job_json(s.get(Job, job_id)), 201)  # type: ignore[arg-type]


@router.post("/v1/quotes", responses=responses(*AUTH_ERRORS, 404, 413, 422, 503))
def create_quote(service: ServiceDep, t: Auth, body: JobCreate) -> dict[str, Any]:
    """The quote ``POST /v1/jobs`` would give this body, creating nothing: finish time, cost, replicas,
    feasibility, and the predicted steps it plans with (``prediction`` names the source).

    With ``bank_warm_start`` and a ``training_file`` the Prompt Bank's selection runs now (``selection``:
    the chosen start, its probe accuracy and the seconds it took) and is kept for the job submitted next
    with the same body.  404: a file does not exist; 503: the model cannot be loaded, or the selection
    could not run.
    """
    return quote_request(service, t, body)


@router.get("/v1/jobs", responses=responses(*AUTH_ERRORS, 422))
def list_jobs(
    service: ServiceDep,
    t: Auth,
    status: Annotated[JobPhase | None, Query(description="only jobs in this phase")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="newest first, this many at most")] = 100,
) -> dict[str, Any]:
    with service.store.session() as s:
        q = select(Job).where(Job.tenant_id == t.id)
        if status is not None:
            q = q.where(Job.phase == status.value)
        rows = s.scalars(q.order_by(Job.created_at.desc()).limit(limit))
        return {"object": "list", "data": [job_json(r) for r in rows]}


@router.get("/v1/jobs/{job_id}", responses=responses(*AUTH_ERRORS, 404, 422))
def get_job(service: ServiceDep, t: Auth, job_id: JobId) -> dict[str, Any]:
    with service.store.session() as s:
        return job_json(own_job(s, t, job_id))


@router.get("/v1/jobs/{job_id}/events", responses=responses(*AUTH_ERRORS, 404, 422))
def job_events(
    service: ServiceDep,
    t: Auth,
    job_id: JobId,
    after: Annotated[int, Query(ge=0, le=INT64_MAX, description="the last event id you saw")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """State changes, allocations and progress, oldest first (``after``: the last id you saw)."""
    with service.store.session() as s:
        own_job(s, t, job_id)
        rows = s.scalars(
            select(EventRow)
            .where(EventRow.job_id == job_id, EventRow.id > after)
            .order_by(EventRow.id)
            .limit(limit)
        )
        return {"object": "list", "data": [event_json(e) for e in rows]}


@router.post("/v1/jobs/{job_id}/cancel", responses=responses(*AUTH_ERRORS, 404, 409, 422))
def cancel_job(service: ServiceDep, t: Auth, job_id: JobId) -> dict[str, Any]:
    """Cancel a job that has not ended; 409 when it has (also when it ends while the cancel is on its way:
    the controller's answer decides, not the phase read before it)."""
    with service.store.session() as s:
        row = own_job(s, t, job_id)
        if JobPhase(row.phase).terminal:
            raise ApiError(409, f"job {job_id} already ended ({row.phase})", param="job")
    cancelled = service.controller.cancel(job_id)
    with service.store.session() as s:
        row = own_job(s, t, job_id)
        if not cancelled:
            raise ApiError(409, f"job {job_id} already ended ({row.phase})", param="job")
        return job_json(row)


@router.get(
    "/v1/jobs/{job_id}/prompt",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        **responses(*AUTH_ERRORS, 404, 409, 422),
    },
)
def job_prompt(service: ServiceDep, t: Auth, job_id: JobId) -> FileResponse:
    """The tuned soft prompt (safetensors); 409 while the job has none."""
    with service.store.session() as s:
        row = own_job(s, t, job_id)
        if row.prompt_path is None or not Path(row.prompt_path).exists():
            raise ApiError(409, f"job {job_id} has no prompt yet ({row.phase})", param="job")
        return FileResponse(
            row.prompt_path, media_type="application/octet-stream", filename=f"{job_id}.safetensors"
        )
