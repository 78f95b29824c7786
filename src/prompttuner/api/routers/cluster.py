"""``/v1/models`` and ``/v1/cluster``: what can be tuned, and the worker pool (other tenants' jobs hidden)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select

from prompttuner.api.deps import Auth, ServiceDep
from prompttuner.core.types import JobPhase
from prompttuner.state.models import Job

router = APIRouter(tags=["cluster"])


@router.get("/v1/models")
def models(service: ServiceDep, _t: Auth) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": m} for m in service.models]}


@router.get("/v1/cluster")
def cluster(service: ServiceDep, t: Auth) -> dict[str, Any]:
    info = service.controller.cluster()
    with service.store.session() as s:
        mine = set(
            s.scalars(
                select(Job.id).where(
                    Job.tenant_id == t.id, Job.phase.not_in([p.value for p in JobPhase if p.terminal])
                )
            )
        )
        counts = dict(
            s.execute(select(Job.phase, func.count()).where(Job.tenant_id == t.id).group_by(Job.phase)).all()
        )
    for w in info["workers"]:  # other tenants' job ids stay private
        if w["job"] is not None and w["job"] not in mine:
            w["job"] = "(another tenant)"
    info["your_jobs"] = counts
    return info
