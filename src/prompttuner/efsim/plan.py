"""Planning primitives of the ElasticFlow compatibility mode (our own implementation).

A *timeline* is a dict ``time -> free GPUs from that time on`` whose keys are kept in ascending order
(the released simulator's ``future_free_gpus``).  Planning a job walks that timeline and returns a new one
with the job's GPUs taken out, plus the job's allocation plan ``time -> GPUs`` and its end times.

- :func:`plan_mss` is ElasticFlow's *minimum satisfactory share* planner: try GPU counts 1, 2, 4, ... (up
  to the job's cap); for each, walk the timeline backwards from the deadline giving the job
  ``min(q, largest legal size <= free)`` per period, and stop at the first ``q`` whose iterations cover
  what is left.  The plan then runs forward from now: the previous (too small) size until the switch
  point, ``q`` afterwards.  The end is the exact second (``real_end``) and that end rounded up to a
  scheduling slot (``end``, which is what the timeline and the event list use).  When no ``q`` works the
  job runs at the largest tried size until the deadline, then on whatever is free after it, then on its
  cap once the timeline is exhausted: it is planned past its deadline and the planner says so.
  ``assign`` plans "run at exactly ``assign`` GPUs now, then MSS": the leftover-GPU handout uses it to
  price one step up.
- :func:`plan_edf` is the EDF baseline of the same simulator: take ``min(cap, free)`` (a legal size) in
  every period until done.

Both reproduce the released code's arithmetic on purpose, including details that look accidental
(documented in :mod:`prompttuner.efsim.elasticflow`), because the compatibility check compares ratios with
the authors' numbers.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from prompttuner.efsim.inputs import SIZES, Job, Profiles

Timeline = dict[float, int]
MAXSIZE = sys.maxsize


def align(start: float, t: float, unit: int) -> float:
    """Round ``t`` up to ``start + k * unit`` (k may be negative: Python floor semantics, as released)."""
    k = (t - start) // unit
    if (t - start) % unit > 0:
        k += 1
    return start + k * unit


def merge(d: dict[float, int]) -> dict[float, int]:
    """Drop keys whose value equals the previous key's value (the first key always stays)."""
    out: dict[float, int] = {}
    last: int | None = None
    for k, v in d.items():
        if last is not None and v == last:
            continue
        out[k] = v
        last = v
    return out


def _put(d: dict[float, int], key: float, value: int) -> dict[float, int]:
    """Set ``d[key] = value`` keeping keys sorted (returns the dict to use)."""
    if key in d:
        d[key] = value
        return d
    d[key] = value
    return dict(sorted(d.items()))


def available_at(t: float, tl: Timeline, total: int) -> int:
    if t in tl:
        return tl[t]
    v = total
    for k, free in tl.items():
        if k <= t:
            v = free
    return v


def gpu_seconds(alloc: dict[float, int], end: float) -> float:
    """GPU-seconds of a plan ``time -> GPUs`` that stops at ``end``."""
    total = 0.0
    last_t: float | None = None
    last_g = 0
    for t, g in alloc.items():
        if last_t is not None:
            total += last_g * (t - last_t)
        last_t, last_g = t, g
    if last_t is None:
        return 0.0
    return total + last_g * (end - last_t)


def next_level(job: Job, n: int) -> int:
    """The next legal size above ``n`` within the job's cap (``n`` itself when there is none)."""
    found = n == 0
    for s in SIZES:
        if s > job.max_gpu:
            break
        if s == n:
            found = True
            continue
        if found:
            return s
    return n


def last_level(job: Job, n: int) -> int:
    """The largest legal size below ``n`` within the job's cap (0 when there is none)."""
    if n >= job.max_gpu + 1:  # hot path: plenty free, the cap decides
        return job.max_gpu
    if n == 0:
        raise ValueError("last_level(0) is undefined")
    best = 0
    for s in SIZES:
        if s >= n:
            break
        best = s
    return best


@dataclass
class Plan:
    timeline: Timeline
    alloc: dict[float, int]
    end: float
    real_end: float
    ok: bool


class PlanError(RuntimeError):
    """The planner reached a state the released simulator would have crashed on."""


