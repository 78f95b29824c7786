"""``/dashboard``: a web page over the JSON API, and the read-only JSON it needs that the API lacks.

The page (``static/dashboard.html``, plain HTML/CSS/JS and the vendored uPlot, no build step) loads
without a key; every number it shows it fetches with the key the user gives it (pasted, or ``?key=``
once; the page keeps it in sessionStorage).  A tenant's key shows that tenant's jobs through the tenant
routes (``/v1/jobs``, ``/v1/jobs/{id}/events``, ``/v1/bank/prompts``, ``/v1/cluster``); the admin key shows
the operator's view through the admin routes here, which the tenant routes do not serve it:

- ``GET /v1/dashboard/pool`` (either key): who is looking, and the worker pool over time, replayed from
  the stored worker events (``provision``, ``worker_ready``, ``switch``, ``release``, ``worker_fail``)
  and the jobs' allocations (``allocate``, ``move``, ``preempt``, and the events that end a job): how many
  workers were provisioning, warm and busy at each change, each worker's life (with the base LLM it holds
  and the models it switched between), and the GPU-seconds charged to the caller's jobs (all jobs for the
  admin).  A tenant sees the pool as ``/v1/cluster`` shows it to tenants:
  counts and worker ids, no error text and no other tenant's job ids.
- ``GET /v1/admin/dashboard/jobs``, ``.../jobs/{job_id}/events``, ``GET /v1/admin/dashboard/bank`` (admin
  key): every tenant's jobs (with the tenant's name), any job's events, and every Prompt Bank entry with
  its owner.

All of it only reads: the store's rows, the bank's entries and ``service.controller``'s clock and
``cluster()``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse
from sqlalchemy import select

from prompttuner.api.deps import Admin, Caller, ServiceDep
from prompttuner.api.errors import AUTH_ERRORS, ApiError, responses
from prompttuner.api.schemas import ID_PATTERN, INT64_MAX, MAX_ID_CHARS
from prompttuner.api.serializers import event_json, job_json
from prompttuner.core.types import JobPhase
from prompttuner.state.models import EventRow, Job, Tenant
from prompttuner.state.serial import finite, json_safe

router = APIRouter(tags=["dashboard"])

STATIC = Path(__file__).resolve().parent.parent / "static"
# the files the page loads, and their types: nothing else under static/ is served
STATIC_FILES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
# the page talks only to this service; the key never leaves in a Referer
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

JobId = Annotated[str, PathParam(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]

WORKER_KINDS = ("provision", "worker_ready", "switch", "release", "worker_fail")
ALLOC_KINDS = ("allocate", "move", "preempt")
JOB_END_KINDS = ("finish", "cancel", "decline", "fail")  # "fail" with worker_lost is a lost replica only
DAY_S = 86400


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
def dashboard_page() -> HTMLResponse:
    """The page; it needs no key itself (the key is given to the page, which sends it to the API)."""
    return HTMLResponse((STATIC / "dashboard.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS)


@router.get("/dashboard/static/{name}", include_in_schema=False)
def dashboard_static(name: str) -> FileResponse:
    media = STATIC_FILES.get(name)
    if media is None:
        raise ApiError(404, f"no static file {name!r}", param="name")
    return FileResponse(STATIC / name, media_type=media, headers=PAGE_HEADERS)


# -- the worker pool over time ---------------------------------------------------------------------------


def _prefix(worker_id: str) -> str:
    """The controller's worker-id prefix (each start of the service draws a new one): ``w1a2b-``."""
    return re.sub(r"\d+$", "", worker_id)


