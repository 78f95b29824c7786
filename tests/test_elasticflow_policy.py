"""The ElasticFlow baseline on prompt-tuning jobs: per-job admission, a planner that counts its overheads,
the jobs infeasible even alone, and the warm-runtime variant."""

from __future__ import annotations

import math

import pytest

from prompttuner.core.types import (
    SLO,
    ClusterSnapshot,
    JobPhase,
    JobSpec,
    JobView,
    WorkerState,
    WorkerView,
)
from prompttuner.scheduler import make_policy, policy_names
from prompttuner.scheduler.base import Policy
from prompttuner.scheduler.elasticflow import ElasticFlowPolicy
from prompttuner.scheduler.elasticflow_plan import checkpoint_restart_s, infeasible_alone
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.engine import Simulator

CAT = load_catalog()
M8 = "llama-3.1-8b"


def simulate(policy: Policy, jobs: list[JobSpec], gpus: int) -> tuple[dict[str, dict], dict[str, float]]:
    res = Simulator(policy, jobs, CAT.models, CAT.gpu_types, {"a100": gpus}).run()
    return {r["job_id"]: r for r in res.jobs}, res.metrics


# ---------------------------------------------------------------------------------------- admission
def test_per_job_admission_admits_a_feasible_job_that_shares_a_slot_with_an_infeasible_one() -> None:
    ok = JobSpec("ok", M8, 10.0, SLO(5000.0), 200)
    bad = JobSpec("bad", M8, 20.0, SLO(60.0), 20_000)  # impossible: its deadline is the slot boundary
    rows, _ = simulate(make_policy("elasticflow", slot_s=60.0), [ok, bad], 16)
    assert rows["ok"]["phase"] == "succeeded" and rows["ok"]["met_slo"]
    assert rows["bad"]["phase"] == "declined" and "cannot meet its deadline" in rows["bad"]["reason"]
    # the released code's rule declines the whole slot
    rows, _ = simulate(make_policy("elasticflow", slot_s=60.0, admission="slot"), [ok, bad], 16)
    assert rows["ok"]["phase"] == "declined" and rows["bad"]["phase"] == "declined"
    assert "bad" in rows["ok"]["reason"]
    # alone, ok is admitted at the first boundary and starts after a cold start
    rows, _ = simulate(make_policy("elasticflow", slot_s=60.0), [ok], 16)
    assert rows["ok"]["met_slo"] and rows["ok"]["start"] >= 60.0 + CAT.model(M8).cold_start_s["a100"] - 1e-6


def test_admission_never_takes_the_share_an_admitted_job_needs() -> None:
    # two GPUs; "first" needs both until close to its deadline, "second" arrives a slot later with a
    # deadline it could only meet by taking one of them: it is declined, "first" keeps its deadline
    first = JobSpec("first", M8, 0.0, SLO(500.0), 600)
    second = JobSpec("second", M8, 61.0, SLO(61.0 + 300.0), 150)
    rows, _ = simulate(ElasticFlowPolicy(), [first, second], 2)
    assert rows["first"]["phase"] == "succeeded" and rows["first"]["met_slo"]
    assert rows["second"]["phase"] == "declined"
    assert "would make first miss" in rows["second"]["reason"]
    # alone, "second" would have been admitted
    rows, _ = simulate(ElasticFlowPolicy(), [second], 2)
    assert rows["second"]["met_slo"]


# ---------------------------------------------------------------------------------------- the planner
SCENARIO = [  # two GPUs: x is planned late and y shrinks to make room for it, then grows back
    JobSpec("x", M8, 0.0, SLO(300.0), 100),
    JobSpec("y", M8, 0.0, SLO(450.0), 400),
]


def test_the_quote_is_not_earlier_than_the_finish_when_restarts_and_added_cold_starts_matter() -> None:
    rows, metrics = simulate(ElasticFlowPolicy(), SCENARIO, 2)
    assert all(r["phase"] == "succeeded" for r in rows.values())
    for r in rows.values():
        assert r["finish"] <= r["quote_finish"] + 1e-6, r
        assert r["met_slo"], r
    # the scenario is one where the overheads matter: y is paused to shrink and again when replicas it
    # added later become ready, and more workers were cold-started than the jobs started with
    assert rows["y"]["rescales"] >= 3
    assert metrics["cold_starts"] > 2
    # the old planner (only a job's first cold start counted) promises finishes it then misses
    rows, _ = simulate(ElasticFlowPolicy(count_overheads=False), SCENARIO, 2)
    assert any(r["finish"] > r["quote_finish"] + 1.0 for r in rows.values() if r["phase"] == "succeeded")
    assert any(r["phase"] == "succeeded" and not r["met_slo"] for r in rows.values())


