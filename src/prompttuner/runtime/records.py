"""What the live controller keeps in memory about its workers and jobs, and its settings.

The durable copy of a job is its database row plus its checkpoint (``runtime/jobstate.py`` writes both);
these records add what only the running service knows: which request is in flight on which worker, the
data-parallel round in progress, the trainable state last returned.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from prompttuner.core.types import JobPhase, WorkerState
from prompttuner.runtime.engine import JobPayload


@dataclass
class WorkerRec:
    worker_id: str
    model: str
    requested_at: float
    ready_at: float | None = None  # None while the model loads
    job_id: str | None = None  # allocated job
    op: str | None = None  # request in flight
    op_job: str | None = None  # the job that request belongs to
    op_started: float = 0.0
    op_future: Future[Any] | None = None  # for predict requests
    idle_since: float | None = None
    busy_s: float = 0.0
    releasing: bool = False  # released by the policy; goes once its request in flight returns
    pid: int | None = None
    start_at: float | None = None  # its cold start waits for the model's load backoff to end
    peak_busy: int = 0  # the most workers busy at once while its request in flight ran
    load_from: float | None = None  # when its load in progress began (a cold start's or a switch's)
    switch_from: str | None = None  # the model it held before the switch in progress
    switch_pending: bool = False  # a switch waits for its request in flight to return


@dataclass
class Round:
    """One data-parallel step in progress."""

    rid: int
    version: int
    workers: list[str]
    grads: dict[int, bytes] = field(default_factory=dict)
    grad_s: float = 0.0  # the slowest shard's compute time
    started: float = 0.0


@dataclass
class JobRT:
    job_id: str
    tenant: str
    payload: JobPayload
    arrival: float
    deadline: float
    best_effort: bool
    work_steps: float
    phase: JobPhase
    admitted: bool
    steps_done: int = 0
    version: int = 0
    state: bytes | None = None
    selected: bool = False  # warm start done (or not wanted)
    init: str = "random"
    race_steps: int = 0  # the warm start's race: steps its losing starts ran for this job (and a fallback's)
    workers: list[str] = field(default_factory=list)
    inflight: set[str] = field(default_factory=set)
    round: Round | None = None
    accuracy: float | None = None
    loss: float | None = None
    target_reached: bool = False
    gpu_seconds: float = 0.0
    started_at: float | None = None
    late_noted: bool = False
    last_progress_event: float = 0.0
    step_factor: float = 1.0  # its measured seconds per step over the model's profile (1.0 until measured)
    work_info: dict[str, Any] = field(default_factory=dict)  # how work_steps was predicted (for quotes)

    @property
    def done(self) -> bool:
        return self.target_reached or self.steps_done >= self.payload.max_steps


@dataclass
class LoadHealth:
    """How the cold starts of one base LLM have gone lately."""

    failures: int = 0  # failed in a row (a successful load resets it)
    error: str = ""  # the last failure's reason
    retry_at: float = 0.0  # no cold start of the model begins before this (backoff)


@dataclass
class ControllerConfig:
    gpu_type: str = "cpu"
    price_per_hour: float = 1.0  # per worker-hour; cost units of quotes
    max_workers: int = 2
    # the most data-parallel replicas a job may hold (None: max_workers); on a 2-core CPU two replicas
    # step no faster than one (each gets a core: service_demo.md), and they change the job's trajectory
    max_replicas: int | None = None
    min_warm: dict[str, int] = field(default_factory=dict)  # warm minimum per model: a policy input
    tick_s: float = 0.2
    decide_every_s: float = 2.0
    chunk_s: float = 4.0
    progress_event_every_s: float = 2.0
    predict_timeout_s: float = 120.0
    selection_ttl_s: float = 600.0  # a selection made at a quote waits this long for its job
    bank_dir: str | None = None  # the Prompt Bank used for warm starts (None: warm starts unavailable)
    max_load_failures: int = 3  # failed cold starts in a row after which a model is reported not ready
    load_backoff_s: float = 1.0  # wait before the next cold start of a model after a failed one, doubling
    load_backoff_max_s: float = 60.0
    worker_prefix: str | None = None  # worker ids are PREFIX + a counter (default: "w<random hex>-")


def worker_state(w: WorkerRec) -> WorkerState:
    """A worker as a policy sees it: loading, warm and free, or holding a job."""
    if w.ready_at is None:
        return WorkerState.PROVISIONING
    return WorkerState.BUSY if w.job_id is not None else WorkerState.IDLE
