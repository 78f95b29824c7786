"""ElasticFlow (ASPLOS'23) applied to prompt-tuning jobs, as ``design/baselines.md`` describes it.

Serverless and slotted: decisions happen at scheduling-slot boundaries (events inside a slot wait for
it).  At each boundary, all admitted jobs and the slot's arrivals are planned in deadline order on a
timeline of free GPUs with the *minimum satisfactory share*: the smallest legal (power-of-two) replica
count q such that giving the job min(q, free) in every slot from its deadline backwards covers its
remaining steps.  If any arrival of the slot cannot be planned to its deadline, all of that slot's
arrivals are declined (admission control).  Each job then runs at its plan's size for the current slot,
and leftover GPUs are handed out one power-of-two step at a time (work conserving).

In the prompt-tuning world it has no warm pool: every GPU added to a job is a fresh worker that pays a
cold start (instance start plus loading the base LLM), workers are released as soon as no job holds them,
and every rescale is a checkpoint-restart (:meth:`rescale_overhead_s`).

Interpretations (documented in benchmarks/results/sim_headline.md): the leftover hand-out follows the
paper's diminishing-returns greedy (the bump that costs the fewest extra GPU-seconds per extra GPU goes
first; ElasticFlow's released code sorts the other way, which the trace-replay compatibility mode
follows); the plan subtracts the cold start from the first slot of a job that has no ready replica; the
cluster is treated as homogeneous (the GPU type with the most capacity).
"""

from __future__ import annotations

import math

from prompttuner.core.types import (
    Admission,
    ClusterSnapshot,
    Decisions,
    JobView,
    ModelProfile,
    Provision,
    Quote,
    WorkerState,
)
from prompttuner.scheduler.base import Policy, register
from prompttuner.scheduler.common import Index, keep_warm_floor


def legal_sizes(prof: ModelProfile) -> list[int]:
    out = []
    n = 1
    while n <= prof.max_replicas:
        out.append(n)
        n *= 2
    return out


def legal_floor(n: int) -> int:
    """Largest power of two <= n (0 for n < 1)."""
    return 0 if n < 1 else 1 << (n.bit_length() - 1)


