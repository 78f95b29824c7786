"""INFless (ASPLOS'22) applied to prompt-tuning jobs, as ``design/baselines.md`` describes it.

Each job is one invocation of the function of its base LLM.  On arrival (first come first served, per
function) INFless picks the cheapest configuration -- here a replica count and GPU type -- whose
predicted finish meets the deadline, counting a cold start for the replicas no warm instance covers;
if none does, the fastest.  No admission control, and a running job is never resized (non-uniform
scaling sizes instances at launch only).  Warm instances of each LLM are kept by the hybrid histogram
policy: the idle-time histogram of the function (inter-arrival gaps of its invocations) gives a
pre-warm time (a low percentile) and a keep-alive time (a high percentile); with too few samples a
fixed keep-alive is used.  One instance per function seen is always kept warm.  Idle instances cost.

Interpretations (see benchmarks/results/sim_headline.md): the configuration space is the replica count
(data parallel) times the GPU type, since prompt tuning has no CPU-thread knob; the fragmentation
penalty does not apply because every replica is a whole GPU (or a fixed group for large models);
replicas of a job that are warm start at once, cold ones join when ready.
"""

from __future__ import annotations

import math
from collections import defaultdict

from prompttuner.core.types import Admission, ClusterSnapshot, Decisions, JobView, Provision, WorkerView
from prompttuner.scheduler.base import Policy, register
from prompttuner.scheduler.common import Index, finish_time, keep_warm_floor


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    if not s:
        return 0.0
    k = (len(s) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@register("infless")
class INFlessPolicy(Policy):
    def __init__(
        self,
        prewarm_percentile: float = 5.0,
        keepalive_percentile: float = 99.0,
        min_samples: int = 10,
        default_keepalive_s: float = 600.0,
        margin: float = 0.0,
    ) -> None:
        self.prewarm_p = prewarm_percentile
        self.keep_p = keepalive_percentile
        self.min_samples = min_samples
        self.default_keep = default_keepalive_s
        self.margin = margin

    def _windows(self, snap: ClusterSnapshot, model: str) -> tuple[float, float, float | None]:
        """(pre-warm, keep-alive, last arrival) of one function from its arrival history."""
        st = snap.arrivals.get(model)
        arr = list(st.recent_arrivals) if st is not None else []
        gaps = [b - a for a, b in zip(arr, arr[1:], strict=False)]
        last = arr[-1] if arr else None
        if len(gaps) < self.min_samples:
            return 0.0, self.default_keep, last
        return percentile(gaps, self.prewarm_p), percentile(gaps, self.keep_p), last

    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        ix = Index.build(snapshot)
        now = snapshot.now
        admissions = tuple(Admission(j, True) for j in snapshot.new_job_ids)
        alloc: dict[str, tuple[str, ...]] = {}
        provisions: list[Provision] = []
        release: list[str] = []
        released: set[str] = set()
        free = dict(ix.free)
        queues: dict[str, list[JobView]] = defaultdict(list)
        for j in ix.active:
            if not ix.by_job.get(j.job_id) and j.steps_left > 0:
                queues[j.spec.model].append(j)
        order = sorted((j for q in queues.values() for j in q), key=lambda j: (j.spec.arrival, j.job_id))
        blocked: set[str] = set()
        for j in order:
            model = j.spec.model
            if model in blocked:  # FCFS per function: later invocations wait behind the head
                continue
            prof = snapshot.models[model]
            g = prof.gpus_per_replica
            best: tuple[float, float, int, str] | None = None  # (cost, finish, n, gpu)
            fastest: tuple[float, float, int, str] | None = None
            for gpu in snapshot.capacity:
                if gpu not in prof.step_time_s:
                    continue
                warm = [w for w in ix.idle.get((model, gpu), []) if w.worker_id not in released]
                evictable = sum(
                    snapshot.models[m].gpus_per_replica
                    for (m, t), lst in ix.idle.items()
                    if t == gpu and m != model
                    for w in lst
                    if w.worker_id not in released
                )
                room = len(warm) + (max(0, free.get(gpu, 0)) + evictable) // g
                price = snapshot.gpu_types[gpu].price_per_hour / 3600.0 * g
                cs = prof.cold_start_s[gpu]
                # predicted like the runtime behaves: a start overhead, a pause when cold replicas join
                pause = self.rescale_overhead_s(prof, gpu, 0, 1)
                jp = self.rescale_overhead_s(prof, gpu, 1, 2)
                for n in range(1, min(prof.max_replicas, room) + 1):
                    nw = min(n, len(warm))
                    groups = [(nw, now), (n - nw, now + cs)]
                    f = finish_time(prof, gpu, j.steps_left, now, [x for x in groups if x[0] > 0], pause, jp)
                    cost = n * price * (f - now)
                    if f <= j.deadline - self.margin and (best is None or cost < best[0]):
                        best = (cost, f, n, gpu)
                    if fastest is None or f < fastest[1]:
                        fastest = (cost, f, n, gpu)
            pick = best or fastest
            if pick is None:
                blocked.add(model)
                continue
            _, _, n, gpu = pick
            warm_list = ix.idle.get((model, gpu), [])
            chosen: list[str] = []
            while warm_list and len(chosen) < n:
                w = warm_list.pop()
                if w.worker_id in released:
                    continue
                chosen.append(w.worker_id)
                released.add(w.worker_id)  # taken (not released): keeps it out of later picks
            cold = n - len(chosen)
            if cold > 0:
                need = cold * g - max(0, free.get(gpu, 0))
                if need > 0:  # evict the longest-idle instances of other functions
                    victims = sorted(
                        (
                            w
                            for (m, t), lst in ix.idle.items()
                            if t == gpu and m != model
                            for w in lst
                            if w.worker_id not in released
                        ),
                        key=lambda w: w.idle_since or 0.0,
                    )
                    for w in victims:
                        if need <= 0:
                            break
                        released.add(w.worker_id)
                        release.append(w.worker_id)
                        gw = snapshot.models[w.model].gpus_per_replica if w.model else 1
                        free[gpu] = free.get(gpu, 0) + gw
                        need -= gw
                cold = min(cold, max(0, free.get(gpu, 0)) // g)
                if cold > 0:
                    provisions.append(Provision(model, gpu, cold, job_id=j.job_id))
                    free[gpu] -= cold * g
            if chosen or cold > 0:
                alloc[j.job_id] = tuple(chosen)
            else:
                blocked.add(model)
        wake: float | None = None
        # keep-alive and pre-warm per function
        per_model_idle: dict[str, list[WorkerView]] = defaultdict(list)
        for (m, _t), lst in ix.idle.items():
            per_model_idle[m].extend(w for w in lst if w.worker_id not in released)
        busy_models = {w.model for w in snapshot.workers if w.job_id is not None}
        for model in sorted(set(per_model_idle) | set(snapshot.arrivals)):
            pre, keep, last = self._windows(snapshot, model)
            idle = sorted(per_model_idle.get(model, []), key=lambda w: w.idle_since or 0.0)
            keep_min = 0 if model in busy_models else 1  # one warm instance per function always
            for w in idle[: max(0, len(idle) - keep_min)]:
                since = w.idle_since if w.idle_since is not None else now
                if now - since >= keep:
                    release.append(w.worker_id)
                    released.add(w.worker_id)
                else:
                    t = since + keep
                    wake = t if wake is None else min(wake, t)
            has_warm = (
                bool(idle)
                or model in busy_models
                or any(p.model == model for p in provisions)
                or any(ix.prov_free.get((model, t)) for t in snapshot.capacity)
            )
            if not has_warm and last is not None:
                prof = snapshot.models[model]
                gpu = min(
                    (t for t in snapshot.capacity if t in prof.step_time_s),
                    key=lambda t: prof.step_time_s[t] * snapshot.gpu_types[t].price_per_hour,
                )
                prewarm_at = last + pre - prof.cold_start_s[gpu]
                if now >= prewarm_at and free.get(gpu, 0) >= prof.gpus_per_replica:
                    provisions.append(Provision(model, gpu, 1))
                    free[gpu] -= prof.gpus_per_replica
                elif now < prewarm_at:
                    wake = prewarm_at if wake is None else min(wake, prewarm_at)
        return keep_warm_floor(
            snapshot,
            Decisions(
                allocations=alloc,
                provision=tuple(provisions),
                release=tuple(release),
                admissions=admissions,
                wake_at=wake,
            ),
        )
