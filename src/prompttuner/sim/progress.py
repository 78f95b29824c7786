"""How the simulator's running jobs progress, and when each is next looked at.

A running job progresses in closed form from the last change of its replicas: ``steps_at`` is its steps
at any time, and its record is settled (``settle``) only when its progress model changes (replicas, GPU
type, the rescale pause).  Its finish, the time it comes within the completion tolerance of its stop,
and its next estimate refresh wait in heaps; a version on the job marks the entries a later change made
stale.  So an event costs the simulator work for what changed, not for every running job
(``benchmarks/results/sim_scale100k.md``).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import replace

from prompttuner.core.live import LiveIndex
from prompttuner.core.types import ModelProfile
from prompttuner.sim.prediction import ErrorModel
from prompttuner.sim.records import _Job

EPS = 1e-6

_Entry = tuple[float, int, int, str]  # (time, seq, job version, job id)


def steps_at(job: _Job, t: float) -> float:
    """Steps ``job`` has run by ``t`` (a job without ready replicas stands still)."""
    if job.ready_n <= 0:
        return job.steps_done
    start = max(job.last_t, job.paused_until)
    return job.steps_done + (t - start) * job.r if t > start else job.steps_done


def near_stop(job: _Job) -> float:
    """The steps from which a job counts as at its stop (the completion tolerance)."""
    return job.stop - EPS * max(1.0, job.stop)


class JobClock:
    """The running jobs (in the order they started running) and the heaps of their next events."""

    def __init__(
        self, active: Mapping[str, _Job], models: Mapping[str, ModelProfile], estimates: ErrorModel | None
    ) -> None:
        self.active = active  # the simulator's active jobs (an entry of a job no longer there is stale)
        self.models = models
        self.estimates = estimates
        self.refreshing = estimates is not None and not estimates.oracle
        self.running: dict[str, _Job] = {}  # active jobs with ready replicas
        self._done: list[_Entry] = []  # scheduled finishes
        # when a job is within the completion tolerance of its stop: a job that close is done at any
        # event (the finish itself is the next event time, from ``_done``)
        self._near: list[_Entry] = []
        self._check: list[_Entry] = []  # next estimate refreshes
        self._seq = 0

    def _live(self, entry: _Entry) -> _Job | None:
        job = self.active.get(entry[3])
        return job if job is not None and job.ver == entry[2] else None

    def settle(self, job: _Job, now: float) -> None:
        """Fold the progress and busy GPU-seconds since ``last_t`` into the job's record (at ``now``)."""
        if job.ready_n > 0:
            start = max(job.last_t, job.paused_until)
            if now > start:
                job.steps_done += (now - start) * job.r
            job.busy_gpu_s += (now - job.last_t) * job.ready_n * self.models[job.spec.model].gpus_per_replica
        job.last_t = now

    def schedule(self, job: _Job, now: float) -> None:
        """(Re)schedule a running job's completion and its next estimate refresh (after ``settle``)."""
        job.ver += 1
        if job.ready_n <= 0 or job.r <= 0:
            return
        start = max(now, job.paused_until)
        self._seq += 1
        jid = job.spec.job_id
        t = start + max(0.0, job.stop - job.steps_done) / job.r
        heapq.heappush(self._done, (t, self._seq, job.ver, jid))
        near = near_stop(job)
        tn = start + (near - job.steps_done) / job.r if near > job.steps_done else now
        heapq.heappush(self._near, (tn, self._seq, job.ver, jid))
        if self.refreshing and math.isfinite(job.next_check):
            left = job.next_check - job.steps_done
            tc = start + left / job.r if left > 0 else now  # a check due now is made now
            heapq.heappush(self._check, (tc, self._seq, job.ver, jid))

    def next_finish(self) -> float:
        heap = self._done
        while heap:
            if self._live(heap[0]) is not None:
                return heap[0][0]
            heapq.heappop(heap)  # stale
        return math.inf

    def finished_by(self, t: float) -> list[_Job]:
        """The jobs done at ``t``: those within the tolerance of their stop (due by their scheduled
        time, checked on their steps at ``t``) and those whose scheduled finish has come, in the order
        they started running."""
        heap = self._near
        finished: list[_Job] = []
        again: list[_Entry] = []
        while heap and heap[0][0] <= t:
            entry = heapq.heappop(heap)
            job = self._live(entry)
            if job is None or job.ready_n <= 0:
                continue  # stale
            if steps_at(job, t) >= near_stop(job):
                finished.append(job)
            else:
                again.append(entry)  # not yet (rounding): looked at again at the next event
        for entry in again:
            heapq.heappush(heap, entry)
        heap = self._done  # a job whose scheduled finish has come is done in any case
        while heap and heap[0][0] <= t:
            job = self._live(heapq.heappop(heap))
            if job is not None and job.ready_n > 0 and all(f is not job for f in finished):
                finished.append(job)
        if len(finished) > 1:
            order = {jid: k for k, jid in enumerate(self.running)}
            finished.sort(key=lambda j: order[j.spec.job_id])
        return finished

    def refresh(self, now: float, live: LiveIndex) -> None:
        """Refresh the work estimates of jobs that ran a tenth of their admission estimate since the
        last refresh (the estimate conditioned on the steps run without reaching the target); a job
        whose estimate changes is named to the live index (``LiveIndex.touch``)."""
        est = self.estimates
        if est is None or not self.refreshing:
            return
        # only jobs whose scheduled check time has come can have reached their next check
        heap = self._check
        again: list[_Entry] = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            job = self._live(entry)
            if job is None:
                continue  # stale: the job finished or its progress model changed since
            done = steps_at(job, now)
            if done >= job.next_check:
                new = est.refresh(job.estimate0, done)
                if new != job.spec.work_steps:
                    job.spec = replace(job.spec, work_steps=new)
                    job.view = None
                    live.touch(job.spec.job_id)
                job.next_check = done + 0.1 * job.estimate0
                tc = max(job.last_t, job.paused_until) + (job.next_check - job.steps_done) / job.r
                entry = (tc, entry[1], entry[2], entry[3])
            again.append(entry)  # not reached yet (rounding): looked at again at the next event
        for entry in again:
            heapq.heappush(heap, entry)
