"""The planning arithmetic of the ElasticFlow baseline (:mod:`prompttuner.scheduler.elasticflow`).

A plan gives a job a replica count for each scheduling slot from now on.  :func:`run_sizes` plays such a
plan forward exactly the way the drivers will execute it, so a deadline check counts every overhead the
runtime charges:

- at each slot boundary the job is set to the slot's count: replicas it loses go first from those still
  provisioning (the latest first), then from the ready ones; replicas it gains are fresh workers that
  are ready one cold start later (or, on a warm runtime, idle workers that join at once);
- every change of the number of *ready* replicas pauses the job for the policy's rescale overhead (on a
  serverless runtime a checkpoint-restart), starting when the change happens (pauses queue up);
- progress is the profile's throughput at the ready count outside pauses.

:func:`min_share` is ElasticFlow's *minimum satisfactory share* on top of it: the smallest legal
(power-of-two) count q such that the plan that gives the job ``min(q, free)`` in the slots before its
deadline, filled from the deadline backwards, finishes by the deadline once those overheads are counted
(the fill grows towards now until the forward check passes).  :func:`infeasible_alone` says which jobs no
plan could meet even on an empty cluster.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from prompttuner.core.types import GPUType, JobSpec, ModelProfile, WorkerState, WorkerView
from prompttuner.scheduler.common import rates

TOL = 1e-6  # seconds: finish times this close to a deadline meet it (the drivers' tolerance)
RESTART_S = 10.0  # process restart of a checkpoint-restart, on top of ElasticFlow's scaling overhead

Pause = Callable[[int, int], float]  # (ready replicas before, after) -> seconds without progress


def legal_sizes(prof: ModelProfile, max_gpus: int | None = None) -> list[int]:
    """Power-of-two replica counts up to the model's cap (and, when given, ``max_gpus`` GPUs)."""
    out = []
    n = 1
    while n <= prof.max_replicas and (max_gpus is None or n * prof.gpus_per_replica <= max_gpus):
        out.append(n)
        n *= 2
    return out


def legal_floor(n: int) -> int:
    """Largest power of two <= n (0 for n < 1)."""
    return 0 if n < 1 else 1 << (n.bit_length() - 1)


def checkpoint_restart_s(prof: ModelProfile, new_n: int, restart_s: float = RESTART_S) -> float:
    """ElasticFlow's scaling overhead (2 s base plus 2 s per doubling of the GPUs) plus a restart."""
    n = max(1, new_n * prof.gpus_per_replica)
    return 2.0 + 2.0 * (math.log2(n) + 1) + restart_s


@dataclass(frozen=True)
class JobStart:
    """A job at the start of a plan: ready replicas, replicas still provisioning, a pause under way."""

    ready: int = 0
    pending: tuple[tuple[int, float], ...] = ()  # (count, ready_at), sorted by ready_at
    paused_until: float = -math.inf

    @property
    def held(self) -> int:
        return self.ready + sum(c for c, _ in self.pending)


def job_start(workers: Sequence[WorkerView], now: float, slot: float, pause: Pause) -> JobStart:
    """A job's start from its workers: replicas that became ready in the last slot paused it (the driver
    pauses a job whenever its ready replicas change), and that pause may still run."""
    ready = [w for w in workers if w.state != WorkerState.PROVISIONING]
    pend = Counter(w.ready_at for w in workers if w.state == WorkerState.PROVISIONING)
    pu = -math.inf
    for tr in sorted({w.ready_at for w in ready if now - slot < w.ready_at <= now + 1e-9}):
        before = sum(1 for w in ready if w.ready_at < tr - 1e-9)
        after = before + sum(1 for w in ready if abs(w.ready_at - tr) <= 1e-9)
        pu = max(pu, tr) + pause(before, after)
    return JobStart(len(ready), tuple((c, t) for t, c in sorted(pend.items())), pu)


@dataclass(frozen=True)
class Overheads:
    """What a change of a job's replicas costs.  ``warm`` idle workers can join at the first boundary
    without a cold start; with ``counted`` False the plan ignores every overhead but a job's first cold
    start (the old planner, kept to show the difference)."""

    cold_s: float
    pause: Pause
    warm: int = 0
    counted: bool = True


