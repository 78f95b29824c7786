"""The PromptTuner policy: warm pools per base LLM, fewest GPUs per deadline, cheap re-allocation.

Mechanisms (each can be switched off for the ablation):

- ``warm_pool``: keep idle workers of each base LLM warm, sized from the forecast arrivals of that model
  (the ``pool_quantile`` of Poisson arrivals during one cold start, times the replicas a job of that model
  takes now), pre-warm up to that size, and release idle workers above it once they have been idle
  ``keep_factor`` cold starts (keeping longer costs more than the cold starts they save).  Off: idle
  workers are released at once and nothing is pre-warmed.
- ``min_gpus``: each job gets the fewest replicas that meet its deadline (with a safety ``margin``),
  in earliest-deadline-first order.  Off: each job takes the fastest allocation it can get.
- ``elastic``: at every decision, jobs that fall behind grow, taking warm idle workers or the surplus of
  jobs that are ahead (a move costs a warm move: only prompt and optimizer state travel); idle warm
  workers can be lent to running jobs (``boost``, off by default: the ablation shows the pauses of
  lending and taking back cost more than the speed-up buys) and taken back when needed.  Off: a job
  keeps the allocation it started with.
- ``admission``: a new job whose deadline cannot be met even with every worker it could get (warm now,
  cold starts, and capacity that running jobs free later) is declined with a quote that names the
  tightest deadline that could be met.  A job that misses only by ``admit_tolerance`` of its time left
  is admitted "at risk" and served after the jobs that are on track.  Off: every job is admitted.

Cold starts happen only for replicas the warm pool, provisioning workers and surplus cannot cover in time.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field

from prompttuner.core.types import (
    Admission,
    ArrivalStats,
    ClusterSnapshot,
    Decisions,
    JobPhase,
    JobSpec,
    JobView,
    ModelProfile,
    Provision,
    Quote,
    WorkerState,
    WorkerView,
)
from prompttuner.scheduler.base import Policy, register
from prompttuner.scheduler.common import (
    Index,
    Key,
    finish_time,
    keep_warm_floor,
    min_replicas,
    prefix_groups,
    rates,
    scan,
)


def poisson_quantile(mean: float, q: float) -> int:
    """Smallest k with P(Poisson(mean) <= k) >= q."""
    if mean <= 0:
        return 0
    k = 0
    p = math.exp(-mean)
    cdf = p
    while cdf < q and k < 10_000:
        k += 1
        p *= mean / k
        cdf += p
    return k


def arrival_rate(stats: ArrivalStats | None, now: float, window: float, floor: float) -> float:
    """Arrivals per second of one model over the last ``window`` seconds (0 without history)."""
    if stats is None:
        return 0.0
    arr = stats.recent_arrivals
    lo = bisect.bisect_right(arr, now - window)
    hi = bisect.bisect_right(arr, now)
    count = hi - lo
    if count <= 0:
        return 0.0
    span = min(window, max(now - arr[lo], floor))
    return count / span


@dataclass
class _Plan:
    gpu: str
    n: int
    finish: float
    groups: list[tuple[int, float]]
    feasible: bool
    cost: float


@dataclass
class _Ctx:
    """State of one decision: who has surplus, what frees up later, what was handed out."""

    ix: Index
    excess: dict[Key, list[tuple[float, str, int]]] = field(default_factory=lambda: defaultdict(list))
    future: dict[str, list[tuple[float, int, str]]] = field(default_factory=lambda: defaultdict(list))
    alloc: dict[str, list[str]] = field(default_factory=dict)  # job -> workers (changed jobs only)
    provisions: list[Provision] = field(default_factory=list)
    release: list[str] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    idle_n: dict[Key, int] = field(default_factory=dict)  # untaken idle workers per (model, GPU type)
    idle_gpus: dict[str, int] = field(default_factory=dict)  # untaken idle GPUs per GPU type
    _fut_sorted: dict[str, list[tuple[float, int, str]]] = field(default_factory=dict)
    claims: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    _claim_prefix: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for (m, t), lst in self.ix.idle.items():
            self.idle_n[(m, t)] = len(lst)
            self.idle_gpus[t] = self.idle_gpus.get(t, 0) + len(lst) * self.ix.gpus(m)

    def take(self, w: WorkerView) -> None:
        """Mark a worker as handed out (or released) in this decision, keeping the idle counters."""
        if w.worker_id in self.taken:
            return
        self.taken.add(w.worker_id)
        if w.state == WorkerState.IDLE and w.job_id is None and w.model is not None:
            key = (w.model, w.gpu_type)
            self.idle_n[key] = self.idle_n.get(key, 0) - 1
            self.idle_gpus[w.gpu_type] = self.idle_gpus.get(w.gpu_type, 0) - self.ix.gpus(w.model)

    def claim(self, gpu: str, deadline: float, gpus: int) -> None:
        """Record that a queued job with ``deadline`` will take ``gpus`` of the capacity freed later."""
        lst = self.claims.setdefault(gpu, [])
        bisect.insort(lst, (deadline, gpus))
        self._claim_prefix.pop(gpu, None)

    def claimed_before(self, gpu: str, deadline: float) -> int:
        lst = self.claims.get(gpu)
        if not lst:
            return 0
        pre = self._claim_prefix.get(gpu)
        if pre is None:
            pre = list(itertools.accumulate(g for _, g in lst))
            self._claim_prefix[gpu] = pre
        k = bisect.bisect_right(lst, (deadline, math.inf))
        return pre[k - 1] if k > 0 else 0

    def future_sorted(self, gpu: str) -> list[tuple[float, int, str]]:
        got = self._fut_sorted.get(gpu)
        if got is None:
            got = sorted(self.future.get(gpu, []))
            self._fut_sorted[gpu] = got
        return got

    need: dict[str, int] = field(default_factory=dict)
    keep_s: dict[str, float] = field(default_factory=dict)


@register("prompttuner")
class PromptTunerPolicy(Policy):
    def __init__(
        self,
        warm_pool: bool = True,
        min_gpus: bool = True,
        elastic: bool = True,
        admission: bool = True,
        boost: bool = False,
        keep_factor: float = 2.0,
        pool_quantile: float = 0.9,
        arrival_window_s: float = 1800.0,
        margin: float = 0.05,
        boost_efficiency: float = 0.6,
        admit_tolerance: float = 0.5,
        violation_cost_gpu_s: float = 600.0,
    ) -> None:
        self.warm_pool = warm_pool
        self.min_gpus = min_gpus
        self.elastic = elastic
        self.admission = admission
        self.boost = boost and elastic
        self.keep_factor = keep_factor
        self.pool_quantile = pool_quantile
        self.arrival_window_s = arrival_window_s
        self.margin = margin
        self.boost_efficiency = boost_efficiency
        self.admit_tolerance = admit_tolerance
        self.violation_cost_gpu_s = violation_cost_gpu_s
        self._tight_memo: dict[tuple[str, str, float, int], tuple[float, float]] = {}

    # ------------------------------------------------------------------ planning
    def _target(self, j: JobView | JobSpec, now: float) -> float:
        spec = j.spec if isinstance(j, JobView) else j
        return spec.deadline - self.margin * max(0.0, spec.deadline - now)

    def _own(self, ctx: _Ctx, job_id: str) -> tuple[list[WorkerView], list[WorkerView]]:
        ws = ctx.ix.by_job.get(job_id, [])
        ready = [w for w in ws if w.state != WorkerState.PROVISIONING and w.worker_id not in ctx.taken]
        prov = [w for w in ws if w.state == WorkerState.PROVISIONING and w.worker_id not in ctx.taken]
        return ready, prov

    def _cold_count(self, ctx: _Ctx, model: str, gpu: str) -> int:
        g = ctx.ix.gpus(model)
        free = max(0, ctx.ix.free.get(gpu, 0))
        own = ctx.idle_n.get((model, gpu), 0) * g
        evictable = max(0, ctx.idle_gpus.get(gpu, 0) - own)
        return (free + evictable) // g

    def _plan(self, ctx: _Ctx, j: JobView, spec: JobSpec, with_future: bool) -> _Plan | None:
        """Cheapest plan that meets the deadline (or the fastest, flagged infeasible)."""
        ix = ctx.ix
        snap = ix.snap
        now = snap.now
        prof = snap.models[spec.model]
        steps = max(0.0, spec.work_steps - (j.steps_done if j is not None else 0.0))
        own_ready, own_prov = self._own(ctx, spec.job_id) if j is not None else ([], [])
        types = [own_ready[0].gpu_type] if own_ready else [own_prov[0].gpu_type] if own_prov else None
        if types is None:
            types = [t for t in snap.capacity if t in prof.step_time_s]
        best: _Plan | None = None
        fast: _Plan | None = None
        target = self._target(spec, now)
        for gpu in types:
            key = (spec.model, gpu)
            idle = ctx.idle_n.get(key, 0)
            excess = sum(c for _, _, c in ctx.excess.get(key, [])) if self.elastic else 0
            warm_now = len(own_ready) + idle + excess
            prov_times = sorted(
                [w.ready_at for w in own_prov]
                + [w.ready_at for w in ix.prov_free.get(key, []) if w.worker_id not in ctx.taken]
            )
            cs = prof.cold_start_s[gpu]
            cold_n = self._cold_count(ctx, spec.model, gpu)
            if not with_future and warm_now == 0 and not prov_times and cold_n == 0:
                # nothing to hand out now; same-model workers that free soon are picked up by the
                # decision at their release (admission of new jobs plans again with the future)
                continue
            groups: list[tuple[int, float]] = [(warm_now, now)] + [(1, t) for t in prov_times]
            groups.append((cold_n, now + cs))
            g = prof.gpus_per_replica
            acc = 0
            # capacity that frees later is first spoken for by queued jobs with earlier deadlines
            skip = ctx.claimed_before(gpu, spec.deadline) if with_future else 0
            for t, gp, m in ctx.future_sorted(gpu):
                if not with_future and t >= now + cs:
                    break
                if skip > 0:
                    used = min(skip, gp)
                    skip -= used
                    gp -= used
                    if gp <= 0:
                        continue
                if m == spec.model and self.warm_pool and t < now + cs:
                    # a worker of this model frees before a cold start would be ready: wait for it
                    groups.append((gp // g, t))
                elif with_future:
                    acc += gp
                    if acc >= g:
                        groups.append((acc // g, t + cs))
                        acc %= g
            groups = sorted([x for x in groups if x[0] > 0], key=lambda x: x[1])
            pause = 0.0 if own_ready else self.rescale_overhead_s(prof, gpu, 0, 1)
            jp = self.rescale_overhead_s(prof, gpu, 1, 2)
            price = snap.gpu_types[gpu].price_per_hour / 3600.0 * prof.gpus_per_replica
            r, (n, f) = scan(prof, gpu, steps, now, groups, pause, jp, target if self.min_gpus else None)
            if r is not None:
                rn, rf = r
                cost = rn * price * (rf - now)
                if best is None or cost < best.cost:
                    best = _Plan(gpu, rn, rf, prefix_groups(groups, rn), True, cost)
            if n > 0 and (fast is None or f < fast.finish):
                fast = _Plan(gpu, n, f, prefix_groups(groups, n), f <= spec.deadline, n * price * (f - now))
        if best is not None:
            return best
        if fast is not None and not self.min_gpus and fast.finish <= target:
            fast.feasible = True
        return fast

    def _take(self, ctx: _Ctx, j: JobView, plan: _Plan) -> None:
        """Hand the plan's replicas that exist now (or can be provisioned now) to the job."""
        ix = ctx.ix
        now = ix.snap.now
        spec = j.spec
        prof = ix.snap.models[spec.model]
        key = (spec.model, plan.gpu)
        own_ready, own_prov = self._own(ctx, spec.job_id)
        want = plan.n
        chosen: list[str] = []
        for w in own_ready:
            if len(chosen) < want:
                chosen.append(w.worker_id)
        idle = ix.idle.get(key, [])
        while len(chosen) < want and idle:
            w = idle.pop()
            if w.worker_id in ctx.taken:
                continue
            ctx.take(w)
            chosen.append(w.worker_id)
        donors = ctx.excess.get(key, [])
        while len(chosen) < want and donors and self.elastic:
            dl, donor, cnt = donors.pop()  # latest deadline first
            cur = ctx.alloc.get(donor) or [w.worker_id for w in ix.by_job.get(donor, [])]
            give = min(cnt, want - len(chosen))
            moved = [wid for wid in cur if ix.workers[wid].state != WorkerState.PROVISIONING][-give:]
            ctx.alloc[donor] = [wid for wid in cur if wid not in moved]
            chosen.extend(moved)
            if cnt - give > 0:
                donors.append((dl, donor, cnt - give))
        # provisioning workers (own first, then unclaimed) that are ready within the plan
        horizon = max((t for _, t in plan.groups), default=now)
        for w in sorted(own_prov, key=lambda w: w.ready_at):
            if len(chosen) < want and w.ready_at <= horizon:
                chosen.append(w.worker_id)
        pf = ix.prov_free.get(key, [])
        while len(chosen) < want and pf and pf[-1].ready_at <= horizon:
            w = pf.pop()
            if w.worker_id in ctx.taken:
                continue
            ctx.take(w)
            chosen.append(w.worker_id)
        cold_planned = sum(c for c, t in plan.groups if now < t <= now + prof.cold_start_s[plan.gpu] + 1e-9)
        cold = min(want - len(chosen), cold_planned) if want > len(chosen) else 0
        cold = self._make_room(ctx, spec.model, plan.gpu, cold)
        if cold > 0:
            ctx.provisions.append(Provision(spec.model, plan.gpu, cold, job_id=spec.job_id))
            ix.free[plan.gpu] = ix.free.get(plan.gpu, 0) - cold * prof.gpus_per_replica
        current = {w.worker_id for w in ix.by_job.get(spec.job_id, [])}
        if set(chosen) != current or spec.job_id in ctx.alloc:
            ctx.alloc[spec.job_id] = chosen
        ctx.need[spec.job_id] = plan.n

    def _make_room(self, ctx: _Ctx, model: str, gpu: str, count: int) -> int:
        """Free capacity for ``count`` new replicas, evicting the longest-idle workers of other models."""
        ix = ctx.ix
        g = ix.gpus(model)
        need = count * g - max(0, ix.free.get(gpu, 0))
        if need > 0:
            victims = [
                w
                for (m, t), lst in ix.idle.items()
                if t == gpu and m != model
                for w in lst
                if w.worker_id not in ctx.taken
            ]
            victims.sort(key=lambda w: w.idle_since if w.idle_since is not None else -math.inf)
            for w in victims:
                if need <= 0:
                    break
                ctx.take(w)
                ctx.release.append(w.worker_id)
                gw = ix.gpus(w.model) if w.model else 1
                ix.free[gpu] = ix.free.get(gpu, 0) + gw
                need -= gw
        return min(count, max(0, ix.free.get(gpu, 0)) // g)

    def _survey(self, ctx: _Ctx, jobs: list[JobView]) -> list[JobView]:
        """For admitted jobs: needs, surplus and projected finishes; returns the ones short of GPUs."""
        ix = ctx.ix
        now = ix.snap.now
        models = ix.snap.models
        short: list[JobView] = []
        prov_state = WorkerState.PROVISIONING
        for j in jobs:
            ws = ix.by_job.get(j.job_id)
            if not ws:
                short.append(j)
                continue
            prof = models[j.spec.model]
            gpu = ws[0].gpu_type
            steps = j.steps_left
            target = self._target(j, now)
            n_ready = 0
            prov: list[float] = []
            for w in ws:
                if w.state == prov_state:
                    prov.append(w.ready_at)
                else:
                    n_ready += 1
            if not prov:
                rt = rates(prof, gpu)
                top = min(n_ready, prof.max_replicas)
                f_all = now + steps / rt[top] if top > 0 else math.inf
                ctx.future[gpu].append((f_all, len(ws) * prof.gpus_per_replica, j.spec.model))
                if not self.elastic:
                    continue
                if f_all > target:
                    short.append(j)
                    continue
                n = 1
                while n < top and now + steps / rt[n] > target:
                    n += 1
            else:
                prov.sort()
                groups = [(n_ready, now)] + [(1, t) for t in prov]
                groups = [x for x in groups if x[0] > 0]
                f_all = finish_time(prof, gpu, steps, now, groups, 0.0)
                ctx.future[gpu].append((f_all, len(ws) * prof.gpus_per_replica, j.spec.model))
                if not self.elastic:
                    continue
                r = min_replicas(prof, gpu, steps, now, target, groups, 0.0)
                if r is None:
                    short.append(j)
                    continue
                n = r[0]
            ctx.need[j.job_id] = n
            if n_ready > n and self.min_gpus:
                ctx.excess[(j.spec.model, gpu)].append((j.deadline, j.job_id, n_ready - n))
        for lst in ctx.excess.values():
            lst.sort()
        return short

    def _serve_short(self, ctx: _Ctx, short: list[JobView]) -> None:
        """Give admitted jobs that are behind (or still queued) what they need, earliest deadline first.

        Resources only shrink during a decision, so once a queued job of a model finds nothing, later
        queued jobs of that model are skipped without planning (a long backlog stays cheap).
        """
        exhausted: set[str] = set()
        late: list[tuple[JobView, _Plan]] = []
        for j in short:
            queued = not ctx.ix.by_job.get(j.job_id)
            if queued and j.spec.model in exhausted:
                self._claim_estimate(ctx, j)
                continue
            plan = self._plan(ctx, j, j.spec, with_future=False)
            if plan is not None and not plan.feasible:
                late.append((j, plan))  # cannot make it now: serve the jobs that still can first
            elif plan is not None:
                self._take(ctx, j, plan)
            elif queued:
                exhausted.add(j.spec.model)
                self._claim_estimate(ctx, j)
        for j, _ in late:
            plan = self._plan(ctx, j, j.spec, with_future=False)
            if plan is not None:
                self._take(ctx, j, plan)

    def _claim_estimate(self, ctx: _Ctx, j: JobView) -> None:
        """A queued job's share of the capacity running jobs free later: the replicas it would need if
        it started after one cold start (a cheap estimate; the exact plan is made when GPUs free)."""
        snap = ctx.ix.snap
        prof = snap.models[j.spec.model]
        gpu = self._pool_type(ctx, j.spec.model)
        if gpu is None:
            return
        rt = rates(prof, gpu)
        window = j.deadline - snap.now - prof.cold_start_s[gpu]
        n = next((k for k in range(1, len(rt)) if window > 0 and j.steps_left / rt[k] <= window), 1)
        ctx.claim(gpu, j.deadline, n * prof.gpus_per_replica)

    # ------------------------------------------------------------------ decide
    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        ix = Index.build(snapshot)
        ctx = _Ctx(ix=ix)
        admitted = sorted(
            (j for j in ix.active if j.admitted and j.job_id not in ix.new),
            key=lambda j: (j.deadline, j.job_id),
        )
        new = sorted((j for j in ix.active if j.job_id in ix.new), key=lambda j: (j.deadline, j.job_id))
        short = self._survey(ctx, admitted)
        admissions: list[Admission] = []
        self._serve_short(ctx, short)
        at_risk: list[tuple[JobView, _Plan | None]] = []
        for j in new:
            plan = self._plan(ctx, j, j.spec, with_future=False)
            if plan is None or not plan.feasible:
                later = self._plan(ctx, j, j.spec, with_future=True)
                if later is not None and later.feasible:
                    # feasible once running jobs free capacity: admit now, it waits in the queue
                    ctx.claim(later.gpu, j.deadline, later.n * snapshot.models[j.spec.model].gpus_per_replica)
                    q = self._quote_of(snapshot, j.spec, later)
                    admissions.append(Admission(j.job_id, True, "queued until capacity frees", q))
                    continue
                best = min((p for p in (plan, later) if p is not None), key=lambda p: p.finish, default=None)
                slack = self.admit_tolerance * max(0.0, j.deadline - snapshot.now)
                hopeless = best is None or best.finish > j.deadline + slack
                if self.admission and hopeless and not j.spec.slo.best_effort:
                    q = self._quote_of(snapshot, j.spec, best)
                    earliest = "never" if q.tightest_deadline is None else f"{q.tightest_deadline:.0f}"
                    admissions.append(
                        Admission(
                            j.job_id,
                            False,
                            f"deadline {j.deadline:.0f} infeasible; tightest feasible deadline {earliest}",
                            q,
                        )
                    )
                    continue
                # borderline: admitted, but served after the jobs that are on track
                admissions.append(
                    Admission(j.job_id, True, "at risk", self._quote_of(snapshot, j.spec, best))
                )
                at_risk.append((j, plan))
                continue
            admissions.append(Admission(j.job_id, True, "", self._quote_of(snapshot, j.spec, plan)))
            if plan is not None:
                self._take(ctx, j, plan)
        for j, _ in at_risk:
            plan = self._plan(ctx, j, j.spec, with_future=False)
            if plan is not None:
                self._take(ctx, j, plan)
        accepted = {a.job_id for a in admissions if a.admitted}
        self._manage_pools(ctx, admitted + [j for j in new if j.job_id in accepted])
        wake = self._next_release(ctx)
        return keep_warm_floor(
            snapshot,
            Decisions(
                allocations={k: tuple(v) for k, v in ctx.alloc.items()},
                provision=tuple(ctx.provisions),
                release=tuple(ctx.release),
                admissions=tuple(admissions),
                wake_at=wake,
            ),
        )

    # ------------------------------------------------------------------ pools
    def _tightness(
        self, model: str, gpu: str, stats: ArrivalStats, prof: ModelProfile
    ) -> tuple[float, float]:
        """(fraction of recent jobs that need a warm start, mean warm replicas those jobs take).

        A job "needs warm" when a cold start at its arrival would make it miss its deadline or need more
        replicas than a warm start.  Memoised on the last arrival, so it is recomputed once per arrival.
        """
        if not stats.recent_arrivals or len(stats.recent_deadlines) != len(stats.recent_arrivals):
            return 0.0, 1.0
        key = (model, gpu, stats.recent_arrivals[-1], len(stats.recent_arrivals))
        hit = self._tight_memo.get(key)
        if hit is not None:
            return hit
        rt = rates(prof, gpu)
        cs = prof.cold_start_s[gpu]
        pause = self.rescale_overhead_s(prof, gpu, 0, 1)
        tight = 0
        reps = 0
        for a, d, w in zip(stats.recent_arrivals, stats.recent_deadlines, stats.recent_work, strict=False):
            window = d - a
            n_w = next((n for n in range(1, len(rt)) if pause + w / rt[n] <= window), None)
            if n_w is None:
                continue  # hopeless even warm: a pool would not save it
            n_c = next((n for n in range(1, len(rt)) if cs + pause + w / rt[n] <= window), None)
            if n_c is None or n_c > n_w:
                tight += 1
                reps += n_w
        res = (tight / len(stats.recent_arrivals), reps / tight if tight else 1.0)
        if len(self._tight_memo) > 4096:
            self._tight_memo.clear()
        self._tight_memo[key] = res
        return res

    def _pool_targets(self, ctx: _Ctx, jobs: list[JobView]) -> dict[Key, int]:
        """Warm workers to hold per (model, GPU type); also fills ``ctx.keep_s``, the keep-alive times."""
        ix = ctx.ix
        snap = ix.snap
        targets: dict[Key, int] = {}
        if not self.warm_pool:
            return targets
        for model, stats in snap.arrivals.items():
            prof = snap.models.get(model)
            if prof is None:
                continue
            gpu = self._pool_type(ctx, model)
            if gpu is None:
                continue
            cs = prof.cold_start_s[gpu]
            frac, per_job = self._tightness(model, gpu, stats, prof)
            # ski rental: keeping an idle worker is worth up to the cold start it saves, plus, for the
            # share of jobs a cold start would make miss, the price put on a violation
            ctx.keep_s[model] = (
                self.keep_factor * cs + frac * self.violation_cost_gpu_s / prof.gpus_per_replica
            )
            lam = arrival_rate(stats, snap.now, self.arrival_window_s, floor=cs) * frac
            targets[(model, gpu)] = math.ceil(poisson_quantile(lam * cs, self.pool_quantile) * per_job)
        return targets

    def _pool_type(self, ctx: _Ctx, model: str) -> str | None:
        """The GPU type new jobs of ``model`` would pick: the cheapest per step."""
        snap = ctx.ix.snap
        prof = snap.models[model]
        best = None
        for gpu in snap.capacity:
            if gpu not in prof.step_time_s or snap.capacity[gpu] <= 0:
                continue
            c = prof.step_time_s[gpu] * snap.gpu_types[gpu].price_per_hour
            if best is None or c < best[0]:
                best = (c, gpu)
        return None if best is None else best[1]

    def _manage_pools(self, ctx: _Ctx, jobs: list[JobView]) -> None:
        ix = ctx.ix
        snap = ix.snap
        now = snap.now
        targets = self._pool_targets(ctx, jobs)
        keys = set(targets) | {k for k, v in ix.idle.items() if v}
        for key in sorted(keys):
            model, gpu = key
            prof = snap.models[model]
            idle = [w for w in ix.idle.get(key, []) if w.worker_id not in ctx.taken]
            surplus = sum(c for _, _, c in ctx.excess.get(key, []))
            prov = sum(1 for w in ix.prov_free.get(key, []) if w.worker_id not in ctx.taken)
            target = targets.get(key, 0)
            warm = len(idle) + surplus + prov
            if warm < target:
                room = self._make_room(ctx, model, gpu, target - warm)
                if room > 0:
                    ctx.provisions.append(Provision(model, gpu, room))
                    ix.free[gpu] = ix.free.get(gpu, 0) - room * prof.gpus_per_replica
            keep_s = (
                ctx.keep_s.get(model, self.keep_factor * prof.cold_start_s[gpu]) if self.warm_pool else 0.0
            )
            for w in idle:  # oldest idle first
                if warm <= target:
                    break
                since = w.idle_since if w.idle_since is not None else now
                if now - since >= keep_s:
                    ctx.take(w)
                    ctx.release.append(w.worker_id)
                    ix.free[gpu] = ix.free.get(gpu, 0) + prof.gpus_per_replica
                    warm -= 1
            if self.boost:
                self._boost(ctx, key, jobs)

    def _boost(self, ctx: _Ctx, key: Key, jobs: list[JobView]) -> None:
        """Lend the remaining idle warm workers of ``key`` to running jobs of that model (EDF order)."""
        ix = ctx.ix
        idle = [w for w in ix.idle.get(key, []) if w.worker_id not in ctx.taken]
        if not idle:
            return
        model, gpu = key
        prof = ix.snap.models[model]
        for j in jobs:
            if not idle:
                break
            if j.spec.model != model:
                continue
            cur = ctx.alloc.get(j.job_id)
            if cur is None:
                cur = [w.worker_id for w in ix.by_job.get(j.job_id, [])]
            if not cur or j.steps_left <= 0 or ix.workers[cur[0]].gpu_type != gpu:
                continue
            n = len(cur)
            add = 0
            rt = rates(prof, gpu)
            while add < len(idle) and n + add < prof.max_replicas:
                m = n + add
                if rt[m + 1] - rt[m] < self.boost_efficiency * rt[1]:
                    break
                add += 1
            if add == 0:
                continue
            # a join pauses the job: lend only when the time saved clearly exceeds the pause
            saved = j.steps_left / rt[n] - j.steps_left / rt[n + add]
            if saved < 2 * self.rescale_overhead_s(prof, gpu, n, n + add):
                continue
            extra = []
            for _ in range(add):
                w = idle.pop()
                ctx.take(w)
                extra.append(w.worker_id)
            ctx.alloc[j.job_id] = list(cur) + extra

    def _next_release(self, ctx: _Ctx) -> float | None:
        ix = ctx.ix
        wake: float | None = None
        for (model, gpu), lst in ix.idle.items():
            default = self.keep_factor * ix.snap.models[model].cold_start_s[gpu]
            keep_s = ctx.keep_s.get(model, default) if self.warm_pool else 0.0
            for w in lst:
                if w.worker_id in ctx.taken or w.idle_since is None:
                    continue
                t = w.idle_since + keep_s
                if t > ix.snap.now and (wake is None or t < wake):
                    wake = t
        return wake

    # ------------------------------------------------------------------ quotes
    def _quote_of(self, snap: ClusterSnapshot, spec: JobSpec, plan: _Plan | None) -> Quote:
        if plan is None or plan.n == 0 or math.isinf(plan.finish):
            return Quote(finish_time=math.inf, cost=math.inf, gpus=0, feasible=False, tightest_deadline=None)
        g = snap.models[spec.model].gpus_per_replica
        feasible = plan.finish <= spec.deadline
        tight = None
        if not feasible:
            # the earliest finish, plus the same safety margin the policy plans with
            tight = plan.finish + self.margin / (1 - self.margin) * (plan.finish - snap.now)
        return Quote(plan.finish, plan.cost, plan.n * g, feasible, tight)

    def quote(self, snapshot: ClusterSnapshot, job: JobSpec) -> Quote:
        """Finish time and cost if ``job`` were admitted now; when infeasible, the tightest deadline."""
        if job.model not in snapshot.models:
            raise KeyError(f"unknown base LLM {job.model!r}")
        ix = Index.build(snapshot)
        ctx = _Ctx(ix=ix)
        admitted = sorted(
            (j for j in ix.active if j.admitted and j.job_id != job.job_id), key=lambda j: j.deadline
        )
        short = self._survey(ctx, admitted)
        self._serve_short(ctx, short)
        view = JobView(spec=job, phase=JobPhase.QUEUED)
        plan = self._plan(ctx, view, job, with_future=False)
        if plan is None or not plan.feasible:
            later = self._plan(ctx, view, job, with_future=True)
            if later is not None and (plan is None or later.finish < plan.finish):
                plan = later
        return self._quote_of(snapshot, job, plan)
