"""``benchmarks/decision_hash.py``, the identity check of speed-ups that must not change a decision: its
digests are those of the decisions ``runner.simulate`` makes, they repeat, and they tell policies apart."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from prompttuner.core.types import ClusterSnapshot, Decisions
from prompttuner.scheduler import make_policy
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.runner import simulate
from prompttuner.sim.workload import WorkloadConfig, generate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from decision_hash import hashes  # noqa: E402

CAT = load_catalog()
CFG = WorkloadConfig(n_jobs=120, load=0.8, slo_tightness=1.5, capacity={"a100": 16}, prediction="measured")


def test_digests_are_those_of_the_decisions_simulate_makes_and_repeat() -> None:
    jobs = generate(CFG, CAT)
    policy = make_policy("elasticflow")
    h = hashlib.sha256()
    seen = {"n": 0}
    decide = policy.decide

    def hashed(snap: ClusterSnapshot) -> Decisions:
        d = decide(snap)
        h.update(repr((snap.now, d)).encode())
        seen["n"] += 1
        return d

    policy.decide = hashed  # type: ignore[method-assign]
    simulate("elasticflow", jobs, CFG, CAT, policy=policy)
    rows = hashes("elasticflow", jobs, CFG, CAT, decisions=10**9, every=50)
    assert seen["n"] > 100
    assert rows[-1][:2] == (seen["n"], h.hexdigest()[:16])  # the whole run, every decision
    every = list(range(50, seen["n"] + 1, 50))
    assert [r[0] for r in rows] == every + ([seen["n"]] if seen["n"] % 50 else [])  # every 50, then the end
    again = hashes("elasticflow", jobs, CFG, CAT, decisions=10**9, every=50)
    assert [r[:2] for r in again] == [r[:2] for r in rows]
    short = hashes("elasticflow", jobs, CFG, CAT, decisions=100, every=50)
    assert [r[:2] for r in short] == [r[:2] for r in rows[:2]]  # stops after the decisions asked for


def test_digests_tell_policies_apart() -> None:
    jobs = generate(CFG, CAT)
    a = hashes("elasticflow", jobs, CFG, CAT, decisions=200, every=100)
    b = hashes("elasticflow-warm", jobs, CFG, CAT, decisions=200, every=100)
    assert a[-1][1] != b[-1][1]