# Small workloads, found by a randomised search, on which earlier versions of this planner let an admitted
# job miss.  The mechanisms they need: reservations that reach the deadline (a job that gets ahead of its
# plan re-plans into its own slots), one step of slack for a running job whose counted steps put its
# estimate up to a step high (without it and the last-resort plan "as if the step under way were done",
# the second and fourth cases miss), and putting first a job that re-planning in EDF order left without a
# share (without it the third case misses).  (job, model, arrival, deadline, steps) and the GPUs.
REGRESSIONS = [
    (
        2,
        [("x", M8, 0.0, 600.0, 200), ("y", M8, 0.0, 450.0, 400)],
    ),
    (
        4,
        [
            ("j0", "llama-3.1-70b", 225.6, 500.45, 50),
            ("j1", "llama-3.2-3b", 114.3, 656.4, 400),
            ("j2", M8, 100.2, 296.8, 200),
            ("j3", M8, 46.7, 299.8, 200),
        ],
    ),
    (
        4,
        [
            ("j0", "qwen2.5-0.5b", 149.58, 226.23, 100),
            ("j1", M8, 275.2, 1273.04, 800),
            ("j2", "qwen2.5-0.5b", 83.86, 245.39, 800),
            ("j3", "llama-3.1-70b", 210.64, 423.26, 50),
            ("j4", "qwen2.5-0.5b", 283.1, 392.23, 200),
            ("j5", "llama-3.1-70b", 85.67, 1986.58, 200),
        ],
    ),
    (
        2,
        [
            ("j0", "llama-3.2-3b", 183.65, 472.15, 200),
            ("j1", M8, 86.53, 608.39, 200),
            ("j2", M8, 295.94, 1318.87, 800),
            ("j3", M8, 280.33, 979.7, 200),
            ("j4", M8, 117.64, 2400.87, 800),
            ("j5", "qwen2.5-0.5b", 146.41, 253.84, 400),
        ],
    ),
]


@pytest.mark.parametrize("gpus,spec", REGRESSIONS)
def test_admitted_jobs_meet_their_deadlines(
    gpus: int, spec: list[tuple[str, str, float, float, int]]
) -> None:
    jobs = [JobSpec(j, m, a, SLO(d), w) for j, m, a, d, w in spec]
    rows, metrics = simulate(ElasticFlowPolicy(), jobs, gpus)
    assert metrics["unfinished"] == 0
    admitted = [r for r in rows.values() if r["phase"] == "succeeded"]
    assert admitted
    assert all(r["met_slo"] for r in admitted), [(r["job_id"], r["finish"], r["deadline"]) for r in admitted]


# ---------------------------------------------------------------------------------------- alone
def earliest_alone(job: JobSpec, gpus: int, slot: float = 60.0) -> float:
    """The earliest finish of ``job`` alone: next boundary, cold start, restart, run (best legal size)."""
    m = CAT.model(job.model)
    start = math.ceil(job.arrival / slot) * slot
    sizes = [q for q in (1, 2, 4, 8, 16, 32) if q <= m.max_replicas and q * m.gpus_per_replica <= gpus]
    return min(
        start + m.cold_start_s["a100"] + checkpoint_restart_s(m, q) + job.work_steps / m.throughput("a100", q)
        for q in sizes
    )


