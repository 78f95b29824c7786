"""Behaviour of the policies on hand-built snapshots (no simulator)."""

from __future__ import annotations

import pytest

from prompttuner.core.types import (
    SLO,
    ArrivalStats,
    ClusterSnapshot,
    JobPhase,
    JobSpec,
    JobView,
    WorkerState,
    WorkerView,
)
from prompttuner.scheduler import make_policy
from prompttuner.sim.catalog import load_catalog

CAT = load_catalog()
MODEL = "llama-3.1-8b"


def snap(jobs, workers, now=0.0, new=(), capacity=16, arrivals=None) -> ClusterSnapshot:
    return ClusterSnapshot(
        now=now,
        jobs=tuple(jobs),
        workers=tuple(workers),
        models=CAT.models,
        gpu_types=CAT.gpu_types,
        capacity={"a100": capacity},
        arrivals=arrivals or {},
        new_job_ids=tuple(new),
    )


def job(jid, steps, deadline, arrival=0.0, model=MODEL, admitted=False, done=0.0, workers=()):
    spec = JobSpec(jid, model, arrival, SLO(deadline), steps)
    phase = JobPhase.RUNNING if workers else JobPhase.QUEUED
    return JobView(spec, phase, steps_done=done, workers=tuple(workers), admitted=admitted)


def idle(wid, model=MODEL, since=0.0):
    return WorkerView(wid, "a100", WorkerState.IDLE, model, idle_since=since)


def busy(wid, jid, model=MODEL):
    return WorkerView(wid, "a100", WorkerState.BUSY, model, job_id=jid)


def step(n: int) -> float:
    return CAT.models[MODEL].step_time("a100", n)


def test_prompttuner_uses_fewest_warm_workers_that_meet_the_deadline() -> None:
    # 400 steps, 1 replica takes ~467 s; a deadline of 300 s needs 2 replicas, both warm
    j = job("j1", 400, 300.0)
    s = snap([j], [idle(f"w{i}") for i in range(6)], new=["j1"])
    d = make_policy("prompttuner", boost=False, work_margin=1.0).decide(s)
    assert d.admissions[0].admitted and d.admissions[0].quote is not None
    assert len(d.allocations["j1"]) == 2
    assert not d.provision  # warm workers suffice: no cold start
    assert d.admissions[0].quote.finish_time <= 300.0


def test_the_work_margin_sizes_for_more_steps_than_the_estimate() -> None:
    # the default plans for 1.3 x 400 = 520 steps: 2 replicas (~234 s for 400) no longer cover 520 in 300 s
    j = job("j1", 400, 300.0)
    s = snap([j], [idle(f"w{i}") for i in range(6)], new=["j1"])
    d = make_policy("prompttuner", boost=False).decide(s)
    assert d.admissions[0].admitted
    n = len(d.allocations["j1"])
    assert n > 2
    # the fewest that cover 520 steps by the deadline (with the 5 % time margin)
    pause = make_policy("prompttuner").rescale_overhead_s(CAT.models[MODEL], "a100", 0, 1)
    assert pause + 520 * step(n) <= 300.0 * 0.95 + 1e-6 or n == 6
    assert pause + 520 * step(n - 1) > 300.0 * 0.95 - 1e-6


def test_prompttuner_cold_starts_only_what_the_warm_pool_cannot_cover() -> None:
    j = job("j1", 400, 200.0)
    s = snap([j], [idle("w0")], new=["j1"])
    d = make_policy("prompttuner", boost=False).decide(s)
    assert d.admissions[0].admitted
    assert d.allocations["j1"] == ("w0",)
    assert sum(p.count for p in d.provision if p.job_id == "j1") >= 2


def test_infeasible_deadline_is_declined_with_the_tightest_feasible_deadline() -> None:
    j = job("j1", 4000, 30.0)  # far too little time even on every GPU
    s = snap([j], [], new=["j1"])
    pol = make_policy("prompttuner")
    d = pol.decide(s)
    a = d.admissions[0]
    assert not a.admitted and "tightest feasible deadline" in a.reason
    assert a.quote is not None and a.quote.tightest_deadline is not None
    # resubmitting with that deadline is accepted
    j2 = job("j1", 4000, a.quote.tightest_deadline)
    q = pol.quote(snap([], []), j2.spec)
    assert q.feasible and q.finish_time <= a.quote.tightest_deadline
    d2 = pol.decide(snap([j2], [], new=["j1"]))
    assert d2.admissions[0].admitted


