"""The admitted plans of one ElasticFlow decision, kept so that per-job admission is incremental.

Per-job admission (:mod:`prompttuner.scheduler.elasticflow`) inserts each arrival, in deadline order,
at its EDF place in the admitted plans and re-plans the jobs behind it (the *tail*) on what the arrival
leaves; the arrival is declined if one of them loses its share.  Done literally, every arrival rebuilds
the free timeline in front of its place and re-plans its whole tail: O(admitted) minimum shares per
arrival.  :class:`Book` gives the same answers with less work:

- the arrivals come in deadline order, so their places only move back: the free timeline in front of
  the place is swept forward once per decision instead of rebuilt per arrival;
- a tail job's minimum share depends on the free timeline only through
  ``min(share, legal_floor(free[s] // gpus_per_replica))`` for the slots before its deadline, ``share``
  being the count its plan came from (:func:`~prompttuner.scheduler.elasticflow_plan.min_share`), and,
  on the warm runtime, on the warm workers of its model.  A tail job whose view agrees on those keeps
  its plan: the call would return the same one.  Only the jobs whose view changed are re-planned;
- when every slot the arrival takes keeps, after the whole book, at least the largest ``share x
  gpus_per_replica`` of the book free, no tail job's view changes (each sees at least that much in
  every slot), and the tail is not walked at all.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prompttuner.core.types import JobView
from prompttuner.scheduler.elasticflow_plan import Plan, Timeline, legal_floor


@dataclass
class Entry:
    job: JobView
    plan: Plan
    level: int = 0  # how far the plan had to relax (see elasticflow._Round.plan)
    share: int = 0  # the plan is a function of min(share, legal_floor(free // gpus_per_replica))


def key(j: JobView) -> tuple[float, str]:
    """EDF order."""
    return (j.deadline, j.job_id)


class Book:
    """Feasible plans in admission order (``pinned`` repaired jobs first, then EDF), the free timeline
    and warm workers after all of them, and a sweep of those in front of a place."""

    def __init__(
        self,
        entries: list[Entry],
        pinned: int,
        cap: int,
        warm0: dict[str, int],
        gpus: Callable[[JobView], int],
        last: Callable[[JobView], int],
        warm_counts: bool,
    ) -> None:
        self.entries, self.pinned, self.cap, self.warm0 = entries, pinned, cap, warm0
        self.gpus, self.last, self.warm_counts = gpus, last, warm_counts
        self.keys = [key(e.job) for e in entries]
        self.full, self.full_warm = Timeline(cap), dict(warm0)
        for e in entries:
            self.take(e, self.full, self.full_warm)
        self.top = max((e.share * gpus(e.job) for e in entries), default=0)
        self.at, self.pre, self.pre_warm = 0, Timeline(cap), dict(warm0)

    def take(self, e: Entry, free: Timeline, warm: dict[str, int]) -> None:
        free.take(e.plan.sizes, self.gpus(e.job))
        if e.plan.warm_used:
            warm[e.job.spec.model] = warm.get(e.job.spec.model, 0) - e.plan.warm_used

    def place(self, j: JobView) -> int:
        """Where ``j`` goes in the EDF part (places must not move forward between calls)."""
        return bisect.bisect_left(self.keys, key(j), lo=self.pinned)

    def before(self, k: int) -> tuple[Timeline, dict[str, int]]:
        """Free timeline and warm workers in front of place ``k`` (read only)."""
        assert k >= self.at, "places only move back"
        while self.at < k:
            self.take(self.entries[self.at], self.pre, self.pre_warm)
            self.at += 1
        return self.pre, self.pre_warm

    def insert(
        self, k: int, e: Entry, replan: Callable[[Entry, Timeline, dict[str, int]], Entry | None]
    ) -> str | None:
        """Admit ``e`` at ``k`` if every job behind it keeps a share (``replan(entry, free, warm)``: its
        plan on that view, None if it has none); the id of the first that does not, else None."""
        tail = self.entries[k:]
        if not self._untouched(e) and tail:
            got = self._walk(k, e, tail, replan)
            if isinstance(got, str):
                return got
            full, full_warm, tail = got
        else:
            full, full_warm = self.full, self.full_warm
            self.take(e, full, full_warm)
        self.entries[k:] = [e, *tail]
        self.keys.insert(k, key(e.job))
        self.full, self.full_warm = full, full_warm
        self.top = max([self.top, e.share * self.gpus(e.job)] + [x.share * self.gpus(x.job) for x in tail])
        self.before(k)
        self.take(e, self.pre, self.pre_warm)
        self.at = k + 1
        return None

    def _untouched(self, e: Entry) -> bool:
        """No job of the book sees a different view once ``e`` takes its share."""
        if e.plan.warm_used and self.warm_counts:
            return False
        g, full = self.gpus(e.job), self.full
        return all(not n or full.get(s) - n * g >= self.top for s, n in enumerate(e.plan.sizes))

    def _walk(
        self,
        k: int,
        e: Entry,
        tail: Sequence[Entry],
        replan: Callable[[Entry, Timeline, dict[str, int]], Entry | None],
    ) -> tuple[Timeline, dict[str, int], list[Entry]] | str:
        """The tail on the view ``e`` leaves: jobs whose view agrees keep their plans."""
        pre, pre_warm = self.before(k)
        old, old_warm = pre.copy(), dict(pre_warm)
        new, new_warm = pre.copy(), dict(pre_warm)
        self.take(e, new, new_warm)
        diff = {s for s, n in enumerate(e.plan.sizes) if n}
        out: list[Entry] = []
        for x in tail:
            y: Entry | None = x
            if not self._agree(x, old, new, diff, old_warm, new_warm):
                y = replan(x, new, new_warm)
                if y is None:
                    return x.job.job_id
            assert y is not None
            self.take(x, old, old_warm)
            self.take(y, new, new_warm)
            if y is not x:
                touched = {s for s, n in enumerate(x.plan.sizes) if n}
                for s in touched | {s for s, n in enumerate(y.plan.sizes) if n}:
                    if old.get(s) == new.get(s):
                        diff.discard(s)
                    else:
                        diff.add(s)
            out.append(y)
        return new, new_warm, out

    def _agree(
        self,
        x: Entry,
        old: Timeline,
        new: Timeline,
        diff: set[int],
        old_warm: dict[str, int],
        new_warm: dict[str, int],
    ) -> bool:
        if self.warm_counts:
            m = x.job.spec.model
            if old_warm.get(m, 0) != new_warm.get(m, 0):
                return False
        g, q, last = self.gpus(x.job), x.share, self.last(x.job)
        for s in diff:
            if s < last and min(q, legal_floor(old.get(s) // g)) != min(q, legal_floor(new.get(s) // g)):
                return False
        return True
