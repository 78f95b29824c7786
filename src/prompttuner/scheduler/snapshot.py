"""The one snapshot builder both drivers use, and the arrival bookkeeping behind ``ArrivalStats``.

A driver keeps its own records of jobs and workers (simulated ones, or live ones backed by real workers
and database rows) and turns them into :class:`JobView` / :class:`WorkerView`; :func:`build_snapshot`
assembles the rest the same way for both: the recent arrivals of each base LLM with their deadlines and
estimated work, the idle gaps of its workers (and the idle times that ended in a release), the warm
minimum and the jobs that await admission.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from prompttuner.core.live import Lazy, LiveIndex
from prompttuner.core.types import (
    ArrivalStats,
    ClusterSnapshot,
    GPUType,
    JobSpec,
    JobView,
    ModelProfile,
    WorkerView,
)

HISTORY = 64  # recent arrivals (and idle gaps) kept per base LLM


class ArrivalBook:
    """Recent arrivals and idle gaps per base LLM; ``stats()`` rebuilds only what changed."""

    def __init__(self, history: int = HISTORY) -> None:
        self.history = history
        self._arrivals: dict[str, deque[tuple[float, float, float]]] = {}
        self._gaps: dict[str, deque[float]] = {}
        self._released: dict[str, deque[float]] = {}
        self._stats: dict[str, ArrivalStats] = {}

    def note_arrival(self, spec: JobSpec) -> None:
        """A job arrived: its arrival time, deadline and estimated work (what a policy may know)."""
        self._arrivals.setdefault(spec.model, deque(maxlen=self.history)).append(
            (spec.arrival, spec.deadline, spec.work_steps)
        )
        self._stats.pop(spec.model, None)

    def note_idle_gap(self, model: str, seconds: float) -> None:
        """An idle worker of ``model`` was put to work after ``seconds`` idle."""
        self._gaps.setdefault(model, deque(maxlen=self.history)).append(seconds)
        if model in self._arrivals:
            self._stats.pop(model, None)

    def note_released_idle(self, model: str, seconds: float) -> None:
        """An idle worker of ``model`` was released after ``seconds`` idle (a censored idle time)."""
        self._released.setdefault(model, deque(maxlen=self.history)).append(seconds)
        if model in self._arrivals:
            self._stats.pop(model, None)

    def stats(self) -> Mapping[str, ArrivalStats]:
        """Per model that has seen arrivals: its recent arrivals (oldest first), deadlines, work, gaps."""
        for model, recent in self._arrivals.items():
            if model not in self._stats:
                self._stats[model] = ArrivalStats(
                    model,
                    tuple(a for a, _, _ in recent),
                    tuple(self._gaps.get(model, ())),
                    recent_deadlines=tuple(d for _, d, _ in recent),
                    recent_work=tuple(w for _, _, w in recent),
                    released_idle=tuple(self._released.get(model, ())),
                )
        return self._stats


def build_snapshot(
    now: float,
    jobs: Iterable[JobView],
    workers: Iterable[WorkerView],
    models: Mapping[str, ModelProfile],
    gpu_types: Mapping[str, GPUType],
    capacity: Mapping[str, int],
    book: ArrivalBook,
    new_job_ids: Sequence[str] = (),
    min_warm: Mapping[str, int] | None = None,
    live: LiveIndex | None = None,
) -> ClusterSnapshot:
    """What a policy sees at ``now`` (built the same way by the simulator and the live controller)."""
    return ClusterSnapshot(
        now=now,
        jobs=jobs if isinstance(jobs, Lazy) else tuple(jobs),
        workers=workers if isinstance(workers, Lazy) else tuple(workers),  # type: ignore[arg-type]
        models=models,
        gpu_types=gpu_types,
        capacity=capacity,
        arrivals=book.stats(),
        new_job_ids=tuple(new_job_ids),
        min_warm=min_warm if min_warm is not None else {},
        live=live,
    )
