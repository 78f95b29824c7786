"""ElasticFlow's incremental per-job admission decides exactly what re-planning every tail decides.

The reference (``incremental=False``) re-plans every admitted job behind each arrival's EDF place, as the
algorithm reads; the incremental book (``scheduler/elasticflow_book.py``) re-plans only the jobs whose
view changed.  Both must give the same run on saturated clusters, where arrivals do change the plans
behind them.
"""

from __future__ import annotations

from typing import Any

import pytest

from prompttuner.scheduler import elasticflow_book
from prompttuner.scheduler.elasticflow import ElasticFlowPolicy, ElasticFlowWarmPolicy
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.engine import Simulator
from prompttuner.sim.prediction import ErrorModel, predict_jobs
from prompttuner.sim.workload import WorkloadConfig, generate

CAT = load_catalog()


def _run(warm: bool, incremental: bool, cfg: WorkloadConfig) -> tuple[list[Any], dict[str, float], Any]:
    jobs = generate(cfg, CAT)
    seen, true, slow = predict_jobs(jobs, ErrorModel.parse(cfg.prediction), cfg.seed)
    cls = ElasticFlowWarmPolicy if warm else ElasticFlowPolicy
    policy = cls(incremental=incremental)
    sim = Simulator(policy, seen, CAT.models, CAT.gpu_types, cfg.capacity, true_work=true, slowdown=slow)
    res = sim.run()
    return res.jobs, res.metrics, res.timeline


@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.parametrize("seed,tightness", [(0, 1.0), (1, 2.0), (2, 1.5)])
def test_incremental_admission_gives_the_runs_of_replanning_every_tail(
    warm: bool, seed: int, tightness: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = WorkloadConfig(
        n_jobs=160, load=0.9, slo_tightness=tightness, capacity={"a100": 24}, prediction="measured", seed=seed
    )
    counts = {"walks": 0, "replans": 0}
    walk = elasticflow_book.Book._walk

    def counting(self: elasticflow_book.Book, k: int, e: Any, replan: Any) -> Any:
        def spy(x: Any, f: Any, w: Any) -> Any:
            counts["replans"] += 1
            return replan(x, f, w)

        counts["walks"] += 1
        return walk(self, k, e, spy)

    monkeypatch.setattr(elasticflow_book.Book, "_walk", counting)
    fast = _run(warm, True, cfg)
    ref = _run(warm, False, cfg)
    assert fast[1] == ref[1]
    assert fast[0] == ref[0]
    assert fast[2] == ref[2]
    assert fast[1]["declined"] > 0  # saturated: admission had to say no
    assert counts["walks"] > 0 and counts["replans"] > 0  # the incremental path re-planned tail jobs
