"""A worker index that a driver keeps up to date in place, so a snapshot need not be walked to find idle,
provisioning or busy workers.

:class:`~prompttuner.scheduler.common.Index` groups a snapshot's workers the ways policies ask for them.
Built from the snapshot it is O(workers) per decision; at 10,000 GPUs that walk, repeated at every event,
is most of a simulation.  A :class:`LiveIndex` holds the same groups and is told of each worker view that
changes (:meth:`put`) or goes (:meth:`drop`), so a decision copies lists instead of walking workers.  The
groups are ordered exactly as ``Index.build`` orders them from the snapshot (``seq`` is the worker's place
in the snapshot's worker tuple), so both give the same index; ``tests/test_scale.py`` checks it.

Plain data and no clock, like the rest of ``core``: a driver that rebuilds its views from scratch each time
can fill a fresh one with :meth:`of`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar, overload

from prompttuner.core.types import JobView, ModelProfile, WorkerState, WorkerView

Key = tuple[str, str]  # (model, gpu_type)
T = TypeVar("T")


class Lazy(Sequence[T]):
    """A snapshot's jobs or workers, listed on first use (a policy that plans from the live index never
    lists them).  Valid during the decision it was made for, like the live index: ``make`` reads the
    driver's state."""

    def __init__(self, make: Callable[[], tuple[T, ...]], n: int) -> None:
        self._make = make
        self._n = n
        self._got: tuple[T, ...] | None = None

    def _all(self) -> tuple[T, ...]:
        if self._got is None:
            self._got = self._make()
        return self._got

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[T]: ...
    def __getitem__(self, i: int | slice) -> T | Sequence[T]:
        return self._all()[i]

    def __iter__(self) -> Iterator[T]:
        return iter(self._all())

    def __len__(self) -> int:
        return self._n if self._got is None else len(self._got)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Lazy):
            other = other._all()
        return self._all() == other

    def __hash__(self) -> int:
        return hash(self._all())


class _Sorted:
    """Views sorted by a key (ties by ``seq``); parallel lists so views are never compared."""

    __slots__ = ("keys", "seqs", "views")

    def __init__(self) -> None:
        self.keys: list[tuple[float, int]] = []
        self.views: list[WorkerView] = []
        self.seqs: list[int] = []  # ascending: ``seqs[0]`` places the group among the others

    def add(self, k: tuple[float, int], v: WorkerView) -> None:
        i = bisect.bisect_left(self.keys, k)
        self.keys.insert(i, k)
        self.views.insert(i, v)
        bisect.insort(self.seqs, k[1])

    def remove(self, k: tuple[float, int]) -> None:
        i = bisect.bisect_left(self.keys, k)
        del self.keys[i]
        del self.views[i]
        del self.seqs[bisect.bisect_left(self.seqs, k[1])]


def groups(d: Mapping[Key, _Sorted]) -> list[tuple[Key, list[WorkerView]]]:
    """The non-empty groups, each a copy of its views, in the order their first worker has in the
    snapshot (the order ``Index.build`` meets them in, which ties in later sorts depend on)."""
    got = [(s.seqs[0], k, s) for k, s in d.items() if s.views]
    got.sort(key=lambda x: x[0])
    return [(k, list(s.views)) for _, k, s in got]


