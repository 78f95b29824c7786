"""ElasticFlow (ASPLOS'23) applied to prompt-tuning jobs, as ``design/baselines.md`` describes it.

Serverless and slotted: decisions happen at scheduling-slot boundaries (events inside a slot wait for
it).  At each boundary:

1. **Plans.**  The admitted jobs are planned in deadline order (EDF) with their *minimum satisfactory
   share* (:func:`~prompttuner.scheduler.elasticflow_plan.min_share`): the smallest power-of-two replica
   count q such that ``min(q, free)`` in the slots before the deadline, filled from the deadline
   backwards, finishes in time, counting what the runtime will charge: the restart pause of every change
   of the job's replicas (:meth:`rescale_overhead_s`), the cold start of every replica it adds (not only
   the first), replicas still provisioning and a pause under way.  A job no share can save is planned
   past its deadline after all the others, so it takes nothing a feasible job needs.
2. **Admission, per job** (the default, ``admission="job"``; the paper's promise).  Each arrival of the
   slot, in deadline order, is inserted at its EDF place against the plans of the admitted jobs; it is
   admitted when its plan meets its deadline and every admitted job keeps a feasible plan, else it alone
   is declined; the quote is its plan's finish.  ``admission="slot"`` is the released code's rule: if
   any arrival of the slot cannot meet its deadline, all of them are declined.
3. **Leftover GPUs** (work conserving).  A job the plan shrinks first keeps what it holds, when that is
   free and does not delay its planned finish (a job started early is not stopped and cold-started
   again).  Then the paper's diminishing-returns greedy: the bump to the next power of two with the
   fewest extra GPU-seconds per extra GPU goes first (a job with no replica first); a bump counts its
   cold start and restart, must shorten the job's finish if it kept the size, and must not delay its
   planned finish if the next slot goes back to the plan.  (The released code sorts the other way, and
   the trace replay, ``efsim``, follows it; here every bump pays a cold start and a restart, so buying
   the most time per GPU is what keeps the promises.)

The serverless runtime has no warm pool: every added replica is a fresh worker with a cold start, idle
workers are released at once, every rescale is a checkpoint-restart.  ``warm_runtime=True`` (registered
as ``elasticflow-warm``) runs the same policy on PromptTuner's warm runtime with a platform keep-alive:
idle workers stay warm for ``keep_alive_s`` and are reused before fresh ones are provisioned, and a
rescale costs the warm move (:meth:`Policy.rescale_overhead_s`), separating what the system costs
ElasticFlow from what its policy costs.  ``count_overheads=False`` keeps the old planner (only a job's
first cold start counted).  The cluster is treated as homogeneous (the GPU type with the most
capacity).  :func:`~prompttuner.scheduler.elasticflow_plan.infeasible_alone` names the jobs no slotted,
cold-starting system could meet.
"""

from __future__ import annotations

import math
from dataclasses import replace

from prompttuner.core.types import (
    Admission,
    ClusterSnapshot,
    Decisions,
    JobView,
    ModelProfile,
    Provision,
    Quote,
    WorkerState,
    WorkerView,
)
from prompttuner.scheduler.base import Policy, register
from prompttuner.scheduler.common import Index, keep_warm_floor, rates
from prompttuner.scheduler.elasticflow_book import Book, Entry, key
from prompttuner.scheduler.elasticflow_plan import (
    RESTART_S,
    TOL,
    JobStart,
    Overheads,
    Plan,
    Run,
    Timeline,
    best_effort,
    checkpoint_restart_s,
    infeasible_alone,
    job_start,
    legal_floor,
    legal_sizes,
    min_share,
    run_sizes,
)

__all__ = ["ElasticFlowPolicy", "ElasticFlowWarmPolicy", "infeasible_alone", "legal_floor", "legal_sizes"]

KEEP_ALIVE_S = 600.0  # a platform keep-alive of ten minutes (the warm variant)
MIN_STEPS = 1.0  # a running job whose estimate is used up still needs its replicas


