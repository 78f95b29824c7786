"""PromptTuner's warm pools: how many idle workers of each base LLM to keep, pre-warm and release.

Part of the PromptTuner policy (``scheduler/prompttuner.py``).  A pool is sized from the forecast
arrivals of its model that could not afford a cold start; an idle worker above the target is released
once keeping it would cost more than the cold starts it saves (ski rental).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable

from prompttuner.core.types import ArrivalStats, JobView, ModelProfile, Provision, WorkerView
from prompttuner.scheduler.common import Key, rates
from prompttuner.scheduler.prompttuner_plan import Planner, _Ctx


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


def _idle_end(keep_s: float) -> Callable[[WorkerView], float]:
    """When an idle worker's keep-alive ends (-inf without an idle time: first in its list)."""

    def end(w: WorkerView) -> float:
        return -math.inf if w.idle_since is None else w.idle_since + keep_s

    return end


class WarmPools(Planner):
    """Pool targets, pre-warming, keep-alive releases and (optionally) lending idle workers."""

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
        # each arrival's share is its own (the window slides by one arrival): kept per arrival
        per = self._tight_per
        if len(per) > 65536:
            per.clear()
        for a, d, w in zip(stats.recent_arrivals, stats.recent_deadlines, stats.recent_work, strict=False):
            got = per.get((model, gpu, a, d, w))
            if got is None:
                got = (0, 0)
                window = d - a
                n_w = next((n for n in range(1, len(rt)) if pause + w / rt[n] <= window), None)
                if n_w is not None:  # else hopeless even warm: a pool would not save it
                    n_c = next((n for n in range(1, len(rt)) if cs + pause + w / rt[n] <= window), None)
                    if n_c is None or n_c > n_w:
                        got = (1, n_w)
                per[(model, gpu, a, d, w)] = got
            tight += got[0]
            reps += got[1]
        res = (tight / len(stats.recent_arrivals), reps / tight if tight else 1.0)
        if len(self._tight_memo) > 4096:
            self._tight_memo.clear()
        self._tight_memo[key] = res
        return res

    def _pool_targets(self, ctx: _Ctx) -> dict[Key, int]:
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

    def _manage_pools(self, ctx: _Ctx, jobs: list[JobView]) -> None:
        ix = ctx.ix
        snap = ix.snap
        now = snap.now
        targets = self._pool_targets(ctx)
        keys = set(targets) | {k for k, v in ix.idle.items() if v}
        for key in sorted(keys):
            model, gpu = key
            prof = snap.models[model]
            idle = ix.idle.get(key, [])  # oldest idle first; the untaken ones are ctx.idle_n of them
            surplus = ctx.excess_n.get(key, 0)  # the sum over ctx.excess[key], kept by _take
            # untaken provisioning workers: the list itself (it loses workers only by pop, see
            # _Ctx.prov_times)
            prov = len(ix.prov_free.get(key, ()))
            target = targets.get(key, 0)
            warm = ctx.idle_n.get(key, 0) + surplus + prov
            if self.count_frees and target > 0:
                # replicas of this model that running jobs free within one cold start serve arrivals
                # as warm as an idle worker does (at scale, completions alone cover most of them)
                lim = now + prof.cold_start_s[gpu]
                for t, gp in ctx.future_of(gpu, model, lim):
                    if t >= lim or warm >= target:
                        break
                    warm += gp // prof.gpus_per_replica
            if warm < target:
                room = self._make_room(ctx, model, gpu, target - warm)
                if room > 0:
                    ctx.provisions.append(Provision(model, gpu, room))
                    ix.free[gpu] = ix.free.get(gpu, 0) - room * prof.gpus_per_replica
            keep_s = (
                ctx.keep_s.get(model, self.keep_factor * prof.cold_start_s[gpu]) if self.warm_pool else 0.0
            )
            taken = ctx.taken
            for w in idle:  # oldest idle first
                if warm <= target:
                    break
                if w.worker_id in taken:
                    continue
                since = w.idle_since if w.idle_since is not None else now
                if w.idle_since is not None and keep_s > 0 and now - since < keep_s:
                    break  # the workers after it have been idle no longer: none is released
                if now - since >= keep_s:
                    ctx.take(w)
                    ctx.release.append(w.worker_id)
                    ix.free[gpu] = ix.free.get(gpu, 0) + prof.gpus_per_replica
                    warm -= 1
            if self.cancel_prov and warm > target:
                # workers still loading that no job holds and the pool does not need: stop paying now
                # (latest ready first; idle workers wait out their keep-alive, these have not begun)
                pf = ix.prov_free.get(key, [])
                while warm > target and pf:
                    w = pf.pop(0)
                    if w.worker_id in ctx.taken:
                        continue
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
        now = ix.snap.now
        for (model, gpu), lst in ix.idle.items():
            default = self.keep_factor * ix.snap.models[model].cold_start_s[gpu]
            keep_s = ctx.keep_s.get(model, default) if self.warm_pool else 0.0
            # oldest idle first, so the workers whose keep-alive ends after now are a suffix and the
            # first untaken one of it ends soonest
            i = bisect.bisect_right(lst, now, key=_idle_end(keep_s))
            for w in itertools.islice(lst, i, None):
                if w.worker_id in ctx.taken or w.idle_since is None:
                    continue
                t = w.idle_since + keep_s
                if t > now and (wake is None or t < wake):
                    wake = t
                break
        return wake