def test_infeasible_alone_counts_the_slot_wait_cold_start_restart_and_legal_sizes() -> None:
    m = CAT.model(M8)
    w = 2000
    base = JobSpec("base", M8, 0.0, SLO(1e9), w)
    e = earliest_alone(base, 16)
    jobs = {
        "ok": JobSpec("ok", M8, 0.0, SLO(e + 5.0), w),
        "short": JobSpec("short", M8, 0.0, SLO(e - 1.0), w),  # a second too tight
        # the same window, but it arrives just after a boundary and waits 59 s for the next
        "waits": JobSpec("waits", M8, 61.0, SLO(61.0 + e + 5.0), w),
        "on_boundary": JobSpec("on_boundary", M8, 120.0, SLO(120.0 + e + 5.0), w),
    }
    assert infeasible_alone(jobs.values(), CAT.models, CAT.gpu_types, {"a100": 16}) == {"short", "waits"}
    # with four GPUs the largest legal size is 4: the window that 16 replicas meet is now too short
    four = earliest_alone(base, 4)
    assert four > e + 5.0
    assert infeasible_alone([jobs["ok"]], CAT.models, CAT.gpu_types, {"a100": 4}) == {"ok"}
    # without the restart pause "short" would fit: the pause is counted
    no_pause = infeasible_alone(
        [jobs["short"]], CAT.models, CAT.gpu_types, {"a100": 16}, overhead=lambda *a: 0.0
    )
    assert no_pause == set()
    # a 70B replica spans 4 GPUs: on 2 GPUs it cannot run at all
    big = JobSpec("big", "llama-3.1-70b", 0.0, SLO(1e9), 10)
    assert infeasible_alone([big], CAT.models, CAT.gpu_types, {"a100": 2}) == {"big"}
    assert m.max_replicas == 16
    # the policy agrees on an empty cluster: it declines exactly the jobs infeasible alone
    for name, job in jobs.items():
        rows, _ = simulate(ElasticFlowPolicy(), [job], 16)
        declined = rows[name]["phase"] == "declined"
        assert declined == (name in {"short", "waits"}), name
        assert declined or rows[name]["met_slo"]


# ---------------------------------------------------------------------------------------- warm runtime
def test_warm_variant_is_registered_and_rescales_with_a_warm_move() -> None:
    assert "elasticflow-warm" in policy_names()
    warm, cold = make_policy("elasticflow-warm"), make_policy("elasticflow")
    m = CAT.model(M8)
    assert warm.rescale_overhead_s(m, "a100", 1, 2) == Policy.rescale_overhead_s(warm, m, "a100", 1, 2)
    assert cold.rescale_overhead_s(m, "a100", 1, 2) == checkpoint_restart_s(m, 2)
    assert warm.rescale_overhead_s(m, "a100", 1, 2) < cold.rescale_overhead_s(m, "a100", 1, 2)


def test_warm_variant_allocates_an_idle_worker_instead_of_provisioning() -> None:
    spec = JobSpec("j", M8, 120.0, SLO(5000.0), 50)
    idle = WorkerView("w1", "a100", WorkerState.IDLE, M8, requested_at=0.0, ready_at=46.0, idle_since=100.0)
    snap = ClusterSnapshot(
        now=120.0,
        jobs=(JobView(spec, JobPhase.QUEUED),),
        workers=(idle,),
        models=CAT.models,
        gpu_types=CAT.gpu_types,
        capacity={"a100": 1},
        new_job_ids=("j",),
    )
    d = make_policy("elasticflow-warm").decide(snap)
    assert d.admissions[0].admitted
    assert d.allocations == {"j": ("w1",)} and d.provision == () and d.release == ()
    # the serverless runtime lets the idle worker go and cold-starts a fresh one
    d = make_policy("elasticflow").decide(snap)
    assert d.admissions[0].admitted
    assert d.release == ("w1",) and [(p.count, p.job_id) for p in d.provision] == [(1, "j")]


def test_warm_variant_reuses_workers_within_the_keep_alive_only() -> None:
    m = CAT.model(M8)
    first = JobSpec("a", M8, 0.0, SLO(2000.0), 20)
    later = JobSpec("b", M8, 600.0, SLO(3000.0), 20)  # arrives on a boundary, long after a finished
    rows, metrics = simulate(make_policy("elasticflow-warm", keep_alive_s=900.0), [first, later], 1)
    assert metrics["cold_starts"] == 1
    assert rows["b"]["start"] == pytest.approx(600.0)  # no cold start: the idle worker was kept
    rows, metrics = simulate(make_policy("elasticflow-warm", keep_alive_s=300.0), [first, later], 1)
    assert metrics["cold_starts"] == 2  # the keep-alive ran out: released, then a fresh worker
    assert rows["b"]["start"] == pytest.approx(600.0 + m.cold_start_s["a100"])
    rows, metrics = simulate(make_policy("elasticflow"), [first, later], 1)
    assert metrics["cold_starts"] == 2
