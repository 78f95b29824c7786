"""Helpers every policy shares: an index of a snapshot and finish-time arithmetic.

A policy sees a :class:`ClusterSnapshot` of possibly thousands of jobs and workers; :class:`Index` walks it
once and groups workers the ways policies ask for them (idle by model and GPU type, by job, provisioning),
so no policy rebuilds O(jobs x workers) structures.  The finish-time functions model a job whose replicas
become available at different times (own and warm workers now, provisioning ones when they are ready,
cold starts after the model's cold-start time), which is what admission, quotes and allocation need.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from prompttuner.core.live import groups
from prompttuner.core.types import (
    ClusterSnapshot,
    Decisions,
    JobPhase,
    JobView,
    ModelProfile,
    Provision,
    Switch,
    WorkerState,
    WorkerView,
)

Key = tuple[str, str]  # (model, gpu_type)
_TERMINAL = frozenset(p for p in JobPhase if p.terminal)


@dataclass
class Index:
    """One pass over a snapshot; mutable lists so a policy can pop workers as it hands them out."""

    snap: ClusterSnapshot
    new: set[str] = field(default_factory=set)
    by_job: dict[str, list[WorkerView]] = field(default_factory=lambda: defaultdict(list))
    idle: dict[Key, list[WorkerView]] = field(default_factory=lambda: defaultdict(list))
    prov_free: dict[Key, list[WorkerView]] = field(default_factory=lambda: defaultdict(list))
    free: dict[str, int] = field(default_factory=dict)  # GPUs that may still be requested, per type
    workers: Mapping[str, WorkerView] = field(default_factory=dict)
    _active: list[JobView] | None = None

    @property
    def active(self) -> list[JobView]:
        """The jobs that are not terminal (listed on first use)."""
        if self._active is None:
            self._active = [j for j in self.snap.jobs if j.phase not in _TERMINAL]  # not j.phase.terminal
        return self._active

    def any_active(self) -> bool:
        if self._active is None and self.snap.live is not None:
            return len(self.snap.live.jobs) > 0
        return bool(self.active)

    @classmethod
    def build(cls, snap: ClusterSnapshot) -> Index:
        if snap.live is not None:
            return cls._of_live(snap)
        ix = cls(snap=snap)
        ix.new = set(snap.new_job_ids)
        held: dict[str, int] = defaultdict(int)
        ix.workers = dict(snap.worker_index)  # a copy: the snapshot's own index stays as it is
        g_of = {m: p.gpus_per_replica for m, p in snap.models.items()}
        by_job, idle, prov_free = ix.by_job, ix.idle, ix.prov_free
        idle_state, prov_state = WorkerState.IDLE, WorkerState.PROVISIONING
        for w in snap.workers:
            model = w.model
            held[w.gpu_type] += g_of.get(model, 1) if model is not None else 1
            if w.job_id is not None:
                by_job[w.job_id].append(w)
            elif model is not None:
                if w.state == idle_state:
                    idle[(model, w.gpu_type)].append(w)
                elif w.state == prov_state:
                    prov_free[(model, w.gpu_type)].append(w)
        # most recently idle last, so pop() reuses the warmest worker and releases take the oldest first
        for lst in ix.idle.values():
            lst.sort(key=lambda w: w.idle_since if w.idle_since is not None else -math.inf)
        for lst in ix.prov_free.values():
            lst.sort(key=lambda w: -w.ready_at)  # pop() gives the one ready soonest
        for gname, cap in snap.capacity.items():
            ix.free[gname] = cap - held.get(gname, 0)
        return ix

    @classmethod
    def _of_live(cls, snap: ClusterSnapshot) -> Index:
        """The same index from the driver's live one: copies of its sorted lists, no walk of workers
        (``by_job`` and ``workers`` are the live index's own, read-only)."""
        live = snap.live
        ix = cls(snap=snap)
        ix.new = set(snap.new_job_ids)
        ix.workers = live.workers
        ix.by_job = live.by_job
        ix.idle = defaultdict(list, groups(live.idle))
        ix.prov_free = defaultdict(list, groups(live.prov_free))
        for gname, cap in snap.capacity.items():
            ix.free[gname] = cap - live.held.get(gname, 0)
        return ix

    def gpus(self, model: str) -> int:
        return self.snap.models[model].gpus_per_replica


_RATES: dict[tuple[str, str, float, float, int], tuple[float, ...]] = {}


def rates(prof: ModelProfile, gpu: str) -> tuple[float, ...]:
    """Steps per second for 0..max_replicas replicas (memoised: policies ask this in inner loops)."""
    key = (prof.name, gpu, prof.step_time_s[gpu], prof.sync_overhead_s, prof.max_replicas)
    r = _RATES.get(key)
    if r is None:
        r = tuple(prof.throughput(gpu, n) for n in range(prof.max_replicas + 1))
        _RATES[key] = r
    return r


def finish_time(
    prof: ModelProfile,
    gpu: str,
    steps: float,
    now: float,
    groups: Sequence[tuple[int, float]],
    pause: float,
    join_pause: float = 0.0,
) -> float:
    """When ``steps`` are done if ``groups`` = [(count, ready_time), ...] of replicas join over time.

    Groups must be sorted by ready time.  ``pause`` is charged once, when the job (re)starts at the first
    group; ``join_pause`` each time a later group joins a running job (the driver pauses it to rescale).
    """
    if steps <= 0:
        return now
    rt = rates(prof, gpu)
    n = 0
    t = now
    left = steps
    for count, ready in groups:
        if count <= 0:
            continue
        ready = max(ready, now)
        if n == 0:
            t = ready + pause
            n = min(count, prof.max_replicas)
            continue
        if ready > t:
            rate = rt[n]
            span = ready - t
            if rate * span >= left:
                return t + left / rate
            left -= rate * span
            t = ready + join_pause
        n = min(n + count, prof.max_replicas)
    if n == 0:
        return math.inf
    return t + left / rt[n]


def prefix_groups(groups: Sequence[tuple[int, float]], n: int) -> list[tuple[int, float]]:
    """The first ``n`` replicas of sorted ``groups``."""
    out: list[tuple[int, float]] = []
    for count, t in groups:
        if n <= 0:
            break
        take = min(count, n)
        if take > 0:
            out.append((take, t))
            n -= take
    return out


def min_replicas(
    prof: ModelProfile,
    gpu: str,
    steps: float,
    now: float,
    deadline: float,
    groups: Sequence[tuple[int, float]],
    pause: float,
    join_pause: float = 0.0,
) -> tuple[int, float] | None:
    """Fewest replicas (taken in ``groups`` order) that finish by ``deadline``: (n, finish) or None."""
    total = min(sum(c for c, _ in groups), prof.max_replicas)
    for n in range(1, total + 1):
        f = finish_time(prof, gpu, steps, now, prefix_groups(groups, n), pause, join_pause)
        if f <= deadline:
            return n, f
    return None


def fastest(
    prof: ModelProfile,
    gpu: str,
    steps: float,
    now: float,
    groups: Sequence[tuple[int, float]],
    pause: float,
    join_pause: float = 0.0,
) -> tuple[int, float]:
    """The replica count (in ``groups`` order) with the earliest finish: (n, finish); (0, inf) if none."""
    total = min(sum(c for c, _ in groups), prof.max_replicas)
    best = (0, math.inf)
    for n in range(1, total + 1):
        f = finish_time(prof, gpu, steps, now, prefix_groups(groups, n), pause, join_pause)
        if f < best[1] - 1e-9:
            best = (n, f)
    return best


def scan(
    prof: ModelProfile,
    gpu: str,
    steps: float,
    now: float,
    groups: Sequence[tuple[int, float]],
    pause: float,
    join_pause: float,
    target: float | None,
) -> tuple[tuple[int, float] | None, tuple[int, float]]:
    """``min_replicas`` (None when ``target`` is None) and ``fastest`` in one pass over n.

    When some count meets ``target`` the scan stops there, so the second value is then only the fastest
    among the counts tried.

    Replicas of the first group all start together, so their finish has a closed form; only counts that
    reach into later groups need the piecewise :func:`finish_time`.
    """
    rt = rates(prof, gpu)
    cap = prof.max_replicas
    best_fast = (0, math.inf)
    if steps <= 0:
        return ((1, now) if target is not None else None), (1, now)
    n_cur = 0
    t = now
    left = steps
    done_at: float | None = None  # the job already finished with the replicas before this group
    for count, ready in groups:
        if count <= 0:
            continue
        ready = max(ready, now)
        if n_cur == 0:
            t = ready + pause
        elif done_at is None and ready > t:
            rate = rt[n_cur]
            if rate * (ready - t) >= left:
                done_at = t + left / rate
            else:
                left -= rate * (ready - t)
                t = ready + join_pause
        for c in range(1, count + 1):
            n = n_cur + c
            if n > cap:
                return None, best_fast
            f = done_at if done_at is not None else t + left / rt[n]
            if f < best_fast[1] - 1e-9:
                best_fast = (n, f)
            if target is not None and f <= target:
                # callers only want the fastest plan when no count meets the target: stop here
                return (n, f), best_fast
        n_cur += count
    return None, best_fast


def keep_warm_floor(snap: ClusterSnapshot, d: Decisions) -> Decisions:
    """Honour the operator's warm minimum (``snap.min_warm``): drop the releases and switches that would
    leave a base LLM with fewer workers than its minimum, trim the provisions that no longer fit the
    capacity once those workers stay (latest first, the pool's before a job's), and provision (on the
    cheapest GPU type per step with room) the workers a model still lacks.  Every policy passes its
    decisions through this.
    """
    if not snap.min_warm:
        return d
    count: dict[str, int] = defaultdict(int)
    if snap.live is not None:
        count.update(snap.live.per_model)
    else:
        for w in snap.workers:
            if w.model is not None:
                count[w.model] += 1
    for p in d.provision:
        count[p.model] += p.count
    release: list[str] = []
    freed: dict[str, int] = defaultdict(int)
    for wid in d.release:
        rw = snap.worker_index.get(wid)
        if rw is not None and rw.model is not None:
            if count[rw.model] <= snap.min_warm.get(rw.model, 0):
                continue  # the floor keeps it
            count[rw.model] -= 1
            freed[rw.gpu_type] += snap.models[rw.model].gpus_per_replica if rw.model in snap.models else 1
        release.append(wid)
    switch = []
    for sw in d.switch:
        sv = snap.worker_index.get(sw.worker_id)
        if sv is not None and sv.model is not None:
            if count[sv.model] <= snap.min_warm.get(sv.model, 0):
                continue  # the floor keeps it on its model
            count[sv.model] -= 1
        count[sw.model] += 1
        switch.append(sw)
    room = {t: cap - snap.gpus_held(t) + freed[t] for t, cap in snap.capacity.items()}
    provision = list(d.provision)
    for p in provision:
        room[p.gpu_type] = room.get(p.gpu_type, 0) - p.count * snap.models[p.model].gpus_per_replica
    if any(v < 0 for v in room.values()):
        # a kept worker holds GPUs a provision counted on: trim, latest first, the pool's before a job's
        order = sorted(range(len(provision)), key=lambda i: (provision[i].job_id is not None, -i))
        for i in order:
            p = provision[i]
            g = snap.models[p.model].gpus_per_replica
            while room.get(p.gpu_type, 0) < 0 and p.count > 0:
                p = replace(p, count=p.count - 1)
                room[p.gpu_type] += g
                count[p.model] -= 1
            provision[i] = p
        provision = [p for p in provision if p.count > 0]
    extra: list[Provision] = []
    for model in sorted(snap.min_warm):
        prof = snap.models.get(model)
        lack = snap.min_warm[model] - count[model]
        if prof is None or lack <= 0:
            continue
        types = [t for t in snap.capacity if t in prof.step_time_s]
        types.sort(key=lambda t: prof.step_time_s[t] * snap.gpu_types[t].price_per_hour)
        for t in types:
            n = min(lack, max(0, room.get(t, 0)) // prof.gpus_per_replica)
            if n > 0:
                extra.append(Provision(model, t, n))
                room[t] -= n * prof.gpus_per_replica
                lack -= n
    if (
        not extra
        and len(release) == len(d.release)
        and len(switch) == len(d.switch)
        and provision == list(d.provision)
    ):
        return d
    return replace(d, release=tuple(release), provision=tuple(provision) + tuple(extra), switch=tuple(switch))


def switch_for_cold_starts(snap: ClusterSnapshot, d: Decisions) -> Decisions:
    """Where ``d`` releases an idle warm worker and cold-starts a worker of another base LLM on the same
    GPU type, switch the idle worker to that model instead, when its switch time beats the cold start:
    the new model is ready after its load alone (no instance start), and no GPU is given back only to be
    asked for again.  The counts of workers per model come out as ``d`` had them, so a warm minimum that
    ``d`` keeps stays kept.  A provision for a job becomes a switch for that job.
    """
    if not d.release or not d.provision:
        return d
    free: list[WorkerView] = []
    for wid in d.release:
        w = snap.worker_index.get(wid)
        if w is not None and w.state == WorkerState.IDLE and w.job_id is None and w.model in snap.models:
            free.append(w)
    if not free:
        return d
    switch = list(d.switch)
    provision: list[Provision] = []
    used: set[str] = set()
    for p in d.provision:
        prof = snap.models[p.model]
        if prof.switch_time(p.gpu_type) >= prof.cold_start_s[p.gpu_type]:
            provision.append(p)
            continue
        left = p.count
        for w in free:
            if left == 0:
                break
            if (
                w.worker_id in used
                or w.gpu_type != p.gpu_type
                or w.model == p.model
                or snap.models[w.model or ""].gpus_per_replica != prof.gpus_per_replica
            ):
                continue
            used.add(w.worker_id)
            switch.append(Switch(w.worker_id, p.model, p.job_id))
            left -= 1
        if left > 0:
            provision.append(replace(p, count=left))
    if not used:
        return d
    release = tuple(wid for wid in d.release if wid not in used)
    return replace(d, release=release, provision=tuple(provision), switch=tuple(switch))
