"""The ElasticFlow policy (``ef-accessctrl``) of the replay, ``policy="elasticflow"``.

How it works:

1. **Events** are arrivals, (planned) completions and planned allocation changes.  After each handled
   event, if the next event is within one scheduling slot (``int(next - now) <= slot``) and more than one
   event is pending, the head event is moved to ``now + slot`` and every event up to ``now + slot`` is
   merged into it; a lone last event keeps its own time.
2. **Progress**: at an event every job holding GPUs advances ``(dt - overhead) * T(model, batch, n)``
   iterations, counted only up to its planned exact end.  A job that finishes early has its completion
   moved to the current event.
3. **Completions**: a job ends at its (planned) end event, or at the current event when it finished
   before it.  As in every version of the released accessctrl loop we could read, it met its deadline
   iff its current plan's unrounded end (``real_end``, no overhead added) is ``<= deadline``
   (``deadline_check="real_end"``, the default).  ``deadline_check="end"`` checks the completion time
   instead (slot-rounded plan end plus overhead, or the exact finish second when it finished early): a
   reading we used before the mechanism of step 6 was found, kept for comparison.
4. **Admission control**: all admitted jobs plus the event's arrivals are planned from scratch, in
   deadline order (stable), each with *minimum satisfactory share* against the free-GPU timeline left
   by the jobs before it (:mod:`prompttuner.efsim.plan`).  If ANY planned job (an already admitted one
   included, as in the released code, not only an arrival) cannot meet its deadline, every arrival of
   the (merged) event is declined; otherwise all are admitted.  A declined job counts as a miss.
5. **Start**: a pending job starts when its plan gives it GPUs now.
6. **Leftover GPUs** (work conserving): each job is priced for one step up (next legal size now, MSS
   after): ``(GPU-seconds of the new plan - GPU-seconds of the current plan) / extra GPUs``; jobs with 0
   GPUs get +inf, jobs that cannot grow (or whose step does not fit) -inf.  As in the released code the
   list is sorted in DESCENDING order of that price and the first job that fits is bumped; prices are
   recomputed and the loop repeats until no GPU is left or nothing can grow.  A bump replaces the job's
   plan, its rounded end AND its ``real_end`` by those of the priced step-up plan
   (``refresh_real_end=True``, the default).  This is what the later released code does:
   gudiandian/ElasticFlow (the first author's copy of the artifact) at commit a8c66e6,
   ``ElasticFlow/scheduler/scheduler.py``, stores ``next_level_realendtime`` in the pricing branches of
   ``ef_sim_allocation`` and ``allocate_free_gpus`` copies it into ``real_end_time``; tianhao909/
   ElasticFlow (a fork, commit 7d289c0, ``scheduler_fth.py``) has the same lines.  The older
   pkusys/ElasticFlow commit 0d29ad9 (and gudiandian 1bc8239) leave ``real_end_time`` stale on a bump,
   selectable with ``refresh_real_end=False``.  ``real_end`` bounds the progress counted in step 2 and
   decides the deadline check of step 3: with the refreshed (earlier) value a bumped job is credited only
   up to it, minus the overhead, so it is often a few iterations short at its plan's end and its re-plan
   ends late (which also makes admission decline the arrivals of that event); with the stale (later) value
   bumped jobs are over-credited.  This one line moves cluster10 n16g8/n8g8 from 0.9923/0.9885 (0d29ad9
   as written) to the reference's 0.8577/0.8231 exactly.
7. **Placement** on nodes, largest job first (:mod:`prompttuner.efsim.place`).
8. **Overhead** for the next interval, per job holding GPUs: 2 s (7 s at 256+ GPUs); if its exact GPU set
   was not used by any job since the last restart, plus 27 s (+20 s at 256+ GPUs) when this handled event
   is a restart (every ``slot``-th handled event: the released simulator reuses the slot length as the
   restart period) and plus ``2 * (log2(n) + 1)`` s.  The overhead also pushes the job's end event later.

Rounding: plans run on a grid of ``now + k * slot``; a plan's end is rounded up to that grid; the exact end
is ``ceil`` of seconds.  Plans that cannot meet the deadline are still made (run at the largest tried
size until the deadline, then on what is free, then on the job's cap) and marked late.
"""

