"""Every registered policy, driven by both drivers on one scenario, sees the same snapshots and gets the
same changes applied.

The simulator runs the scenario first; a recording wrapper keeps each snapshot its policy saw and the
decisions it returned.  The live controller then replays the same world on an injected clock, with no
threads and no sleeps: the jobs arrive (as database rows) at the same times, a scripted backend finishes
each cold start exactly when the model's profile says, and the controller is stepped at the simulator's
decision times.  The comparison covers every field of every snapshot (``ArrivalStats.idle_gaps`` and the
warm minimum included) and every decision (admissions, declines, allocations, provisions, releases).

One normalisation: the live controller counts completed steps (the workers report whole steps), the
simulator fractional progress.  The scenario's steps are slow (1,000 s on one replica, 250 s on four), so
no job completes a step inside the compared window, and ``steps_done`` is compared as whole steps.

Adding a policy to the registry adds it here (``policy_names()``).

A second scenario serves two base LLMs whose profiles have a switch time: every policy runs it through
both drivers too (several models must not break any of them), and so does a scripted policy that switches
an idle worker of one model to the other (``service_fakes.SwitcherPolicy``), so the switch itself (the
worker loading the other model, its ready time, the job it joins) is compared decision by decision.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from prompttuner.core.live import LiveIndex
from prompttuner.core.types import (
    SLO,
    ClusterSnapshot,
    Decisions,
    GPUType,
    JobSpec,
    ModelProfile,
)
from prompttuner.runtime.backend import Backend, Reply
from prompttuner.runtime.controller import Controller, ControllerConfig
from prompttuner.runtime.engine import JobPayload
from prompttuner.runtime.profiles import ProfileBook
from prompttuner.scheduler import make_policy, policy_names
from prompttuner.scheduler.base import Policy
from prompttuner.sim.engine import Simulator
from prompttuner.state.models import DataFile, Job
from prompttuner.state.store import Store
from service_fakes import SwitcherPolicy

GPU = "cpu"
MODEL = "m"
WINDOW_S = 240.0  # compared decisions happen before this; a step on 4 replicas takes 250 s
PROFILE = ModelProfile(
    name=MODEL,
    params_b=0.1,
    gpus_per_replica=1,
    cold_start_s={GPU: 20.0},
    step_time_s={GPU: 1000.0},
    max_replicas=4,
    sync_overhead_s=0.01,
)
CAPACITY = 4
MIN_WARM = {MODEL: 1}
OTHER = "n"
# the two-model scenario: switching to either model takes 5 s, a cold start 20 s
SWITCHABLE = {
    MODEL: dataclasses.replace(PROFILE, switch_s={GPU: 5.0}),
    OTHER: dataclasses.replace(PROFILE, name=OTHER, switch_s={GPU: 5.0}),
}
# (job id, arrival, work in steps, deadline after arrival): tight and loose deadlines, one hopeless
JOBS = [
    ("j1", 0.0, 3.0, 4_000.0),
    ("j2", 5.0, 6.0, 30_000.0),
    ("j3", 40.0, 4.0, 1_500.0),  # needs more than 4 replicas: infeasible for everyone
    ("j4", 70.0, 2.0, 900.0),
    ("j5", 130.0, 5.0, 9_000.0),
    ("j6", 131.0, 1.0, 60_000.0),
]
TENANT = "tn-conf"
MAX_STEPS = 1000


# (job id, arrival, work, deadline after arrival, model): a job of m comes first (the scripted policy
# pre-warms a second worker of m beside it), then jobs of n and of m while that worker is idle
TWO_MODEL_JOBS = [
    ("k0", 0.0, 3.0, 30_000.0, MODEL),
    ("k1", 30.0, 3.0, 30_000.0, OTHER),
    ("k2", 40.0, 2.0, 30_000.0, MODEL),
    ("k3", 60.0, 2.0, 30_000.0, OTHER),
]


@dataclasses.dataclass(frozen=True)
class Scenario:
    jobs: tuple[tuple[str, float, float, float, str], ...]
    models: dict[str, ModelProfile]
    capacity: int
    min_warm: dict[str, int]


ONE = Scenario(tuple((*j, MODEL) for j in JOBS), {MODEL: PROFILE}, CAPACITY, MIN_WARM)
TWO = Scenario(tuple(TWO_MODEL_JOBS), SWITCHABLE, 2, {MODEL: 0, OTHER: 0})


def specs(tenant: str = TENANT, scenario: Scenario = ONE) -> list[JobSpec]:
    return [
        JobSpec(
            job_id=jid,
            model=model,
            arrival=t,
            slo=SLO(t + window, None, False),
            work_steps=work,
            max_steps=MAX_STEPS,
            tenant=tenant,
            init="random",
        )
        for jid, t, work, window, model in scenario.jobs
    ]


def policies() -> list[str]:
    return [n for n in policy_names() if not n.startswith("test-")]


def build(name: str, scenario: Scenario = ONE) -> Policy:
    if name == "reserved":
        pool = {MODEL: 2} if scenario is ONE else {MODEL: 1, OTHER: 1}
        return make_policy("reserved", pool=pool, gpu_type=GPU)
    if name == "test-switcher":
        return SwitcherPolicy(prewarm={MODEL: 2})
    return make_policy(name)


class Recorder(Policy):
    """Wraps a policy; keeps every (snapshot, decisions) pair."""

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[tuple[ClusterSnapshot, Decisions]] = []

    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        # the driver's worker index is valid only during the decision (the simulator keeps changing it
        # in place): keep its state as of now, and check it is the index of the snapshot's workers
        assert snapshot.live is not None
        state = snapshot.live.state()
        assert state == LiveIndex.of(snapshot.models, snapshot.workers, snapshot.jobs).state()
        d = self.inner.decide(snapshot)
        # jobs and workers as of now too (a simulator's may be listed on first use)
        kept = dataclasses.replace(
            snapshot, jobs=tuple(snapshot.jobs), workers=tuple(snapshot.workers), live=state
        )
        self.calls.append((kept, d))
        return d

    def rescale_overhead_s(self, profile: ModelProfile, gpu_type: str, old_n: int, new_n: int) -> float:
        return self.inner.rescale_overhead_s(profile, gpu_type, old_n, new_n)


class FixedProfiles(ProfileBook):
    """The scenario's profiles, whatever the workers report."""

    def __init__(self, models: dict[str, ModelProfile] | None = None) -> None:
        super().__init__(None, GPU, CAPACITY)
        self.models = models or {MODEL: PROFILE}

    def profile(self, model: str) -> ModelProfile:
        return self.models[model]

    def planning_profile(self, model: str) -> ModelProfile:
        return self.models[model]

    def observe_step(self, model: str, seconds_per_step: float, weak: bool = False, busy: int = 1) -> None:
        pass

    def observe_load(self, model: str, seconds: float) -> None:
        pass


