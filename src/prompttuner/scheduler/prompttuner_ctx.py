"""One decision's state for the PromptTuner planner: who has surplus, what frees up later, what was
handed out, and the per-decision caches the planner keeps so one decision stays linear in the jobs it
plans (``scheduler/prompttuner_plan.py``).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prompttuner.core.types import Provision, WorkerState, WorkerView
from prompttuner.scheduler.common import Index, Key


@dataclass
class _Plan:
    gpu: str
    n: int
    finish: float
    groups: list[tuple[int, float]]
    feasible: bool
    cost: float


@dataclass
class _Ctx:
    """State of one decision: who has surplus, what frees up later, what was handed out."""

    ix: Index
    excess: dict[Key, list[tuple[float, str, int]]] = field(default_factory=lambda: defaultdict(list))
    future: dict[str, list[tuple[float, int, str]]] = field(default_factory=lambda: defaultdict(list))
    alloc: dict[str, list[str]] = field(default_factory=dict)  # job -> workers (changed jobs only)
    provisions: list[Provision] = field(default_factory=list)
    release: list[str] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    idle_n: dict[Key, int] = field(default_factory=dict)  # untaken idle workers per (model, GPU type)
    idle_gpus: dict[str, int] = field(default_factory=dict)  # untaken idle GPUs per GPU type
    _fut_sorted: dict[str, list[tuple[float, int, str]]] = field(default_factory=dict)
    claims: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    _claim_prefix: dict[str, list[int]] = field(default_factory=dict)
    excess_n: dict[Key, int] = field(default_factory=dict)  # sum of ``excess`` per key (kept by _take)
    consts: dict[Key, tuple[float, float, float, float, float]] = field(default_factory=dict)
    own: dict[str, tuple[list[WorkerView], list[WorkerView]]] = field(default_factory=dict)
    types: dict[str, list[str]] = field(default_factory=dict)  # GPU types a model can run on
    victims: dict[str, list[WorkerView]] = field(default_factory=dict)  # idle per GPU type, oldest first
    victim_at: dict[str, int] = field(default_factory=dict)
    _fut_model: dict[tuple[str, str], list[tuple[float, int]]] = field(default_factory=dict)
    # the running jobs' finishes from the survey kept between decisions (``prompttuner_inc.Streams``);
    # None: ``future`` holds them all
    streams: Any = None
    # builds ``excess[key]`` on first use (the kept survey's lists, copied only when a job takes surplus)
    excess_src: Any = None

    def __post_init__(self) -> None:
        for (m, t), lst in self.ix.idle.items():
            self.idle_n[(m, t)] = len(lst)
            self.idle_gpus[t] = self.idle_gpus.get(t, 0) + len(lst) * self.ix.gpus(m)

    def take(self, w: WorkerView) -> None:
        """Mark a worker as handed out (or released) in this decision, keeping the idle counters."""
        if w.worker_id in self.taken:
            return
        self.taken.add(w.worker_id)
        if w.state == WorkerState.IDLE and w.job_id is None and w.model is not None:
            key = (w.model, w.gpu_type)
            self.idle_n[key] = self.idle_n.get(key, 0) - 1
            self.idle_gpus[w.gpu_type] = self.idle_gpus.get(w.gpu_type, 0) - self.ix.gpus(w.model)

    def claim(self, gpu: str, deadline: float, gpus: int) -> None:
        """Record that a queued job with ``deadline`` will take ``gpus`` of the capacity freed later."""
        lst = self.claims.setdefault(gpu, [])
        bisect.insort(lst, (deadline, gpus))
        self._claim_prefix.pop(gpu, None)

    def claimed_before(self, gpu: str, deadline: float) -> int:
        lst = self.claims.get(gpu)
        if not lst:
            return 0
        pre = self._claim_prefix.get(gpu)
        if pre is None:
            pre = list(itertools.accumulate(g for _, g in lst))
            self._claim_prefix[gpu] = pre
        k = bisect.bisect_right(lst, (deadline, math.inf))
        return pre[k - 1] if k > 0 else 0

    def donors(self, key: Key) -> list[tuple[float, str, int]]:
        """``excess[key]``: jobs with surplus of one (model, GPU type), latest deadline last (a list the
        caller pops donors from)."""
        got = self.excess.get(key)
        if got is None:
            got = self.excess[key] = self.excess_src(key) if self.excess_src is not None else []
        return got

    def future_sorted(self, gpu: str) -> Iterable[tuple[float, int, str]]:
        """(finish, GPUs, model) of every running job on ``gpu``, soonest first (from the kept survey's
        streams when there is one: computed only as far as a caller reads)."""
        if self.streams is not None:
            return self.streams.merged(gpu)
        got = self._fut_sorted.get(gpu)
        if got is None:
            got = sorted(self.future.get(gpu, []))
            self._fut_sorted[gpu] = got
        return got

    def future_of(self, gpu: str, model: str, until: float) -> Iterable[tuple[float, int]]:
        """``future_sorted(gpu)`` restricted to one model: (finish, GPUs), in the same order, at least
        those that finish before ``until`` (callers stop there)."""
        if self.streams is not None:
            return self.streams.of(gpu, model, until)
        got = self._fut_model.get((gpu, model))
        if got is None:
            # every model's list in one pass over the GPU type's (each is asked for once a decision)
            per: dict[str, list[tuple[float, int]]] = {}
            for t, gp, m in self.future_sorted(gpu):
                per.setdefault(m, []).append((t, gp))
            for m, lst in per.items():
                self._fut_model.setdefault((gpu, m), lst)
            got = self._fut_model.setdefault((gpu, model), [])
        return got

    def prov_times(self, key: Key, limit: int) -> list[float]:
        """Ready times of the first ``limit`` untaken provisioning workers of ``key``, soonest first.

        ``ix.prov_free[key]`` is sorted latest first and loses workers only by ``pop()`` (soonest), so
        its untaken workers are exactly the list, and their ascending times a suffix of the first one.
        """
        pf = self.ix.prov_free.get(key)
        if not pf or limit <= 0:
            return []
        return [w.ready_at for w in reversed(pf[-limit:])]

    keep_s: dict[str, float] = field(default_factory=dict)  # keep-alive per model, set by the pools