from __future__ import annotations

import math

from prompttuner.efsim.events import Event, Replay
from prompttuner.efsim.inputs import ClusterSpec, Job, Profiles
from prompttuner.efsim.place import place
from prompttuner.efsim.plan import (
    MAXSIZE,
    Plan,
    PlanError,
    Timeline,
    available_at,
    gpu_seconds,
    merge,
    next_level,
)


class ElasticFlowReplay(Replay):
    def __init__(
        self,
        jobs: list[Job],
        spec: ClusterSpec,
        profiles: Profiles,
        slot: int,
        deadline_check: str = "real_end",
        refresh_real_end: bool = True,
    ) -> None:
        super().__init__(jobs, spec, profiles, slot)
        self.ffg: Timeline = {}
        self.deadline_check = deadline_check
        self.refresh_real_end = refresh_real_end
        self.cache: set[tuple[int, int]] = set()
        self.schedule_count = 0

    def _commit(self, job: Job, plan: Plan) -> None:
        self.ffg = merge(plan.timeline)
        job.end_time = plan.end
        job.real_end_time = plan.real_end
        job.allocations = merge(plan.alloc)

    def estimate_all(self, jobs: list[Job], now: float, record_old: bool = True) -> bool:
        self.ffg = {now: self.total}
        jobs.sort(key=lambda j: j.ddl)
        for job in jobs:
            if record_old:
                job.old_end_time = job.end_time
            job.placed = False
        ok = True
        for job in jobs:
            plan = self.planner.plan_mss(job, now, self.ffg)
            self._commit(job, plan)
            ok = ok and plan.ok
        return ok

    def marginal(self, job: Job, allocatable: int, now: float) -> None:
        step = job.next_level - job.num_gpu
        if step > allocatable or step == 0:
            job.marginal = -MAXSIZE
            return
        tmp = dict(self.ffg)
        if job.end_time not in tmp:
            leg = None
            for t, v in tmp.items():
                if t < job.end_time:
                    leg = v
                else:
                    break
            if leg is None:
                raise PlanError(f"job {job.idx} ends before the timeline starts")
            tmp[job.end_time] = leg
            tmp = dict(sorted(tmp.items()))
        last = 0
        for a_t, a_v in job.allocations.items():
            if a_t not in tmp:
                tmp[a_t] = available_at(a_t, tmp, self.total)
                tmp = dict(sorted(tmp.items()))
            for t in tmp:
                if t < a_t:
                    continue
                if t >= job.end_time:
                    break
                tmp[t] += a_v - last
            last = a_v
        tmp = merge(tmp)
        plan = self.planner.plan_mss(job, now, tmp, assign=job.next_level)
        job.nl_alloc = merge(plan.alloc)
        job.nl_ffg = merge(plan.timeline)
        job.nl_end = plan.end
        job.nl_real_end = plan.real_end
        job.marginal = (gpu_seconds(plan.alloc, plan.end) - gpu_seconds(job.allocations, job.end_time)) / step
        if job.num_gpu == 0:
            job.marginal = MAXSIZE

    def allocate_free(self, now: float) -> None:
        used = 0
        for job in self.runnable:
            job.next_level = next_level(job, job.num_gpu)
            used += job.num_gpu
        allocatable = self.total - used
        if self.ffg.get(now) != allocatable:
            raise PlanError(f"timeline says {self.ffg.get(now)} free at {now}, jobs leave {allocatable}")
        if allocatable == 0:
            return
        for job in self.runnable:
            self.marginal(job, allocatable, now)
        self.runnable.sort(key=lambda j: j.marginal, reverse=True)
        grew = True
        while allocatable > 0 and grew:
            grew = False
            for job in self.runnable:
                step = job.next_level - job.num_gpu
                if step > allocatable or step == 0:
                    continue
                self.ffg = merge(job.nl_ffg)
                job.allocations = job.nl_alloc
                job.num_gpu = job.next_level
                job.old_end_time = job.end_time
                job.end_time = job.nl_end
                if self.refresh_real_end:  # a8c66e6 and later; 0d29ad9 keeps the stale value
                    job.real_end_time = job.nl_real_end
                if job in self.pending:
                    self.start_job(job)
                self.change_end_event(job)
                allocatable -= step
                grew = True
                job.next_level = next_level(job, job.num_gpu)
                break
            for job in self.runnable:
                if job.next_level - job.num_gpu > 0:
                    self.marginal(job, allocatable, now)
            self.runnable.sort(key=lambda j: j.marginal, reverse=True)

    def overhead(self, n: int, restart: bool, cached: bool) -> float:
        big = self.total >= 256
        o = 7.0 if big else 2.0
        if cached:
            return o
        if restart:
            o += 47.0 if big else 27.0
        return o + (math.log(n, 2) + 1) * 2

    def run(self) -> None:
        now = self.events[0].time
        dt = 0
        while self.events or self.pending or self.running:
            self.run_all(dt, now, use_real_end=True)
            for job in self.runnable:
                job.overhead = 0.0
            event = self._find(now)
            if event is None:
                raise PlanError(f"no event at {now}")
            self.events.remove(event)
            if not self.pending and not self.running and not event.end and not event.start:
                if not self.events:
                    break
                prev = now
                now = min(e.time for e in self.events)
                dt = int(now - prev)
                continue
            self.handled += 1
            for job in event.end:
                if job.placed and not job.done:
                    assert job.real_end_time is not None
                    done_at = job.end_time if self.deadline_check == "end" else job.real_end_time
                    self.finish(job, late=done_at > job.ddl)
            for job in self.runnable:
                job.old_end_time = job.end_time
            admitted = False
            if event.start:
                saved = self.ffg
                if not self.estimate_all(self.runnable + event.start, now):
                    self.declined += len(event.start)
                    for job in event.start:
                        job.done = True
                    self.ffg = saved
                else:
                    admitted = True
                    for job in event.start:
                        self.move_to_pending(job)
            if not admitted:
                self.estimate_all(self.runnable, now, record_old=not event.start)
            self.ffg = {now: self.total}
            self.runnable.sort(key=lambda j: j.ddl)
            for job in self.runnable:
                job.num_gpu = job.allocations[now]
                self.change_end_event(job)
                job.old_end_time = job.end_time
                self._commit(job, self.planner.plan_mss(job, now, self.ffg))

            # start pending jobs whose plan gives them GPUs now
            starting = []
            for job in self.pending:
                waits = False
                for t, a in job.allocations.items():
                    if a == 0:
                        continue
                    waits = t > now
                    break
                job.num_gpu = job.allocations[now]
                if not waits:
                    starting.append(job)
            for job in starting:
                self.start_job(job)
                self.add_end_event(job)
            self.allocate_free(now)

            first_change: float = MAXSIZE
            self.runnable.sort(key=lambda j: j.num_gpu, reverse=True)
            for job in self.runnable:
                for t in sorted(job.allocations):
                    if t > now:
                        first_change = min(first_change, t)
                        break
            holding = [j for j in self.runnable if j.num_gpu > 0]
            ranks = place(holding, self.spec.nodes, self.spec.gpus_per_node)
            for job in holding:
                job.placed = True
                key = ranks[job]
                job.in_cache = key in self.cache
                self.cache.add(key)

            self.events.sort(key=lambda e: e.time)
            if not self.events or first_change < self.events[0].time:
                if self._find(first_change) is None:
                    self.events.append(Event(first_change))
                self.events.sort(key=lambda e: e.time)
            restart = self.schedule_count > 0 and self.schedule_count % self.slot == 0
            self.schedule_count += 1
            if restart:
                self.cache.clear()
            for job in self.runnable:
                if job.num_gpu > 0:
                    job.overhead = self.overhead(job.num_gpu, restart, job.in_cache)
                    job.old_end_time = job.end_time
                    job.end_time += job.overhead
                    self.change_end_event(job)
                else:
                    job.overhead = 0.0
            nxt = self.merge_events(now)
            dt = int(nxt - event.time)
            now = nxt