class ScriptedBackend(Backend):
    """Workers that are warm exactly one cold start after they were asked for (a switch: one switch time
    of the model after it was sent), and whose requests return at the next poll having run no step (the
    scenario ends before any step would complete)."""

    name = "scripted"

    def __init__(self, clock: Callable[[], float], models: dict[str, ModelProfile] | None = None) -> None:
        super().__init__("scripted")
        self.clock = clock
        self.models = models or {MODEL: PROFILE}
        self.loading: dict[str, float] = {}
        self.switching: dict[str, float] = {}
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.stopped: list[str] = []

    def start_worker(self, worker_id: str, model: str) -> None:
        self.loading[worker_id] = self.clock() + self.models[model].cold_start_s[GPU]

    def send(self, worker_id: str, op: str, args: dict[str, Any]) -> None:
        if op == "switch":
            self.switching[worker_id] = self.clock() + self.models[args["model"]].switch_time(GPU)
            return
        self.sent.append((worker_id, op, args))

    def poll(self, timeout: float) -> list[Reply]:
        now = self.clock()
        out = []
        for wid, ready in list(self.loading.items()):
            if ready <= now + 1e-9:
                del self.loading[wid]
                out.append(Reply(wid, "load", True, {"load_s": PROFILE.cold_start_s[GPU]}))
        for wid, ready in list(self.switching.items()):
            if ready <= now + 1e-9:
                del self.switching[wid]
                out.append(Reply(wid, "switch", True, {"load_s": 5.0, "elapsed": 5.0}))
        for wid, op, args in self.sent:
            if op == "grad":
                res: dict[str, Any] = {"grad": b"", "version": args["version"]}
            else:  # train, apply: the state back, no step run
                res = {"state": args.get("state"), "version": args.get("version", 0), "steps_done": 0}
                res.update(steps_run=0, loss=None)
            out.append(Reply(wid, op, True, {**res, "elapsed": 0.0}))
        self.sent = []
        return out

    def stop_worker(self, worker_id: str) -> None:
        self.stopped.append(worker_id)
        self.loading.pop(worker_id, None)

    def kill_worker(self, worker_id: str) -> None:  # pragma: no cover - not used here
        raise NotImplementedError

    def shutdown(self) -> None:
        pass


