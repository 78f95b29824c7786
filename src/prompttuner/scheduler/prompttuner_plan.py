"""PromptTuner's planner: the fewest replicas that meet a deadline, from warm, provisioning, surplus and
cold-started workers, in earliest-deadline-first order, and the quotes made from those plans.

Part of the PromptTuner policy (``scheduler/prompttuner.py``); the warm pools are in
``scheduler/prompttuner_pools.py``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import NamedTuple

from prompttuner.core.types import (
    ClusterSnapshot,
    JobSpec,
    JobView,
    ModelProfile,
    Provision,
    Quote,
    WorkerState,
    WorkerView,
)
from prompttuner.scheduler.base import Policy
from prompttuner.scheduler.common import (
    finish_time,
    min_replicas,
    prefix_groups,
    rates,
    scan,
)
from prompttuner.scheduler.prompttuner_ctx import _Ctx, _Plan

__all__ = ["Knobs", "Planner", "_Ctx", "_Plan"]


_at = operator.itemgetter(1)


class Surveyed(NamedTuple):
    """What the survey finds for one admitted job that holds workers (``Planner._survey_one``)."""

    gpu: str
    finish: float  # with all its workers
    gpus: int  # GPUs it holds
    short: bool  # it cannot meet its deadline with them: served in ``_serve_short``
    excess: int  # replicas it can spare (0 when short or without ``min_gpus``)
    steps: float  # estimated steps left, times the work margin
    target: float  # the deadline less the safety margin
    top: int  # replicas that count (0 with provisioning workers)
    n: int  # the fewest that meet the target (``top`` when short; 0 with provisioning workers)
    prov: bool  # some of its workers are still provisioning
    ready: int = 0  # its ready replicas
    groups: list[tuple[int, float]] | None = None  # (replicas, ready time) with provisioning workers


LATE_TOL = 1e-6  # seconds: the bound of _surely_late stays clear of rounding


class Knobs(Policy):
    """The PromptTuner policy's settings (see its module for what each mechanism does)."""

    warm_pool: bool
    min_gpus: bool
    elastic: bool
    admission: bool
    boost: bool
    keep_factor: float
    pool_quantile: float
    arrival_window_s: float
    margin: float
    work_margin: float
    boost_efficiency: float
    admit_tolerance: float
    violation_cost_gpu_s: float
    count_frees: bool
    min_cold_use: float
    cancel_prov: bool
    switch: bool
    _tight_memo: dict[tuple[str, str, float, int], tuple[float, float]]
    _tight_per: dict[tuple[str, str, float, float, float], tuple[int, int]]


