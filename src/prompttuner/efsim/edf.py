"""The EDF baseline of the replay, ``policy="edf"``.

The released simulator's EDF baseline: zero overhead, no admission control, at every event
every job is re-planned in deadline order taking ``min(cap, free)`` (a legal size) per period; a job's end
is ``ceil`` seconds (not rounded to a slot) and it met its deadline iff that end is ``<= deadline``.  The
cap is ``min(64, batch, largest measured size)`` (no per-model ElasticFlow caps).
"""

from __future__ import annotations

from prompttuner.efsim.events import Replay
from prompttuner.efsim.inputs import ClusterSpec, Job, Profiles
from prompttuner.efsim.plan import Timeline


class EDFReplay(Replay):
    def __init__(self, jobs: list[Job], spec: ClusterSpec, profiles: Profiles, slot: int) -> None:
        super().__init__(jobs, spec, profiles, slot)
        self.ffg: Timeline = {}

    def estimate_all(self, jobs: list[Job], now: float) -> None:
        self.ffg = {now: self.total}
        jobs.sort(key=lambda j: j.ddl)
        for job in jobs:
            plan = self.planner.plan_edf(job, now, self.ffg)
            self.ffg = plan.timeline
            job.new_alloc = plan.alloc
            job.new_end = plan.end

    def run(self) -> None:
        now = self.events[0].time
        dt = 0
        idle = 0
        event_time = now
        while self.events or self.pending:
            if not self.events:
                if idle > 1:
                    break
                idle += 1
            self.run_all(dt, now, use_real_end=False)
            for job in self.runnable:
                job.overhead = 0.0
            new_jobs = False
            if self.events:
                event = self.events[0]
                event_time = event.time
                self.handled += 1
                for job in event.end:
                    if not job.done:
                        self.finish(job, late=job.end_time > job.ddl)
                if event.start:
                    new_jobs = True
                    self.estimate_all(self.runnable + event.start, event_time)
                    for job in event.start:
                        self.move_to_pending(job)
            if not new_jobs:
                self.estimate_all(self.runnable, event_time)
            for job in self.runnable:
                job.allocations = job.new_alloc
                job.num_gpu = job.allocations[event_time]
                job.old_end_time = job.end_time
                job.end_time = job.new_end
                if job in self.running:
                    self.change_end_event(job)
                elif job.num_gpu > 0:
                    self.start_job(job)
                    self.add_end_event(job)
            if not self.events:
                dt = self.slot
                continue
            self.events.pop(0)
            if not self.events:
                dt = self.slot
                continue
            nxt = self.merge_events(now)
            dt = int(nxt - now)
            now = nxt