def run_sim(
    name: str, tenant: str = TENANT, scenario: Scenario = ONE
) -> list[tuple[ClusterSnapshot, Decisions]]:
    rec = Recorder(build(name, scenario))
    sim = Simulator(
        rec,
        specs(tenant, scenario),
        scenario.models,
        {GPU: GPUType(GPU, 1.0)},
        {GPU: scenario.capacity},
        max_time=WINDOW_S,
        min_warm=scenario.min_warm,
    )
    sim.run()
    return [(s, d) for s, d in rec.calls if s.now < WINDOW_S]


def _payload(row: Job, _session: Any) -> JobPayload:
    return JobPayload(
        job_id=row.id,
        model=row.model,
        train_path="unused",
        test_path=None,
        labels=("a", "b"),
        max_steps=row.max_steps,
        target_accuracy=row.target_accuracy,
    )


Calls = list[tuple[ClusterSnapshot, Decisions]]


def new_store(home: Path) -> tuple[Store, str]:
    """A fresh store with one tenant and one (unused) data file; the tenant's id."""
    store = Store(home)
    tenant, _key = store.create_tenant("conformance")
    with store.session() as s:
        s.add(
            DataFile(
                id="file-1",
                tenant_id=tenant.id,
                filename="train.jsonl",
                path="unused",
                bytes=0,
                rows=0,
                labels=["a", "b"],
                created_at=0.0,
            )
        )
    return store, tenant.id


def run_live(
    name: str, times: list[float], store: Store, tenant: str, scenario: Scenario = ONE
) -> tuple[Calls, Controller]:
    clock = [0.0]
    rec = Recorder(build(name, scenario))
    backend = ScriptedBackend(lambda: clock[0], scenario.models)
    cfg = ControllerConfig(
        gpu_type=GPU,
        max_workers=scenario.capacity,
        min_warm=dict(scenario.min_warm),
        decide_every_s=math.inf,
        worker_prefix="w",
    )
    profiles = FixedProfiles(scenario.models)
    ctl = Controller(
        store, backend, rec, cfg, payload_for=_payload, clock=lambda: clock[0], profiles=profiles
    )
    ctl.open()
    pending = sorted(specs(tenant, scenario), key=lambda j: (j.arrival, j.job_id))
    for t in times:
        clock[0] = t
        while pending and pending[0].arrival <= t + 1e-9:
            spec = pending.pop(0)
            with store.session() as s:
                s.add(
                    Job(
                        id=spec.job_id,
                        tenant_id=tenant,
                        model=spec.model,
                        training_file="file-1",
                        labels=["a", "b"],
                        target_accuracy=None,
                        max_steps=MAX_STEPS,
                        hyperparameters={},
                        deadline=spec.deadline,
                        work_steps=spec.work_steps,
                        phase="queued",
                        created_at=spec.arrival,
                        updated_at=spec.arrival,
                    )
                )
            ctl.submit(spec.job_id)
        ctl.step(decide=True)
    return rec.calls, ctl


