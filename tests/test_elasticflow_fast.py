"""The faster planning arithmetic of ElasticFlow gives exactly what the plain code gave.

``run_sizes`` keeps the replicas still provisioning as a count and skips slots that hold and ask for
nothing; ``min_share`` takes the legal floors of the free timeline once per call and stops at the first
count that the free GPUs cap (the larger counts have the same caps).  The plain versions are kept here
as they were and compared on random plans and timelines.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import pytest

from prompttuner.scheduler.common import rates
from prompttuner.scheduler.elasticflow_plan import (
    TOL,
    JobStart,
    Overheads,
    Plan,
    Run,
    Timeline,
    _fill,
    best_effort,
    checkpoint_restart_s,
    legal_floor,
    legal_sizes,
    min_share,
    run_sizes,
)
from prompttuner.sim.catalog import load_catalog

CAT = load_catalog()
GPU = "a100"


def plain_run_sizes(
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
    if steps <= 0:
        return Run(t0, 0.0, 0.0, 0)
    left = steps
    ready = start.ready
    pend = [list(p) for p in start.pending]
    pu = start.paused_until
    gpu_s = 0.0
    warm_used = 0
    for s, k in enumerate(sizes):
        b = t0 + s * slot
        if b >= cutoff:
            break
        e = min(b + slot, cutoff)
        held = ready + sum(int(c) for c, _ in pend)
        if k < held:
            drop = held - k
            while drop > 0 and pend:
                take = min(int(pend[-1][0]), drop)
                pend[-1][0] -= take
                if pend[-1][0] <= 0:
                    pend.pop()
                drop -= take
            if drop > 0:
                new = ready - drop
                if new > 0 and oh.counted:
                    pu = max(pu, b) + oh.pause(ready, new)
                ready = new
        elif k > held:
            add = k - held
            warm = min(add, oh.warm) if s == 0 else 0
            if s == 0:
                warm_used = warm
            if not oh.counted and held > 0:
                warm = add
            if warm > 0:
                new = ready + warm
                if oh.counted:
                    pu = max(pu, b) + oh.pause(ready, new)
                ready = new
                add -= warm
            if add > 0:
                pend.append([add, b + oh.cold_s])
                pend.sort(key=lambda p: p[1])
        held = ready + sum(int(c) for c, _ in pend)
        t = b
        while True:
            nxt = pend[0][1] if pend and pend[0][1] < e else e
            a = max(t, pu)
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
            while pend and pend[0][1] <= nxt + 1e-9:
                joined += int(pend.pop(0)[0])
            old, ready = ready, ready + joined
            if oh.counted:
                pu = max(pu, nxt) + oh.pause(old, ready)
        gpu_s += held * g * (e - b)
    return Run(math.inf, left, gpu_s, warm_used)


def plain_min_share(
    prof: Any,
    gpu: str,
    goals: Sequence[tuple[float, float]],
    deadline: float,
    t0: float,
    slot: float,
    free: Timeline,
    start: JobStart,
    oh: Overheads,
) -> tuple[Plan, int] | None:
    g = prof.gpus_per_replica
    rt = rates(prof, gpu)
    last = int(math.ceil((deadline - t0) / slot - 1e-9))
    if last <= 0:
        return None
    spans = [min(slot, deadline - (t0 + s * slot)) for s in range(last)]
    low = 0
    for q in legal_sizes(prof, free.total):
        caps = [legal_floor(min(q, free.get(s) // g)) for s in range(last)]
        for level, (steps, margin) in enumerate(goals):
            plan = _fill(rt, g, caps, spans, steps, deadline - margin, t0, slot, start, oh, q, low)
            if plan is not None:
                return plan, level
            low = q
    return None


def _case(rng: random.Random) -> tuple[object, ...]:
    prof = rng.choice(list(CAT.models.values()))
    slot = 60.0
    t0 = slot * rng.randint(0, 50)
    ready = rng.choice([0, 0, 1, 2, 4, 8])
    pending = tuple(
        sorted(((rng.choice([1, 2, 3]), t0 + rng.uniform(0.0, 120.0)) for _ in range(rng.randint(0, 2))),
               key=lambda p: p[1])
    )  # fmt: skip
    pu = rng.choice([-math.inf, t0 + rng.uniform(0.0, 30.0)])
    start = JobStart(ready, pending, pu)
    counted = rng.random() < 0.8
    oh = Overheads(
        prof.cold_start_s[GPU],
        lambda a, b: checkpoint_restart_s(prof, b) if a != b else 0.0,
        rng.choice([0, 0, 1, 3]),
        counted,
    )
    return prof, slot, t0, start, oh


@pytest.mark.parametrize("seed", range(4))
def test_run_sizes_plays_a_plan_as_the_plain_code_did(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(400):
        prof, slot, t0, start, oh = _case(rng)
        rt = rates(prof, GPU)  # type: ignore[arg-type]
        top = prof.max_replicas  # type: ignore[attr-defined]
        sizes = [rng.choice([0, 0, 0, 1, 2, 4, top]) for _ in range(rng.randint(0, 30))]
        steps = rng.choice([0.0, rng.uniform(1.0, 3000.0)])
        cutoff = rng.choice([math.inf, t0 + rng.uniform(0.0, 40 * slot)])  # type: ignore[operator]
        g = prof.gpus_per_replica  # type: ignore[attr-defined]
        args = (rt, g, steps, t0, slot, sizes, start, oh, cutoff)
        assert run_sizes(*args) == plain_run_sizes(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(4))
def test_min_share_gives_the_plain_share_on_any_free_timeline(seed: int) -> None:
    rng = random.Random(100 + seed)
    found = {"plan": 0, "none": 0}
    for _ in range(300):
        prof, slot, t0, start, oh = _case(rng)
        total = rng.choice([8, 24, 64, 256])
        free = Timeline(total, [rng.randint(-4, total) for _ in range(rng.randint(0, 40))])
        deadline = t0 + rng.uniform(-30.0, 50 * slot)  # type: ignore[operator]
        steps = rng.uniform(1.0, 4000.0)
        goals = [(steps, prof.step_time(GPU, 1)), (steps, 0.0)][: rng.randint(1, 2)]  # type: ignore[attr-defined]
        args = (prof, GPU, goals, deadline, t0, slot, free, start, oh)
        got = min_share(*args)  # type: ignore[arg-type]
        assert got == plain_min_share(*args)
        memo: dict[tuple[object, ...], Plan | None] = {}
        assert min_share(*args, memo) == got  # type: ignore[arg-type]
        assert min_share(*args, memo) == got  # type: ignore[arg-type]
        found["plan" if got is not None else "none"] += 1
        if got is not None:
            assert got[0].finish <= deadline + TOL
    assert found["plan"] > 20 and found["none"] > 20  # both outcomes were compared


def plain_best_effort(
    prof: Any,
    gpu: str,
    steps: float,
    t0: float,
    slot: float,
    free: Timeline,
    start: JobStart,
    oh: Overheads,
    max_slots: int = 100_000,
) -> Plan:
    g = prof.gpus_per_replica
    rt = rates(prof, gpu)
    horizon = max(4, len(free.free) + 1)
    while True:
        sizes = [legal_floor(min(prof.max_replicas, free.get(s) // g)) for s in range(horizon)]
        run = plain_run_sizes(rt, g, steps, t0, slot, sizes, start, oh)
        if math.isfinite(run.finish) or horizon >= max_slots:
            end = (
                int(math.floor((run.finish - t0) / slot - 1e-9)) + 1 if math.isfinite(run.finish) else horizon
            )
            trimmed = tuple(n if s < end else 0 for s, n in enumerate(sizes))
            return Plan(trimmed, run.finish, run.gpu_s, run.warm_used, False)
        horizon *= 4


@pytest.mark.parametrize("seed", range(3))
def test_best_effort_gives_the_plain_plan(seed: int) -> None:
    rng = random.Random(200 + seed)
    for _ in range(150):
        prof, slot, t0, start, oh = _case(rng)
        total = rng.choice([0, 8, 24, 64])
        free = Timeline(total, [rng.randint(-4, total) for _ in range(rng.randint(0, 40))])
        steps = rng.choice([0.0, rng.uniform(1.0, 40000.0)])
        args = (prof, GPU, steps, t0, slot, free, start, oh, rng.choice([64, 4096]))
        assert best_effort(*args) == plain_best_effort(*args)  # type: ignore[arg-type]