def replay_pool(
    rows: list[EventRow], start: float, now: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pool's counts after each change (from ``start`` on) and each worker's life, from stored events.

    A worker is provisioning from its ``provision`` to its ``worker_ready``, warm from then until its
    ``release`` or ``worker_fail``, provisioning again from a ``switch`` to another base LLM until it is
    ready with that model (``model`` is the one it holds last, ``switches`` each change), and busy
    while warm and in the worker list of a job's latest allocation (until that job ends).  A new start
    of the service (a provision with a new worker-id prefix) ends the workers of the previous one: they
    went with it, without events of their own.
    """
    workers: dict[str, dict[str, Any]] = {}
    alive: set[str] = set()
    job_workers: dict[str, set[str]] = {}
    points: list[dict[str, Any]] = []
    current_prefix: str | None = None

    def end(wid: str, t: float, how: str, error: Any = None) -> None:
        alive.discard(wid)
        w = workers.get(wid)
        if w is not None and w["ended_at"] is None:
            w["ended_at"], w["end"] = t, how
            if error is not None:
                w["error"] = str(error)

    def counts(t: float) -> dict[str, Any]:
        busy_ids: set[str] = set()
        for ws in job_workers.values():
            busy_ids |= ws
        warm = [w for w in alive if workers[w]["ready_at"] is not None]
        return {
            "t": t,
            "provisioning": len(alive) - len(warm),
            "warm": len(warm),
            "busy": sum(1 for w in warm if w in busy_ids),
        }

    for e in rows:
        d = e.data if isinstance(e.data, dict) else {}
        wid = e.worker_id
        if e.kind == "provision" and wid:
            p = _prefix(wid)
            if current_prefix is not None and p != current_prefix:
                for old in [w for w in alive if _prefix(w) != p]:
                    end(old, e.time, "restart")
                job_workers.clear()
            current_prefix = p
            workers[wid] = {
                "id": wid,
                "model": d.get("model"),
                "requested_at": e.time,
                "ready_at": None,
                "ended_at": None,
                "end": None,
                "switches": [],
            }
            alive.add(wid)
        elif e.kind == "worker_ready" and wid in workers:
            workers[wid]["ready_at"] = e.time
        elif e.kind == "switch" and wid in workers:
            w = workers[wid]
            w["ready_at"] = None  # loading the other model
            w["model"] = d.get("to")
            w["switches"].append({"t": e.time, "from": d.get("from"), "to": d.get("to")})
        elif e.kind == "release" and wid:
            end(wid, e.time, "release")
        elif e.kind == "worker_fail" and wid:
            end(wid, e.time, "fail", d.get("error"))
        elif e.kind in ALLOC_KINDS and e.job_id:
            job_workers[e.job_id] = {str(w) for w in d.get("workers") or []}
        elif e.kind in JOB_END_KINDS and e.job_id and not d.get("worker_lost"):
            job_workers.pop(e.job_id, None)
        else:
            continue
        for ws in job_workers.values():
            ws &= alive
        c = counts(e.time)
        if e.time < start:
            points[:] = [{**c, "t": start}]  # the state when the window opens
        elif points and points[-1]["t"] == c["t"]:
            points[-1] = c
        else:
            points.append(c)
    points.append(counts(now))
    shown = [w for w in workers.values() if w["ended_at"] is None or w["ended_at"] >= start]
    return points, shown


@router.get("/v1/dashboard/pool", responses=responses(401, 422, 429))
def dashboard_pool(
    service: ServiceDep,
    caller: Caller,
    since_s: Annotated[
        int, Query(ge=60, le=7 * DAY_S, description="how far back the pool's history goes, in seconds")
    ] = 3600,
) -> dict[str, Any]:
    """Who is calling, the worker pool over time and the GPU-seconds held, busy and charged.

    ``series``: the counts of workers provisioning, warm and busy after each change (times in Unix
    seconds), from ``since_s`` ago to now; ``workers``: each worker's life in that window;
    ``gpu_seconds_charged``: the GPU-seconds of the caller's jobs (every tenant's for the admin key);
    ``gpu_seconds_held``, ``gpu_seconds_busy``: the live pool's, as ``/v1/cluster`` has them.
    """
    ctl = service.controller
    now = float(ctl.clock())
    start = now - since_s
    tenant = caller.tenant
    with service.store.session() as s:
        rows = list(
            s.scalars(
                select(EventRow)
                .where(EventRow.kind.in_(WORKER_KINDS + ALLOC_KINDS + JOB_END_KINDS))
                .order_by(EventRow.id)
            )
        )
        points, workers = replay_pool(rows, start, now)
        q = select(Job.gpu_seconds)
        if tenant is not None:
            q = q.where(Job.tenant_id == tenant.id)
        charged = sum(v for v in (finite(x) for x in s.scalars(q)) if v is not None)
    if tenant is not None:
        for w in workers:
            w.pop("error", None)
    info = ctl.cluster()
    return json_safe(  # type: ignore[no-any-return]
        {
            "object": "dashboard.pool",
            "viewer": {
                "role": "admin" if tenant is None else "tenant",
                "tenant": tenant.name if tenant else None,
            },
            "now": now,
            "since": start,
            "series": points,
            "workers": workers,
            "capacity": info.get("capacity"),
            "gpu_seconds_held": info.get("gpu_seconds_held"),
            "gpu_seconds_busy": info.get("gpu_seconds_busy"),
            "gpu_seconds_charged": round(charged, 3),
        }
    )


# -- the operator's view of jobs and the bank -------------------------------------------------------------


@router.get("/v1/admin/dashboard/jobs", responses=responses(*AUTH_ERRORS, 422))
def admin_jobs(
    service: ServiceDep,
    _admin: Admin,
    status: Annotated[JobPhase | None, Query(description="only jobs in this phase")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="newest first, this many at most")] = 100,
) -> dict[str, Any]:
    """Every tenant's jobs, newest first, each with its tenant's name (``tenant``)."""
    with service.store.session() as s:
        q = select(Job, Tenant.name).join(Tenant, Tenant.id == Job.tenant_id, isouter=True)
        if status is not None:
            q = q.where(Job.phase == status.value)
        rows = s.execute(q.order_by(Job.created_at.desc()).limit(limit)).all()
        return {"object": "list", "data": [{**job_json(job), "tenant": name} for job, name in rows]}


@router.get("/v1/admin/dashboard/jobs/{job_id}/events", responses=responses(*AUTH_ERRORS, 404, 422))
def admin_job_events(
    service: ServiceDep,
    _admin: Admin,
    job_id: JobId,
    after: Annotated[int, Query(ge=0, le=INT64_MAX, description="the last event id you saw")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """Any job's events, oldest first, as ``/v1/jobs/{job_id}/events`` gives a tenant its own."""
    with service.store.session() as s:
        if s.get(Job, job_id) is None:
            raise ApiError(404, f"no job {job_id!r}", param="job")
        rows = s.scalars(
            select(EventRow)
            .where(EventRow.job_id == job_id, EventRow.id > after)
            .order_by(EventRow.id)
            .limit(limit)
        )
        return {"object": "list", "data": [event_json(e) for e in rows]}


