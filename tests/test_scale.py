"""The simulator's incremental path decides exactly what the full re-plan decides.

At cloud scale the simulator keeps its worker index in place (``core/live.py``) and policies plan from it
and from what they kept since their last decision; the reference is the same policy planning every
decision from the snapshot alone (``incremental=False``).  Both must give the same run: every job's
record and every metric, on small workloads across seeds, arrival processes and policies.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from prompttuner.core.live import LiveIndex
from prompttuner.core.types import ClusterSnapshot, Decisions, WorkerState, WorkerView
from prompttuner.scheduler import make_policy
from prompttuner.scheduler.common import Index
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.engine import Simulator
from prompttuner.sim.runner import simulate
from prompttuner.sim.workload import WorkloadConfig, generate

CAT = load_catalog()
POLICIES = [
    "prompttuner",
    "prompttuner-lean",
    "infless",
    "elasticflow",
    "elasticflow-warm",
    "edf",
    "reserved",
]


def _index_state(ix: Index) -> dict[str, object]:
    return {
        "workers": list(ix.workers),
        "by_job": {j: [w.worker_id for w in ws] for j, ws in sorted(ix.by_job.items()) if ws},
        # in order: ties in later sorts of the groups' workers fall back on it
        "idle": [(k, [w.worker_id for w in ws]) for k, ws in ix.idle.items() if ws],
        "prov_free": [(k, [w.worker_id for w in ws]) for k, ws in ix.prov_free.items() if ws],
        "free": dict(ix.free),
    }


def test_the_live_index_is_the_index_of_the_snapshot_through_puts_and_drops() -> None:
    rng = random.Random(3)
    models = ["llama-3.1-8b", "qwen2.5-0.5b", "llama-3.1-70b"]
    models = [m for m in models if m in CAT.models] or sorted(CAT.models)[:3]
    live = LiveIndex(CAT.models)
    views: dict[str, WorkerView] = {}
    for step in range(600):
        if views and rng.random() < 0.25:
            wid = rng.choice(sorted(views))
            del views[wid]
            live.drop(wid)
        else:
            wid = f"w{rng.randrange(80)}"
            state = rng.choice(list(WorkerState))
            job = f"j{rng.randrange(6)}" if state != WorkerState.IDLE and rng.random() < 0.6 else None
            # ties in idle_since and ready_at are common: the order among them is the snapshot's
            v = WorkerView(
                worker_id=wid,
                gpu_type=rng.choice(["a100", "h100"]),
                state=state,
                model=rng.choice(models),
                ready_at=float(rng.randrange(5)),
                idle_since=None if rng.random() < 0.2 else float(rng.randrange(5)),
                job_id=job,
            )
            views[wid] = v
            live.put(v)
        if step % 20 == 0:
            order = list(live.workers)
            assert sorted(order) == sorted(views)
            workers = tuple(live.workers.values())
            base = dict(now=10.0, jobs=(), workers=workers, models=CAT.models, gpu_types=CAT.gpu_types)
            cap = {"a100": 500, "h100": 500}
            full = Index.build(ClusterSnapshot(**base, capacity=cap))  # type: ignore[arg-type]
            inc = Index.build(ClusterSnapshot(**base, capacity=cap, live=live))  # type: ignore[arg-type]
            assert _index_state(inc) == _index_state(full)
            assert live.state() == LiveIndex.of(CAT.models, workers).state()


def test_only_the_incremental_path_hands_policies_the_live_index() -> None:
    seen: dict[bool, list[object]] = {True: [], False: []}
    for inc in (True, False):
        pol = make_policy("infless")
        decide = pol.decide

        def spy(snap: ClusterSnapshot, inc: bool = inc, decide: Any = decide) -> Decisions:
            seen[inc].append(snap.live)
            return decide(snap)

        pol.decide = spy  # type: ignore[method-assign]
        jobs = generate(WorkloadConfig(n_jobs=20, capacity={"a100": 8}), CAT)
        Simulator(pol, jobs, CAT.models, CAT.gpu_types, {"a100": 8}, incremental=inc).run()
    assert seen[True] and all(isinstance(x, LiveIndex) for x in seen[True])
    assert seen[False] and all(x is None for x in seen[False])


@pytest.mark.parametrize("policy", POLICIES)
def test_incremental_runs_equal_full_replans(policy: str) -> None:
    for arrivals, seed in (("poisson", 0), ("poisson", 1), ("itp", 0)):
        cfg = WorkloadConfig(
            arrivals=arrivals,
            n_jobs=120,
            load=0.7,
            slo_tightness=1.0,
            capacity={"a100": 24, "h100": 8},
            prediction="measured",
            seed=seed,
        )
        jobs = generate(cfg, CAT)
        full = simulate(policy, jobs, cfg, CAT, incremental=False)
        inc = simulate(policy, jobs, cfg, CAT, incremental=True)
        assert inc.metrics["decisions"] > 100
        assert inc.jobs == full.jobs, f"{policy} {arrivals} seed {seed}: job records differ"
        assert inc.metrics == full.metrics, f"{policy} {arrivals} seed {seed}: metrics differ"
        assert inc.timeline == full.timeline