@register("elasticflow")
class ElasticFlowPolicy(Policy):
    def __init__(self, slot_s: float = 60.0, restart_s: float = 10.0, horizon_slots: int = 2000) -> None:
        self.slot = slot_s
        self.restart_s = restart_s
        self.horizon = horizon_slots

    def rescale_overhead_s(self, profile: ModelProfile, gpu_type: str, old_n: int, new_n: int) -> float:
        """Checkpoint-restart: ElasticFlow's base and per-size scaling overhead plus a process restart."""
        if old_n == new_n:
            return 0.0
        n = max(1, new_n * profile.gpus_per_replica)
        return 2.0 + 2.0 * (math.log2(n) + 1) + self.restart_s

    # ------------------------------------------------------------------ planning on a slot timeline
    def _plan(
        self,
        prof: ModelProfile,
        gpu: str,
        steps: float,
        deadline: float,
        start: float,
        free: list[int],
        first_slot_loss: float,
    ) -> tuple[list[int], float] | None:
        """Minimum satisfactory share: per-slot replica counts and the finish, or None if infeasible."""
        g = prof.gpus_per_replica
        last = min(len(free), int(math.ceil((deadline - start) / self.slot)))
        if last <= 0:
            return None
        for q in legal_sizes(prof):
            alloc = [0] * last
            left = steps
            for s in range(last - 1, -1, -1):
                n = legal_floor(min(q, free[s] // g))
                if n <= 0:
                    continue
                t0 = start + s * self.slot
                span = min(self.slot, deadline - t0) - (first_slot_loss if s == 0 else 0.0)
                if span <= 0:
                    continue
                alloc[s] = n
                left -= prof.throughput(gpu, n) * span
                if left <= 1e-9:
                    # finish: this slot end minus the unused part (the plan is filled backwards)
                    return alloc, self._finish(prof, gpu, steps, start, alloc, first_slot_loss)
        return None

    def _finish(
        self, prof: ModelProfile, gpu: str, steps: float, start: float, alloc: list[int], loss: float
    ) -> float:
        left = steps
        for s, n in enumerate(alloc):
            if n <= 0:
                continue
            span = self.slot - (loss if s == 0 else 0.0)
            r = prof.throughput(gpu, n)
            if r * span >= left:
                return start + s * self.slot + (loss if s == 0 else 0.0) + left / r
            left -= r * span
        return math.inf

    def _best_effort(
        self, prof: ModelProfile, gpu: str, steps: float, start: float, free: list[int], loss: float
    ) -> list[int]:
        """Planned past the deadline: the largest legal size that fits, slot after slot."""
        g = prof.gpus_per_replica
        alloc = [0] * len(free)
        left = steps
        for s in range(len(free)):
            n = legal_floor(min(prof.max_replicas, free[s] // g))
            if n <= 0:
                continue
            alloc[s] = n
            left -= prof.throughput(gpu, n) * (self.slot - (loss if s == 0 else 0.0))
            if left <= 0:
                break
        return alloc

    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        now = snapshot.now
        ix = Index.build(snapshot)
        release = [w.worker_id for lst in ix.idle.values() for w in lst]  # no warm pool
        boundary = math.ceil(now / self.slot - 1e-9) * self.slot
        if now < boundary - 1e-6:  # inside a slot: events wait for the boundary
            has_work = bool(ix.active)
            return keep_warm_floor(
                snapshot, Decisions(release=tuple(release), wake_at=boundary if has_work else None)
            )
        gpu = max(snapshot.capacity, key=lambda t: snapshot.capacity[t])
        total = snapshot.capacity[gpu]
        admitted = [j for j in ix.active if j.admitted and j.job_id not in ix.new and j.steps_left > 0]
        new = [j for j in ix.active if j.job_id in ix.new]

        def plan_all(jobs: list[JobView], strict_new: bool) -> tuple[dict[str, list[int]], bool]:
            free = [total] * self.horizon
            plans: dict[str, list[int]] = {}
            for j in sorted(jobs, key=lambda j: (j.deadline, j.job_id)):
                prof = snapshot.models[j.spec.model]
                ready = [w for w in ix.by_job.get(j.job_id, []) if w.state != WorkerState.PROVISIONING]
                loss = 0.0 if ready else prof.cold_start_s[gpu]
                p = self._plan(prof, gpu, j.steps_left, j.deadline, now, free, loss)
                if p is None:
                    if strict_new and j.job_id in ix.new:
                        return plans, False
                    alloc = self._best_effort(prof, gpu, j.steps_left, now, free, loss)
                else:
                    alloc = p[0]
                g = prof.gpus_per_replica
                for s, n in enumerate(alloc):
                    free[s] -= n * g
                plans[j.job_id] = alloc
            return plans, True

        plans, ok = plan_all(admitted + new, strict_new=True)
        accepted = ok
        if not ok:
            plans, _ = plan_all(admitted, strict_new=False)
        admissions: list[Admission] = []
        for j in new:
            if accepted:
                prof = snapshot.models[j.spec.model]
                f = self._finish(prof, gpu, j.steps_left, now, plans[j.job_id], prof.cold_start_s[gpu])
                admissions.append(Admission(j.job_id, True, "", Quote(f, 0.0, 0, True)))
            else:
                admissions.append(
                    Admission(
                        j.job_id,
                        False,
                        "admission control: some arrival of this slot cannot meet its deadline",
                    )
                )
        running = admitted + (new if accepted else [])
        size = {j.job_id: (plans.get(j.job_id) or [0])[0] for j in running}
        # hand out leftover GPUs: cheapest extra GPU-seconds per extra GPU first (paper's greedy)
        used = sum(size[j.job_id] * snapshot.models[j.spec.model].gpus_per_replica for j in running)
        left = total - used
        while left > 0:
            best: tuple[float, str] | None = None
            for j in running:
                prof = snapshot.models[j.spec.model]
                n = size[j.job_id]
                nxt = 1 if n == 0 else n * 2
                if nxt > prof.max_replicas or (nxt - n) * prof.gpus_per_replica > left:
                    continue
                if n == 0:
                    key = -math.inf
                else:
                    t_n = j.steps_left / prof.throughput(gpu, n)
                    t_2 = j.steps_left / prof.throughput(gpu, nxt)
                    extra = nxt * t_2 - n * t_n
                    key = extra / ((nxt - n) * prof.gpus_per_replica)
                if best is None or key < best[0]:
                    best = (key, j.job_id)
            if best is None:
                break
            jid = best[1]
            jv = next(j for j in running if j.job_id == jid)
            prof = snapshot.models[jv.spec.model]
            n = size[jid]
            nxt = 1 if n == 0 else n * 2
            left -= (nxt - n) * prof.gpus_per_replica
            size[jid] = nxt
        # turn sizes into workers: shrink releases, growth provisions fresh workers (cold start each)
        alloc: dict[str, tuple[str, ...]] = {}
        provisions: list[Provision] = []
        freed_gpus = 0
        for j in running:
            ws = ix.by_job.get(j.job_id, [])
            n = size[j.job_id]
            if len(ws) > n:
                keep = sorted(ws, key=lambda w: w.state == WorkerState.PROVISIONING)[:n]
                drop = [w for w in ws if w not in keep]
                alloc[j.job_id] = tuple(w.worker_id for w in keep)
                release.extend(w.worker_id for w in drop)
                freed_gpus += sum(snapshot.models[j.spec.model].gpus_per_replica for _ in drop)
        free_now = (
            ix.free.get(gpu, 0)
            + freed_gpus
            + sum(
                snapshot.models[w.model].gpus_per_replica for lst in ix.idle.values() for w in lst if w.model
            )
        )
        for j in sorted(running, key=lambda j: (j.deadline, j.job_id)):
            ws = ix.by_job.get(j.job_id, [])
            n = size[j.job_id]
            g = snapshot.models[j.spec.model].gpus_per_replica
            add = min(n - len(ws), free_now // g)
            if add > 0:
                provisions.append(Provision(j.spec.model, gpu, add, job_id=j.job_id))
                free_now -= add * g
        return keep_warm_floor(
            snapshot,
            Decisions(
                allocations=alloc,
                provision=tuple(provisions),
                release=tuple(dict.fromkeys(release)),
                admissions=tuple(admissions),
                wake_at=boundary + self.slot if (running or ix.active) else None,
            ),
        )
