"""The admitted plans of one ElasticFlow decision, kept so that per-job admission is incremental.

Per-job admission (:mod:`prompttuner.scheduler.elasticflow`) inserts each arrival, in deadline order,
at its EDF place in the admitted plans and re-plans the jobs behind it (the *tail*) on what the arrival
leaves; the arrival is declined if one of them loses its share.  Done literally, every arrival rebuilds
the free timeline in front of its place and re-plans its whole tail: O(admitted) minimum shares per
arrival.  :class:`Book` gives the same answers with less work:

- the arrivals come in deadline order, so their places only move back: the free timeline in front of
  the place is swept forward once per decision instead of rebuilt per arrival;
- a tail job's minimum share depends on the free timeline only through
  ``min(share, legal_floor(free[s] // gpus_per_replica))`` for the slots its plan's fill read,
  ``share`` being the count its plan came from, and through ``min(low, ...)`` in the slots before, for
  the smaller counts that failed (:func:`~prompttuner.scheduler.elasticflow_plan.min_share`), and, on
  the warm runtime, on the warm workers of its model.  A tail job whose view agrees on those keeps
  its plan: the call would return the same one.  Only the jobs whose view changed are re-planned.
  The views of the whole tail are compared at once: the book keeps each plan's GPUs per slot as a row
  of an integer array, and the views in front of the tail's jobs are a cumulative sum of those rows;
- when every slot the arrival takes keeps, after the whole book, at least the largest ``share x
  gpus_per_replica`` of the book free, no tail job's view changes (each sees at least that much in
  every slot), and the tail is not walked at all.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from prompttuner.core.types import JobView
from prompttuner.scheduler.elasticflow_plan import Plan, Timeline, legal_floor


@dataclass
class Entry:
    job: JobView
    plan: Plan
    level: int = 0  # how far the plan had to relax (see elasticflow._Round.plan)
    # the plan is a function of min(share, legal_floor(free // gpus_per_replica)) in the slots from
    # ``reach`` to the deadline and of min(low, ...) in those before
    share: int = 0
    low: int = 0
    reach: int = 0


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
        literal: bool = False,
    ) -> None:
        self.entries, self.pinned, self.cap, self.warm0 = entries, pinned, cap, warm0
        self.literal = literal  # re-plan every tail job on every insert (the reference)
        self.gpus, self.last, self.warm_counts = gpus, last, warm_counts
        self.keys = [key(e.job) for e in entries]
        self.full, self.full_warm = Timeline(cap), dict(warm0)
        for e in entries:
            self.take(e, self.full, self.full_warm)
        self.top = max((e.share * gpus(e.job) for e in entries), default=0)
        self.at, self.pre, self.pre_warm = 0, Timeline(cap), dict(warm0)
        # one row per plan (GPUs per slot), in the order rows were added; ``order``: the book's order
        width = max((len(e.plan.sizes) for e in entries), default=1)
        self.use = np.zeros((max(64, 2 * len(entries)), max(1, width)), dtype=np.int64)
        self.g = np.ones(self.use.shape[0], dtype=np.int64)
        self.share = np.zeros(self.use.shape[0], dtype=np.int64)
        self.low = np.zeros(self.use.shape[0], dtype=np.int64)
        self.reach = np.zeros(self.use.shape[0], dtype=np.int64)
        self.ends = np.zeros(self.use.shape[0], dtype=np.int64)
        self.model = np.zeros(self.use.shape[0], dtype=np.int64)
        self.models: dict[str, int] = {}
        self.rows = 0
        self.order = [self._row(e) for e in entries]
        self.floor = np.array([legal_floor(n) for n in range(cap + 1)], dtype=np.int64)

    def take(self, e: Entry, free: Timeline, warm: dict[str, int]) -> None:
        free.take(e.plan.sizes, self.gpus(e.job))
        if e.plan.warm_used:
            warm[e.job.spec.model] = warm.get(e.job.spec.model, 0) - e.plan.warm_used

    def _row(self, e: Entry, r: int | None = None) -> int:
        """Store ``e``'s plan in row ``r`` (a new row if None); its index."""
        if r is None:
            if self.rows == self.use.shape[0]:
                n = self.use.shape[0]
                self.use = np.vstack([self.use, np.zeros_like(self.use)])
                self.g, self.share, self.low, self.reach, self.ends, self.model = (
                    np.concatenate([a, np.zeros(n, dtype=np.int64)])
                    for a in (self.g, self.share, self.low, self.reach, self.ends, self.model)
                )
            r, self.rows = self.rows, self.rows + 1
        sizes, g = e.plan.sizes, self.gpus(e.job)
        if len(sizes) > self.use.shape[1]:
            pad = np.zeros((self.use.shape[0], len(sizes) - self.use.shape[1]), dtype=np.int64)
            self.use = np.hstack([self.use, pad])
        self.use[r] = 0
        self.use[r, : len(sizes)] = sizes
        self.use[r] *= g
        self.g[r], self.share[r], self.ends[r] = g, e.share, self.last(e.job)
        self.low[r], self.reach[r] = e.low, e.reach
        self.model[r] = self.models.setdefault(e.job.spec.model, len(self.models))
        return r

    def after(self) -> tuple[Timeline, dict[str, int]]:
        """Free timeline and warm workers after the whole book (read only)."""
        return self.full, self.full_warm

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
        changed: dict[int, Entry] = {}
        if self.literal:
            lit = self._replan_all(k, e, replan)
            if isinstance(lit, str):
                return lit
            for i, y in lit[0].items():
                self.entries[i] = y
                self._row(y, self.order[i])
                self.top = max(self.top, y.share * self.gpus(y.job))
            self.full, self.full_warm = lit[1], lit[2]
        elif not self._untouched(e) and len(self.entries) > k:
            got = self._walk(k, e, replan)
            if isinstance(got, str):
                return got
            changed, d, dwarm = got
        if changed:  # a re-planned job's plan has as many slots as before (those to its deadline)
            width = max(len(self.full.free), len(e.plan.sizes))
            free = np.array([self.full.get(s) for s in range(len(d))], dtype=np.int64) - d
            self.full = Timeline(self.cap, free[:width].tolist() + [self.cap] * (width - len(d)))
            for m, v in dwarm.items():
                self.full_warm[m] = self.full_warm.get(m, 0) - v
            for i, y in changed.items():
                assert len(y.plan.sizes) == len(self.entries[i].plan.sizes)
                self.entries[i] = y
                self._row(y, self.order[i])
                self.top = max(self.top, y.share * self.gpus(y.job))
        elif not self.literal:
            self.take(e, self.full, self.full_warm)
        self.entries.insert(k, e)
        self.keys.insert(k, key(e.job))
        self.order.insert(k, self._row(e))
        self.top = max(self.top, e.share * self.gpus(e.job))
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
        self, k: int, e: Entry, replan: Callable[[Entry, Timeline, dict[str, int]], Entry | None]
    ) -> tuple[dict[int, Entry], np.ndarray, dict[str, int]] | str:
        """The tail's jobs (book index: new entry) whose view ``e`` changes, re-planned, with how many
        GPUs per slot and warm workers per model fewer the book leaves free; or the id of the first job
        that has no share left."""
        pre, pre_warm = self.before(k)
        idx = np.array(self.order[k:], dtype=np.int64)
        use = self.use[idx]
        width = use.shape[1]
        width = max(width, len(e.plan.sizes))
        if width > use.shape[1]:
            use = np.hstack([use, np.zeros((len(idx), width - use.shape[1]), dtype=np.int64)])
        front = np.array([pre.get(s) for s in range(width)], dtype=np.int64)
        old = front[None, :] - (np.cumsum(use, axis=0) - use)  # the free view in front of each
        d = np.zeros(width, dtype=np.int64)  # how much less the new views have
        d[: len(e.plan.sizes)] = np.asarray(e.plan.sizes, dtype=np.int64) * self.gpus(e.job)
        g, ends, model = self.g[idx, None], self.ends[idx], self.model[idx]
        share, low, reach = self.share[idx, None], self.low[idx, None], self.reach[idx, None]
        dwarm: dict[str, int] = {}
        if self.warm_counts and e.plan.warm_used:
            dwarm[e.job.spec.model] = e.plan.warm_used
        slots = np.arange(width)
        changed: dict[int, Entry] = {}
        a = 0
        while a < len(idx):
            cols = np.flatnonzero(d)
            o = old[a:, cols]
            n = o - d[cols]
            q = np.where(cols[None, :] >= reach[a:], share[a:], low[a:])
            co = np.minimum(q, self.floor[np.clip(o // g[a:], 0, self.cap)])
            cn = np.minimum(q, self.floor[np.clip(n // g[a:], 0, self.cap)])
            bad = ((co != cn) & (slots[cols][None, :] < ends[a:, None])).any(axis=1)
            moved = [self.models[m] for m, v in dwarm.items() if v and m in self.models]
            if moved:
                bad |= np.isin(model[a:], moved)
            hits = (a + np.flatnonzero(bad)).tolist()
            a = len(idx)
            for i in hits:  # while re-plans give the same plans, the views behind stay as checked
                x = self.entries[k + i]
                view = Timeline(self.cap, (old[i] - d).tolist())
                warm = pre_warm  # not read unless the runtime keeps warm workers
                if self.warm_counts:  # the plan reads its own model's warm workers only
                    m = x.job.spec.model
                    warm = {m: pre_warm.get(m, 0) - self._warm_before(k, i, m) - dwarm.get(m, 0)}
                y = replan(x, view, warm)
                if y is None:
                    return x.job.job_id
                if (y.plan, y.level, y.share, y.low, y.reach) == (x.plan, x.level, x.share, x.low, x.reach):
                    continue
                changed[k + i] = y
                now = np.zeros(width, dtype=np.int64)
                now[: len(y.plan.sizes)] = np.asarray(y.plan.sizes, dtype=np.int64) * self.gpus(x.job)
                d += now - use[i]
                if self.warm_counts and y.plan.warm_used != x.plan.warm_used:
                    m = x.job.spec.model
                    dwarm[m] = dwarm.get(m, 0) + y.plan.warm_used - x.plan.warm_used
                a = i + 1
                break
        return changed, d, dwarm

    def _replan_all(
        self, k: int, e: Entry, replan: Callable[[Entry, Timeline, dict[str, int]], Entry | None]
    ) -> tuple[dict[int, Entry], Timeline, dict[str, int]] | str:
        """The reference: every job of the tail re-planned in order (new plans, free timeline and warm
        workers after the book), or the id of the first that has no share left."""
        pre, pre_warm = self.before(k)
        free, warm = Timeline(self.cap), dict(self.warm0)
        for x in self.entries[:k]:  # the literal prefix: the sweep must have the same
            self.take(x, free, warm)
        assert (free.free, warm) == (pre.free, pre_warm), "the sweep lost its place"
        self.take(e, free, warm)
        changed: dict[int, Entry] = {}
        for i in range(k, len(self.entries)):
            y = replan(self.entries[i], free, warm)
            if y is None:
                return self.entries[i].job.job_id
            self.take(y, free, warm)
            changed[i] = y
        return changed, free, warm

    def _warm_before(self, k: int, i: int, m: str) -> int:
        """Warm workers of ``m`` the tail's first ``i`` jobs take (their old plans)."""
        return sum(x.plan.warm_used for x in self.entries[k : k + i] if x.job.spec.model == m)
