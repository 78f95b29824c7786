"""``/metrics`` (Prometheus, the admin key) and ``/healthz``, ``/readyz`` (no key) for operators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from prompttuner.api.deps import Admin, ServiceDep
from prompttuner.api.metrics import render_metrics

router = APIRouter(tags=["cluster"])


@router.get("/metrics", response_class=Response)
def metrics(service: ServiceDep, _admin: Admin) -> Response:
    """Prometheus metrics of the whole service (all tenants): needs the admin key (a bearer token)."""
    body, ctype = render_metrics(service)
    return Response(body, media_type=ctype)


@router.get("/healthz")
def healthz(service: ServiceDep) -> dict[str, Any]:
    ctl = service.controller
    return {"ok": ctl.loop_error is None, "loop_error": ctl.loop_error}


@router.get("/readyz", responses={503: {"description": "a served model cannot load (says which and why)"}})
def readyz(service: ServiceDep) -> Response:
    """Readiness: every served base LLM has a warm worker or is still coming up; else 503 naming the
    model that cannot load, how often it failed and why."""
    import json

    info = service.controller.readiness()
    status = 200 if info["ready"] else 503
    return Response(json.dumps(info), status_code=status, media_type="application/json")
