"""PromptTuner's survey kept between decisions (``scheduler/prompttuner_inc.py``) decides exactly what a
survey of every admitted job decides.

The kept survey runs where the live index feeds every change of a job's view (the simulator's); the
reference is the same policy planning each decision from plain snapshots (``incremental=False``).  Both
must give the same run: every job's record, every metric and the timeline, for the policy's variants and
knobs, on workloads busy enough that most running jobs are kept between decisions.
"""

from __future__ import annotations

from typing import Any

import pytest

from prompttuner.core.live import LiveIndex
from prompttuner.core.types import ClusterSnapshot, Decisions, WorkerState, WorkerView
from prompttuner.scheduler.prompttuner import PromptTunerPolicy
from prompttuner.scheduler.prompttuner_plan import Planner
from prompttuner.sim import runner
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.engine import Simulator
from prompttuner.sim.records import SimResult
from prompttuner.sim.workload import WorkloadConfig, generate

CAT = load_catalog()


def _run(name: str, cfg: WorkloadConfig, feed: bool, spy: list[Any] | None = None) -> SimResult:
    """``runner.simulate`` with the live index that feeds the policy (``feed``) or plain snapshots;
    ``spy`` collects the policy the run built."""
    jobs = generate(cfg, CAT)
    if spy is None:
        return runner.simulate(name, jobs, cfg, CAT, incremental=feed)
    build = runner.build_policy

    def spying(*args: Any) -> Any:
        spy.append(build(*args))
        return spy[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "build_policy", spying)
        return runner.simulate(name, jobs, cfg, CAT, incremental=feed)


def _same(a: SimResult, b: SimResult, what: str) -> None:
    assert a.jobs == b.jobs, f"{what}: job records differ"
    assert a.metrics == b.metrics, f"{what}: metrics differ"
    assert a.timeline == b.timeline, f"{what}: timelines differ"


CASES = [
    ("poisson", 0, 1.0, 0.7),
    ("itp", 1, 1.0, 0.7),
    ("azure", 2, 1.5, 0.8),
    ("poisson", 3, 2.0, 0.6),
]


@pytest.mark.parametrize(
    "policy",
    [
        "prompttuner",
        "prompttuner-lean",
        "prompttuner-nopool",
        "prompttuner-switch",
        "prompttuner-no-elastic",
        "prompttuner-no-min-gpus",
        "prompttuner-no-admission",
        "prompttuner-with-count-frees",
    ],
)
def test_kept_survey_runs_equal_full_surveys(policy: str) -> None:
    for arrivals, seed, tight, load in CASES:
        cfg = WorkloadConfig(
            arrivals=arrivals,
            n_jobs=260,
            load=load,
            slo_tightness=tight,
            capacity={"a100": 64, "h100": 24},
            prediction="measured",
            seed=seed,
        )
        full = _run(policy, cfg, feed=False)
        kept = _run(policy, cfg, feed=True)
        assert kept.metrics["decisions"] > 300
        _same(kept, full, f"{policy} {arrivals} seed {seed}")


def test_the_kept_survey_revisits_few_jobs_per_decision() -> None:
    """Incremental, not merely equal: far fewer job surveys than admitted jobs times decisions."""
    calls = {"n": 0, "admitted": 0}
    one = Planner._survey_one

    def counting(self: Planner, *args: Any) -> Any:
        calls["n"] += 1
        return one(self, *args)

    cfg = WorkloadConfig(n_jobs=400, load=0.7, capacity={"a100": 128, "h100": 64}, prediction="measured")
    spy: list[Any] = []
    Planner._survey_one = counting  # type: ignore[method-assign]
    try:
        res = _run("prompttuner", cfg, feed=True, spy=spy)
    finally:
        Planner._survey_one = one  # type: ignore[method-assign]
    pol = spy[0]
    assert pol._kept is not None  # the kept path ran
    full_calls = {"n": 0}

    def counting_full(self: Planner, *args: Any) -> Any:
        full_calls["n"] += 1
        return one(self, *args)

    Planner._survey_one = counting_full  # type: ignore[method-assign]
    try:
        ref = _run("prompttuner", cfg, feed=False)
    finally:
        Planner._survey_one = one  # type: ignore[method-assign]
    _same(res, ref, "prompttuner 400 jobs")
    assert calls["n"] * 3 < full_calls["n"], (calls, full_calls)


def test_without_a_feed_the_policy_surveys_every_job() -> None:
    """Plain snapshots (no live index that feeds, as the reference runs above) keep nothing, and nor
    does a driver's fresh index, which does not feed estimate changes."""
    jobs = generate(WorkloadConfig(n_jobs=30, capacity={"a100": 16}), CAT)
    pol = PromptTunerPolicy()
    Simulator(pol, jobs, CAT.models, CAT.gpu_types, {"a100": 16}, incremental=False).run()
    assert pol._kept is None
    assert not LiveIndex(CAT.models).feeds_jobs


def test_deciding_twice_on_a_snapshot_gives_the_same_decisions() -> None:
    """A decision that is not applied (a dry run) leaves the kept survey as valid as before."""
    pol = PromptTunerPolicy()
    twice: list[tuple[Decisions, Decisions]] = []
    decide = pol.decide

    def again(snap: ClusterSnapshot) -> Decisions:
        first = decide(snap)
        second = decide(snap)
        twice.append((first, second))
        return second

    pol.decide = again  # type: ignore[method-assign]
    cfg = WorkloadConfig(n_jobs=150, load=0.7, capacity={"a100": 48}, prediction="measured")
    jobs = generate(cfg, CAT)
    Simulator(pol, jobs, CAT.models, CAT.gpu_types, cfg.capacity).run()
    assert len(twice) > 100
    assert all(a == b for a, b in twice)


def test_the_feed_names_the_jobs_whose_workers_change_and_restarts_a_lagging_reader() -> None:
    live = LiveIndex(CAT.models)
    model = sorted(CAT.models)[0]
    start = live.log_end()
    live.put(WorkerView("w1", "a100", WorkerState.BUSY, model, job_id="j1"))
    live.put(WorkerView("w2", "a100", WorkerState.IDLE, model))
    live.put(WorkerView("w1", "a100", WorkerState.IDLE, model))  # j1 loses it
    live.touch("j2")
    assert live.changes_since(start) == ["j1", "j1", "j2"]
    assert live.changes_since(live.log_end()) == []
    live.LOG_CAP = 4  # type: ignore[misc]
    for i in range(6):
        live.touch(f"x{i}")
    assert live.changes_since(start) is None  # trimmed past it: the reader starts over
    assert live.changes_since(live.log_end() - 1) == ["x5"]
