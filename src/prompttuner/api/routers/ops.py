"""``/metrics`` (Prometheus) and ``/healthz``: for operators, no API key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from prompttuner.api.deps import ServiceDep
from prompttuner.api.metrics import render_metrics

router = APIRouter(tags=["cluster"])


@router.get("/metrics", response_class=Response)
def metrics(service: ServiceDep) -> Response:
    body, ctype = render_metrics(service)
    return Response(body, media_type=ctype)


@router.get("/healthz")
def healthz(service: ServiceDep) -> dict[str, Any]:
    ctl = service.controller
    return {"ok": ctl.loop_error is None, "loop_error": ctl.loop_error}
