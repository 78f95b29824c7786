"""The one applier: which decisions are valid, what an invalid one does in each driver, the warm floor,
and the one SLO definition."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from prompttuner.core.slo import slo_outcome, target_reached
from prompttuner.core.types import (
    SLO,
    Admission,
    ClusterSnapshot,
    Decisions,
    GPUType,
    JobPhase,
    JobSpec,
    JobView,
    Provision,
    WorkerState,
    WorkerView,
)
from prompttuner.runtime.controller import Controller
from prompttuner.scheduler.applier import PolicyError, validate
from prompttuner.scheduler.base import Policy
from prompttuner.scheduler.common import keep_warm_floor
from prompttuner.sim.engine import Simulator
from prompttuner.state.models import EventRow
from test_conformance import GPU, MODEL, PROFILE, new_store, run_live, specs

OTHER = dataclasses.replace(PROFILE, name="other")


def view(jid: str, admitted: bool = True, workers: tuple[str, ...] = (), model: str = MODEL) -> JobView:
    spec = JobSpec(jid, model, 0.0, SLO(10_000.0), 5.0)
    return JobView(spec, JobPhase.RUNNING if workers else JobPhase.QUEUED, workers=workers, admitted=admitted)


def worker(
    wid: str, job: str | None = None, model: str = MODEL, state: WorkerState | None = None
) -> WorkerView:
    st = state or (WorkerState.BUSY if job else WorkerState.IDLE)
    return WorkerView(wid, GPU, st, model, idle_since=None if job else 0.0, job_id=job)


def snap(
    jobs: list[JobView], workers: list[WorkerView], new: tuple[str, ...] = (), capacity: int = 4
) -> ClusterSnapshot:
    return ClusterSnapshot(
        now=50.0,
        jobs=tuple(jobs),
        workers=tuple(workers),
        models={MODEL: PROFILE, "other": OTHER},
        gpu_types={GPU: GPUType(GPU, 1.0)},
        capacity={GPU: capacity},
        new_job_ids=new,
    )


BASE = snap(
    [view("a", workers=("w1",)), view("b"), view("n", admitted=False)],
    [worker("w1", "a"), worker("w2"), worker("w3", model="other")],
    new=("n",),
)


@pytest.mark.parametrize(
    ("decisions", "message"),
    [
        (Decisions(allocations={"a": ("w2",), "b": ("w2",)}), "allocated to a and b"),
        (Decisions(allocations={"b": ("w9",)}), "unknown worker w9"),
        (Decisions(allocations={"b": ("w3",)}), "holds other"),
        (Decisions(allocations={"b": ("w1",)}), "still belongs to a"),
        (Decisions(allocations={"n": ("w2",)}), "not admitted"),
        (Decisions(allocations={"gone": ("w2",)}), "unknown or finished job gone"),
        (Decisions(release=("w1",)), "still allocated to a"),
        (Decisions(release=("w9",)), "unknown worker w9"),
        (Decisions(provision=(Provision(MODEL, GPU, 2),)), "exceeds capacity"),
        (Decisions(provision=(Provision(MODEL, "h100", 1),)), "no profile on h100"),
        (Decisions(provision=(Provision(MODEL, GPU, 1, job_id="n"),)), "not admitted"),
        (Decisions(provision=(Provision("other", GPU, 1, job_id="b"),)), "which needs m"),
        (Decisions(admissions=(Admission("a", True),)), "admitted before"),
        (Decisions(admissions=(Admission("n", True), Admission("n", False))), "answered twice"),
        (Decisions(admissions=(Admission("zz", True),)), "unknown or finished job zz"),
    ],
)
def test_invalid_decisions_name_the_problem(decisions: Decisions, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        validate(BASE, decisions)


def test_a_valid_decision_moves_releases_and_provisions_in_order() -> None:
    d = Decisions(
        allocations={"a": (), "b": ("w1", "w2")},
        release=("w3",),
        provision=(Provision(MODEL, GPU, 1, job_id="b"), Provision(MODEL, GPU, 0)),
        admissions=(Admission("n", False, "no"),),
    )
    c = validate(BASE, d)
    assert c.detach == (("a", "w1"),)  # w1 leaves a, then joins b in the same decision
    assert c.allocations == {"a": (), "b": ("w1", "w2")}
    assert c.declined_ids == ("n",) and c.pending == ()
    assert [p.count for p in c.provision] == [1]  # count 0 is nothing to do
    assert c.touched == ("a", "b")
    assert c.idle_gaps == ((MODEL, 50.0),)  # w2 was idle since t=0
    assert c.released_idle == (("other", 50.0),)  # w3 was released idle: a censored sample
    # the release of w3 makes room: the provision fits although 3 of 4 GPUs were held
    assert validate(BASE, Decisions(release=("w3",), provision=(Provision(MODEL, GPU, 2),))).release == (
        "w3",
    )


def test_an_unanswered_new_job_stays_pending() -> None:
    assert validate(BASE, Decisions()).pending == ("n",)


class Broken(Policy):
    """Allocates a worker to two jobs: an invalid decision."""

    name = "broken"

    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        adm = tuple(Admission(j, True) for j in snapshot.new_job_ids)
        jobs = [j.job_id for j in snapshot.jobs]
        ws = [w.worker_id for w in snapshot.workers]
        if len(jobs) >= 2 and ws:
            return Decisions(allocations={jobs[0]: (ws[0],), jobs[1]: (ws[0],)}, admissions=adm)
        return keep_warm_floor(snapshot, Decisions(admissions=adm))


def test_the_simulator_raises_on_an_invalid_decision() -> None:
    sim = Simulator(
        Broken(), specs(), {MODEL: PROFILE}, {GPU: GPUType(GPU, 1.0)}, {GPU: 4}, min_warm={MODEL: 1}
    )
    with pytest.raises(PolicyError, match="allocated to j1 and j2"):
        sim.run()


def test_the_controller_records_an_invalid_decision_changes_nothing_and_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import test_conformance

    monkeypatch.setattr(test_conformance, "build", lambda name, *scenario: Broken())
    store, tenant = new_store(tmp_path / "home")
    calls, ctl = run_live("broken", [0.0, 5.0, 20.0, 25.0], store, tenant)
    errors = [e for e in _events(ctl) if e[0] == "policy_error"]
    assert len(errors) == 1 and "allocated to j1 and j2" in errors[0][1]["error"]  # once, not per round
    assert ctl.policy_error is not None
    # nothing of the invalid decisions happened: j2 (new when they came) is still waiting for an answer
    assert "j2" in ctl.new_ids and not ctl.jobs["j2"].admitted
    assert all(w.job_id is None for w in ctl.workers.values())
    assert len(calls) == 4  # every round asked the policy again


def _events(ctl: Controller) -> list[tuple[str, dict[str, Any]]]:
    with ctl.store.session() as s:
        return [(e.kind, e.data) for e in s.scalars(select(EventRow).order_by(EventRow.id))]


def test_the_warm_floor_keeps_and_tops_up() -> None:
    s = ClusterSnapshot(
        now=0.0,
        jobs=(),
        workers=(worker("w1"), worker("w2")),
        models={MODEL: PROFILE},
        gpu_types={GPU: GPUType(GPU, 1.0)},
        capacity={GPU: 4},
        min_warm={MODEL: 3},
    )
    d = keep_warm_floor(s, Decisions(release=("w1", "w2")))
    assert d.release == () and d.provision == (Provision(MODEL, GPU, 1),)
    loose = dataclasses.replace(s, min_warm={MODEL: 1})
    assert keep_warm_floor(loose, Decisions(release=("w1", "w2"))).release == ("w1",)


def test_slo_is_the_target_by_the_deadline() -> None:
    assert slo_outcome(100.0, 90.0, True).slo_met
    assert not slo_outcome(100.0, 110.0, True).slo_met  # late
    below = slo_outcome(100.0, 90.0, False)  # stopped at max_steps below the target
    assert below.deadline_met and not below.slo_met
    assert slo_outcome(100.0, 90.0, None).slo_met  # no target: finishing on time is enough
    assert not slo_outcome(100.0, None, True).slo_met  # never finished
    assert target_reached(0.7, 0.69) is False and target_reached(0.7, 0.7) is True
    assert target_reached(None, 0.9) is None and target_reached(0.7, None) is False


def test_a_simulated_job_that_stops_at_max_steps_below_its_target_misses() -> None:
    from prompttuner.scheduler import make_policy

    ok = JobSpec("ok", MODEL, 0.0, SLO(1e6), 3.0, max_steps=10)
    capped = JobSpec("capped", MODEL, 0.0, SLO(1e6), 12.0, max_steps=10)
    sim = Simulator(make_policy("edf"), [ok, capped], {MODEL: PROFILE}, {GPU: GPUType(GPU, 1.0)}, {GPU: 4})
    res = sim.run()
    rows = {r["job_id"]: r for r in res.jobs}
    assert rows["ok"]["met_slo"] and not rows["capped"]["met_slo"]
    assert rows["capped"]["phase"] == "succeeded" and res.metrics["missed"] == 1
    # it stopped after its 10 steps, not after its 12 steps of work
    alone = 10 * PROFILE.step_time(GPU, 1)
    assert rows["capped"]["finish"] - rows["capped"]["start"] < alone * 1.01
