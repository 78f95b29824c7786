"""The simulator with a complete job feed: its live index also names every job whose work estimate was
refreshed (``LiveIndex.touch``), so a policy may keep per-job results between decisions and revisit only
the jobs the feed names (PromptTuner's incremental survey, ``scheduler/prompttuner_inc.py``).

The engine names jobs whose workers change through the index already; an estimate refresh changes a
job's view without touching a worker.  Until ``sim/engine.py`` touches the job where it replaces the
spec (``Simulator._refresh``; and sets ``live.feeds_jobs`` with ``incremental``), this subclass does it
from outside: before the refresh it notes the jobs whose estimate check is due (the entries of the check
heap at or before ``now``, found by walking the heap from its root) and their specs, and after it touches
those whose spec was replaced.  Everything else is the engine's.
"""

from __future__ import annotations

from typing import Any

from prompttuner.core.types import JobSpec
from prompttuner.sim.engine import Simulator

__all__ = ["FeedingSimulator", "due_entries"]


def due_entries(heap: list[tuple[Any, ...]], t: float) -> list[tuple[Any, ...]]:
    """The entries of a heap whose first field is <= ``t`` (a subtree whose root is later holds none)."""
    out: list[tuple[Any, ...]] = []
    stack = [0]
    n = len(heap)
    while stack:
        i = stack.pop()
        if i < n and heap[i][0] <= t:
            out.append(heap[i])
            stack.append(2 * i + 1)
            stack.append(2 * i + 2)
    return out


class FeedingSimulator(Simulator):
    """A :class:`Simulator` whose live index feeds every change of a job's view (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.live.feeds_jobs = self.incremental

    def _refresh(self) -> None:
        before: list[tuple[str, JobSpec]] = []
        if self.incremental:
            for entry in due_entries(self._check_heap, self.now):
                job = self.active.get(entry[3])
                if job is not None:
                    before.append((entry[3], job.spec))
        super()._refresh()
        for jid, spec in before:
            job = self.active.get(jid)
            if job is not None and job.spec is not spec:
                self.live.touch(jid)