@dataclass(frozen=True)
class Run:
    finish: float  # inf when the plan does not finish the work (by ``cutoff``)
    left: float  # steps left at the finish (0) or at the cutoff / the end of the plan
    gpu_s: float  # GPU-seconds held from now to the finish (or the cutoff / end of the plan)
    warm_used: int  # warm workers the first slot takes


def run_sizes(
    rt: Sequence[float],
    g: int,
    steps: float,
    t0: float,
    slot: float,
    sizes: Sequence[int],
    start: JobStart,
    oh: Overheads,
    cutoff: float = math.inf,
) -> Run:
    """Play ``sizes`` (one replica count per slot, slot 0 starting at ``t0``) forward from ``start``."""
    if steps <= 0:
        return Run(t0, 0.0, 0.0, 0)
    left = steps
    ready = start.ready
    # replicas still provisioning: counts and ready times, by ready time (held = ready + npend)
    pc = [int(c) for c, _ in start.pending]
    pt = [t for _, t in start.pending]
    npend = sum(pc)
    pu = start.paused_until
    gpu_s = 0.0
    warm_used = 0
    counted = oh.counted
    pause = oh.pause
    for s, k in enumerate(sizes):
        b = t0 + s * slot
        if b >= cutoff:
            break
        held = ready + npend
        if not k and not held:  # nothing held, nothing asked: the slot passes without a change
            continue
        e = min(b + slot, cutoff)
        if k < held:
            drop = held - k
            while drop > 0 and pc:
                take = min(pc[-1], drop)
                pc[-1] -= take
                npend -= take
                if pc[-1] <= 0:
                    pc.pop()
                    pt.pop()
                drop -= take
            if drop > 0:
                new = ready - drop
                if new > 0 and counted:
                    pu = max(pu, b) + pause(ready, new)
                ready = new
        elif k > held:
            add = k - held
            warm = min(add, oh.warm) if s == 0 else 0
            if s == 0:
                warm_used = warm
            if not counted and held > 0:
                warm = add  # the old planner: replicas added to a running job join at once, for free
            if warm > 0:
                new = ready + warm
                if counted:
                    pu = max(pu, b) + pause(ready, new)
                ready = new
                add -= warm
            if add > 0:
                at = b + oh.cold_s
                i = bisect.bisect_right(pt, at)  # after those ready at the same time (a stable sort)
                pc.insert(i, add)
                pt.insert(i, at)
                npend += add
        held = ready + npend
        t = b
        while True:
            nxt = pt[0] if pt and pt[0] < e else e
            a = t if t > pu else pu
            if ready > 0 and nxt > a:
                rate = rt[ready]
                if rate * (nxt - a) >= left:
                    fin = a + left / rate
                    return Run(fin, 0.0, gpu_s + held * g * (fin - b), warm_used)
                left -= rate * (nxt - a)
            t = nxt
            if nxt >= e:
                break
            joined = 0
            while pt and pt[0] <= nxt + 1e-9:
                pt.pop(0)
                c = pc.pop(0)
                joined += c
                npend -= c
            old, ready = ready, ready + joined
            if counted:
                pu = max(pu, nxt) + pause(old, ready)
        gpu_s += held * g * (e - b)
    return Run(math.inf, left, gpu_s, warm_used)


class Timeline:
    """Free GPUs per slot from now on (slots past the stored ones have the whole capacity)."""

    def __init__(self, total: int, free: Iterable[int] = ()) -> None:
        self.total = total
        self.free = list(free)

    def get(self, s: int) -> int:
        return self.free[s] if s < len(self.free) else self.total

    def take(self, sizes: Sequence[int], g: int) -> None:
        if len(self.free) < len(sizes):
            self.free.extend([self.total] * (len(sizes) - len(self.free)))
        for s, n in enumerate(sizes):
            if n:
                self.free[s] -= n * g

    def copy(self) -> Timeline:
        return Timeline(self.total, self.free)


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]  # replicas per slot, zero after the finish
    finish: float
    gpu_s: float
    warm_used: int
    feasible: bool  # finishes by the deadline
    share: int = 0  # the count q of :func:`min_share` that gave the plan (0: not from it)
    reach: int = 0  # the first slot its fill read (see min_share)
    low: int = 0  # the largest count whose fill failed on every slot (0: none)