@router.get("/v1/admin/dashboard/bank", responses=responses(*AUTH_ERRORS, 422))
def admin_bank(
    service: ServiceDep,
    _admin: Admin,
    limit: Annotated[int, Query(ge=1, le=10_000, description="newest first, this many at most")] = 1000,
) -> dict[str, Any]:
    """Every Prompt Bank entry, public and private, with its owner (``owner``: a tenant's name or
    ``public``) and the job that tuned it."""
    from prompttuner import bank

    bank_dir = Path(str(service.controller.cfg.bank_dir))
    if not (bank_dir / "bank.sqlite").exists():
        return {"object": "list", "data": []}
    with bank.PromptBank(str(bank_dir), create=False) as b:
        entries = b.list(limit=limit)
    with service.store.session() as s:
        names = dict(s.execute(select(Tenant.id, Tenant.name)).all())
    data = [
        {
            "id": e.id,
            "model": e.model,
            "task": e.task_name,
            "labels": list(e.labels),
            "accuracy": e.accuracy,
            "steps": e.steps,
            "public": e.owner == bank.PUBLIC,
            "owner": "public" if e.owner == bank.PUBLIC else names.get(e.owner, e.owner),
            "source_job": e.source_job,
            "created_at": e.created_at,
        }
        for e in entries
    ]
    return json_safe({"object": "list", "data": data})  # type: ignore[no-any-return]
