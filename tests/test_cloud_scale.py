"""Cloud-scale changes: the planner's shortcuts agree with the full plan, the simulator's loading hours,
and the cost fixes of ``prompttuner-lean`` (off by default)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from prompttuner.scheduler import make_policy
from prompttuner.scheduler.common import Index
from prompttuner.scheduler.prompttuner_plan import _Ctx
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.runner import simulate
from prompttuner.sim.workload import WorkloadConfig, generate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from sim_decision_time import build_snapshot  # noqa: E402


@pytest.mark.parametrize("stress", [False, True])
def test_surely_late_only_where_the_plan_is_late(stress: bool) -> None:
    snap = build_snapshot(300, 300, seed=3, stress=stress)
    pol = make_policy("prompttuner")
    ix = Index.build(snap)
    ctx = _Ctx(ix=ix)
    admitted = sorted((j for j in ix.active if j.admitted), key=lambda j: (j.deadline, j.job_id))
    short = pol._survey(ctx, admitted)  # type: ignore[attr-defined]
    hits = 0
    for j in short:
        if pol._surely_late(ctx, j):  # type: ignore[attr-defined]
            hits += 1
            plan = pol._plan(ctx, j, j.spec, with_future=False)  # type: ignore[attr-defined]
            assert plan is not None and not plan.feasible
    assert hits > 0


def test_loading_hours_and_the_lean_variant() -> None:
    cat = load_catalog()
    cfg = WorkloadConfig(n_jobs=150, load=0.6, slo_tightness=1.0, prediction="measured")
    jobs = generate(cfg, cat)
    base = simulate("prompttuner", jobs, cfg, cat).metrics
    lean = simulate("prompttuner-lean", jobs, cfg, cat).metrics
    off = make_policy("prompttuner")
    assert off.min_cold_use == 0.0 and not off.cancel_prov  # type: ignore[attr-defined]
    for m in (base, lean):
        assert 0.0 < m["loading_gpu_hours"] <= m["cost_gpu_hours"] - m["busy_gpu_hours"] + 1e-9
        assert m["unfinished"] == 0
    assert lean["loading_gpu_hours"] <= base["loading_gpu_hours"] + 1e-9


def test_cost_frontier_accounting_leaves_the_run_as_simulate_makes_it() -> None:
    from sim_cost_frontier import LEAN, measure

    cat = load_catalog()
    cfg = WorkloadConfig(
        n_jobs=150, load=0.6, slo_tightness=1.0, prediction="measured", capacity={"a100": 32}
    )
    for pol, kw in (("prompttuner", LEAN), ("infless", {})):
        got = measure(pol, dict(kw), cfg, cat)
        ref = simulate("prompttuner-lean" if kw else pol, generate(cfg, cat), cfg, cat).metrics
        for k in ("cost", "slo_violation_rate", "busy_gpu_hours", "loading_gpu_hours", "cold_starts"):
            assert got[k] == pytest.approx(ref[k], rel=1e-12), k
        assert got["cost_per_met_job"] == pytest.approx(ref["cost_per_met_job"], rel=1e-12)
        assert 0.0 < got["released_idle_gpu_hours"] <= got["idle_gpu_hours"] + 1e-9
        assert 0.0 < got["pause_gpu_hours"] < got["busy_gpu_hours"]
