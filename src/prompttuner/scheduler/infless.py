"""INFless (ASPLOS'22) applied to prompt-tuning jobs, as ``design/baselines.md`` describes it.

Each job is one invocation of the function of its base LLM.  On arrival (first come first served, per
function) INFless picks the cheapest configuration -- here a replica count and GPU type -- whose
predicted finish meets the deadline, counting a cold start for the replicas no warm instance covers;
if none does, the fastest.  No admission control, and a running job is never resized (non-uniform
scaling sizes instances at launch only).  Idle instances cost.

Keep-alive and pre-warm (the paper's LSTH; the Azure "serverless in the wild" hybrid histogram is the
closest public description).  The histogram of a function is the idle times of its *instances*
(``ArrivalStats.idle_gaps``: how long an idle worker of the base LLM waited before a job took it, recorded
by the shared applier), not the inter-arrival gaps of its invocations:

- keep-alive window = the ``keepalive_percentile`` of the idle times, plus ``window_margin`` (10 %, the
  margin of the Azure policy as we read it);
  an idle instance is released once it has been idle that long;
- pre-warm window = the ``prewarm_percentile`` of the idle times, minus ``window_margin``; it times the
  re-warm of a function left with no instance at all (below): one is requested so that it is ready at
  (last arrival + pre-warm window), i.e. at once when the window is shorter than a cold start;
- with fewer than ``min_samples`` idle times the fixed ``default_keepalive_s`` is the keep-alive window
  and the pre-warm window is 0; ``fixed_keepalive_s`` replaces the histogram altogether (the fixed
  keep-alive points of the frontier benchmark);
- one pre-warmed instance per function is always kept: every function that has been invoked (or has a
  worker) keeps at least one instance, so the keep-alive never releases the youngest idle instance of a
  function that has no other (busy or being provisioned), and a function left with none (its instances
  evicted for other functions' jobs) gets one pre-warmed from spare capacity.

Interpretations (each a choice where the papers leave room or do not fit prompt tuning):

1. The configuration space is the replica count (data parallel) times the GPU type, since prompt tuning
   has no CPU-thread knob; the fragmentation penalty does not apply because every replica is a whole GPU
   (or a fixed group for large models); replicas of a job that are warm start at once, cold ones join
   when ready.
2. Histogram = the raw samples (the book keeps the last 64 per base LLM, ``snapshot.HISTORY``);
   percentiles interpolate linearly between order statistics.  The Azure paper bins idle times by the
   minute over a 4-hour range; with 64 samples binning changes nothing but resolution.
3. Long- and short-term: the long-term histogram is every sample the snapshot carries, the short-term
   one the most recent ``short_term`` (16); the keep-alive window is the larger of their high
   percentiles and the pre-warm window the smaller of their low percentiles (the more cautious of the two,
   so a recent shift to longer idle times keeps instances longer at once).  ``short_term=0`` uses only the
   long-term histogram.
4. The instance kept per function may be busy: a function running a job keeps no idle instance beyond
   its keep-alive.  (In INFless an inference instance batches several requests, so a busy instance still
   takes the next one; a prompt-tuning job holds its workers alone.)  The stricter reading, one *free*
   instance per function (pre-warm one whenever all are busy), was measured on the headline workloads
   (Poisson and ITP, seeds 0 and 1): cost +4 to +11 %, violations within +-0.5 points either way (2.8 /
   3.1 / 75.3 / 67.0 % vs 2.4 / 3.6 / 75.6 / 66.7 %) -- no gain, so the cheaper reading is the baseline.
   The floor yields to jobs: an arriving job of another function may evict it when the cluster is full
   (the longest-idle instances of other functions go first), and a function left with no instance is
   re-warmed only from spare capacity, not while any job still waits.
5. Azure's unload-then-reload branch (release an instance as soon as it goes idle when the pre-warm
   window is long, reload it at the pre-warm time) needs the start of the idle periods of instances
   already released, which a snapshot does not carry; it is not modelled.  On the headline workloads the
   5th percentile of idle times is 0-15 s, below every cold start (31-65 s), so it would not fire there.
6. The samples are right-censored: an idle period that ended in a release says only that the instance
   would have waited at least that long.  Counting only the idle periods a job ended puts mostly times
   shorter than the keep-alive then in force in the histogram, so a high percentile of them lies below
   that keep-alive and ratchets it down (measured, headline setting, seed 0: on Poisson arrivals the
   keep-alive of llama-3.1-8b fell from the 600 s default to 42-55 s within the first hour; on ITP
   arrivals four models kept a 0 s keep-alive for one to two hours after a burst, since instances
   released at once added no samples).  With ``censored=True`` (the default) the shared applier also
   records the idle time of every idle instance a decision releases (``ArrivalStats.released_idle``) and
   the percentiles are those of the Kaplan-Meier estimate of the idle-time distribution from both kinds
   of samples (the smallest observed idle time whose estimated CDF reaches the percentile).  Where the
   estimate never reaches the percentile (the longest samples were releases: the histogram cannot say how
   long the tail is) the keep-alive is the longer of ``default_keepalive_s`` and the longest sample,
   and the pre-warm window is 0.  Without any release among the samples the estimate is the plain
   histogram (linear percentiles as before).  The short-term histogram takes the most recent
   ``short_term`` samples of each kind.  ``censored=False`` keeps the histogram of ended idle periods
   only (the reading of the previous version).  Measured (``benchmarks/sim_knobs.py``: 2,000 jobs,
   128 A100, load 0.6, tightness 1.0, measured prediction, seeds 0-1): censored vs plain, violations
   31.0 / 32.1 % vs 31.4 / 33.1 % on Poisson and 82.1 / 80.5 % vs 82.3 / 80.7 % on ITP cluster04, cost
   +4 to +7 % (Poisson) and +2 to +4 % (cluster04); fewer cold starts (5 seeds, ``infless_frontier.md``:
   1,535 vs 2,099 on Poisson, 2,243 vs 2,328 on cluster04): the keep-alive is not what INFless's
   violations come from.
7. ``half_slo=True`` is INFless's batching feasibility as a sensitivity check: a configuration is feasible
   only if the job's execution from now (cold start included) fits half its SLO (``(deadline -
   arrival) / 2``) and its deadline.  When none does, the cheapest configuration that meets the deadline
   is taken, and only then the fastest.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from prompttuner.core.types import (
    Admission,
    ArrivalStats,
    ClusterSnapshot,
    Decisions,
    Provision,
    WorkerView,
)
from prompttuner.scheduler.base import Policy, register
from prompttuner.scheduler.common import Index, finish_time, keep_warm_floor


def percentile(xs: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``xs``, linear between order statistics; 0 when empty."""
    s = sorted(xs)
    if not s:
        return 0.0
    k = (len(s) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def km_percentile(ended: Sequence[float], released: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0-100) of idle times from samples that ``ended`` (a job took the
    instance) and right-censored ones (``released``: the instance was released idle), by Kaplan-Meier.

    Without censored samples this is :func:`percentile`.  Otherwise the smallest ended idle time at
    which the estimated CDF reaches ``p`` %, or ``None`` when it never does (the longest samples were
    censored).
    """
    if not released:
        return percentile(ended, p)
    events = sorted((x, 0) for x in ended) + sorted((x, 1) for x in released)
    events.sort()  # at equal times, endings before releases (a release at t was at risk at t)
    at_risk = len(events)
    surv = 1.0
    i = 0
    while i < len(events):
        t = events[i][0]
        d = c = 0
        while i < len(events) and events[i][0] == t:
            if events[i][1] == 0:
                d += 1
            else:
                c += 1
            i += 1
        if d:
            surv *= 1.0 - d / at_risk
            if 1.0 - surv >= p / 100.0 - 1e-12:
                return t
        at_risk -= d + c
    return None


Plan = tuple[float, float, int, str]  # (cost, finish, replicas, gpu type)


@register("infless")
class INFlessPolicy(Policy):
    def __init__(
        self,
        prewarm_percentile: float = 5.0,
        keepalive_percentile: float = 99.0,
        min_samples: int = 10,
        default_keepalive_s: float = 600.0,
        window_margin: float = 0.1,
        short_term: int = 16,
        fixed_keepalive_s: float | None = None,
        half_slo: bool = False,
        margin: float = 0.0,
        censored: bool = True,
    ) -> None:
        if not 0.0 <= prewarm_percentile <= keepalive_percentile <= 100.0:
            raise ValueError("need 0 <= prewarm_percentile <= keepalive_percentile <= 100")
        if min_samples < 1 or short_term < 0 or not 0.0 <= window_margin < 1.0:
            raise ValueError("need min_samples >= 1, short_term >= 0 and 0 <= window_margin < 1")
        if default_keepalive_s < 0 or (fixed_keepalive_s is not None and fixed_keepalive_s < 0):
            raise ValueError("keep-alive times must be >= 0")
        self.prewarm_p = prewarm_percentile
        self.keep_p = keepalive_percentile
        self.min_samples = min_samples
        self.default_keep = default_keepalive_s
        self.window_margin = window_margin
        self.short_term = short_term
        self.fixed_keep = fixed_keepalive_s
        self.half_slo = half_slo
        self.margin = margin
        self.censored = censored
        # the windows of each function's last histogram (its idle and censored samples): computed
        # once per change of the samples, not at every arrival
        self._windows: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, float]]] = {}

    def windows(self, stats: ArrivalStats | None) -> tuple[float, float]:
        """(pre-warm, keep-alive) windows of one function from the idle times of its instances."""
        if stats is not None:
            hit = self._windows.get(stats.model)
            if hit is not None and hit[0] == stats.idle_gaps and hit[1] == stats.released_idle:
                return hit[2]
            got = self._windows_of(stats)
            self._windows[stats.model] = (stats.idle_gaps, stats.released_idle, got)
            return got
        return self._windows_of(stats)

    def _windows_of(self, stats: ArrivalStats | None) -> tuple[float, float]:
        if self.fixed_keep is not None:
            return 0.0, self.fixed_keep
        gaps = list(stats.idle_gaps) if stats is not None else []
        cens = list(stats.released_idle) if stats is not None and self.censored else []
        if len(gaps) + len(cens) < self.min_samples or not gaps:
            return 0.0, self.default_keep
        if cens:
            return self._censored_windows(gaps, cens)
        pre = percentile(gaps, self.prewarm_p)
        keep = percentile(gaps, self.keep_p)
        if self.short_term and self.min_samples <= self.short_term < len(gaps):
            recent = gaps[-self.short_term :]
            pre = min(pre, percentile(recent, self.prewarm_p))
            keep = max(keep, percentile(recent, self.keep_p))
        return pre * (1.0 - self.window_margin), keep * (1.0 + self.window_margin)

    def _censored_windows(self, gaps: list[float], cens: list[float]) -> tuple[float, float]:
        tail = max(self.default_keep, max(gaps), max(cens))  # where the estimate cannot say
        hists = [(gaps, cens)]
        n = self.short_term
        if n and self.min_samples <= n < len(gaps) + len(cens):
            hists.append((gaps[-n:], cens[-n:]))
        pres: list[float] = []
        keeps: list[float] = []
        for ended, released in hists:
            pre = km_percentile(ended, released, self.prewarm_p)
            keep = km_percentile(ended, released, self.keep_p)
            pres.append(0.0 if pre is None else pre * (1.0 - self.window_margin))
            keeps.append(tail if keep is None else keep * (1.0 + self.window_margin))
        return min(pres), max(keeps)

    @staticmethod
    def _oldest_idle(ix: Index, keys: Sequence[tuple[str, str]], now: float) -> Iterable[WorkerView]:
        """The idle instances of ``keys``' lists, oldest first (no idle time: now), ties in list order."""
        lists = [ix.idle[k] for k in keys if ix.idle.get(k)]
        if any(lst[0].idle_since is None for lst in lists):  # each list is sorted with None first
            return sorted(
                (w for lst in lists for w in lst),
                key=lambda w: w.idle_since if w.idle_since is not None else now,
            )
        return heapq.merge(*lists, key=lambda w: w.idle_since if w.idle_since is not None else now)

    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        """Per decision the work is in the jobs that hold no worker (running jobs are never resized):
        the queues come from the driver's live index when it has one, and a function whose head cannot
        be placed ends its queue's walk; idle instances are counted, not listed, while jobs are placed.
        """
        ix = Index.build(snapshot)
        now = snapshot.now
        live = snapshot.live
        admissions = tuple(Admission(j, True) for j in snapshot.new_job_ids)
        alloc: dict[str, tuple[str, ...]] = {}
        provisions: list[Provision] = []
        release: list[str] = []
        released: set[str] = set()  # released or taken by a job in this decision
        free = dict(ix.free)
        jobs = snapshot.job_index
        queues: Mapping[str, list[tuple[float, str]]]  # per function, (arrival, job) in order
        if live is not None:
            queues = live.queued
        else:
            queues = defaultdict(list)
            for j in ix.active:
                if not ix.by_job.get(j.job_id):
                    queues[j.spec.model].append((j.spec.arrival, j.job_id))
            for q in queues.values():
                q.sort()
        # untaken idle instances per (function, GPU type) and their GPUs per type
        idle_n: dict[tuple[str, str], int] = {k: len(v) for k, v in ix.idle.items()}
        idle_g: dict[str, int] = defaultdict(int)
        for (m, t), lst in ix.idle.items():
            idle_g[t] += len(lst) * ix.gpus(m)

        def taken(w: WorkerView) -> None:  # an idle instance leaves the pool of this decision
            released.add(w.worker_id)
            if w.model is not None:
                idle_n[(w.model, w.gpu_type)] -= 1
                idle_g[w.gpu_type] -= ix.gpus(w.model)

        # the queued invocations in arrival order across functions (FCFS per function: once a head
        # cannot be placed, later invocations of that function wait behind it and are not looked at)
        heads = [(q[0], m, 0) for m, q in queues.items() if q]
        heapq.heapify(heads)
        blocked: set[str] = set()
        while heads:
            (_, jid), model, k = heapq.heappop(heads)
            if model in blocked:
                continue  # its queue's walk ends here
            q = queues[model]
            if k + 1 < len(q):
                heapq.heappush(heads, (q[k + 1], model, k + 1))
            j = jobs[jid]
            if j.steps_left <= 0:
                continue
            prof = snapshot.models[model]
            g = prof.gpus_per_replica
            target = j.deadline - self.margin
            half = min(target, now + (j.deadline - j.spec.arrival) / 2.0 - self.margin)
            best_half: Plan | None = None
            best: Plan | None = None
            fastest: Plan | None = None
            for gpu in snapshot.capacity:
                if gpu not in prof.step_time_s:
                    continue
                n_warm = idle_n.get((model, gpu), 0)
                evictable = idle_g.get(gpu, 0) - n_warm * g  # idle GPUs of other functions
                room = n_warm + (max(0, free.get(gpu, 0)) + evictable) // g
                price = snapshot.gpu_types[gpu].price_per_hour / 3600.0 * g
                cs = prof.cold_start_s[gpu]
                # predicted like the runtime behaves: a start overhead, a pause when cold replicas join
                pause = self.rescale_overhead_s(prof, gpu, 0, 1)
                jp = self.rescale_overhead_s(prof, gpu, 1, 2)
                for n in range(1, min(prof.max_replicas, room) + 1):
                    nw = min(n, n_warm)
                    groups = [(nw, now), (n - nw, now + cs)]
                    f = finish_time(prof, gpu, j.steps_left, now, [x for x in groups if x[0] > 0], pause, jp)
                    plan = (n * price * (f - now), f, n, gpu)
                    if self.half_slo and f <= half and (best_half is None or plan[0] < best_half[0]):
                        best_half = plan
                    if f <= target and (best is None or plan[0] < best[0]):
                        best = plan
                    if fastest is None or f < fastest[1]:
                        fastest = plan
            pick = best_half or best or fastest
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
                taken(w)  # taken (not released): keeps it out of later picks
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
                        taken(w)
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
        # every queued invocation was placed or waits behind a blocked head
        waiting = bool(blocked)
        wake: float | None = None

        def wake_me(t: float) -> None:
            nonlocal wake
            wake = t if wake is None else min(wake, t)

        # keep-alive, the pre-warmed instance of every function, and its re-warm
        idle_keys: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for m, t in ix.idle:
            idle_keys[m].append((m, t))
        spare: dict[str, int] = defaultdict(int)  # provisioning with no job: free once ready
        for (m, _t), lst in ix.prov_free.items():
            spare[m] += len(lst)
        if live is not None:
            seen = set(snapshot.arrivals) | {m for m, c in live.per_model.items() if c > 0}
            busy = {m for m, c in live.busy_model.items() if c > 0}  # with a job (or for one)
        else:
            seen = set(snapshot.arrivals) | {w.model for w in snapshot.workers if w.model is not None}
            busy = {w.model for w in snapshot.workers if w.job_id is not None}
        busy |= {p.model for p in provisions} | {ix.workers[w].model for ws in alloc.values() for w in ws}
        for model in sorted(seen):
            if model not in snapshot.models:
                continue
            st = snapshot.arrivals.get(model)
            pre, keep = self.windows(st)
            n_idle = sum(idle_n[k] for k in idle_keys.get(model, ()))
            other = model in busy or spare[model] > 0
            floor = 0 if other else 1  # else the youngest idle instance is the one kept
            # oldest idle first: release the expired ones; the first that is not expired is the next
            # expiry (the later ones expire after it)
            left = max(0, n_idle - floor)
            for w in self._oldest_idle(ix, idle_keys.get(model, []), now):
                if left <= 0:
                    break
                if w.worker_id in released:
                    continue
                left -= 1
                since = w.idle_since if w.idle_since is not None else now
                if now - since >= keep:
                    release.append(w.worker_id)
                    released.add(w.worker_id)
                else:
                    wake_me(since + keep)
                    break
            if n_idle or other or waiting or st is None or not st.recent_arrivals:
                continue
            prof = snapshot.models[model]
            types = [t for t in snapshot.capacity if t in prof.step_time_s]
            if not types:
                continue
            gpu = min(types, key=lambda t: prof.step_time_s[t] * snapshot.gpu_types[t].price_per_hour)
            prewarm_at = st.recent_arrivals[-1] + pre - prof.cold_start_s[gpu]
            if now < prewarm_at:
                wake_me(prewarm_at)
            elif free.get(gpu, 0) >= prof.gpus_per_replica:
                provisions.append(Provision(model, gpu, 1))
                free[gpu] -= prof.gpus_per_replica
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
