"""Plain data shared by every part of PromptTuner.

These types are the contract between the policies in ``scheduler/`` and their two drivers, the
discrete-event simulator in ``sim/`` and the live controller in ``runtime/``.  They hold no I/O and no
clock: a driver builds a :class:`ClusterSnapshot` at its own ``now``, hands it to a policy and applies
the :class:`Decisions` it gets back.

Times are seconds on the driver's clock (simulated or wall-clock epoch seconds).  Costs are in GPU-hours
times the GPU type's hourly price.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class JobPhase(enum.StrEnum):
    """Where a job is in its life.  Persisted by the service; recorded by the simulator."""

    QUEUED = "queued"  # accepted, waiting for GPUs
    SELECTING = "selecting_prompt"  # the Prompt Bank is probing candidate prompts
    RUNNING = "running"  # holds at least one worker and makes progress
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DECLINED = "declined"  # refused at admission (counts as an SLO violation)

    @property
    def terminal(self) -> bool:
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED, JobPhase.DECLINED)


class WorkerState(enum.StrEnum):
    """A worker is one GPU replica slot (``gpus_per_replica`` GPUs for large models)."""

    PROVISIONING = "provisioning"  # cold start: instance start + loading the base LLM
    IDLE = "idle"  # warm: the base LLM is loaded, no job
    BUSY = "busy"  # runs training steps of one job


@dataclass(frozen=True)
class GPUType:
    name: str
    price_per_hour: float  # dollars (or any unit) per GPU-hour
    peak_tflops_bf16: float = 0.0
    memory_gib: float = 0.0
    hbm_gbps: float = 0.0


@dataclass(frozen=True)
class ModelProfile:
    """What a policy may know about a base LLM: how long steps and cold starts take.

    ``step_time_s[gpu_type]`` is the wall time of one prompt-tuning step of the reference global batch on
    one replica.  With ``n`` data-parallel replicas the step takes ``step_time(gpu, n)``: the per-replica
    share of the batch plus a synchronisation term that grows with ``log2(n)`` (the gradient is only the
    prompt, kilobytes, so this stays small).
    """

    name: str
    params_b: float
    gpus_per_replica: int
    cold_start_s: Mapping[str, float]  # per GPU type: instance start + weight load
    step_time_s: Mapping[str, float]  # per GPU type, one replica, reference batch
    max_replicas: int = 32
    sync_overhead_s: float = 0.02  # per log2(n) doubling, per step
    min_replica_batch: int = 1
    # per GPU type: seconds to load this model on a warm worker that holds another one (unload it, load
    # these weights: the cold start without the instance start); a type not named here cannot switch
    switch_s: Mapping[str, float] = field(default_factory=dict)

    def switch_time(self, gpu_type: str) -> float:
        """Seconds a warm worker on ``gpu_type`` takes to switch to this model (inf: it cannot)."""
        return self.switch_s.get(gpu_type, math.inf)

    def step_time(self, gpu_type: str, replicas: int) -> float:
        if replicas < 1:
            return math.inf
        t1 = self.step_time_s[gpu_type]
        return t1 / replicas + self.sync_overhead_s * math.log2(replicas)

    def throughput(self, gpu_type: str, replicas: int) -> float:
        """Steps per second with ``replicas`` data-parallel replicas (0 when it cannot run)."""
        if replicas < 1 or replicas > self.max_replicas:
            return 0.0
        return 1.0 / self.step_time(gpu_type, replicas)


@dataclass(frozen=True)
class SLO:
    deadline: float  # absolute time by which the target must be reached
    target_accuracy: float | None = None
    best_effort: bool = False  # run even when the deadline looks infeasible


@dataclass(frozen=True)
class JobSpec:
    """What a user asked for, plus the work estimate the Prompt Bank (or a profile) attached."""

    job_id: str
    model: str
    arrival: float
    slo: SLO
    work_steps: float  # estimated steps to reach the target (from the bank or the profiles)
    max_steps: int | None = None  # the user's step budget
    tenant: str = "public"
    init: str = "random"  # random | text | bank

    @property
    def deadline(self) -> float:
        return self.slo.deadline


@dataclass(frozen=True)
class JobView:
    """A job as a policy sees it at ``now``."""

    spec: JobSpec
    phase: JobPhase
    steps_done: float = 0.0
    workers: tuple[str, ...] = ()  # workers currently assigned
    admitted: bool = False
    # the job's measured seconds per step over the profile's, once it has run (1.0 before): a job can
    # run slower or faster than its model's profile says
    step_time_factor: float = 1.0

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    @property
    def deadline(self) -> float:
        return self.spec.slo.deadline

    @property
    def steps_left(self) -> float:
        """Estimated steps still to run, counted in steps of the profile's speed (so a policy can time
        them with the profile): the estimate's remaining steps times ``step_time_factor``."""
        return max(0.0, self.spec.work_steps - self.steps_done) * self.step_time_factor


@dataclass(frozen=True)
class WorkerView:
    worker_id: str
    gpu_type: str
    state: WorkerState
    model: str | None  # base LLM loaded (or being loaded)
    node: str = "node0"
    requested_at: float = 0.0  # when the GPU was requested (cost starts here)
    ready_at: float = 0.0  # when provisioning finishes (== requested_at + cold start)
    idle_since: float | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class ArrivalStats:
    """Recent arrivals of one base LLM, for pool sizing and pre-warming (no clock: plain numbers)."""

    model: str
    recent_arrivals: tuple[float, ...] = ()  # arrival times, oldest first
    idle_gaps: tuple[float, ...] = ()  # observed idle times of this model's workers (ended by a job)
    # aligned with recent_arrivals when known: each job's deadline and estimated work in steps (lets a
    # policy see how many of this model's jobs could not afford a cold start)
    recent_deadlines: tuple[float, ...] = ()
    recent_work: tuple[float, ...] = ()
    # idle times of this model's workers that ended in a release: right-censored samples (the worker
    # would have waited at least this long for a job), oldest first
    released_idle: tuple[float, ...] = ()