def comparable(snap: ClusterSnapshot) -> dict[str, Any]:
    """Every field of a snapshot as plain data; progress as whole steps (see the module docstring)."""
    d = dataclasses.asdict(snap)
    # ``live``: the state of the driver's worker index at the decision (kept in place by the simulator,
    # built anew by the controller), recorded by ``Recorder``
    for j in d["jobs"]:
        j["steps_done"] = math.floor(j["steps_done"] + 1e-9)
    d["models"] = {k: dataclasses.asdict(v) for k, v in snap.models.items()}
    d["arrivals"] = {k: dataclasses.asdict(v) for k, v in sorted(snap.arrivals.items())}
    d["capacity"] = dict(snap.capacity)
    d["min_warm"] = dict(snap.min_warm)
    return d


@pytest.mark.parametrize("name", policies())
def test_both_drivers_see_the_same_snapshots_and_apply_the_same_decisions(name: str, tmp_path: Path) -> None:
    store, tenant = new_store(tmp_path / "home")
    sim_calls = run_sim(name, tenant)
    assert len(sim_calls) >= 6, "the scenario must give the policy several decisions"
    live_calls, ctl = run_live(name, [s.now for s, _ in sim_calls], store, tenant)
    assert len(live_calls) == len(sim_calls)
    for k, ((s_sim, d_sim), (s_live, d_live)) in enumerate(zip(sim_calls, live_calls, strict=True)):
        assert comparable(s_live) == comparable(s_sim), f"{name}: snapshot {k} at t={s_sim.now} differs"
        assert d_live == d_sim, f"{name}: decision {k} at t={s_sim.now} differs"
    assert ctl.policy_error is None


def test_the_scenario_exercises_admission_idle_gaps_and_the_warm_minimum(tmp_path: Path) -> None:
    """The scenario is not trivial: somebody declines, an idle worker is put to work, the floor holds."""
    declined: set[str] = set()
    gaps = False
    for name in policies():
        calls = run_sim(name)
        declined |= {a.job_id for _, d in calls for a in d.admissions if not a.admitted}
        gaps |= any(st.idle_gaps for s, _ in calls for st in s.arrivals.values())
        for s, _ in calls[1:]:
            assert len(s.workers_of(MODEL)) >= MIN_WARM[MODEL], f"{name} went below the warm minimum"
    assert "j3" in declined
    assert gaps


@pytest.mark.parametrize("name", [*policies(), "test-switcher"])
def test_with_two_models_both_drivers_agree_switches_included(name: str, tmp_path: Path) -> None:
    store, tenant = new_store(tmp_path / "home")
    sim_calls = run_sim(name, tenant, TWO)
    assert len(sim_calls) >= 4, "the scenario must give the policy several decisions"
    live_calls, ctl = run_live(name, [s.now for s, _ in sim_calls], store, tenant, TWO)
    assert len(live_calls) == len(sim_calls)
    for k, ((s_sim, d_sim), (s_live, d_live)) in enumerate(zip(sim_calls, live_calls, strict=True)):
        assert comparable(s_live) == comparable(s_sim), f"{name}: snapshot {k} at t={s_sim.now} differs"
        assert d_live == d_sim, f"{name}: decision {k} at t={s_sim.now} differs"
    assert ctl.policy_error is None
    if name == "test-switcher":
        # the scenario exercises the switch: an idle m worker loads n for k1, is ready 5 s later, and
        # the snapshots after it show it as n's (provisioning, then busy with k1) in both drivers
        switches = [(s.now, sw) for s, d in sim_calls for sw in d.switch]
        assert [sw.job_id for _, sw in switches] == ["k1"], switches
        t, sw = switches[0]
        after = next(s for s, _ in sim_calls if s.now > t)
        w = next(x for x in after.workers if x.worker_id == sw.worker_id)  # (kept: its live index is a state)
        assert w.model == OTHER and w.job_id == "k1"
        assert w.ready_at == pytest.approx(t + 5.0)
        assert ctl.workers[sw.worker_id].model == OTHER
