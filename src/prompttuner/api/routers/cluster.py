"""``/v1/models`` and ``/v1/cluster``: what can be tuned, and the worker pool.

A tenant sees the pool without the operator's details (no worker PIDs, no controller or policy error
text) and other tenants' job ids replaced by "(another tenant)"; the admin key sees all of it, with every
tenant's job counts by phase.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select

from prompttuner.api.deps import Auth, Caller, ServiceDep
from prompttuner.core.types import JobPhase
from prompttuner.state.models import Job

router = APIRouter(tags=["cluster"])

OPERATOR_ONLY = ("loop_error", "policy_error")  # top-level fields a tenant does not see
WORKER_OPERATOR_ONLY = ("pid",)  # worker fields a tenant does not see


@router.get("/v1/models")
def models(service: ServiceDep, _t: Auth) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": m} for m in service.models]}


@router.get("/v1/cluster")
def cluster(service: ServiceDep, caller: Caller) -> dict[str, Any]:
    """The worker pool: the operator's full view with the admin key, a tenant's view with its key."""
    info = service.controller.cluster()
    t = caller.tenant
    with service.store.session() as s:
        if t is None:  # the admin key
            info["jobs"] = dict(s.execute(select(Job.phase, func.count()).group_by(Job.phase)).all())
            return info
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
        for k in WORKER_OPERATOR_ONLY:
            w.pop(k, None)
    for k in OPERATOR_ONLY:
        info.pop(k, None)
    info["your_jobs"] = counts
    return info