@dataclass(frozen=True)
class ClusterSnapshot:
    now: float
    # tuples; with a live index possibly sequences listed on first use (``core.live.Lazy``)
    jobs: Sequence[JobView]
    workers: Sequence[WorkerView]
    models: Mapping[str, ModelProfile]
    gpu_types: Mapping[str, GPUType]
    capacity: Mapping[str, int]  # most GPUs of each type that may be held at once
    arrivals: Mapping[str, ArrivalStats] = field(default_factory=dict)
    new_job_ids: tuple[str, ...] = ()  # jobs that arrived since the last decision (need admission)
    # warm workers the operator wants kept per base LLM (pre-warmed, never released below); an input
    # every policy honours, not a veto of the drivers
    min_warm: Mapping[str, int] = field(default_factory=dict)
    # the driver's own index of ``workers`` (a ``core.live.LiveIndex``), kept in place between snapshots
    # so a decision need not walk every worker; None: policies index the snapshot themselves
    live: Any = field(default=None, compare=False, repr=False)

    @functools.cached_property
    def job_index(self) -> Mapping[str, JobView]:
        """Jobs by id (built once per snapshot, on first use; the live index's when there is one,
        read-only)."""
        if self.live is not None:
            return self.live.jobs  # type: ignore[no-any-return]
        return {j.job_id: j for j in self.jobs}

    @functools.cached_property
    def worker_index(self) -> Mapping[str, WorkerView]:
        """Workers by id (built once per snapshot, on first use; the live index's own when there is one,
        read-only)."""
        if self.live is not None:
            return self.live.workers  # type: ignore[no-any-return]
        return {w.worker_id: w for w in self.workers}

    def job(self, job_id: str) -> JobView:
        return self.job_index[job_id]

    def workers_of(self, model: str | None = None, state: WorkerState | None = None) -> list[WorkerView]:
        return [
            w
            for w in self.workers
            if (model is None or w.model == model) and (state is None or w.state == state)
        ]

    def gpus_held(self, gpu_type: str | None = None) -> int:
        """GPUs held (provisioning, idle or busy), optionally of one type."""
        if self.live is not None:
            held: dict[str, int] = self.live.held
            return held.get(gpu_type, 0) if gpu_type is not None else sum(held.values())
        total = 0
        for w in self.workers:
            if gpu_type is not None and w.gpu_type != gpu_type:
                continue
            profile = self.models.get(w.model) if w.model is not None else None
            total += profile.gpus_per_replica if profile is not None else 1
        return total


@dataclass(frozen=True)
class Quote:
    """A prediction made at admission: when the job will finish and what it will cost."""

    finish_time: float
    cost: float
    gpus: int
    feasible: bool
    tightest_deadline: float | None = None  # the earliest deadline we could meet, when infeasible


@dataclass(frozen=True)
class Admission:
    job_id: str
    admitted: bool
    reason: str = ""
    quote: Quote | None = None


@dataclass(frozen=True)
class Provision:
    """Ask the driver for ``count`` new workers of ``model`` on ``gpu_type`` (a cold start each)."""

    model: str
    gpu_type: str
    count: int = 1
    # when set, the new workers join this job's allocation as soon as they exist (the job uses them once
    # they are ready), so a policy need not wait a decision round for their ids
    job_id: str | None = None


@dataclass(frozen=True)
class Switch:
    """Load ``model`` on the idle warm worker ``worker_id`` in place of the base LLM it holds.

    The worker unloads its model and loads the other one's weights (``ModelProfile.switch_time``: the
    cold start without starting an instance); it keeps its GPUs and its cost, and is provisioning until
    the load ends.  When ``job_id`` is set it joins that job's allocation at once, as a provision does.
    Both models must take the same GPUs per replica.
    """

    worker_id: str
    model: str
    job_id: str | None = None


@dataclass(frozen=True)
class Decisions:
    """What a policy wants.  Drivers apply it; anything not mentioned stays as it is.

    ``allocations`` maps a job to the full set of workers it should hold from now on (an empty tuple
    pauses it).  A worker may appear in at most one allocation; it must hold the job's model, be idle or
    already this job's, or be provisioning (the job then starts when it is ready).  ``switch`` turns idle
    warm workers that no allocation or release names to another base LLM (see :class:`Switch`).
    """

    allocations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    provision: tuple[Provision, ...] = ()
    release: tuple[str, ...] = ()
    admissions: tuple[Admission, ...] = ()
    switch: tuple[Switch, ...] = ()  # idle warm workers that load another base LLM
    # when the policy wants to be asked again even if nothing happens (e.g. a planned resize or release)
    wake_at: float | None = None


@dataclass(frozen=True)
class Event:
    """Every decision that changes a job becomes an event (stored, shown by the API, fed to metrics)."""

    time: float
    # arrive, admit, decline, allocate, provision, switch, release, progress, finish, miss, cancel, fail
    kind: str
    job_id: str | None = None
    worker_id: str | None = None
    data: Mapping[str, object] = field(default_factory=dict)


def json_safe(x: Any) -> Any:
    """``x`` (nested dicts and lists) with every NaN or infinite float as None: JSON has neither."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [json_safe(v) for v in x]
    return x
