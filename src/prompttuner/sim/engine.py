"""Discrete-event simulator that drives a :class:`~prompttuner.scheduler.base.Policy`.

The simulator owns the clock.  At every event (an arrival, a worker becoming ready, a job reaching its
work, or a time the policy asked to be woken at) it advances job progress, builds a
:class:`ClusterSnapshot`, asks the policy to decide and applies the decisions through the one applier
(:mod:`prompttuner.scheduler.applier`, shared with the live controller).  What is the simulator's own is
the clock and how a change reaches the workers: a change of a job's ready replicas costs the pause the
policy's :meth:`~prompttuner.scheduler.base.Policy.rescale_overhead_s` names, progress is the model
profile's throughput, and a job stops at its true work (or the user's ``max_steps``, below its target).

Cost is every GPU-second from a worker's request to its release times its type's price; the part of
it before the worker was ready is reported as loading.

Per event the simulator's own work is proportional to what changed, so 100,000 jobs on 10,000 GPUs stay
cheap (``benchmarks/results/sim_scale100k.md``):

- a running job progresses in closed form from the last change of its replicas, and its finish and next
  estimate refresh wait in heaps (``sim/progress.py``), as do the ready times of provisioning workers;
- worker views are rebuilt only when a worker changes and kept, grouped the ways policies ask for them,
  in a :class:`~prompttuner.core.live.LiveIndex` (by job, idle and free-provisioning per model and GPU
  type, GPUs held), with the active jobs that hold no worker;
- with ``incremental`` (the default) a snapshot carries that index, and its job and worker lists are
  listed only if a policy reads them (each job's view built at most once per event); a policy that plans
  from the index and from what it kept between decisions (INFless) never walks every job or worker.
  ``incremental=False`` hands policies plain snapshots: the reference the incremental runs must equal
  (``tests/test_scale.py``).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

from prompttuner.core.live import Lazy, LiveIndex
from prompttuner.core.types import (
    Admission,
    ClusterSnapshot,
    GPUType,
    JobPhase,
    JobSpec,
    JobView,
    ModelProfile,
    Provision,
    Switch,
    WorkerState,
    WorkerView,
)
from prompttuner.scheduler.applier import PolicyError, apply
from prompttuner.scheduler.base import Policy
from prompttuner.scheduler.snapshot import ArrivalBook, build_snapshot
from prompttuner.sim.prediction import ErrorModel
from prompttuner.sim.progress import EPS, JobClock, steps_at
from prompttuner.sim.records import SimResult, _Job, _Worker, result_of

__all__ = ["PolicyError", "SimResult", "Simulator"]


class _JobViews(Mapping[str, JobView]):
    """The simulator's active jobs by id, each view built (at the current time) on first use."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def __getitem__(self, job_id: str) -> JobView:
        return self._sim._job_view(self._sim.active[job_id])

    def __iter__(self) -> Iterator[str]:
        return iter(self._sim.active)

    def __len__(self) -> int:
        return len(self._sim.active)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._sim.active

    def all_active(self, job_ids: Sequence[str]) -> bool:
        """Every one of ``job_ids`` is here, hence not terminal (a job leaves ``active`` when it ends)."""
        return all(map(self._sim.active.__contains__, job_ids))


