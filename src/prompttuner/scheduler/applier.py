"""The one way a policy's :class:`~prompttuner.core.types.Decisions` are applied.

Both drivers (the simulator and the live controller) call :func:`apply`.  It first checks the whole
``Decisions`` against the snapshot the policy saw (:func:`validate`); an invalid one changes nothing and
raises :class:`PolicyError`.  A valid one becomes a :class:`ChangeSet`, which :func:`execute` hands to
the driver in a fixed order, through the small :class:`Driver` interface:

1. admissions: admit, or decline (a declined job is final);
2. allocations: every worker that leaves a job is detached first, then each job gets its new worker set,
   so a worker can pass from one job to another in one decision;
3. releases (cost stops);
4. switches: an idle warm worker unloads its base LLM and loads another (it keeps its GPUs and its cost,
   and is provisioning until the load ends), joined to ``Switch.job_id`` when the policy names one;
5. provisions (cost starts), attached to ``Provision.job_id`` when the policy names one;
6. the driver is told which jobs changed, to recount their ready replicas or dispatch work.

Rules that hold in both drivers:

- a new job the policy did not answer stays new and is offered again at the next decision (a slotted
  policy such as ElasticFlow answers at its slot boundary); it holds no workers until it is admitted;
- an admission answers a job of ``snapshot.new_job_ids`` once; a worker is in at most one allocation,
  holds the job's model, and is free, this job's, or leaves a job the same decision re-allocates; a job's
  workers share one GPU type; a released worker holds no job afterwards; provisions fit the capacity left
  after the releases; a switched worker is idle in the snapshot, named by no allocation or release and
  switched once, to another model that has a switch time on its GPU type and takes as many GPUs;
- the warm minimum (``snapshot.min_warm``) is a policy input: policies keep it (see
  :func:`~prompttuner.scheduler.common.keep_warm_floor`); the applier does not second-guess releases.

Idle workers that a decision puts to work record how long they were idle in the shared
:class:`~prompttuner.scheduler.snapshot.ArrivalBook`, so both drivers fill ``ArrivalStats.idle_gaps``
the same way; idle workers a decision releases or switches record their idle time as a censored sample of
their model (``ArrivalStats.released_idle``: the worker would have waited at least that long).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from prompttuner.core.types import (
    Admission,
    ClusterSnapshot,
    Decisions,
    JobView,
    Provision,
    Switch,
    WorkerState,
)
from prompttuner.scheduler.snapshot import ArrivalBook


class PolicyError(RuntimeError):
    """A policy asked for something impossible (a bug in the policy, not in the workload)."""


@dataclass(frozen=True)
class ChangeSet:
    """A validated ``Decisions``: what the driver must change, in the order it must change it."""

    admissions: tuple[Admission, ...]  # in the policy's order
    pending: tuple[str, ...]  # new jobs the policy did not answer: offered again next decision
    detach: tuple[tuple[str, str], ...]  # (job, worker) pairs that end
    allocations: Mapping[str, tuple[str, ...]]  # job -> its whole worker set from now on
    release: tuple[str, ...]
    provision: tuple[Provision, ...]
    touched: tuple[str, ...]  # jobs whose workers changed (allocation or provision for them)
    idle_gaps: tuple[tuple[str, float], ...]  # (model, seconds idle) of idle workers put to work
    wake_at: float | None
    released_idle: tuple[tuple[str, float], ...] = ()  # (model, seconds idle) of idle workers released
    switch: tuple[Switch, ...] = ()

    @property
    def admitted_ids(self) -> tuple[str, ...]:
        return tuple(a.job_id for a in self.admissions if a.admitted)

    @property
    def declined_ids(self) -> tuple[str, ...]:
        return tuple(a.job_id for a in self.admissions if not a.admitted)


class Driver(Protocol):
    """How a change reaches a driver's jobs and workers (simulated state, or real workers and rows)."""

    def admit(self, admission: Admission) -> None: ...

    def decline(self, admission: Admission) -> None: ...

    def detach(self, job_id: str, worker_id: str) -> None:
        """The worker leaves the job (a busy worker becomes idle)."""

    def allocate(self, job_id: str, worker_ids: tuple[str, ...]) -> None:
        """The job holds exactly these workers from now on (an empty tuple pauses it)."""

    def release(self, worker_id: str) -> None: ...

    def switch(self, switch: Switch) -> None:
        """An idle worker unloads its model and loads ``switch.model`` (joined to ``switch.job_id``)."""

    def provision(self, provision: Provision) -> tuple[str, ...]:
        """Start ``provision.count`` workers (joined to ``provision.job_id`` when set); their ids."""

    def touched(self, job_ids: tuple[str, ...]) -> None:
        """These jobs' worker sets changed: recount ready replicas, pause, dispatch."""