class LiveIndex:
    """Workers by id (in snapshot order), by job, idle and free-provisioning by (model, GPU type), GPUs
    held per type and workers per model.  Lists are the index's own: callers copy before changing them."""

    def __init__(self, models: Mapping[str, ModelProfile]) -> None:
        self._g = {m: p.gpus_per_replica for m, p in models.items()}
        self.workers: dict[str, WorkerView] = {}
        self._seq: dict[str, int] = {}
        self._next = 0
        self._where: dict[str, tuple[str, object, tuple[float, int]]] = {}  # wid -> (group, key, sort key)
        self.by_job: dict[str, list[WorkerView]] = {}  # in snapshot order
        self._job_keys: dict[str, list[int]] = {}
        self.idle: dict[Key, _Sorted] = {}  # oldest idle first (None first)
        self.prov_free: dict[Key, _Sorted] = {}  # latest ready first
        self.held: dict[str, int] = {}  # GPUs held per GPU type
        self.per_model: dict[str, int] = {}  # workers per base LLM
        self.busy_model: dict[str, int] = {}  # workers with a job, per base LLM
        # the active jobs by id (the driver's mapping: a simulator builds each view on first use) and,
        # per base LLM, those that hold no worker, in (arrival, job id) order
        self.jobs: Mapping[str, JobView] = {}
        self.queued: dict[str, list[tuple[float, str]]] = {}
        # the jobs whose worker group changed (any put or drop of one of their workers) or that the
        # driver touched, in order; ``log_start`` is the place of ``job_log[0]`` in the whole feed
        self.job_log: list[str] = []
        self.log_start = 0
        # True when the driver touches every job whose view changes other than by its workers and by
        # progress at its rate (an estimate refresh): then a policy may keep per-job results between
        # decisions and revisit only the jobs this feed names (``changes_since``)
        self.feeds_jobs = False

    @classmethod
    def of(
        cls,
        models: Mapping[str, ModelProfile],
        workers: Iterable[WorkerView],
        jobs: Iterable[JobView] = (),
    ) -> LiveIndex:
        """A fresh index of ``workers`` and the active ``jobs`` (a driver that keeps none in place)."""
        live = cls(models)
        for w in workers:
            live.put(w)
        views = {j.job_id: j for j in jobs if not j.phase.terminal}
        live.jobs = views
        for j in views.values():
            if not live.by_job.get(j.job_id):
                live.queue(j.spec.model, j.spec.arrival, j.job_id)
        return live

    def queue(self, model: str, arrival: float, job_id: str) -> None:
        """The job holds no worker (it arrived, or lost its last one)."""
        bisect.insort(self.queued.setdefault(model, []), (arrival, job_id))

    def unqueue(self, model: str, arrival: float, job_id: str) -> None:
        """The job holds a worker again, or is gone."""
        lst = self.queued[model]
        del lst[bisect.bisect_left(lst, (arrival, job_id))]

    def state(self) -> dict[str, object]:
        """The groups as plain data (worker ids in order, counters without zeros), for comparisons."""
        return {
            "workers": list(self.workers),
            "by_job": {j: [w.worker_id for w in ws] for j, ws in sorted(self.by_job.items())},
            "idle": [(f"{k[0]}@{k[1]}", [w.worker_id for w in ws]) for k, ws in groups(self.idle)],
            "prov_free": [(f"{k[0]}@{k[1]}", [w.worker_id for w in ws]) for k, ws in groups(self.prov_free)],
            "held": {k: v for k, v in sorted(self.held.items()) if v},
            "per_model": {k: v for k, v in sorted(self.per_model.items()) if v},
            "busy_model": {k: v for k, v in sorted(self.busy_model.items()) if v},
            "queued": {m: [j for _, j in q] for m, q in sorted(self.queued.items()) if q},
            "jobs": sorted(self.jobs),
        }

    LOG_CAP = 1 << 20  # entries kept; a reader further behind reads ``None`` (start over)

    def touch(self, job_id: str) -> None:
        """The job's view changed other than by its workers (its estimated work, say)."""
        self.job_log.append(job_id)
        if len(self.job_log) > self.LOG_CAP:
            half = len(self.job_log) // 2
            del self.job_log[:half]
            self.log_start += half

    def log_end(self) -> int:
        """The place in the feed after its last entry (a reader's cursor)."""
        return self.log_start + len(self.job_log)

    def changes_since(self, cursor: int) -> list[str] | None:
        """The jobs named since ``cursor`` (from ``log_end``), or None when they are no longer kept."""
        if cursor < self.log_start:
            return None
        return self.job_log[cursor - self.log_start :]

    def gpus(self, model: str | None) -> int:
        return self._g.get(model, 1) if model is not None else 1

    def put(self, w: WorkerView) -> None:
        """``w`` is new or replaces the view of the same worker."""
        wid = w.worker_id
        if wid in self.workers:
            self._unlink(wid)
        else:
            self._seq[wid] = self._next
            self._next += 1
        self.workers[wid] = w
        seq = self._seq[wid]
        g = self.gpus(w.model)
        self.held[w.gpu_type] = self.held.get(w.gpu_type, 0) + g
        if w.model is not None:
            self.per_model[w.model] = self.per_model.get(w.model, 0) + 1
        if w.job_id is not None:
            self.touch(w.job_id)
            if w.model is not None:
                self.busy_model[w.model] = self.busy_model.get(w.model, 0) + 1
            keys = self._job_keys.setdefault(w.job_id, [])
            lst = self.by_job.setdefault(w.job_id, [])
            i = bisect.bisect_left(keys, seq)
            keys.insert(i, seq)
            lst.insert(i, w)
            self._where[wid] = ("job", w.job_id, (0.0, seq))
        elif w.model is not None and w.state in (WorkerState.IDLE, WorkerState.PROVISIONING):
            key = (w.model, w.gpu_type)
            if w.state == WorkerState.IDLE:
                sk = (w.idle_since if w.idle_since is not None else -math.inf, seq)
                self.idle.setdefault(key, _Sorted()).add(sk, w)
                self._where[wid] = ("idle", key, sk)
            else:
                sk = (-w.ready_at, seq)
                self.prov_free.setdefault(key, _Sorted()).add(sk, w)
                self._where[wid] = ("prov", key, sk)

    def drop(self, wid: str) -> None:
        """The worker is gone (released)."""
        if wid in self.workers:
            self._unlink(wid)
            del self.workers[wid]
            del self._seq[wid]

    def _unlink(self, wid: str) -> None:
        w = self.workers[wid]
        self.held[w.gpu_type] -= self.gpus(w.model)
        if w.model is not None:
            self.per_model[w.model] -= 1
            if w.job_id is not None:
                self.busy_model[w.model] -= 1
        where = self._where.pop(wid, None)
        if where is None:
            return
        group, key, sk = where
        if group == "job":
            jid = str(key)
            self.touch(jid)
            keys = self._job_keys[jid]
            i = bisect.bisect_left(keys, sk[1])
            del keys[i]
            del self.by_job[jid][i]
            if not keys:
                del self._job_keys[jid]
                del self.by_job[jid]
        elif group == "idle":
            self.idle[key].remove(sk)  # type: ignore[index]
        else:
            self.prov_free[key].remove(sk)  # type: ignore[index]
