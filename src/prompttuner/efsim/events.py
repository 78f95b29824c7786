"""The state both replayed policies share: job lists, the event list, progress between events, counters.

The event-list operations keep the released simulator's semantics (events are found by exact time; an
event that loses its last job is dropped; events within one slot of now are merged at ``now + slot``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prompttuner.efsim.inputs import ClusterSpec, Job, Profiles
from prompttuner.efsim.plan import Planner


@dataclass(eq=False)
class Event:
    time: float
    start: list[Job] = field(default_factory=list)
    end: list[Job] = field(default_factory=list)


class Replay:
    """State shared by both policies: job lists, the event list and the counters."""

    def __init__(self, jobs: list[Job], spec: ClusterSpec, profiles: Profiles, slot: int) -> None:
        self.spec = spec
        self.total = spec.gpus
        self.slot = slot
        self.planner = Planner(profiles, self.total, slot)
        self.jobs = jobs
        self.events: list[Event] = []
        for job in jobs:
            ev = self._find(job.submit)
            if ev is None:
                ev = Event(job.submit)
                self.events.append(ev)
            ev.start.append(job)
        self.events.sort(key=lambda e: e.time)
        self.pending: list[Job] = []
        self.running: list[Job] = []
        self.runnable: list[Job] = []
        self.met = 0  # released "accepted": started, minus the ones that finished late
        self.late = 0
        self.declined = 0
        self.handled = 0

    def run(self) -> None:
        raise NotImplementedError

    # -------------------------------------------------------------- event list (released semantics)
    def _find(self, t: float) -> Event | None:
        for ev in self.events:
            if ev.time == t:
                return ev
        return None

    def add_end_event(self, job: Job) -> None:
        ev = self._find(job.end_time)
        if ev is None:
            self.events.append(Event(job.end_time, end=[job]))
        elif job not in ev.end:
            ev.end.append(job)

    def change_end_event(self, job: Job) -> None:
        if job.old_end_time == job.end_time:
            return
        ev = self._find(job.old_end_time)
        if ev is not None:
            if job in ev.end:
                ev.end.remove(job)
            if not ev.end and not ev.start:
                self.events.remove(ev)
        self.add_end_event(job)

    def move_to_pending(self, job: Job) -> None:
        self.pending.append(job)
        if job not in self.runnable:
            self.runnable.append(job)

    def start_job(self, job: Job) -> None:
        self.pending.remove(job)
        self.running.append(job)
        if job not in self.runnable:
            self.runnable.append(job)
        self.met += 1

    def finish(self, job: Job, late: bool) -> None:
        job.done = True
        job.placed = False
        if job in self.running:
            self.running.remove(job)
        if job in self.runnable:
            self.runnable.remove(job)
        if late:
            self.late += 1
            self.met -= 1

    def run_all(self, dt: int, now: float, use_real_end: bool) -> None:
        """Advance every job holding GPUs by ``dt`` seconds minus its overhead."""
        for job in self.runnable:
            if job.num_gpu == 0:
                continue
            run = float(dt)
            ref = job.real_end_time if (use_real_end and job.real_end_time is not None) else job.end_time
            if now > ref:
                run -= now - ref
            run = 0.0 if run < job.overhead else run - job.overhead
            tput = self.planner.tp(job, job.num_gpu)
            its = run * tput
            if job.iter_left <= its and job.end_time > now:
                actual = now - dt + math.ceil(job.iter_left / tput)
                its = (job.end_time - now + dt) * tput
                job.old_end_time = job.end_time
                job.end_time = now
                self.change_end_event(job)
                job.end_time = actual
            job.iter_left -= its
            job.overhead = 0.0

    def merge_events(self, now: float) -> float:
        """Merge every event within one slot of ``now`` into one at ``now + slot``; return the next time."""
        self.events.sort(key=lambda e: e.time)
        nxt = self.events[0].time
        while int(nxt - now) <= self.slot and len(self.events) > 1:
            head = self.events[0]
            head.time = now + self.slot
            if self.events[1].time - now > self.slot:
                break
            nxt = self.events[1].time
            head.start.extend(self.events[1].start)
            head.end.extend(self.events[1].end)
            del self.events[1]
        return self.events[0].time

    def result(self) -> dict[str, Any]:
        n = len(self.jobs)
        decided = self.met + self.late + self.declined
        return {
            "ddl_satis_ratio": self.met / decided if decided else 0.0,
            "jobs": n,
            "met": self.met,
            "missed": self.late,
            "declined": self.declined,
            "unfinished": n - decided,
            "events_handled": self.handled,
        }