@register("elasticflow")
class ElasticFlowPolicy(Policy):
    def __init__(
        self,
        slot_s: float = 60.0,
        restart_s: float = RESTART_S,
        admission: str = "job",
        count_overheads: bool = True,
        warm_runtime: bool = False,
        keep_alive_s: float = KEEP_ALIVE_S,
        incremental: bool = True,
    ) -> None:
        if admission not in ("job", "slot"):
            raise ValueError(f"admission must be 'job' or 'slot', not {admission!r}")
        self.slot, self.restart_s, self.admission = slot_s, restart_s, admission
        self.count_overheads, self.warm, self.keep_alive_s = count_overheads, warm_runtime, keep_alive_s
        self.incremental = incremental  # False: admission re-plans every tail (the reference)

    def rescale_overhead_s(self, profile: ModelProfile, gpu_type: str, old_n: int, new_n: int) -> float:
        """Checkpoint-restart (ElasticFlow's scaling overhead plus a process restart); on the warm runtime
        the warm move of the base class."""
        if self.warm:
            return super().rescale_overhead_s(profile, gpu_type, old_n, new_n)
        if old_n == new_n:
            return 0.0
        return checkpoint_restart_s(profile, new_n, self.restart_s)

    def expired(self, w: WorkerView, now: float) -> bool:
        """An idle worker the runtime lets go (serverless: at once; warm: after the keep-alive)."""
        since = w.idle_since if w.idle_since is not None else now
        return not self.warm or now - since >= self.keep_alive_s - 1e-9

    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        now = snapshot.now
        ix = Index.build(snapshot)
        boundary = math.ceil(now / self.slot - 1e-9) * self.slot
        if now < boundary - 1e-6:  # inside a slot: events wait for the boundary
            idle = sorted(
                (w for lst in ix.idle.values() for w in lst),
                key=lambda w: (w.idle_since if w.idle_since is not None else now, w.worker_id),
            )
            release = [w.worker_id for w in idle if self.expired(w, now)]
            d = keep_warm_floor(snapshot, Decisions(release=tuple(release)))
            wake = boundary if ix.any_active() else None
            return replace(d, wake_at=self._wake(snapshot, d, wake))
        return _Round(self, snapshot, ix).decide()

    def _wake(self, snap: ClusterSnapshot, d: Decisions, wake: float | None) -> float | None:
        """``wake`` or, on the warm runtime, the next keep-alive expiry of an idle worker if sooner."""
        if not self.warm:
            return wake
        gone = set(d.release)
        taken = {w for ws in d.allocations.values() for w in ws}
        for w in snap.workers:
            if w.state == WorkerState.IDLE and w.job_id is None and w.worker_id not in gone | taken:
                t = (w.idle_since if w.idle_since is not None else snap.now) + self.keep_alive_s
                if t > snap.now + 1e-9 and (wake is None or t < wake):
                    wake = t
        return wake


@register("elasticflow-warm")
class ElasticFlowWarmPolicy(ElasticFlowPolicy):
    """ElasticFlow's policy on PromptTuner's warm runtime, with a platform keep-alive (system vs policy)."""

    def __init__(self, keep_alive_s: float = KEEP_ALIVE_S, **kwargs: object) -> None:
        kwargs.setdefault("warm_runtime", True)
        super().__init__(keep_alive_s=keep_alive_s, **kwargs)  # type: ignore[arg-type]