@dataclass
class Planner:
    profiles: Profiles
    total: int
    slot: int

    def tp(self, job: Job, n: int) -> float:
        try:
            return self.profiles.tput[job.model][job.batch][n]
        except KeyError:
            return self.profiles.get(job.model, job.batch, n)  # raises a clear error

    # ------------------------------------------------------------------ ElasticFlow (MSS)
    def plan_mss(self, job: Job, start: float, ffg: Timeline, assign: int | None = None) -> Plan:
        slot, total, ddl = self.slot, self.total, job.ddl
        t_ev = start
        iter_left = job.iter_left
        if iter_left <= 0:
            raise PlanError(f"job {job.idx} planned with no iterations left")
        alloc: dict[float, int] = {t_ev: 0}
        nf: Timeline = dict(ffg)
        aligned = align(start, ddl, slot)
        last_event_gpu: int | None = None
        if aligned not in nf and aligned >= start:
            for t, v in nf.items():
                if t < aligned:
                    last_event_gpu = v
                else:
                    break
            assert last_event_gpu is not None
            nf = _put(nf, aligned, last_event_gpu)
        available = nf[start]

        if assign is not None:
            quota = assign
            if quota > available:
                raise PlanError(f"job {job.idx}: {quota} GPUs asked, {available} free")
            fet: float | None = None
            for t in list(ffg):
                if t < t_ev:
                    available = ffg[t]
                    del nf[t]
                    continue
                if t == t_ev:
                    available = ffg[t]
                    continue
                fet = t
                break
            if fet is None:
                fet = aligned
            alloc[t_ev] = quota
            real_end = math.ceil(t_ev + iter_left / self.tp(job, quota))
            end = align(start, real_end, slot)
            if fet >= end and ddl >= real_end:
                for t in ffg:
                    if t < t_ev:
                        continue
                    if t < end:
                        last_event_gpu = nf[t]
                        nf[t] -= quota
                if t_ev != end:
                    nf[t_ev] = available - quota
                if end not in ffg:
                    assert last_event_gpu is not None
                    nf = _put(nf, end, last_event_gpu)
                return Plan(nf, alloc, end, real_end, real_end <= ddl)
            dur = fet - t_ev
            if fet == aligned:
                dur = ddl - t_ev
            iter_left -= dur * self.tp(job, quota)
            if t_ev in nf:
                nf[t_ev] -= quota
            else:
                if last_event_gpu is None:
                    raise PlanError("undefined free-GPU count in assign planning")
                nf[t_ev] = last_event_gpu - alloc[t_ev]
            t_ev = fet
            alloc[t_ev] = 0

        # --- minimum satisfactory share: smallest quota that meets the deadline
        quota = next_level(job, 0)
        last_q = last_last_q = 0
        point = start - 1
        while quota <= total and quota <= job.max_gpu:
            period_end = aligned
            got = 0.0
            for ps in nf:
                if ps < aligned and ps not in alloc:
                    alloc[ps] = 0
            for ps in reversed(list(nf)):
                if ps >= aligned:
                    continue
                if ps < t_ev:
                    break
                a = quota
                if nf[ps] < quota:
                    a = min(quota, last_level(job, 1 + nf[ps]))
                if a == 0:
                    period_end = ps
                    continue
                dur = period_end - ps
                if period_end == aligned:
                    dur = ddl - ps
                got += dur * self.tp(job, a)
                if got >= iter_left:
                    point = ps
                    return self._commit_forward(
                        job, start, ffg, nf, alloc, t_ev, aligned, iter_left, quota, last_q, point
                    )
                period_end = ps
            last_last_q, last_q = last_q, quota
            quota = next_level(job, quota)
            if quota == last_q:
                break

        # --- no quota meets the deadline: largest tried size until the deadline ...
        lat: float | None = None
        la = 0
        for t in list(nf):
            if t > aligned:
                break
            if t < t_ev:
                continue
            cap = last_q if t >= point else last_last_q
            if lat is None:
                lat, la = t, min(cap, last_level(job, 1 + nf[t]))
                continue
            alloc[lat] = la
            nf[lat] -= la
            if la == 0:
                lat, la = t, min(cap, last_level(job, 1 + nf[t]))
                continue
            dur = t - lat
            if t == aligned:
                dur = ddl - lat
            its = dur * self.tp(job, la)
            if its >= iter_left:
                raise PlanError(f"job {job.idx}: fallback plan finishes before its deadline")
            iter_left -= its
            lat, la = t, min(last_q, last_level(job, 1 + nf[t]))

        # ... then whatever is free after the deadline ...
        lat = max(aligned, t_ev)
        for t in list(nf):
            if t <= aligned:
                continue
            q = min(last_level(job, 1 + nf[lat]), job.max_gpu)
            if q == 0:
                alloc[lat] = 0
                lat = t
                continue
            alloc[lat] = q
            its = (t - lat) * self.tp(job, q)
            if its >= iter_left:
                real_end = math.ceil(lat + iter_left / self.tp(job, q))
                end = align(start, real_end, slot)
                for t1 in list(nf):
                    if t1 < aligned:
                        continue
                    if t1 < end and t1 in ffg:
                        last_event_gpu = ffg[t1]
                    if lat <= t1 < end:
                        nf[t1] -= q
                if last_event_gpu is None:
                    raise PlanError("undefined free-GPU count after the deadline")
                if lat != end:
                    nf[lat] = last_event_gpu - q
                if end not in ffg:
                    nf = _put(nf, end, last_event_gpu)
                return Plan(nf, dict(sorted(alloc.items())), end, real_end, real_end <= ddl)
            iter_left -= its
            for t1 in ffg:
                if t1 < lat and t1 in nf:
                    last_event_gpu = nf[t1]
            for t1 in nf:
                if lat <= t1 < t:
                    nf[t1] -= q
            lat = t

        # ... then the job's cap (or the assigned size) once nothing else is planned.
        quota = assign if assign is not None else min(total, job.max_gpu)
        alloc[lat] = quota
        real_end = math.ceil(lat + iter_left / self.tp(job, quota))
        end = align(start, real_end, slot)
        nf[lat] = total - quota
        nf = _put(nf, end, total)
        return Plan(nf, dict(sorted(alloc.items())), end, real_end, real_end <= ddl)

    def _commit_forward(
        self,
        job: Job,
        start: float,
        ffg: Timeline,
        nf: Timeline,
        alloc: dict[float, int],
        t_ev: float,
        aligned: float,
        iter_left: float,
        quota: int,
        last_q: int,
        point: float,
    ) -> Plan:
        """Run the found plan forward from now: ``last_q`` before ``point``, ``quota`` from it on."""
        slot, ddl = self.slot, job.ddl
        lat: float | None = None
        la = 0
        end: float | None = None
        real_end: float = 0
        for t in list(nf):
            if t > aligned:
                break
            if t < t_ev:
                continue
            cap = quota if t >= point else last_q
            if lat is None:
                lat, la = t, min(cap, last_level(job, 1 + nf[t]))
                continue
            alloc[lat] = la
            nf[lat] -= la
            if la == 0:
                lat, la = t, min(cap, last_level(job, 1 + nf[t]))
                continue
            dur = t - lat
            if t == aligned:
                dur = ddl - lat
            its = dur * self.tp(job, la)
            if lat < point or its < iter_left:
                iter_left -= its
            else:
                rtl = math.ceil(iter_left / self.tp(job, la))
                end = lat + align(0, rtl, slot)
                real_end = lat + rtl
                break
            lat, la = t, min(cap, last_level(job, 1 + nf[t]))
        if end is None:
            assert lat is not None
            alloc[lat] = la
            nf[lat] -= la
            rtl = math.ceil(iter_left / self.tp(job, la))
            real_end = lat + rtl
            end = lat + align(0, rtl, slot)
        leg = self.total
        for t in ffg:
            if t < t_ev:
                continue
            if t < end:
                leg = ffg[t]
        if end not in ffg:
            nf = _put(nf, end, leg)
        return Plan(nf, dict(sorted(alloc.items())), end, real_end, real_end <= ddl)

    # ------------------------------------------------------------------ EDF baseline
    def plan_edf(self, job: Job, start: float, ffg: Timeline) -> Plan:
        total, ddl, slot = self.total, job.ddl, self.slot
        t_ev = start
        iter_left = job.iter_left
        alloc: dict[float, int] = {t_ev: 0}
        nf: Timeline = dict(ffg)
        available = nf[start]
        base = min(job.max_gpu, total)
        ok = True
        for fet in list(ffg):
            if fet < t_ev:
                available = ffg[fet]
                del nf[fet]
                continue
            if fet == t_ev:
                available = ffg[fet]
                continue
            dur = fet - t_ev
            if base > 0 and available > 0:
                if available >= base:
                    g = base
                else:
                    g = max(s for s in SIZES if s <= available)
                alloc[t_ev] = g
                end = math.ceil(t_ev + iter_left / self.tp(job, g))
                if fet >= end:
                    leg = total
                    for t in ffg:
                        if t < t_ev:
                            continue
                        if t < end:
                            leg = nf[t]
                            nf[t] -= g
                    if t_ev != end:
                        nf[t_ev] = available - g
                    if end not in ffg:
                        nf = _put(nf, align(start, end, slot), leg)
                    return Plan(merge(nf), merge(alloc), end, end, ok and end <= ddl)
                iter_left -= dur * self.tp(job, g)
                nf[t_ev] -= g
            elif available == 0:
                alloc[t_ev] = 0
            available = nf[fet]
            t_ev = fet
            if t_ev > ddl:
                ok = False
        alloc[t_ev] = base
        end = math.ceil(t_ev + iter_left / self.tp(job, base))
        if end > ddl:
            ok = False
        nf[t_ev] = total - base
        nf = _put(nf, align(start, end, slot), total)
        return Plan(merge(nf), merge(alloc), end, end, ok)
