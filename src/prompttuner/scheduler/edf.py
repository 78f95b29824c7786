"""Earliest deadline first: each job, in deadline order, takes what it can use from what is free.

Recomputed from scratch at every decision, so an earlier deadline preempts a later one.  No admission
control and no warm pool: idle workers that no job takes are released at once, and a job that needs more
replicas than warm ones exist pays cold starts.  It runs on PromptTuner's runtime (warm moves are cheap).
"""

from __future__ import annotations

from prompttuner.core.types import Admission, ClusterSnapshot, Decisions, Provision, WorkerState
from prompttuner.scheduler.base import Policy, register
from prompttuner.scheduler.common import Index, keep_warm_floor


def cheapest_type(snap: ClusterSnapshot, model: str, room: dict[str, int]) -> str | None:
    """The GPU type with room for one replica of ``model`` and the lowest cost per step."""
    prof = snap.models[model]
    best: tuple[float, str] | None = None
    for gpu, left in room.items():
        if gpu not in prof.step_time_s or left < prof.gpus_per_replica:
            continue
        c = prof.step_time_s[gpu] * snap.gpu_types[gpu].price_per_hour
        if best is None or c < best[0]:
            best = (c, gpu)
    return None if best is None else best[1]


@register("edf")
class EDFPolicy(Policy):
    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        ix = Index.build(snapshot)
        jobs = sorted(ix.active, key=lambda j: (j.deadline, j.job_id))
        admissions = tuple(Admission(j.job_id, True) for j in jobs if j.job_id in ix.new)
        room = dict(snapshot.capacity)
        grant: dict[str, tuple[str, int]] = {}
        for j in jobs:
            if not any(v > 0 for v in room.values()):
                break  # the cluster is handed out: the rest get nothing (a long queue stays cheap)
            if j.steps_left <= 0:
                continue
            prof = snapshot.models[j.spec.model]
            own = ix.by_job.get(j.job_id, [])
            gpu = own[0].gpu_type if own else cheapest_type(snapshot, j.spec.model, room)
            if gpu is None:
                continue
            n = min(prof.max_replicas, room.get(gpu, 0) // prof.gpus_per_replica)
            if n <= 0:
                continue
            grant[j.job_id] = (gpu, n)
            room[gpu] -= n * prof.gpus_per_replica
        alloc: dict[str, tuple[str, ...]] = {}
        release: list[str] = []
        keep: dict[str, list[str]] = {}
        # shrink first so the freed workers can go to other jobs of the same model
        for j in jobs:
            own = ix.by_job.get(j.job_id, [])
            if not own and j.job_id not in grant:
                keep[j.job_id] = []
                continue
            n = grant.get(j.job_id, ("", 0))[1]
            ordered = sorted(own, key=lambda w: w.state == WorkerState.PROVISIONING)
            keep[j.job_id] = [w.worker_id for w in ordered[:n]]
            for w in ordered[n:]:
                ix.idle[(w.model or "", w.gpu_type)].append(w)
            if len(own) > n:
                alloc[j.job_id] = tuple(keep[j.job_id])
        free = dict(ix.free)
        provisions: list[Provision] = []
        for j in jobs:
            if j.job_id not in grant:
                continue
            gpu, n = grant[j.job_id]
            prof = snapshot.models[j.spec.model]
            chosen = keep[j.job_id]
            if len(chosen) >= n:
                continue
            key = (j.spec.model, gpu)
            idle = ix.idle.get(key, [])
            while len(chosen) < n and idle:
                chosen.append(idle.pop().worker_id)
            pf = ix.prov_free.get(key, [])
            while len(chosen) < n and pf:
                chosen.append(pf.pop().worker_id)
            alloc[j.job_id] = tuple(chosen)
            missing = n - len(chosen)
            if missing > 0:
                # make room by releasing idle workers of other models on this GPU type
                for (m, t), lst in ix.idle.items():
                    while lst and t == gpu and free.get(gpu, 0) < missing * prof.gpus_per_replica:
                        w = lst.pop(0)
                        release.append(w.worker_id)
                        free[gpu] = free.get(gpu, 0) + (snapshot.models[m].gpus_per_replica if m else 1)
                cold = min(missing, max(0, free.get(gpu, 0)) // prof.gpus_per_replica)
                if cold > 0:
                    provisions.append(Provision(j.spec.model, gpu, cold, job_id=j.job_id))
                    free[gpu] -= cold * prof.gpus_per_replica
        already = set(release)
        for lst in ix.idle.values():
            release.extend(w.worker_id for w in lst if w.worker_id not in already)
        return keep_warm_floor(
            snapshot,
            Decisions(
                allocations=alloc, provision=tuple(provisions), release=tuple(release), admissions=admissions
            ),
        )