class _Round:
    """One decision at a slot boundary."""

    def __init__(self, p: ElasticFlowPolicy, snap: ClusterSnapshot, ix: Index) -> None:
        self.p, self.snap, self.ix, self.now = p, snap, ix, snap.now
        self.gpu = max(snap.capacity, key=lambda t: snap.capacity[t])
        self.warm0: dict[str, int] = {}
        self.starts: dict[str, JobStart] = {}
        self.memo: dict[str, dict[tuple[object, ...], Plan | None]] = {}  # a job's fills this decision
        # GPUs this decision cannot use: free workers still provisioning (the warm floor's) and, on the
        # serverless runtime, the idle workers the warm floor keeps
        unusable = 0
        for w in snap.workers:
            if w.gpu_type == self.gpu and w.job_id is None and w.state == WorkerState.PROVISIONING:
                unusable += ix.gpus(w.model) if w.model else 1
        for (model, gtype), lst in ix.idle.items():
            if gtype != self.gpu:
                continue
            if p.warm:
                self.warm0[model] = len(lst)
            else:
                unusable += min(len(lst), snap.min_warm.get(model, 0)) * ix.gpus(model)
        self.cap = max(0, snap.capacity[self.gpu] - unusable)

    # ------------------------------------------------------------------ the model of one job
    def prof(self, j: JobView) -> ModelProfile:
        return self.snap.models[j.spec.model]

    @staticmethod
    def levels(entries: list[Entry]) -> dict[str, int]:
        return {e.job.job_id: e.level for e in entries}

    def steps(self, j: JobView) -> float:
        """Steps left, counting only completed steps (what a restart resumes from, and what the live
        runtime reports)."""
        return max(j.spec.work_steps - math.floor(j.steps_done + 1e-9), MIN_STEPS)

    def start(self, j: JobView) -> JobStart:
        s = self.starts.get(j.job_id)
        if s is None:
            prof, gpu = self.prof(j), self.gpu
            s = job_start(
                self.ix.by_job.get(j.job_id, []), self.now, self.p.slot,
                lambda a, b: self.p.rescale_overhead_s(prof, gpu, a, b),
            )  # fmt: skip
            self.starts[j.job_id] = s
        return s

    def oh(self, j: JobView, warm: int) -> Overheads:
        prof = self.prof(j)
        gpu = self.gpu

        def pause(a: int, b: int) -> float:
            return self.p.rescale_overhead_s(prof, gpu, a, b)

        return Overheads(prof.cold_start_s[gpu], pause, warm if self.p.warm else 0, self.p.count_overheads)

    def plan(self, j: JobView, free: Timeline, warm: dict[str, int], most: int = 2) -> Entry | None:
        """The minimum satisfactory share and how far it had to relax (at most ``most``) for its count:
        0, it finishes a step (on one replica) before the deadline; 1, by the deadline; 2, by the
        deadline once the step under way is done.

        The policy counts only completed steps, so its estimate of a running job's work is up to one step
        high: an arrival gets the slack of level 0, and the admission of others may not relax an admitted
        job's plan further than its own re-plan had to.  Only past level 2 is a job planned past its
        deadline.
        """
        oh = self.oh(j, warm.get(j.spec.model, 0))
        prof = self.prof(j)
        steps = self.steps(j)
        goals = [(steps, prof.step_time(self.gpu, 1))]
        if j.job_id not in self.ix.new and most >= 1:
            goals.append((steps, 0.0))
        memo = self.memo.setdefault(j.job_id, {}) if self.p.incremental else None
        args = (j.deadline, self.now, self.p.slot, free, self.start(j), oh, memo)
        got = min_share(prof, self.gpu, goals, *args)
        if got is not None:
            return Entry(j, got[0], got[1], got[0].share, got[0].low, got[0].reach)
        if most >= 2 and self.start(j).ready > 0 and steps > MIN_STEPS:
            got = min_share(prof, self.gpu, [(steps - 1, 0.0)], *args)
            if got is not None:  # every count failed the first goals on every slot
                top = legal_sizes(prof, free.total)[-1]
                return Entry(j, got[0], 2, top, top, 0)
        return None

    def last(self, j: JobView) -> int:
        """How many slots from now :func:`min_share` reads for ``j`` (those before its deadline)."""
        return int(math.ceil((j.deadline - self.now) / self.p.slot - 1e-9))

    def late(self, j: JobView, free: Timeline, warm: dict[str, int]) -> Plan:
        oh = self.oh(j, warm.get(j.spec.model, 0))
        return best_effort(
            self.prof(j), self.gpu, self.steps(j), self.now, self.p.slot, free, self.start(j), oh
        )

    def take(self, e: Entry, free: Timeline, warm: dict[str, int]) -> None:
        free.take(e.plan.sizes, self.prof(e.job).gpus_per_replica)
        if e.plan.warm_used:
            warm[e.job.spec.model] = warm.get(e.job.spec.model, 0) - e.plan.warm_used

    def prefix(self, entries: list[Entry], k: int) -> tuple[Timeline, dict[str, int]]:
        free, warm = Timeline(self.cap), dict(self.warm0)
        for e in entries[:k]:
            self.take(e, free, warm)
        return free, warm

    def replan(
        self,
        jobs: list[JobView],
        free: Timeline,
        warm: dict[str, int],
        stop_on: set[str],
        most: dict[str, int] | None = None,
    ) -> tuple[list[Entry], list[JobView], str | None]:
        """Plan ``jobs`` in order on ``free``, each relaxed at most ``most[job]``; (feasible entries,
        infeasible jobs, first of ``stop_on`` that failed, which ends the pass)."""
        out: list[Entry] = []
        bad: list[JobView] = []
        for j in jobs:
            e = self.plan(j, free, warm, (most or {}).get(j.job_id, 2))
            if e is None:
                if j.job_id in stop_on:
                    return out, bad, j.job_id
                bad.append(j)
                continue
            self.take(e, free, warm)
            out.append(e)
        return out, bad, None

    # ------------------------------------------------------------------ the decision
    def decide(self) -> Decisions:
        ix = self.ix
        admitted = sorted((j for j in ix.active if j.admitted and j.job_id not in ix.new), key=key)
        new = sorted((j for j in ix.active if j.job_id in ix.new), key=key)
        feasible, late, _ = self.replan(admitted, Timeline(self.cap), dict(self.warm0), set())
        feasible, late, pinned = self.repair(feasible, late)
        admissions: list[Admission] = []
        if new and self.p.admission == "slot":
            front = [e.job for e in feasible[:pinned]]
            others = sorted([j for j in admitted if j not in front] + new, key=key)
            trial, trial_late, failed = self.replan(
                front + others,
                Timeline(self.cap),
                dict(self.warm0),
                {j.job_id for j in new},
                self.levels(feasible),
            )
            if failed is None:
                feasible, late = trial, trial_late
                admissions = [self._admit(e) for e in trial if e.job.job_id in ix.new]
            else:
                why = f"arrival {failed} of this slot cannot meet its deadline"
                after = self.prefix(feasible, len(feasible))
                admissions = [self._decline(j, after, why) for j in new]
        if self.p.admission == "job":
            book = self._book(feasible, pinned)
            for j in new:
                k = book.place(j)
                free, warm = book.before(k)
                e = self.plan(j, free, warm)
                if e is None:
                    admissions.append(self._decline(j, book.after(), "cannot meet its deadline"))
                    continue
                failed = book.insert(k, e, lambda x, f, w: self.plan(x.job, f, w, x.level))
                why = f"admitting it would make {failed} miss"
                admissions.append(self._admit(e) if failed is None else self._decline(j, book.after(), why))
            feasible = book.entries
        free, warm = self.prefix(feasible, len(feasible))
        entries = list(feasible)
        for j in sorted(late, key=key):
            e = Entry(j, self.late(j, free, warm))
            self.take(e, free, warm)
            entries.append(e)
        return self._apply(entries, warm, tuple(admissions))

    def repair(self, feasible: list[Entry], late: list[JobView]) -> tuple[list[Entry], list[JobView], int]:
        """Re-planning in EDF order can leave an admitted job without a share (a job ahead of it that got
        ahead of its plan now takes a smaller share over more slots).  Such a job, if it could still make
        it alone, goes to the front of the order when everybody else keeps a share there; (plans, jobs
        still late, how many jobs lead the order)."""
        book = self._book(feasible, 0)
        for j in list(late):  # at its place every job is planned as from scratch (fully relaxed)
            if j.deadline <= self.now or self.plan(j, Timeline(self.cap), dict(self.warm0)) is None:
                continue
            e = self.plan(j, *book.before(book.pinned))
            if e is not None and book.insert(book.pinned, e, lambda x, f, w: self.plan(x.job, f, w)) is None:
                book.pinned += 1
                late.remove(j)
        return book.entries, late, book.pinned

    def _quote(self, j: JobView, plan: Plan, ok: bool) -> Quote:
        price = self.snap.gpu_types[self.gpu].price_per_hour
        peak = max(plan.sizes, default=0) * self.prof(j).gpus_per_replica
        tight = None if ok or not math.isfinite(plan.finish) else plan.finish
        return Quote(plan.finish, plan.gpu_s / 3600 * price, peak, ok, tight)

    def _admit(self, e: Entry) -> Admission:
        return Admission(e.job.job_id, True, "", self._quote(e.job, e.plan, True))

    def _book(self, feasible: list[Entry], pinned: int) -> Book:
        return Book(
            list(feasible), pinned, self.cap, dict(self.warm0), lambda j: self.prof(j).gpus_per_replica,
            self.last, self.p.warm, not self.p.incremental,
        )  # fmt: skip

    def _decline(self, j: JobView, after: tuple[Timeline, dict[str, int]], why: str) -> Admission:
        """``after``: the free timeline and warm workers the admitted plans leave."""
        quote = self._quote(j, self.late(j, *after), False)
        return Admission(j.job_id, False, f"admission control: {why}", quote)

    # ------------------------------------------------------------------ leftover GPUs and workers
    def _run(self, e: Entry, sizes: tuple[int, ...], warm: int) -> Run:
        prof, steps = self.prof(e.job), self.steps(e.job)
        oh = self.oh(e.job, warm)
        args = (prof.gpus_per_replica, steps, self.now, self.p.slot, sizes, self.start(e.job), oh)
        return run_sizes(rates(prof, self.gpu), *args)

    def _safe(self, e: Entry, n: int, warm: int) -> bool:
        """Holding ``n`` replicas this slot, then the plan, does not delay the planned finish."""
        if not math.isfinite(e.plan.finish):
            return True
        return self._run(e, (n,) + e.plan.sizes[1:], warm).finish <= e.plan.finish + TOL

    def _hold(self, e: Entry, n: int, warm: int) -> Run:
        """The job holding ``n`` replicas from now on."""
        slots = int(self.steps(e.job) * self.prof(e.job).step_time(self.gpu, n) / self.p.slot) + 4
        return self._run(e, (n,) * slots, warm)

    def _apply(
        self, entries: list[Entry], warm: dict[str, int], admissions: tuple[Admission, ...]
    ) -> Decisions:
        size = {e.job.job_id: (e.plan.sizes[0] if e.plan.sizes else 0) for e in entries}
        claim = {e.job.job_id: e.plan.warm_used for e in entries}
        held = {e.job.job_id: self.start(e.job).held for e in entries}
        g = {e.job.job_id: self.prof(e.job).gpus_per_replica for e in entries}
        left = self.cap - sum(size[k] * g[k] for k in size)
        for e in entries:  # keep what a job holds when the plan shrinks it and nobody needs it
            jid = e.job.job_id
            if (
                held[jid] > size[jid]
                and (held[jid] - size[jid]) * g[jid] <= left
                and self._safe(e, held[jid], 0)
            ):
                left -= (held[jid] - size[jid]) * g[jid]
                size[jid] = held[jid]
        cands: dict[str, tuple[float, int] | None] = {}
        rank = {e.job.job_id: i for i, e in enumerate(entries)}
        while left > 0:
            for e in entries:
                jid = e.job.job_id
                if jid not in cands:
                    cands[jid] = self._bump(e, size[jid], claim[jid] + warm.get(e.job.spec.model, 0))
            fits = [
                (c[0], rank[jid], jid, c[1])
                for jid, c in cands.items()
                if c is not None and (c[1] - size[jid]) * g[jid] <= left
            ]
            if not fits:
                break
            _, _, jid, m = min(fits)
            e = entries[rank[jid]]
            model = e.job.spec.model
            extra = max(0, m - held[jid]) - max(0, size[jid] - held[jid])
            got = min(extra, warm.get(model, 0)) if self.p.warm else 0
            if got:
                warm[model] -= got
                claim[jid] += got
                for x in entries:
                    if x.job.spec.model == model:
                        cands.pop(x.job.job_id, None)
            left -= (m - size[jid]) * g[jid]
            size[jid] = m
            cands.pop(jid, None)
        return self._workers(entries, size, claim, admissions)

    def _bump(self, e: Entry, n: int, warm: int) -> tuple[float, int] | None:
        """(extra GPU-seconds per extra GPU, new size) of the next power-of-two step, or None."""
        prof = self.prof(e.job)
        m = 1 if n == 0 else 2 * n
        if m > prof.max_replicas or m * prof.gpus_per_replica > self.cap or not self._safe(e, m, warm):
            return None
        if n == 0:
            return (-math.inf, m)
        now, bumped = self._hold(e, n, warm), self._hold(e, m, warm)
        if not bumped.finish < now.finish - TOL:
            return None
        return ((bumped.gpu_s - now.gpu_s) / ((m - n) * prof.gpus_per_replica), m)

    def _workers(
        self,
        entries: list[Entry],
        size: dict[str, int],
        claim: dict[str, int],
        admissions: tuple[Admission, ...],
    ) -> Decisions:
        snap, ix, now = self.snap, self.ix, self.now
        pool = {m: list(lst) for (m, t), lst in ix.idle.items() if t == self.gpu} if self.p.warm else {}
        alloc: dict[str, tuple[str, ...]] = {}
        provisions: list[Provision] = []
        release: list[str] = []
        for e in entries:
            jid, model = e.job.job_id, e.job.spec.model
            ws = sorted(
                ix.by_job.get(jid, []), key=lambda w: (w.state == WorkerState.PROVISIONING, w.ready_at)
            )
            n = size[jid]
            if n < len(ws):
                alloc[jid] = tuple(w.worker_id for w in ws[:n])
                release.extend(w.worker_id for w in ws[n:])
            elif n > len(ws):
                take = [
                    pool[model].pop() for _ in range(min(claim[jid], n - len(ws), len(pool.get(model, []))))
                ]
                if take:
                    alloc[jid] = tuple(w.worker_id for w in ws) + tuple(w.worker_id for w in take)
                if n - len(ws) - len(take) > 0:
                    provisions.append(Provision(model, self.gpu, n - len(ws) - len(take), job_id=jid))
        taken = {w for ws in alloc.values() for w in ws}
        idle = sorted(
            (w for lst in ix.idle.values() for w in lst if w.worker_id not in taken),
            key=lambda w: (w.idle_since if w.idle_since is not None else now, w.worker_id),
        )
        release.extend(w.worker_id for w in idle if self.p.expired(w, now))
        d = self._fit(Decisions(alloc, tuple(provisions), tuple(dict.fromkeys(release)), admissions), idle)
        wake = now + self.p.slot if ix.active else None
        return replace(d, wake_at=self.p._wake(snap, d, wake))

    def _fit(self, d: Decisions, idle: list[WorkerView]) -> Decisions:
        """Release idle workers (oldest first) and, if the warm floor keeps some, cut provisions (the
        last jobs' first) until what is held fits the capacity."""
        snap = self.snap
        extra = [w.worker_id for w in idle if w.worker_id not in set(d.release)]

        def over(x: Decisions) -> int:
            ws = [snap.worker_index[w] for w in x.release]
            gone = sum(self.ix.gpus(w.model) for w in ws if w.gpu_type == self.gpu and w.model)
            add = sum(p.count * self.ix.gpus(p.model) for p in x.provision if p.gpu_type == self.gpu)
            return snap.gpus_held(self.gpu) - gone + add - snap.capacity[self.gpu]

        while over(keep_warm_floor(snap, d)) > 0 and extra:
            d = replace(d, release=d.release + (extra.pop(0),))
        out = keep_warm_floor(snap, d)
        while over(out) > 0 and d.provision:
            last = d.provision[-1]
            cut = (last.count - 1,) if last.count > 1 else ()
            d = replace(d, provision=d.provision[:-1] + tuple(replace(last, count=c) for c in cut))
            out = keep_warm_floor(snap, d)
        return out
