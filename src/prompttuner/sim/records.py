"""The simulator's own records of jobs and workers, and its result (``sim/engine.py`` drives them)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prompttuner.core.slo import slo_outcome
from prompttuner.core.types import JobPhase, JobSpec, JobView, ModelProfile, Quote, WorkerState, WorkerView


@dataclass
class _Job:
    spec: JobSpec
    work: float  # true work in steps (to the target)
    stop: float = math.inf  # steps after which it stops: its work, or the user's max_steps if fewer
    phase: JobPhase = JobPhase.QUEUED
    admitted: bool = False
    steps_done: float = 0.0  # steps run by ``last_t`` (progress since then is ``Simulator.steps_at``)
    last_t: float = 0.0
    workers: list[str] = field(default_factory=list)
    ready_n: int = 0
    gpu: str | None = None
    paused_until: float = 0.0
    first_start: float | None = None
    finish: float | None = None
    reason: str = ""
    quote: Quote | None = None
    busy_gpu_s: float = 0.0
    rescales: int = 0
    view: JobView | None = None
    slow: float = 1.0  # true step time / the profile's (measured step-time noise)
    estimate0: float = 0.0  # the work estimate at admission (the policies see spec.work_steps)
    next_check: float = math.inf  # steps after which the estimate is refreshed
    r: float = 0.0  # steps per second now (``rate``, kept by the simulator when ready_n or gpu change)
    ver: int = 0  # bumped when its progress model changes: older heap entries of the job are stale
    view_t: float = math.nan  # the time its cached view was built at (a running job's moves on)
    queued: bool = False  # listed in the live index as holding no worker

    def rate(self, models: Mapping[str, ModelProfile]) -> float:
        if self.ready_n <= 0 or self.gpu is None:
            return 0.0
        return models[self.spec.model].throughput(self.gpu, self.ready_n) / self.slow


@dataclass
class _Worker:
    worker_id: str
    gpu_type: str
    model: str
    gpus: int
    state: WorkerState
    requested_at: float
    ready_at: float
    idle_since: float | None = None
    job_id: str | None = None
    view: WorkerView | None = None
    loaded_s: float = 0.0  # seconds spent loading before the load in progress (switches)
    load_from: float | None = None  # when the load in progress began (None: at the request)


@dataclass
class SimResult:
    policy: str
    jobs: list[dict[str, Any]]
    metrics: dict[str, float]
    timeline: list[tuple[float, int, int]]  # (time, GPUs held, GPUs busy)


def result_of(sim: Any, end: float) -> SimResult:
    """The run's per-job rows and metrics (``sim``: a finished ``sim.engine.Simulator``)."""
    rows: list[dict[str, Any]] = []
    miss = declined = unfinished = 0
    qdelays: list[float] = []
    for job in sim.jobs.values():
        s = job.spec
        done = job.phase == JobPhase.SUCCEEDED and job.finish is not None
        met = slo_outcome(s.deadline, job.finish if done else None, job.stop >= job.work).slo_met
        if job.phase == JobPhase.DECLINED:
            declined += 1
        elif job.phase != JobPhase.SUCCEEDED:
            unfinished += 1
        elif not met:
            miss += 1
        if job.first_start is not None:
            qdelays.append(job.first_start - s.arrival)
        rows.append(
            {
                "job_id": s.job_id,
                "model": s.model,
                "init": s.init,
                "arrival": s.arrival,
                "deadline": s.deadline,
                "work_steps": job.work,
                **({"estimate0": round(job.estimate0, 3)} if job.estimate0 != job.work else {}),
                "phase": str(job.phase),
                "start": job.first_start,
                "finish": job.finish,
                "met_slo": met,
                "busy_gpu_s": round(job.busy_gpu_s, 3),
                "rescales": job.rescales,
                "reason": job.reason,
                "quote_finish": job.quote.finish_time if job.quote else None,
                "tightest_deadline": job.quote.tightest_deadline if job.quote else None,
            }
        )
    total = len(sim.jobs)
    qdelays.sort()
    metrics = {
        "jobs": float(total),
        "slo_violation_rate": (miss + declined + unfinished) / total if total else 0.0,
        "missed": float(miss),
        "declined": float(declined),
        "unfinished": float(unfinished),
        "cost": sim.cost,
        "cost_gpu_hours": sim.held_gpu_s / 3600.0,
        "busy_gpu_hours": sim.busy_gpu_s / 3600.0,
        "loading_gpu_hours": sim.loading_gpu_s / 3600.0,
        "utilisation": sim.busy_gpu_s / sim.held_gpu_s if sim.held_gpu_s > 0 else 0.0,
        "queueing_delay_mean_s": sum(qdelays) / len(qdelays) if qdelays else 0.0,
        "queueing_delay_p95_s": qdelays[int(0.95 * (len(qdelays) - 1))] if qdelays else 0.0,
        "cold_starts": float(sim.cold_starts),
        **({"switches": float(sim.switches)} if sim.switches else {}),
        "decisions": float(sim.decisions),
        "makespan_s": end,
    }
    return SimResult(sim.policy.name, rows, metrics, sim.timeline)