def test_quote_counts_cost_and_gpus() -> None:
    pol = make_policy("prompttuner", work_margin=1.0)
    spec = JobSpec("q", MODEL, 0.0, SLO(10_000.0), 400)
    q = pol.quote(snap([], [idle("w0")]), spec)
    assert q.feasible and q.gpus == 1
    # one warm replica: the start pause of a move, then 400 steps at the one-replica step time
    pause = pol.rescale_overhead_s(CAT.models[MODEL], "a100", 0, 1)
    assert q.finish_time == pytest.approx(pause + 400 * step(1), rel=1e-12)
    price = CAT.gpu_types["a100"].price_per_hour / 3600
    assert q.cost > 0 and abs(q.cost - price * (q.finish_time - 0.0)) < 1e-6


def test_behind_job_takes_surplus_from_a_job_that_is_ahead() -> None:
    # j_far has 4 workers but needs 1; j_near arrives with a tight deadline and no idle worker exists
    far = job("far", 100, 10_000.0, admitted=True, workers=("w0", "w1", "w2", "w3"))
    near = job("near", 400, 300.0)
    ws = [busy(f"w{i}", "far") for i in range(4)]
    s = snap([far, near], ws, new=["near"], capacity=4)
    d = make_policy("prompttuner").decide(s)
    assert d.admissions[0].admitted
    assert len(d.allocations["near"]) >= 2
    assert set(d.allocations["near"]) <= {"w0", "w1", "w2", "w3"}
    assert len(d.allocations["far"]) >= 1
    assert not set(d.allocations["far"]) & set(d.allocations["near"])


def test_idle_workers_are_released_after_keep_alive_without_forecast_arrivals() -> None:
    pol = make_policy("prompttuner", keep_factor=2.0)
    cs = CAT.models[MODEL].cold_start_s["a100"]
    fresh = pol.decide(snap([], [idle("w0", since=0.0)], now=cs))
    assert fresh.release == () and fresh.wake_at is not None
    old = pol.decide(snap([], [idle("w0", since=0.0)], now=3 * cs))
    assert old.release == ("w0",)


def test_pool_prewarms_for_frequent_arrivals_that_cannot_afford_a_cold_start() -> None:
    arr = tuple(float(t) for t in range(0, 600, 10))
    # 400 steps in 280 s: 2 warm replicas make it, a cold start would need 3 -> these jobs want warm
    tight = ArrivalStats(MODEL, arr, recent_deadlines=tuple(t + 280 for t in arr), recent_work=(400.0,) * 60)
    d = make_policy("prompttuner").decide(snap([], [], now=600.0, arrivals={MODEL: tight}))
    assert sum(p.count for p in d.provision if p.model == MODEL) >= 3  # ~4.6 arrivals per cold start
    # the same arrivals with slack enough for a cold start: no pre-warming, keep-alive only
    loose = ArrivalStats(MODEL, arr, recent_deadlines=tuple(t + 2000 for t in arr), recent_work=(400.0,) * 60)
    d2 = make_policy("prompttuner").decide(snap([], [], now=600.0, arrivals={MODEL: loose}))
    assert not d2.provision


def test_edf_gives_earliest_deadline_first_choice() -> None:
    a = job("a", 400, 1000.0)
    b = job("b", 400, 500.0)
    s = snap([a, b], [idle(f"w{i}") for i in range(20)], new=["a", "b"], capacity=20)
    d = make_policy("edf").decide(s)
    assert all(x.admitted for x in d.admissions)
    assert len(d.allocations["b"]) == CAT.models[MODEL].max_replicas
    assert len(d.allocations["a"]) == 20 - CAT.models[MODEL].max_replicas
    assert len(d.release) == 0


def test_one_pass_scan_agrees_with_the_reference_planners() -> None:
    import random

    from prompttuner.scheduler.common import fastest, min_replicas, scan

    rng = random.Random(1)
    for _ in range(500):
        prof = rng.choice(list(CAT.models.values()))
        now = 100.0
        raw = [
            (rng.randint(0, 4), now + rng.choice([0.0, rng.uniform(0, 80)])) for _ in range(rng.randint(1, 4))
        ]
        groups = sorted([g for g in raw if g[0] > 0], key=lambda x: x[1])
        steps, pause, jp = rng.uniform(10, 2000), rng.uniform(0, 3), rng.uniform(0, 3)
        target = now + rng.uniform(10, 3000)
        got_min, got_fast = scan(prof, "a100", steps, now, groups, pause, jp, target)
        ref_min = min_replicas(prof, "a100", steps, now, target, groups, pause, jp)
        assert (got_min is None) == (ref_min is None)
        if got_min is not None and ref_min is not None:
            assert got_min[0] == ref_min[0] and got_min[1] == pytest.approx(ref_min[1])
        else:
            ref_fast = fastest(prof, "a100", steps, now, groups, pause, jp)
            assert got_fast[0] == ref_fast[0]