class Simulator:
    def __init__(
        self,
        policy: Policy,
        jobs: Sequence[JobSpec],
        models: Mapping[str, ModelProfile],
        gpu_types: Mapping[str, GPUType],
        capacity: Mapping[str, int],
        true_work: Mapping[str, float] | None = None,
        slowdown: Mapping[str, float] | None = None,
        estimates: ErrorModel | None = None,
        history: int = 64,
        max_time: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        initial_workers: Sequence[tuple[str, str, int]] = (),
        min_warm: Mapping[str, int] | None = None,
        incremental: bool = True,
    ) -> None:
        self.policy = policy
        self.specs = sorted(jobs, key=lambda j: (j.arrival, j.job_id))
        self.models = models
        self.gpu_types = gpu_types
        self.capacity = dict(capacity)
        self.jobs: dict[str, _Job] = {}
        for j in self.specs:
            work = (true_work or {}).get(j.job_id, j.work_steps)
            stop = work if j.max_steps is None else min(work, float(j.max_steps))
            job = _Job(j, work, stop, slow=(slowdown or {}).get(j.job_id, 1.0), estimate0=j.work_steps)
            if estimates is not None and not estimates.oracle:
                job.next_check = 0.1 * j.work_steps
            self.jobs[j.job_id] = job
        self.estimates = estimates
        self.active: dict[str, _Job] = {}
        self.workers: dict[str, _Worker] = {}
        self.now = 0.0
        self._seq = 0
        self.history = history
        self.book = ArrivalBook(history)
        self.min_warm = dict(min_warm or {})
        self.cost = 0.0
        self.held_gpu_s = 0.0
        self.busy_gpu_s = 0.0
        self.loading_gpu_s = 0.0
        self.clock = JobClock(self.active, models, estimates)  # running jobs' progress and next events
        self._prov: dict[str, _Worker] = {}  # provisioning workers
        self._prov_heap: list[tuple[float, int, str]] = []  # (ready_at, seq, worker); stale once ready
        # worker views, grouped as policies ask for them and kept in place (``core/live.py``); a worker
        # whose view is out of date waits in ``_wdirty`` (in the order it changed) for the next snapshot
        self.live = LiveIndex(models)
        self._wdirty: dict[str, None] = {}
        self.incremental = incremental
        # the index also names every job whose view changes without a worker changing (an estimate
        # refresh, ``_refresh``), so a policy may keep per-job results between decisions
        self.live.feeds_jobs = incremental
        self._job_map = _JobViews(self)
        self.cold_starts = 0
        self.switches = 0
        self.decisions = 0
        self.timeline: list[tuple[float, int, int]] = []
        self._held = 0
        self._busy = 0
        self._wake: float | None = None
        self._pending: list[str] = []
        self._held_by_type: dict[str, int] = {}
        last = self.specs[-1].arrival if self.specs else 0.0
        span = max((j.deadline - j.arrival for j in self.specs), default=0.0)
        self.max_time = max_time if max_time is not None else last + 10 * span + 86_400
        self.progress = progress
        for model, gpu, count in initial_workers:
            prof = self.models[model]
            if self._held_by_type.get(gpu, 0) + count * prof.gpus_per_replica > self.capacity.get(gpu, 0):
                raise ValueError(f"initial workers {count} x {model} exceed the capacity of {gpu}")
            self._provision(model, gpu, count, None, ready_now=True)

    # ------------------------------------------------------------------ bookkeeping
    def _provision(
        self, model: str, gpu: str, count: int, job_id: str | None, ready_now: bool = False
    ) -> tuple[str, ...]:
        """Start ``count`` workers (the applier checked the profile and the capacity)."""
        prof = self.models[model]
        made: list[str] = []
        for _ in range(count):
            self._seq += 1
            wid = f"w{self._seq}"
            ready = self.now if ready_now else self.now + prof.cold_start_s[gpu]
            w = _Worker(wid, gpu, model, prof.gpus_per_replica, WorkerState.PROVISIONING, self.now, ready)
            if ready_now:
                w.state = WorkerState.IDLE
                w.idle_since = self.now
            else:
                self.cold_starts += 1
                self._prov[wid] = w
                heapq.heappush(self._prov_heap, (ready, self._seq, wid))
            self.workers[wid] = w
            self._wdirty[wid] = None
            self._held += w.gpus
            self._held_by_type[gpu] = self._held_by_type.get(gpu, 0) + w.gpus
            made.append(wid)
            if job_id is not None:
                job = self.active[job_id]
                w.job_id = job_id
                job.workers.append(wid)
                job.view = None
        if job_id is not None:
            self._sync_queue(self.active[job_id])
        return tuple(made)

    def _sync_queue(self, job: _Job) -> None:
        """Keep the live index's list of active jobs that hold no worker."""
        want = not job.workers and job.spec.job_id in self.active
        if want != job.queued:
            s = job.spec
            if want:
                self.live.queue(s.model, s.arrival, s.job_id)
            else:
                self.live.unqueue(s.model, s.arrival, s.job_id)
            job.queued = want

    def _release(self, wid: str) -> None:
        w = self.workers.pop(wid)
        self._prov.pop(wid, None)
        self.live.drop(wid)
        self._wdirty.pop(wid, None)
        price = self.gpu_types[w.gpu_type].price_per_hour
        dur = self.now - w.requested_at
        self.cost += dur * w.gpus * price / 3600.0
        self.held_gpu_s += dur * w.gpus
        start = w.requested_at if w.load_from is None else w.load_from
        self.loading_gpu_s += (w.loaded_s + min(self.now, w.ready_at) - start) * w.gpus
        self._held -= w.gpus
        self._held_by_type[w.gpu_type] -= w.gpus

    def _advance(self, t: float) -> None:
        """Move the clock to ``t``.  Running jobs progress in closed form (``steps_at``); a job's record
        is settled only when its progress model changes (``JobClock.settle``), so an event costs O(1) here."""
        self.busy_gpu_s += (t - self.now) * self._busy
        self.now = t

    def steps_at(self, job: _Job, t: float) -> float:
        """Steps ``job`` has run by ``t`` (a job without ready replicas stands still)."""
        return steps_at(job, t)

    def _set_ready(self, job: _Job) -> None:
        """Recount a job's ready replicas; a change costs the policy's rescale pause."""
        self.clock.settle(job, self.now)
        ready = [self.workers[w] for w in job.workers if self.workers[w].state != WorkerState.PROVISIONING]
        n = len(ready)
        changed = n != job.ready_n
        if job.workers:
            job.gpu = self.workers[job.workers[0]].gpu_type  # one GPU type per job (the applier checks)
        if n != job.ready_n:
            prof = self.models[job.spec.model]
            g = prof.gpus_per_replica
            self._busy += (n - job.ready_n) * g
            if job.ready_n == 0:
                job.last_t = self.now  # it stood still until now
            if n > 0 and job.gpu is not None:
                pause = self.policy.rescale_overhead_s(prof, job.gpu, job.ready_n, n)
                job.paused_until = max(job.paused_until, self.now) + pause if pause > 0 else job.paused_until
                job.rescales += 1
                if job.first_start is None:
                    job.first_start = self.now
            job.ready_n = n
            job.phase = JobPhase.RUNNING if n > 0 else JobPhase.QUEUED
            job.view = None
            if n > 0:
                self.clock.running[job.spec.job_id] = job
            else:
                self.clock.running.pop(job.spec.job_id, None)
        r = job.rate(self.models)
        if r != job.r or changed:
            job.r = r
            self.clock.schedule(job, self.now)

    def _finish(self, job: _Job, phase: JobPhase) -> None:
        self.clock.settle(job, self.now)
        job.ver += 1
        job.phase = phase
        job.finish = self.now
        for wid in job.workers:
            w = self.workers[wid]
            w.job_id = None
            self._dirty(w)
            if w.state == WorkerState.BUSY:
                w.state = WorkerState.IDLE
                w.idle_since = self.now
        self._busy -= job.ready_n * self.models[job.spec.model].gpus_per_replica
        job.ready_n = 0
        job.r = 0.0
        self.clock.running.pop(job.spec.job_id, None)
        job.workers = []
        job.view = None
        self.active.pop(job.spec.job_id, None)
        self._sync_queue(job)

    def _dirty(self, w: _Worker) -> None:
        w.view = None
        self._wdirty[w.worker_id] = None

    # ------------------------------------------------------------------ snapshot and decisions
    def _job_view(self, job: _Job) -> JobView:
        if job.view is None or (job.ready_n > 0 and job.view_t != self.now):
            job.view_t = self.now
            done = self.steps_at(job, self.now)
            job.view = JobView(
                spec=job.spec,
                phase=job.phase,
                steps_done=done,
                workers=tuple(job.workers),
                admitted=job.admitted,
                step_time_factor=job.slow if done > 0 else 1.0,  # measured once it runs
            )
        return job.view

    def _worker_view(self, w: _Worker) -> WorkerView:
        if w.view is None:
            w.view = WorkerView(
                worker_id=w.worker_id,
                gpu_type=w.gpu_type,
                state=w.state,
                model=w.model,
                requested_at=w.requested_at,
                ready_at=w.ready_at,
                idle_since=w.idle_since,
                job_id=w.job_id,
            )
        return w.view

    def snapshot(self, new_ids: Sequence[str]) -> ClusterSnapshot:
        self.clock.refresh(self.now, self.live)
        live = self.live
        for wid in self._wdirty:
            live.put(self._worker_view(self.workers[wid]))
        self._wdirty.clear()
        jv = self._job_view
        if self.incremental:
            live.jobs = self._job_map
            jobs: Sequence[JobView] = Lazy(
                lambda: tuple(jv(j) for j in self.active.values()), len(self.active)
            )
            workers: Sequence[WorkerView] = Lazy(lambda: tuple(live.workers.values()), len(live.workers))
        else:
            jobs = [jv(j) for j in self.active.values()]
            workers = tuple(live.workers.values())
        return build_snapshot(
            self.now,
            jobs,
            workers,
            self.models,
            self.gpu_types,
            self.capacity,
            self.book,
            new_ids,
            self.min_warm,
            live if self.incremental else None,
        )

    # ------------------------------------------------------------------ the applier's driver interface
    def admit(self, a: Admission) -> None:
        job = self.active[a.job_id]
        job.quote, job.reason, job.admitted, job.view = a.quote, a.reason, True, None

    def decline(self, a: Admission) -> None:
        job = self.active[a.job_id]
        job.quote, job.reason, job.view = a.quote, a.reason, None
        self._finish(job, JobPhase.DECLINED)

    def detach(self, job_id: str, worker_id: str) -> None:
        w = self.workers[worker_id]
        if w.job_id == job_id:
            w.job_id = None
            self._dirty(w)
            if w.state == WorkerState.BUSY:
                w.state = WorkerState.IDLE
                w.idle_since = self.now

    def allocate(self, job_id: str, worker_ids: tuple[str, ...]) -> None:
        job = self.active[job_id]
        job.workers = list(worker_ids)
        job.view = None
        self._sync_queue(job)
        for wid in worker_ids:
            w = self.workers[wid]
            w.job_id = job_id
            self._dirty(w)
            if w.state == WorkerState.IDLE:
                w.state = WorkerState.BUSY
                w.idle_since = None

    def release(self, worker_id: str) -> None:
        self._release(worker_id)

    def switch(self, s: Switch) -> None:
        """An idle worker loads another model: provisioning for the model's switch time (the applier
        checked it is idle, free and that both models take its GPUs)."""
        w = self.workers[s.worker_id]
        w.loaded_s += w.ready_at - (w.requested_at if w.load_from is None else w.load_from)
        w.model, w.state, w.idle_since = s.model, WorkerState.PROVISIONING, None
        w.load_from = self.now
        w.ready_at = self.now + self.models[s.model].switch_time(w.gpu_type)
        self._prov[w.worker_id] = w
        # the ready time goes on the heap like a provision's (in the order the workers were made)
        heapq.heappush(self._prov_heap, (w.ready_at, int(w.worker_id[1:]), w.worker_id))
        self._dirty(w)
        self.switches += 1
        if s.job_id is not None:
            job = self.active[s.job_id]
            w.job_id = s.job_id
            job.workers.append(w.worker_id)
            job.view = None
            self._sync_queue(job)  # it holds a worker now: off the live index's queue

    def provision(self, p: Provision) -> tuple[str, ...]:
        return self._provision(p.model, p.gpu_type, p.count, p.job_id)

    def touched(self, job_ids: tuple[str, ...]) -> None:
        for jid in job_ids:
            job = self.active.get(jid)
            if job is not None:
                self._set_ready(job)

    # ------------------------------------------------------------------ main loop
    def _next_ready(self) -> float:
        heap = self._prov_heap
        while heap:
            if heap[0][2] in self._prov:
                return heap[0][0]
            heapq.heappop(heap)  # stale: ready or released
        return math.inf

    def run(self) -> SimResult:
        i = 0
        n = len(self.specs)
        done = 0
        next_ready = math.inf
        while True:
            t_arr = self.specs[i].arrival if i < n else math.inf
            t_done = self.clock.next_finish()
            next_ready = self._next_ready()
            t_wake = self._wake if self._wake is not None and self._wake > self.now else math.inf
            t = min(t_arr, t_done, next_ready, t_wake)
            if math.isinf(t):
                if i >= n and not self.active:
                    break
                if not self.active:
                    break
                # nothing will ever happen again but jobs are left: they never finish
                t = self.max_time
            if t > self.max_time:
                t = self.max_time
            self._advance(t)
            # workers that became ready (a job's other changes were recounted when they were applied)
            became: list[str] = []
            ready_now: list[_Worker] = []
            while self._prov_heap and self._prov_heap[0][0] <= t + EPS:
                wid = heapq.heappop(self._prov_heap)[2]
                w = self._prov.get(wid)
                if w is not None:
                    ready_now.append(w)
            ready_now.sort(key=lambda w: int(w.worker_id[1:]))  # in the order the workers were made
            for w in ready_now:
                del self._prov[w.worker_id]
                self._dirty(w)
                if w.job_id is not None:
                    w.state = WorkerState.BUSY
                    became.append(w.job_id)
                else:
                    w.state = WorkerState.IDLE
                    w.idle_since = w.ready_at
            for jid in dict.fromkeys(became):
                if jid in self.active:
                    self._set_ready(self.active[jid])
            finished = self.clock.finished_by(t)  # in the order they run
            for job in finished:
                self._finish(job, JobPhase.SUCCEEDED)
                done += 1
            new_ids: list[str] = (
                list(self._pending)
                if self._job_map.all_active(self._pending)
                else [j for j in self._pending if j in self.active]
            )
            while i < n and self.specs[i].arrival <= t + EPS:
                spec = self.specs[i]
                job = self.jobs[spec.job_id]
                job.last_t = t
                self.active[spec.job_id] = job
                self._sync_queue(job)
                self.book.note_arrival(spec)
                new_ids.append(spec.job_id)
                i += 1
            if t >= self.max_time:
                for job in list(self.active.values()):
                    self._finish(job, JobPhase.FAILED)
                    job.reason = "simulation time limit"
                self._record()
                break
            snap = self.snapshot(new_ids)
            d = self.policy.decide(snap)
            self.decisions += 1
            changes = apply(snap, d, self, self.book)
            self._pending = list(changes.pending)
            self._wake = d.wake_at
            self._record()
            if self.progress is not None:
                self.progress(i, n)
        end = self.now
        for wid in list(self.workers):
            self._release(wid)
        return self._result(end)

    def _record(self) -> None:
        if self.timeline and self.timeline[-1][0] == self.now:
            self.timeline[-1] = (self.now, self._held, self._busy)
        else:
            self.timeline.append((self.now, self._held, self._busy))

    def _result(self, end: float) -> SimResult:
        return result_of(self, end)
