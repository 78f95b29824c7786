"""The naive operator's choice: a static reserved pool of warm workers per base LLM, FIFO.

The pool (replicas per model) is fixed up front, provisioned once and never released, so there are no
cold starts after the first and every GPU-second of the pool costs whether used or not.  Jobs of each
model run in arrival order on ``job_replicas`` replicas each (fewer if fewer are free), never resized.
"""

from __future__ import annotations

from collections.abc import Mapping

from prompttuner.core.types import Admission, ClusterSnapshot, Decisions, Provision
from prompttuner.scheduler.base import Policy, register
from prompttuner.scheduler.common import Index, keep_warm_floor


@register("reserved")
class ReservedPolicy(Policy):
    def __init__(
        self, pool: Mapping[str, int] | None = None, gpu_type: str | None = None, job_replicas: int = 2
    ) -> None:
        self.pool = dict(pool or {})
        self.gpu_type = gpu_type
        self.job_replicas = job_replicas

    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        ix = Index.build(snapshot)
        gpu = self.gpu_type or max(snapshot.capacity, key=lambda t: snapshot.capacity[t])
        admissions = tuple(Admission(j, True) for j in snapshot.new_job_ids)
        have: dict[str, int] = {}
        for w in snapshot.workers:
            if w.model is not None:
                have[w.model] = have.get(w.model, 0) + 1
        provisions: list[Provision] = []
        free = ix.free.get(gpu, 0)
        for model, want in sorted(self.pool.items()):
            missing = want - have.get(model, 0)
            g = snapshot.models[model].gpus_per_replica
            missing = min(missing, max(0, free) // g)
            if missing > 0:
                provisions.append(Provision(model, gpu, missing))
                free -= missing * g
        alloc: dict[str, tuple[str, ...]] = {}
        waiting = sorted(
            (j for j in ix.active if not ix.by_job.get(j.job_id) and j.steps_left > 0),
            key=lambda j: (j.spec.arrival, j.job_id),
        )
        blocked: set[str] = set()
        for j in waiting:
            model = j.spec.model
            if model in blocked:
                continue
            idle = ix.idle.get((model, gpu), [])
            if not idle:
                blocked.add(model)
                continue
            take = min(self.job_replicas, len(idle), snapshot.models[model].max_replicas)
            alloc[j.job_id] = tuple(idle.pop().worker_id for _ in range(take))
        return keep_warm_floor(
            snapshot, Decisions(allocations=alloc, provision=tuple(provisions), admissions=admissions)
        )