def _gpus(snapshot: ClusterSnapshot, model: str | None) -> int:
    prof = snapshot.models.get(model) if model is not None else None
    return prof.gpus_per_replica if prof is not None else 1


def _pending(
    snapshot: ClusterSnapshot, answered: Mapping[str, Admission], active: Callable[[str | None], object]
) -> tuple[str, ...]:
    """The new jobs the policy did not answer and that are still active, in the snapshot's order.

    A slotted policy leaves most arrivals unanswered for many decisions, so the common case is cheap:
    nothing answered and a job index that can say at once that every new job is active
    (``all_active(ids)``, as the simulator's does) keeps the snapshot's tuple as it is."""
    new = snapshot.new_job_ids
    if not answered:
        all_active = getattr(snapshot.job_index, "all_active", None)
        if all_active is not None and all_active(new):
            return new
    return tuple(jid for jid in new if active(jid) is not None and jid not in answered)


def validate(snapshot: ClusterSnapshot, d: Decisions) -> ChangeSet:
    """Check ``d`` against ``snapshot`` as a whole; raise :class:`PolicyError` naming the first problem."""
    index = snapshot.job_index
    workers = snapshot.worker_index
    new = set(snapshot.new_job_ids)
    now = snapshot.now

    def active(jid: str | None) -> JobView | None:
        j = index.get(jid) if jid is not None else None
        return j if j is not None and not j.phase.terminal else None

    # 1. admissions
    answered: dict[str, Admission] = {}
    for a in d.admissions:
        if active(a.job_id) is None:
            raise PolicyError(f"admission for unknown or finished job {a.job_id}")
        if a.job_id not in new:
            raise PolicyError(f"admission for job {a.job_id}, which was admitted before")
        if a.job_id in answered:
            raise PolicyError(f"job {a.job_id} answered twice")
        answered[a.job_id] = a
    declined = {a.job_id for a in d.admissions if not a.admitted}

    def live(jid: str | None) -> JobView | None:
        return None if jid in declined else active(jid)

    def admitted(jid: str) -> bool:
        j = live(jid)
        return j is not None and ((j.admitted and jid not in new) or jid in answered)

    pending = _pending(snapshot, answered, active)

    # who holds a worker after this decision; before it, its job's (a declined job lets its workers go)
    after: dict[str, str | None] = {}

    def owner(wid: str) -> str | None:
        if wid in after:
            return after[wid]
        w = workers.get(wid)
        return w.job_id if w is not None and live(w.job_id) is not None else None

    # 2. allocations
    claimed: dict[str, str] = {}
    allocations: dict[str, tuple[str, ...]] = {}
    for jid, wids in d.allocations.items():
        for wid in wids:
            if wid in claimed and claimed[wid] != jid:
                raise PolicyError(f"worker {wid} allocated to {claimed[wid]} and {jid}")
            claimed[wid] = jid
    jobs: dict[str, JobView] = {}
    for jid, wids in d.allocations.items():
        job = live(jid)
        if job is None:
            if wids:
                raise PolicyError(f"allocation for unknown or finished job {jid}")
            continue
        if wids and not admitted(jid):
            raise PolicyError(f"allocation for job {jid}, which is not admitted")
        allocations[jid] = tuple(dict.fromkeys(wids))
        jobs[jid] = job
    detach: list[tuple[str, str]] = []
    for jid, wids in allocations.items():
        keep = set(wids)
        for wid in jobs[jid].workers:
            if wid not in keep and owner(wid) == jid:
                detach.append((jid, wid))
                after[wid] = None
    gaps: list[tuple[str, float]] = []
    for jid, wids in allocations.items():
        model = jobs[jid].spec.model
        for wid in wids:
            aw = workers.get(wid)
            if aw is None:
                raise PolicyError(f"allocation of unknown worker {wid} to {jid}")
            w = aw
            if w.model != model:
                raise PolicyError(f"worker {wid} holds {w.model}, job {jid} needs {model}")
            held_by = owner(wid)
            if held_by is not None and held_by != jid:
                raise PolicyError(f"worker {wid} still belongs to {held_by}, not moved by policy")
            if held_by is None and w.state == WorkerState.IDLE and w.idle_since is not None:
                gaps.append((model, now - w.idle_since))
            after[wid] = jid

    # 3. releases
    release = tuple(dict.fromkeys(d.release))
    released_idle: list[tuple[str, float]] = []
    freed: dict[str, int] = {}
    for wid in release:
        rw = workers.get(wid)
        if rw is None:
            raise PolicyError(f"release of unknown worker {wid}")
        if owner(wid) is not None:
            raise PolicyError(f"release of worker {wid} still allocated to {owner(wid)}")
        freed[rw.gpu_type] = freed.get(rw.gpu_type, 0) + _gpus(snapshot, rw.model)
        if rw.state == WorkerState.IDLE and rw.idle_since is not None and rw.model is not None:
            released_idle.append((rw.model, now - rw.idle_since))
    held: dict[str, int] = {}
    if any(p.count for p in d.provision):
        if snapshot.live is not None:
            held = dict(snapshot.live.held)
        else:
            for w in snapshot.workers:
                held[w.gpu_type] = held.get(w.gpu_type, 0) + _gpus(snapshot, w.model)
        for t, n in freed.items():
            held[t] -= n

    touched = list(allocations)
    extra_types: dict[str, set[str]] = {}

    def joins(what: str, of: str, jid: str, model: str, gpu_type: str) -> None:
        """A worker (switched or provisioned) that joins job ``jid``: the job must be live, admitted and
        of the worker's model."""
        job = live(jid)
        if job is None:
            raise PolicyError(f"{what} for unknown or finished job {jid}")
        if not admitted(jid):
            raise PolicyError(f"{what} for job {jid}, which is not admitted")
        if job.spec.model != model:
            raise PolicyError(f"{of} for job {jid}, which needs {job.spec.model}")
        extra_types.setdefault(jid, set()).add(gpu_type)
        touched.append(jid)

    # 4. switches
    switch: list[Switch] = []
    switched: set[str] = set()
    released = set(release)
    for sw in d.switch:
        sv = workers.get(sw.worker_id)
        if sv is None:
            raise PolicyError(f"switch of unknown worker {sw.worker_id}")
        if sw.worker_id in switched:
            raise PolicyError(f"worker {sw.worker_id} switched twice")
        if sw.worker_id in released:
            raise PolicyError(f"worker {sw.worker_id} both released and switched")
        if sv.state != WorkerState.IDLE or sw.worker_id in claimed or owner(sw.worker_id) is not None:
            raise PolicyError(f"switch of worker {sw.worker_id}, which is not idle and free")
        if sw.model == sv.model:
            raise PolicyError(f"switch of worker {sw.worker_id} to {sw.model}, which it holds")
        sprof = snapshot.models.get(sw.model)
        if sprof is None or sv.gpu_type not in sprof.step_time_s:
            raise PolicyError(f"{sw.model} has no profile on {sv.gpu_type}")
        if sprof.switch_time(sv.gpu_type) == math.inf:
            raise PolicyError(f"{sw.model} has no switch time on {sv.gpu_type}")
        if _gpus(snapshot, sw.model) != _gpus(snapshot, sv.model):
            raise PolicyError(
                f"switch of worker {sw.worker_id} from {sv.model} to {sw.model}: other GPU count"
            )
        if sw.job_id is not None:
            joins("switch", f"switch to {sw.model}", sw.job_id, sw.model, sv.gpu_type)
        if sv.idle_since is not None and sv.model is not None:
            released_idle.append((sv.model, now - sv.idle_since))
        switched.add(sw.worker_id)
        switch.append(sw)

    # 5. provisions
    provision: list[Provision] = []
    for p in d.provision:
        if p.count < 0:
            raise PolicyError(f"provision of {p.count} workers")
        if p.count == 0:
            continue
        prof = snapshot.models.get(p.model)
        if prof is None or p.gpu_type not in prof.step_time_s:
            raise PolicyError(f"{p.model} has no profile on {p.gpu_type}")
        used = held.get(p.gpu_type, 0)
        cap = snapshot.capacity.get(p.gpu_type, 0)
        if used + p.count * prof.gpus_per_replica > cap:
            raise PolicyError(
                f"provisioning {p.count} x {p.model} on {p.gpu_type} exceeds capacity {cap} "
                f"({used} held) at t={now:.1f}"
            )
        held[p.gpu_type] = used + p.count * prof.gpus_per_replica
        if p.job_id is not None:
            joins("provision", f"provision of {p.model}", p.job_id, p.model, p.gpu_type)
        provision.append(p)

    # a job's replicas share one GPU type
    for jid in dict.fromkeys(touched):
        current = allocations.get(jid)
        if current is None:
            tj = live(jid)
            current = tj.workers if tj is not None else ()
        wids = current
        types = {workers[w].gpu_type for w in wids} | extra_types.get(jid, set())
        if len(types) > 1:
            raise PolicyError(f"job {jid} mixes GPU types {sorted(types)}")

    return ChangeSet(
        admissions=tuple(d.admissions),
        pending=pending,
        detach=tuple(detach),
        allocations=allocations,
        release=release,
        provision=tuple(provision),
        touched=tuple(dict.fromkeys(touched)),
        idle_gaps=tuple(gaps),
        released_idle=tuple(released_idle),
        wake_at=d.wake_at,
        switch=tuple(switch),
    )


def execute(changes: ChangeSet, driver: Driver, book: ArrivalBook | None = None) -> None:
    """Hand a validated change set to ``driver`` in the applier's order."""
    for a in changes.admissions:
        if a.admitted:
            driver.admit(a)
        else:
            driver.decline(a)
    for jid, wid in changes.detach:
        driver.detach(jid, wid)
    for jid, wids in changes.allocations.items():
        driver.allocate(jid, wids)
    for wid in changes.release:
        driver.release(wid)
    for sw in changes.switch:
        driver.switch(sw)
    for p in changes.provision:
        driver.provision(p)
    if book is not None:
        for model, gap in changes.idle_gaps:
            book.note_idle_gap(model, gap)
        for model, gap in changes.released_idle:
            book.note_released_idle(model, gap)
    driver.touched(changes.touched)


def apply(
    snapshot: ClusterSnapshot, decisions: Decisions, driver: Driver, book: ArrivalBook | None = None
) -> ChangeSet:
    """Validate ``decisions`` against ``snapshot``, then apply them through ``driver``.

    Raises :class:`PolicyError` (and changes nothing) when the decisions are invalid.
    """
    changes = validate(snapshot, decisions)
    execute(changes, driver, book)
    return changes