class Planner(Knobs):
    """Planning, hand-out and quotes of one decision (state in a :class:`_Ctx`)."""

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

    def _target(self, j: JobView | JobSpec, now: float) -> float:
        spec = j.spec if isinstance(j, JobView) else j
        return spec.deadline - self.margin * max(0.0, spec.deadline - now)

    def _own(self, ctx: _Ctx, job_id: str) -> tuple[list[WorkerView], list[WorkerView]]:
        """A job's (ready, provisioning) workers.  Only workers without a job are ever taken in a
        decision, so this is the same all decision long and kept (callers do not modify it)."""
        got = ctx.own.get(job_id)
        if got is not None:
            return got
        ws = ctx.ix.by_job.get(job_id)
        if not ws:
            got = ([], [])
        else:
            taken = ctx.taken
            ready = [w for w in ws if w.state != WorkerState.PROVISIONING and w.worker_id not in taken]
            prov = [w for w in ws if w.state == WorkerState.PROVISIONING and w.worker_id not in taken]
            got = (ready, prov)
        ctx.own[job_id] = got
        return got

    def _cold_count(self, ctx: _Ctx, model: str, gpu: str) -> int:
        g = ctx.ix.gpus(model)
        free = max(0, ctx.ix.free.get(gpu, 0))
        own = ctx.idle_n.get((model, gpu), 0) * g
        evictable = max(0, ctx.idle_gpus.get(gpu, 0) - own)
        return (free + evictable) // g

    def _consts(self, ctx: _Ctx, prof: ModelProfile, gpu: str) -> tuple[float, float, float, float, float]:
        """(cold start, start pause, join pause, price per replica-second, top rate) of a model on a
        GPU type, once per decision."""
        got = ctx.consts.get((prof.name, gpu))
        if got is None:
            got = (
                prof.cold_start_s[gpu],
                self.rescale_overhead_s(prof, gpu, 0, 1),
                self.rescale_overhead_s(prof, gpu, 1, 2),
                ctx.ix.snap.gpu_types[gpu].price_per_hour / 3600.0 * prof.gpus_per_replica,
                max(rates(prof, gpu)),
            )
            ctx.consts[(prof.name, gpu)] = got
        return got

    def _types(self, ctx: _Ctx, prof: ModelProfile) -> list[str]:
        got = ctx.types.get(prof.name)
        if got is None:
            got = [t for t in ctx.ix.snap.capacity if t in prof.step_time_s]
            ctx.types[prof.name] = got
        return got

    def _surely_late(self, ctx: _Ctx, j: JobView) -> bool:
        """True when ``_plan(ctx, j, j.spec, False)`` is certainly a plan that misses the deadline (no
        replica count, even all at the top rate from now, finishes by it) and not None (some GPU type has
        something to hand out); False when unsure.  Saves the first, discarded, plan of a late job."""
        ix = ctx.ix
        now = ix.snap.now
        spec = j.spec
        prof = ix.snap.models[spec.model]
        steps = j.steps_left * self.work_margin
        if steps <= 0:
            return False
        own_ready, own_prov = self._own(ctx, spec.job_id)
        types = [own_ready[0].gpu_type] if own_ready else [own_prov[0].gpu_type] if own_prov else None
        if types is None:
            types = self._types(ctx, prof)
        g = prof.gpus_per_replica
        something = False
        for gpu in types:
            _, pause0, _, _, top = self._consts(ctx, prof, gpu)
            if now + (0.0 if own_ready else pause0) + steps / top <= spec.deadline + LATE_TOL:
                return False
            key = (spec.model, gpu)
            idle = ctx.idle_n.get(key, 0)
            warm_now = len(own_ready) + idle + (ctx.excess_n.get(key, 0) if self.elastic else 0)
            evictable = max(0, ctx.idle_gpus.get(gpu, 0) - idle * g)
            cold_n = (max(0, ix.free.get(gpu, 0)) + evictable) // g
            if warm_now or own_prov or ix.prov_free.get(key) or cold_n:
                something = True
        return something

    def _plan(
        self, ctx: _Ctx, j: JobView, spec: JobSpec, with_future: bool, work_margin: float | None = None
    ) -> _Plan | None:
        """Cheapest plan that meets the deadline (or the fastest, flagged infeasible) for the estimated
        steps times ``work_margin`` (default: the policy's, a margin for the estimate's error)."""
        ix = ctx.ix
        snap = ix.snap
        now = snap.now
        prof = snap.models[spec.model]
        wm = self.work_margin if work_margin is None else work_margin
        cap = prof.max_replicas
        steps = (j.steps_left if j is not None else max(0.0, spec.work_steps)) * wm
        own_ready, own_prov = self._own(ctx, spec.job_id) if j is not None else ([], [])
        types = [own_ready[0].gpu_type] if own_ready else [own_prov[0].gpu_type] if own_prov else None
        if types is None:
            types = self._types(ctx, prof)
        best: _Plan | None = None
        fast: _Plan | None = None
        target = spec.deadline - self.margin * max(0.0, spec.deadline - now)  # self._target
        g = prof.gpus_per_replica
        for gpu in types:
            key = (spec.model, gpu)
            cs, pause0, jp, price, _ = ctx.consts.get(key) or self._consts(ctx, prof, gpu)
            idle = ctx.idle_n.get(key, 0)
            excess = ctx.excess_n.get(key, 0) if self.elastic else 0
            warm_now = len(own_ready) + idle + excess
            # replicas past the first max_replicas (in time order) are never reached by the scan;
            # the warm ones come first when nothing provisioning is overdue
            prov_times = ctx.prov_times(key, cap)
            if own_prov:
                prov_times = sorted([w.ready_at for w in own_prov] + prov_times)
            if prov_times and prov_times[0] >= now:
                del prov_times[max(0, cap - warm_now) :]
            # self._cold_count(ctx, spec.model, gpu), inline
            evictable = max(0, ctx.idle_gpus.get(gpu, 0) - idle * g)
            cold_n = (max(0, ix.free.get(gpu, 0)) + evictable) // g
            if not with_future and warm_now == 0 and not prov_times and cold_n == 0:
                # nothing to hand out now; same-model workers that free soon are picked up by the
                # decision at their release (admission of new jobs plans again with the future)
                continue
            groups: list[tuple[int, float]] = [(warm_now, now)] + [(1, t) for t in prov_times]
            groups.append((cold_n, now + cs))
            acc = 0
            # capacity that frees later is first spoken for by queued jobs with earlier deadlines
            skip = ctx.claimed_before(gpu, spec.deadline) if with_future else 0
            if not with_future:
                # only workers of this model that free before a cold start is ready count now
                if self.warm_pool:
                    lim = now + cs
                    got = warm_now  # replicas before this one in time order, at least
                    for t, gp in ctx.future_of(gpu, spec.model, lim):
                        if t >= lim or got >= cap:
                            break
                        groups.append((gp // g, t))
                        got += gp // g
            lim = now + cs
            total = warm_now  # replicas that come before the next group, at least
            for t, gp, m in ctx.future_sorted(gpu) if with_future else ():
                if total >= cap and (t >= lim or not self.warm_pool):
                    break  # every later group comes after max_replicas others: never reached
                if skip > 0:
                    used = min(skip, gp)
                    skip -= used
                    gp -= used
                    if gp <= 0:
                        continue
                if m == spec.model and self.warm_pool and t < now + cs:
                    # a worker of this model frees before a cold start would be ready: wait for it
                    groups.append((gp // g, t))
                    total += gp // g
                elif with_future:
                    acc += gp
                    if acc >= g:
                        groups.append((acc // g, t + cs))
                        total += acc // g
                        acc %= g
            groups = sorted([x for x in groups if x[0] > 0], key=_at)
            pause = 0.0 if own_ready else pause0
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
        donors = ctx.donors(key)
        while len(chosen) < want and donors and self.elastic:
            dl, donor, cnt = donors.pop()  # latest deadline first
            cur = ctx.alloc.get(donor) or [w.worker_id for w in ix.by_job.get(donor, [])]
            give = min(cnt, want - len(chosen))
            ctx.excess_n[key] -= give
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
        if cold > 0 and chosen and self.min_cold_use > 0:
            # a job that already runs adds cold replicas only when they would work a while once ready
            cs = prof.cold_start_s[plan.gpu]
            if plan.finish - (now + cs) < self.min_cold_use * cs:
                cold = 0
        cold = self._make_room(ctx, spec.model, plan.gpu, cold)
        if cold > 0:
            ctx.provisions.append(Provision(spec.model, plan.gpu, cold, job_id=spec.job_id))
            ix.free[plan.gpu] = ix.free.get(plan.gpu, 0) - cold * prof.gpus_per_replica
        current = {w.worker_id for w in ix.by_job.get(spec.job_id, [])}
        if set(chosen) != current or spec.job_id in ctx.alloc:
            ctx.alloc[spec.job_id] = chosen

    def _make_room(self, ctx: _Ctx, model: str, gpu: str, count: int) -> int:
        """Free capacity for ``count`` new replicas, evicting the longest-idle workers of other models."""
        ix = ctx.ix
        g = ix.gpus(model)
        need = count * g - max(0, ix.free.get(gpu, 0))
        if need > 0:
            # the idle workers of every model on this GPU type, longest idle first (sorted once per
            # decision; filtering a stable sort keeps the order a sort of the filtered list gives)
            victims = ctx.victims.get(gpu)
            if victims is None:
                victims = [w for (m, t), lst in ix.idle.items() if t == gpu for w in lst]
                victims.sort(key=lambda w: w.idle_since if w.idle_since is not None else -math.inf)
                ctx.victims[gpu] = victims
                ctx.victim_at[gpu] = 0
            i = ctx.victim_at[gpu]
            while i < len(victims) and victims[i].worker_id in ctx.taken:
                i += 1  # a taken prefix is skipped for good
            ctx.victim_at[gpu] = i
            for k in range(i, len(victims)):
                if need <= 0:
                    break
                w = victims[k]
                if w.model == model or w.worker_id in ctx.taken:
                    continue
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
        short: list[JobView] = []
        by_job = ix.by_job
        one = self._survey_one
        models = ix.snap.models
        for j in jobs:
            ws = by_job.get(j.spec.job_id)
            if not ws:
                short.append(j)
                continue
            got = one(j, ws, now, models)
            ctx.future[got.gpu].append((got.finish, got.gpus, j.spec.model))
            if got.short:
                short.append(j)
            elif got.excess > 0:
                ctx.excess[(j.spec.model, got.gpu)].append((j.deadline, j.job_id, got.excess))
        for k, lst in ctx.excess.items():
            lst.sort()
            ctx.excess_n[k] = sum(c for _, _, c in lst)
        return short

    def _survey_one(
        self, j: JobView, ws: list[WorkerView], now: float, models: Mapping[str, ModelProfile]
    ) -> Surveyed:
        """One admitted job that holds workers ``ws``: its finish with all of them, whether it is short
        of GPUs and its surplus (the same arithmetic for every decision, kept or not)."""
        spec = j.spec
        prof = models[spec.model]
        gpu = ws[0].gpu_type
        # j.steps_left * work_margin and self._target(j, now), inline (the same arithmetic)
        steps = max(0.0, spec.work_steps - j.steps_done) * j.step_time_factor * self.work_margin
        deadline = spec.slo.deadline
        target = deadline - self.margin * max(0.0, deadline - now)
        n_ready = 0
        prov: list[float] = []
        prov_state = WorkerState.PROVISIONING
        for w in ws:
            if w.state == prov_state:
                prov.append(w.ready_at)
            else:
                n_ready += 1
        gpus = len(ws) * prof.gpus_per_replica
        if not prov:
            rt = rates(prof, gpu)
            top = min(n_ready, prof.max_replicas)
            f_all = now + steps / rt[top] if top > 0 else math.inf
            if not self.elastic:
                return Surveyed(gpu, f_all, gpus, False, 0, steps, target, top, top, False, n_ready)
            if f_all > target:
                return Surveyed(gpu, f_all, gpus, True, 0, steps, target, top, top, False, n_ready)
            n = 1
            while n < top and now + steps / rt[n] > target:
                n += 1
        else:
            prov.sort()
            groups = [(n_ready, now)] + [(1, t) for t in prov]
            groups = [x for x in groups if x[0] > 0]
            f_all = finish_time(prof, gpu, steps, now, groups, 0.0)
            if not self.elastic:
                return Surveyed(gpu, f_all, gpus, False, 0, steps, target, 0, 0, True, n_ready, groups)
            r = min_replicas(prof, gpu, steps, now, target, groups, 0.0)
            if r is None:
                return Surveyed(gpu, f_all, gpus, True, 0, steps, target, 0, 0, True, n_ready, groups)
            n = r[0]
            top = 0
        excess = n_ready - n if n_ready > n and self.min_gpus else 0
        return Surveyed(
            gpu,
            f_all,
            gpus,
            False,
            excess,
            steps,
            target,
            top,
            n,
            bool(prov),
            n_ready,
            groups if prov else None,
        )

    def _serve_short(self, ctx: _Ctx, short: list[JobView]) -> None:
        """Give admitted jobs that are behind (or still queued) what they need, earliest deadline first.

        Resources only shrink during a decision, so once a queued job of a model finds nothing, later
        queued jobs of that model are skipped without planning (a long backlog stays cheap).
        """
        exhausted: set[str] = set()
        late: list[tuple[JobView, _Plan | None]] = []
        for j in short:
            queued = not ctx.ix.by_job.get(j.job_id)
            if queued and j.spec.model in exhausted:
                self._claim_estimate(ctx, j)
                continue
            if self._surely_late(ctx, j):
                late.append((j, None))  # cannot make it now: serve the jobs that still can first
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