def _trim(sizes: list[int], t0: float, slot: float, finish: float) -> tuple[int, ...]:
    end = int(math.floor((finish - t0) / slot - 1e-9)) + 1 if math.isfinite(finish) else len(sizes)
    end = max(0, min(end, len(sizes)))
    return tuple(sizes[:end]) + (0,) * (len(sizes) - end)


def min_share(
    prof: ModelProfile,
    gpu: str,
    goals: Sequence[tuple[float, float]],
    deadline: float,
    t0: float,
    slot: float,
    free: Timeline,
    start: JobStart,
    oh: Overheads,
    memo: dict[tuple[object, ...], Plan | None] | None = None,
) -> tuple[Plan, int] | None:
    """ElasticFlow's minimum satisfactory share, overheads counted, and which goal it meets; None when no
    legal count meets any goal on ``free``.

    A goal is (steps, margin): that work done ``margin`` seconds before the deadline.  For each count q,
    smallest first, the goals are tried in order; the share is filled from ``deadline`` backwards.

    ``free`` enters only through ``min(q, legal_floor(free.get(s) // gpus_per_replica))`` for the slots
    before the deadline and the counts q up to the one returned (``Plan.share``; all legal counts when
    None is returned), and in the slots before ``Plan.reach`` only for the counts whose fills failed
    (up to ``Plan.low``): two timelines that agree on those give the same answer.  ``memo`` keeps the
    fills of one job whose other inputs (``t0``, ``start``, the overheads but for warm workers) stay.
    """
    g = prof.gpus_per_replica
    rt = rates(prof, gpu)
    last = int(math.ceil((deadline - t0) / slot - 1e-9))
    if last <= 0:
        return None
    spans = [min(slot, deadline - (t0 + s * slot)) for s in range(last)]
    low = 0
    # legal_floor(min(q, x)) == min(q, legal_floor(x)) for a power of two q: the floors once, capped per q
    stored = free.free[:last]
    floors = [legal_floor(n // g) for n in stored]
    if len(stored) < last:
        floors.extend([legal_floor(free.total // g)] * (last - len(stored)))
    top = max(floors)
    for q in legal_sizes(prof, free.total):
        caps = floors if q >= top else [n if n < q else q for n in floors]
        key = (q, low, oh.warm, tuple(caps)) if memo is not None else ()
        for level, (steps, margin) in enumerate(goals):
            if memo is None:
                plan = _fill(rt, g, caps, spans, steps, deadline - margin, t0, slot, start, oh, q, low)
            elif (steps, margin, *key) in memo:
                plan = memo[(steps, margin, *key)]
            else:
                plan = _fill(rt, g, caps, spans, steps, deadline - margin, t0, slot, start, oh, q, low)
                memo[(steps, margin, *key)] = plan
            if plan is not None:
                return plan, level
            low = q
        if q >= top:  # the larger counts have the same caps, so their fills fail the same way
            break
    return None


def _fill(
    rt: Sequence[float],
    g: int,
    caps: Sequence[int],
    spans: Sequence[float],
    steps: float,
    by: float,
    t0: float,
    slot: float,
    start: JobStart,
    oh: Overheads,
    q: int,
    low: int,
) -> Plan | None:
    """``caps`` filled from the last slot backwards until the forward check finishes ``steps`` by ``by``."""
    last = len(caps)
    want = steps
    force = last  # the fill reaches back at least to this slot
    prev: list[int] | None = None
    reach = last
    while True:
        sizes = [0] * last
        acc = 0.0
        full = True
        for s in range(last - 1, -1, -1):
            reach = s
            n = caps[s]
            if n > 0:
                sizes[s] = n
                acc += rt[n] * spans[s]
            if acc >= want and s <= force:
                full = s == 0
                break
        run = run_sizes(rt, g, steps, t0, slot, sizes, start, oh, cutoff=by + TOL)
        if run.finish <= by + TOL:
            # the share stays reserved up to the deadline, as ElasticFlow fills it: a job that gets ahead
            # of its plan re-plans later in the same slots, never into slots others hold
            return Plan(tuple(sizes), run.finish, run.gpu_s, run.warm_used, True, q, reach, low)
        if full:
            return None  # every slot before the deadline is in the plan: not enough
        if sizes == prev:
            force = min(force, next(s for s, n in enumerate(sizes) if n > 0) if any(sizes) else last) - 1
        prev = sizes
        want += max(run.left, 1e-6)


def best_effort(
    prof: ModelProfile,
    gpu: str,
    steps: float,
    t0: float,
    slot: float,
    free: Timeline,
    start: JobStart,
    oh: Overheads,
    max_slots: int = 100_000,
) -> Plan:
    """Planned past its deadline: the largest legal count that fits, slot after slot, until done."""
    g = prof.gpus_per_replica
    rt = rates(prof, gpu)
    horizon = max(4, len(free.free) + 1)
    top = prof.max_replicas
    # the stored slots, then the whole capacity (the horizon starts past the stored slots)
    seen: dict[int, int] = {}  # a long timeline repeats few values
    stored = [seen[n] if n in seen else seen.setdefault(n, legal_floor(min(top, n // g))) for n in free.free]
    rest = legal_floor(min(top, free.total // g))
    while True:
        sizes = stored + [rest] * (horizon - len(stored))
        run = run_sizes(rt, g, steps, t0, slot, sizes, start, oh)
        if math.isfinite(run.finish) or horizon >= max_slots:
            return Plan(_trim(sizes, t0, slot, run.finish), run.finish, run.gpu_s, run.warm_used, False)
        horizon *= 4


def infeasible_alone(
    jobs: Iterable[JobSpec],
    models: Mapping[str, ModelProfile],
    gpu_types: Mapping[str, GPUType],
    capacity: Mapping[str, int],
    slot_s: float = 60.0,
    restart_s: float = RESTART_S,
    overhead: Callable[[ModelProfile, str, int, int], float] | None = None,
) -> set[str]:
    """Ids of the jobs that ElasticFlow could not finish by their deadlines even alone on an empty cluster.

    Alone, a job waits for the first slot boundary at or after its arrival (``slot_s`` slots from t=0),
    asks there for q fresh replicas of the GPU type with the most capacity (q a legal power of two, at
    most the model's ``max_replicas``, ``q x gpus_per_replica`` at most that type's capacity), waits for
    their cold start (``cold_start_s``), pauses for the restart that starts a job (ElasticFlow's scaling
    overhead plus ``restart_s``; pass ``overhead(profile, gpu, old_n, new_n)`` to use another runtime's,
    e.g. ``policy.rescale_overhead_s``) and then runs ``work_steps`` at the throughput of q replicas.  A
    job is infeasible alone when no q finishes by its deadline.  Changing q along the way only adds
    cold starts and pauses, so no plan of a slotted, cold-starting system meets those jobs: they are
    structural misses, not the policy's.  ``gpu_types`` is accepted for symmetry with the simulator's
    arguments (prices do not matter here).
    """
    del gpu_types
    gpu = max(capacity, key=lambda t: capacity[t])
    total = capacity[gpu]
    out: set[str] = set()
    for j in jobs:
        prof = models[j.model]
        if gpu not in prof.step_time_s:
            out.add(j.job_id)
            continue
        start = math.ceil(j.arrival / slot_s - 1e-9) * slot_s
        best = math.inf
        for q in legal_sizes(prof, total):
            pause = (
                overhead(prof, gpu, 0, q)
                if overhead is not None
                else checkpoint_restart_s(prof, q, restart_s)
            )
            best = min(best, start + prof.cold_start_s[gpu] + pause + j.work_steps / prof.throughput(gpu, q))
        if best > j.deadline + TOL:
            out.add(j.job_id)
    return out
