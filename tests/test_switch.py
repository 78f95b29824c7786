"""Switching a warm worker to another base LLM: the decision, its rules in the one applier, the helper that
turns a release plus a cold start into a switch, the warm floor, and the switch in the simulator."""

from __future__ import annotations

import dataclasses

import pytest

from prompttuner.core.types import (
    SLO,
    ClusterSnapshot,
    Decisions,
    GPUType,
    JobPhase,
    JobSpec,
    JobView,
    ModelProfile,
    Provision,
    Switch,
    WorkerState,
    WorkerView,
)
from prompttuner.scheduler import make_policy
from prompttuner.scheduler.applier import PolicyError, validate
from prompttuner.scheduler.base import accepts_switch
from prompttuner.scheduler.common import keep_warm_floor, switch_for_cold_starts
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.engine import Simulator

GPU = "cpu"
A = ModelProfile("a", 0.1, 1, {GPU: 20.0}, {GPU: 10.0}, max_replicas=2, switch_s={GPU: 5.0})
B = dataclasses.replace(A, name="b")
SLOW = dataclasses.replace(A, name="slow", switch_s={GPU: 25.0})  # switching is slower than a cold start
FIXED = dataclasses.replace(A, name="fixed", switch_s={})  # cannot be switched to
BIG = dataclasses.replace(A, name="big", gpus_per_replica=2, switch_s={GPU: 5.0})
MODELS = {m.name: m for m in (A, B, SLOW, FIXED, BIG)}


def job(jid: str, model: str, workers: tuple[str, ...] = (), admitted: bool = True) -> JobView:
    spec = JobSpec(jid, model, 0.0, SLO(10_000.0), 5.0)
    return JobView(spec, JobPhase.RUNNING if workers else JobPhase.QUEUED, workers=workers, admitted=admitted)


def idle(wid: str, model: str = "a", since: float = 0.0) -> WorkerView:
    return WorkerView(wid, GPU, WorkerState.IDLE, model, idle_since=since)


def busy(wid: str, jid: str, model: str = "a") -> WorkerView:
    return WorkerView(wid, GPU, WorkerState.BUSY, model, job_id=jid)


def snap(
    jobs: list[JobView], workers: list[WorkerView], capacity: int = 3, min_warm: dict[str, int] | None = None
) -> ClusterSnapshot:
    return ClusterSnapshot(
        now=50.0,
        jobs=tuple(jobs),
        workers=tuple(workers),
        models=MODELS,
        gpu_types={GPU: GPUType(GPU, 1.0)},
        capacity={GPU: capacity},
        min_warm=min_warm or {},
    )


BASE = snap(
    [job("ja", "a", ("w1",)), job("jb", "b"), job("jn", "b", admitted=False)],
    [busy("w1", "ja"), idle("w2"), idle("w3")],
)


def test_a_valid_switch_joins_its_job_and_ends_the_idle_time_as_a_censored_sample() -> None:
    c = validate(BASE, Decisions(switch=(Switch("w2", "b", "jb"),)))
    assert c.switch == (Switch("w2", "b", "jb"),)
    assert c.touched == ("jb",)
    assert c.released_idle == (("a", 50.0),)  # w2 waited 50 s for a job of "a" that never came
    assert c.idle_gaps == ()


