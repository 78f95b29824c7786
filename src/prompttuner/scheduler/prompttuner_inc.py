"""PromptTuner's survey kept between decisions: each event revisits only the jobs that changed.

At every decision the survey (``Planner._survey``) looks at every admitted job: its finish with all its
workers (the capacity it frees later), whether it is short of GPUs (served this decision) and the
replicas it can spare.  At 10,000 GPUs that is a thousand jobs or more per event, nearly all of them
unchanged.  When the driver's live index feeds every change of a job's view (``LiveIndex.feeds_jobs``:
worker changes, and estimate refreshes it touches), :class:`KeptSurvey` keeps each running job's result
and revisits a job only when

- the feed names it (its workers changed, it finished, its estimate was refreshed), or it was admitted
  at the previous decision;
- it is *volatile*: queued or short; or it is kept but has not run a step yet (its view's measured
  step-time factor comes with its first step) and a decision sees it has;
- or its classification could have changed: the time by which it could become short, or its fewest
  replicas (hence its surplus) could change, computed when it was surveyed from bounds that hold
  whatever happens in between (below), waits in a heap.

The bounds.  For a running job without provisioning workers ``g_n(t) = t + s(t) / rate_n -
target(t)`` (``g_n <= 0``: ``n`` replicas meet the target), where ``s`` are its estimated steps left
times the work margin and
``target(t) = deadline - margin * max(0, deadline - t)``.  Between changes ``s`` only falls, at most at
``work_margin * K * rate_top`` per second (a job progresses at its profile rate over its measured
step-time factor, which the view states; ``K = 1.01`` is slack for rounding), and ``target`` rises at
most at ``margin``.  So ``g_n`` rises at most 1 per second (a job that stalls, e.g. in a rescale pause)
and falls at most ``work_margin * K * rate_top / rate_n - (1 - margin)`` per second.  A condition that
held by a margin ``|g|`` at ``t0`` holds until ``t0 + |g| / slope`` (less ``TOL``): then the job's
survey result is what a survey at any time before would find, exactly, because the same arithmetic runs
on the same view whenever it is revisited.  With workers still provisioning (their ready times fixed
and still to come, rates that do not fall as replicas join), the plan of the first ``k`` replicas
finishes at ``F_k``, which rises at most 1 per second and falls at most ``wk * rate(ready) / rate(k) - 1``
(``k`` at most the ready replicas), ``wk - 1`` (more) or not at all (none ready), ``wk = work_margin *
K``; otherwise the job is revisited at the next decision.

Finishes.  A kept job's finish ``f(t) = t + s(t) / rate_top`` moves every event; what a decision reads
of them is a prefix (soonest first) per GPU type and model.  Since ``f`` falls at most at
``DMIN = 1 - work_margin * K`` per second, ``f(t) >= f(t0) + DMIN * (t - t0)``: a lower bound whose
order does not change with ``t`` (every job has the same slope).  :class:`Stream` walks the kept jobs
in that order and computes a job's exact finish (its view at ``now``, the survey's arithmetic) only
when its bound is not past the soonest exact finish not yet read: it yields exactly the sorted list the
full survey builds, as far as the caller reads.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from prompttuner.core.types import JobView, ModelProfile
from prompttuner.scheduler.common import Key, finish_time, prefix_groups, rates
from prompttuner.scheduler.prompttuner_ctx import _Ctx

if TYPE_CHECKING:
    from prompttuner.scheduler.prompttuner_plan import Planner, Surveyed

__all__ = ["KeptSurvey", "Stream"]

K = 1.01  # slack on the speed a job progresses at between changes (the driver's is exactly 1)
TOL = 1e-6  # seconds: a margin this close to a classification's edge is not trusted
LB_TOL = 1e-3  # seconds: slack on a finish's lower bound (rounding of the bound's arithmetic)


class _Kept(NamedTuple):
    gpu: str
    model: str
    c: float  # the finish's lower bound at time t is c + DMIN * t
    f0: float  # the exact finish at t0
    t0: float
    gpus: int
    deadline: float
    excess: int
    until: float  # its classification holds before this time
    seq: int  # its entry in the heap of ``until``s


class KeptSurvey:
    """Survey results of the admitted jobs of one live index, kept between decisions."""

    def __init__(self, live: Any, policy: Planner) -> None:
        self._reset(live, policy)

    def _reset(self, live: Any, policy: Planner) -> None:
        self.live = live
        self.cursor = live.log_end()
        self.now = -math.inf
        self.dmin = 1.0 - policy.work_margin * K
        self.kept: dict[str, _Kept] = {}
        self.volatile: set[str] = set()  # surveyed anew at every decision
        self.starting: set[str] = set()  # kept jobs with ready workers that have run no step yet
        self.pending: set[str] = set(live.jobs)  # to survey at the next decision (all, at first)
        self.cached: dict[Key, list[tuple[float, str]]] = {}  # (c, job) per (model, GPU type)
        self.excess: dict[Key, list[tuple[float, str, int]]] = {}  # (deadline, job, count), sorted
        self.excess_n: dict[Key, int] = {}
        self.heap: list[tuple[float, int, str]] = []  # (until, seq, job)
        self.seq = 0
        # the bounds need a margin in [0, 1]; outside it every job is volatile
        self.caching = 0.0 <= policy.margin <= 1.0

    def _forget(self, jid: str) -> None:
        k = self.kept.pop(jid, None)
        if k is None:
            return
        key = (k.model, k.gpu)
        lst = self.cached[key]
        del lst[bisect.bisect_left(lst, (k.c, jid))]
        if k.excess:
            ex = self.excess[key]
            del ex[bisect.bisect_left(ex, (k.deadline, jid, k.excess))]
            self.excess_n[key] -= k.excess

    def _until(self, policy: Planner, got: Surveyed, now: float, prof: ModelProfile) -> float:
        """The time before which ``got``'s classification (not short, fewest replicas) holds; at or
        before ``now`` when it cannot be trusted (the job is surveyed anew then)."""
        rt = rates(prof, got.gpu)
        groups = got.groups
        ready = got.ready
        cap = prof.max_replicas
        if groups is not None and (
            any(t <= now for _, t in (groups[1:] if ready else groups))
            or any(rt[i] > rt[i + 1] for i in range(ready, cap))
        ):
            return now  # the bounds below need joins still to come, at rates that do not fall
        if not policy.elastic:
            return math.inf
        steps, target, n = got.steps, got.target, got.n
        wk, margin = policy.work_margin * K, policy.margin
        if groups is None:
            top = got.top
            until = now - (got.finish - target) - TOL  # it stays on track (g_top <= 0)
            if not policy.min_gpus:
                return until
            if n < top:
                until = min(until, now - (now + steps / rt[n] - target) - TOL)  # n still meets
            for m in range(1, n):
                fall = wk * rt[top] / rt[m] - (1.0 - margin)
                if fall > 0:  # fewer than n still do not meet
                    until = min(until, now + ((now + steps / rt[m] - target) - TOL) / fall)
            return until
        # with workers still provisioning: the plan of the first k replicas (``min_replicas``) finishes
        # at F_k, which rises at most 1 per second and falls at most wk * rate(ready) / rate(k) - 1 (k at
        # most ready), wk - 1 (more; rates that do not fall as replicas join) or not at all (none ready)
        r_ready = rt[min(ready, cap)]
        until = math.inf
        for k in range(1, n + 1):
            g = finish_time(prof, got.gpu, steps, now, prefix_groups(groups, k), 0.0) - target
            if k == n:
                until = min(until, now - g - TOL)  # n still meets
                break
            if ready == 0:
                f_min = 0.0
            elif k <= ready:
                f_min = 1.0 - wk * r_ready / rt[k]
            else:
                f_min = 1.0 - wk
            fall = margin - f_min
            if fall > 0:  # k still does not meet
                until = min(until, now + (g - TOL) / fall)
        return until

    def survey(self, policy: Planner, ctx: _Ctx) -> list[JobView]:
        """``Planner._survey`` of every admitted job, from the kept results and the jobs revisited;
        fills ``ctx`` (streams of finishes, surplus) and returns the jobs short of GPUs, in EDF order."""
        ix = ctx.ix
        snap = ix.snap
        now = snap.now
        live = self.live
        models = snap.models
        jobs = live.jobs
        changed = live.changes_since(self.cursor)
        if changed is None:  # the feed moved past what we read: start over
            self._reset(live, policy)
            changed = []
        self.cursor = live.log_end()
        self.now = now
        dirty = set(changed)
        dirty |= self.pending
        dirty |= self.volatile
        heap, kept = self.heap, self.kept
        while heap and heap[0][0] <= now:
            _, seq, jid = heapq.heappop(heap)
            k = kept.get(jid)
            if k is not None and k.seq == seq:
                dirty.add(jid)
        # a kept job still in its start pause has run no step, so its view has no step-time factor
        # yet: the first decision that sees it run surveys it anew
        started = [i for i in self.starting if i not in dirty and (i not in jobs or jobs[i].steps_done > 0)]
        dirty.update(started)
        self.starting -= dirty
        self.pending = set()
        self.volatile = volatile = set()
        streams = Streams(self, policy, ctx)
        short: list[JobView] = []
        by_job = ix.by_job
        new = ix.new
        for jid in dirty:
            self._forget(jid)
            if jid in new:
                self.pending.add(jid)  # admitted by a decision on this snapshot, if any is applied
                continue
            if jid not in jobs:
                continue  # finished
            j = jobs[jid]
            if not j.admitted or j.phase.terminal:
                continue
            ws = by_job.get(jid)
            if not ws:
                volatile.add(jid)
                short.append(j)
                continue
            got = policy._survey_one(j, ws, now, models)
            model = j.spec.model
            key = (model, got.gpu)
            if got.short or not self.caching:
                volatile.add(jid)
                streams.exact.setdefault(key, []).append((got.finish, got.gpus, model))
                if got.short:
                    short.append(j)
                elif got.excess:
                    streams.vol_excess.setdefault(key, []).append((j.deadline, jid, got.excess))
                continue
            until = self._until(policy, got, now, models[model])
            self.seq += 1
            c = got.finish - self.dmin * now
            kept[jid] = _Kept(
                got.gpu, model, c, got.finish, now, got.gpus, j.deadline, got.excess, until, self.seq
            )
            bisect.insort(self.cached.setdefault(key, []), (c, jid))
            if got.excess:
                bisect.insort(self.excess.setdefault(key, []), (j.deadline, jid, got.excess))
                self.excess_n[key] = self.excess_n.get(key, 0) + got.excess
            if until < math.inf:
                heapq.heappush(heap, (until, self.seq, jid))
            if j.steps_done <= 0 and got.ready > 0:
                self.starting.add(jid)
        if len(heap) > 4 * len(kept) + 1024:  # stale entries: keep the live ones
            self.heap = [(k.until, k.seq, jid) for jid, k in kept.items() if k.until < math.inf]
            heapq.heapify(self.heap)
        for key, n in self.excess_n.items():
            if n:
                ctx.excess_n[key] = n
        for key, extra in streams.vol_excess.items():
            ctx.excess_n[key] = ctx.excess_n.get(key, 0) + sum(c for _, _, c in extra)
        ctx.excess_src = streams.donors
        ctx.streams = streams
        short.sort(key=lambda j: (j.deadline, j.job_id))
        return short


class Stream:
    """(finish, GPUs, model) of the running jobs of one (model, GPU type), soonest first, computed as
    far as they are read (see the module)."""

    def __init__(self, streams: Streams, key: Key) -> None:
        self.s = streams
        self.items: list[tuple[float, int, str]] = []
        self.heap = list(streams.exact.get(key, ()))
        heapq.heapify(self.heap)
        self.cached = streams.kept.cached.get(key, [])
        self.i = 0
        self.off = streams.kept.dmin * streams.now - LB_TOL

    def _next(self) -> tuple[float, int, str] | None:
        heap, cached, off = self.heap, self.cached, self.off
        while self.i < len(cached) and (not heap or cached[self.i][0] + off <= heap[0][0]):
            heapq.heappush(heap, self.s.exact_of(cached[self.i][1]))
            self.i += 1
        return heapq.heappop(heap) if heap else None

    def __iter__(self) -> Iterator[tuple[float, int, str]]:
        items = self.items
        i = 0
        while True:
            if i == len(items):
                nxt = self._next()
                if nxt is None:
                    return
                items.append(nxt)
            yield items[i]
            i += 1


class Streams:
    """One decision's streams of finishes (what ``_Ctx.future_sorted`` / ``future_of`` read)."""

    def __init__(self, kept: KeptSurvey, policy: Planner, ctx: _Ctx) -> None:
        self.kept = kept
        self.policy = policy
        self.ix = ctx.ix
        self.now = ctx.ix.snap.now
        self.exact: dict[Key, list[tuple[float, int, str]]] = {}  # volatile jobs, surveyed now
        self.vol_excess: dict[Key, list[tuple[float, str, int]]] = {}
        self.open: dict[Key, Stream] = {}

    def donors(self, key: Key) -> list[tuple[float, str, int]]:
        """The survey's surplus list of ``key`` (kept and volatile jobs, sorted), a copy."""
        lst = list(self.kept.excess.get(key, ()))
        for e in self.vol_excess.get(key, ()):
            bisect.insort(lst, e)
        return lst

    def exact_of(self, jid: str) -> tuple[float, int, str]:
        k = self.kept.kept[jid]
        if k.t0 == self.now:
            return (k.f0, k.gpus, k.model)
        ix = self.ix
        got = self.policy._survey_one(self.kept.live.jobs[jid], ix.by_job[jid], self.now, ix.snap.models)
        return (got.finish, k.gpus, k.model)

    def _stream(self, key: Key) -> Stream:
        s = self.open.get(key)
        if s is None:
            s = self.open[key] = Stream(self, key)
        return s

    def of(self, gpu: str, model: str, until: float) -> Iterator[tuple[float, int]]:
        for f, gp, _ in self._stream((model, gpu)):
            yield f, gp
            if f >= until:
                return

    def merged(self, gpu: str) -> Iterator[tuple[float, int, str]]:
        keys = {k for k, v in self.kept.cached.items() if v and k[1] == gpu}
        keys |= {k for k in self.exact if k[1] == gpu}
        return heapq.merge(*(iter(self._stream(k)) for k in sorted(keys)))