@pytest.mark.parametrize(
    ("decisions", "message"),
    [
        (Decisions(switch=(Switch("w9", "b"),)), "unknown worker w9"),
        (Decisions(switch=(Switch("w1", "b"),)), "not idle and free"),
        (Decisions(allocations={"ja": ("w1", "w2")}, switch=(Switch("w2", "b"),)), "not idle and free"),
        (Decisions(switch=(Switch("w2", "b"), Switch("w2", "b"))), "switched twice"),
        (Decisions(release=("w2",), switch=(Switch("w2", "b"),)), "both released and switched"),
        (Decisions(switch=(Switch("w2", "a"),)), "which it holds"),
        (Decisions(switch=(Switch("w2", "zz"),)), "zz has no profile"),
        (Decisions(switch=(Switch("w2", "fixed"),)), "no switch time"),
        (Decisions(switch=(Switch("w2", "big"),)), "GPU count"),
        (Decisions(switch=(Switch("w2", "a", "ja"),)), "which it holds"),
        (Decisions(switch=(Switch("w2", "slow", "jb"),)), "which needs b"),
        (Decisions(switch=(Switch("w2", "b", "jn"),)), "not admitted"),
        (Decisions(switch=(Switch("w2", "b", "gone"),)), "unknown or finished job gone"),
    ],
)
def test_invalid_switches_name_the_problem(decisions: Decisions, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        validate(BASE, decisions)


def test_a_release_plus_a_cold_start_of_another_model_becomes_a_switch() -> None:
    d = Decisions(release=("w2", "w3"), provision=(Provision("b", GPU, 1, job_id="jb"),))
    out = switch_for_cold_starts(BASE, d)
    assert out.switch == (Switch("w2", "b", "jb"),)
    assert out.release == ("w3",) and out.provision == ()
    validate(BASE, out)  # and the applier accepts it
    # two cold starts, one worker to switch: one of them stays a cold start
    two = switch_for_cold_starts(BASE, Decisions(release=("w2",), provision=(Provision("b", GPU, 2),)))
    assert two.switch == (Switch("w2", "b"),) and two.provision == (Provision("b", GPU, 1),)


@pytest.mark.parametrize(
    "provision",
    [
        Provision("slow", GPU, 1),  # its switch is slower than its cold start
        Provision("fixed", GPU, 1),  # it cannot be switched to
        Provision("big", GPU, 1),  # it takes two GPUs, the idle worker one
        Provision("a", GPU, 1),  # the idle worker already holds it (a release and a cold start of a)
    ],
)
def test_no_switch_where_it_does_not_beat_the_cold_start(provision: Provision) -> None:
    d = Decisions(release=("w2",), provision=(provision,))
    assert switch_for_cold_starts(BASE, d) == d


def test_the_warm_floor_keeps_a_model_from_being_switched_below_it() -> None:
    s = dataclasses.replace(BASE, min_warm={"a": 2})
    kept = keep_warm_floor(s, Decisions(switch=(Switch("w2", "b", "jb"), Switch("w3", "b"))))
    assert kept.switch == (Switch("w2", "b", "jb"),)  # a keeps w1 and w3


def test_the_warm_floor_trims_a_provision_that_counted_on_a_release_it_keeps() -> None:
    # three GPUs held, w3 released to make room for a cold start of b; the floor of a keeps w3
    s = dataclasses.replace(BASE, min_warm={"a": 3})
    d = keep_warm_floor(s, Decisions(release=("w3",), provision=(Provision("b", GPU, 1, job_id="jb"),)))
    assert d.release == () and d.provision == ()
    validate(s, d)  # it fits the capacity (before, the applier refused the decision)


def test_only_the_prompttuner_policies_take_the_switch_knob() -> None:
    assert accepts_switch("prompttuner") and accepts_switch("prompttuner-lean")
    assert not accepts_switch("infless") and not accepts_switch("edf") and not accepts_switch("nope")
    assert make_policy("prompttuner-switch").switch is True  # type: ignore[attr-defined]
    assert make_policy("prompttuner").switch is False  # type: ignore[attr-defined]


def test_the_catalog_switch_time_is_the_weight_load_without_the_instance_start() -> None:
    cat = load_catalog()
    start = float(cat.assumptions["instance_start_s"])
    for name in ("smollm2-135m", "gemma3-270m", "llama-3.1-8b"):
        prof = cat.model(name)
        for gpu in cat.gpu_types:
            assert prof.switch_time(gpu) == pytest.approx(prof.cold_start_s[gpu] - start)


def _sim(policy: str, switch: bool = True) -> Simulator:
    models = {"a": A, "b": B if switch else dataclasses.replace(B, switch_s={})}
    jobs = [JobSpec("jb", "b", 10.0, SLO(1_000.0), 10.0), JobSpec("ja", "a", 12.0, SLO(1_000.0), 10.0)]
    return Simulator(
        make_policy(policy),
        jobs,
        models,
        {GPU: GPUType(GPU, 3600.0)},  # one cost unit per GPU-second
        {GPU: 2},
        initial_workers=[("a", GPU, 2)],
    )


def test_the_simulator_switches_an_idle_worker_instead_of_a_cold_start() -> None:
    sim = _sim("prompttuner-switch")
    res = sim.run()
    rows = {r["job_id"]: r for r in res.jobs}
    assert res.metrics["switches"] == 1 and res.metrics["cold_starts"] == 0
    pause = sim.policy.rescale_overhead_s(B, GPU, 0, 1)
    assert rows["jb"]["start"] == pytest.approx(10.0 + 5.0)  # after the switch time, not the cold start
    assert rows["jb"]["finish"] == pytest.approx(15.0 + pause + 10 * 10.0)
    assert rows["ja"]["start"] == pytest.approx(12.0)  # the other warm worker of a still serves a
    assert rows["ja"]["met_slo"] and rows["jb"]["met_slo"]
    # the switch's load is loading time, and the worker's cost runs on through it
    assert res.metrics["loading_gpu_hours"] * 3600 == pytest.approx(5.0)
    assert res.metrics["cost"] == pytest.approx(res.metrics["cost_gpu_hours"] * 3600)


@pytest.mark.parametrize(("policy", "switch"), [("prompttuner", True), ("prompttuner-switch", False)])
def test_without_the_knob_or_a_switch_time_the_simulator_cold_starts(policy: str, switch: bool) -> None:
    res = _sim(policy, switch).run()
    rows = {r["job_id"]: r for r in res.jobs}
    assert "switches" not in res.metrics and res.metrics["cold_starts"] == 1
    assert rows["jb"]["start"] == pytest.approx(10.0 + 20.0)
