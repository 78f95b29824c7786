"""Several base LLMs in one service: warm floors per model, jobs of two models side by side on real worker
processes (the fake engine), a warm worker switched from one model to the other, and the pool's replay of
it for the dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import load

from prompttuner.api.app import create_app
from prompttuner.api.routers.dashboard import replay_pool
from prompttuner.runtime.controller import ControllerConfig, default_payload
from prompttuner.service import Service, ServiceConfig, warm_floors
from prompttuner.state.models import EventRow, Job
from service_fakes import FAKE_ENGINE, SwitcherPolicy, expected_w
from test_api_service import job_body, wait_done, wait_for


def test_warm_floors_spread_the_warm_workers_over_the_models_in_order() -> None:
    assert warm_floors(("a", "b"), 2) == {"a": 1, "b": 1}
    assert warm_floors(("a", "b"), 3) == {"a": 2, "b": 1}
    assert warm_floors(("a", "b", "c"), 1) == {"a": 1, "b": 0, "c": 0}
    assert warm_floors(("a",), 2) == {"a": 2}
    assert warm_floors(("a", "a", "b"), 2) == {"a": 1, "b": 1}  # a model named twice counts once


@pytest.mark.parametrize(("policy", "switch"), [("prompttuner", True), ("edf", None), ("infless", None)])
def test_a_service_of_several_models_has_a_floor_each_and_the_policy_may_switch(
    tmp_path: Path, policy: str, switch: bool | None
) -> None:
    cfg = ServiceConfig(home=tmp_path / "home", engine=FAKE_ENGINE, policy=policy, models=("a", "b"))
    service = Service(cfg)
    try:
        assert service.controller.cfg.min_warm == {"a": 1, "b": 1}
        assert service.models == ("a", "b")
        assert getattr(service.policy, "switch", None) is switch
    finally:
        service.stop()
    one = Service(ServiceConfig(home=tmp_path / "one", engine=FAKE_ENGINE, models=("a",)))
    try:
        assert one.controller.cfg.min_warm == {"a": 2}
        assert getattr(one.policy, "switch", None) is False  # one model: nothing to switch to
    finally:
        one.stop()


def _w(client: TestClient, service: Service, jid: str) -> tuple[float, float]:
    """The job's exported prompt value and the value of an uninterrupted run of its steps."""
    with service.store.session() as s:
        row = s.get(Job, jid)
        assert row is not None
        payload = default_payload(row, s)
        steps = row.steps_done
    got = float(load(client.get(f"/v1/jobs/{jid}/prompt").content)["prompt"][0, 0])
    return got, expected_w(payload, steps)


def _events(client: TestClient, jid: str) -> list[dict[str, Any]]:
    return list(client.get(f"/v1/jobs/{jid}/events").json()["data"])


def test_jobs_of_two_models_run_side_by_side_and_an_idle_worker_switches_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    ccfg = ControllerConfig(tick_s=0.05, decide_every_s=0.2, chunk_s=0.3, min_warm={"tiny": 0, "tiny2": 0})
    cfg = ServiceConfig(
        home=tmp_path / "home", engine=FAKE_ENGINE, controller=ccfg, models=("tiny", "tiny2"), workers=2
    )
    # two warm workers of tiny; a job of tiny2 takes the idle one by a switch, not a cold start
    service = Service(cfg, policy=SwitcherPolicy(prewarm={"tiny": 2}))
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"
        wait_for(lambda: client.get("/v1/cluster").json()["warm_models"].get("tiny") == 2)
        long = client.post("/v1/jobs", json=job_body(max_steps=200)).json()["id"]
        wait_for(lambda: client.get(f"/v1/jobs/{long}").json()["progress"]["steps_done"] >= 1)
        other = client.post("/v1/jobs", json=job_body(model="tiny2", max_steps=12)).json()["id"]
        done_other = wait_done(client, other)
        # tiny2's job ran and ended while tiny's job was still running: side by side
        assert done_other["status"] == "succeeded" and done_other["progress"]["steps_done"] == 12
        assert client.get(f"/v1/jobs/{long}").json()["status"] == "running"
        cluster = client.get("/v1/cluster").json()
        models = {w["id"]: w["model"] for w in cluster["workers"]}
        assert sorted(models.values()) == ["tiny", "tiny2"]
        assert cluster["warm_models"] == {"tiny": 1, "tiny2": 1}
        done_long = wait_done(client, long)
        assert done_long["status"] == "succeeded" and done_long["progress"]["steps_done"] == 200

        # the switch: a worker that held tiny loaded tiny2 for that job, and no worker was started for it
        ev = _events(client, other)
        switch = [e for e in ev if e["kind"] == "switch"]
        assert len(switch) == 1 and switch[0]["data"] == {"from": "tiny", "to": "tiny2"}
        switched = switch[0]["worker"]
        assert models[switched] == "tiny2"
        allocs = [e for e in ev if e["kind"] == "allocate"]
        assert allocs and allocs[0]["data"]["switched"] == [switched]
        with service.store.session() as s:
            rows = list(s.query(EventRow).order_by(EventRow.id))
        provisions = [r for r in rows if r.kind == "provision"]
        assert len(provisions) == 2 and {r.data["model"] for r in provisions} == {"tiny"}
        ready = [r for r in rows if r.kind == "worker_ready" and r.worker_id == switched]
        assert [r.data.get("switched_from") for r in ready] == [None, "tiny"]
        # the controller measured the switch and plans the next one with it
        assert service.controller.profiles.switch_time("tiny2") == pytest.approx(
            ready[-1].data["switch_s"], abs=1e-3
        )
        # each job's prompt is exactly that of an uninterrupted run of its steps
        for jid in (long, other):
            got, want = _w(client, service, jid)
            assert got == pytest.approx(want, rel=1e-12)

        # the dashboard's pool: the switched worker holds tiny2 now and was tiny's before
        pool = client.get("/v1/dashboard/pool").json()
        lives = {w["id"]: w for w in pool["workers"]}
        assert lives[switched]["model"] == "tiny2"
        assert [(s["from"], s["to"]) for s in lives[switched]["switches"]] == [("tiny", "tiny2")]


def _ev(i: int, kind: str, t: float, worker: str | None = None, job: str | None = None, **d: Any) -> EventRow:
    return EventRow(id=i, time=t, kind=kind, job_id=job, worker_id=worker, data=d)


def test_replay_pool_shows_a_switching_worker_as_provisioning_then_warm_on_its_new_model() -> None:
    rows = [
        _ev(1, "provision", 10, "wa-1", model="a"),
        _ev(2, "worker_ready", 12, "wa-1", model="a"),
        _ev(3, "switch", 20, "wa-1", job="j1", **{"from": "a", "to": "b"}),
        _ev(4, "allocate", 20, job="j1", workers=["wa-1"], previous=[], switched=["wa-1"]),
        _ev(5, "worker_ready", 23, "wa-1", model="b", switched_from="a"),
        _ev(6, "finish", 30, job="j1"),
    ]
    points, workers = replay_pool(rows, start=0, now=40)
    got = [(p["t"], p["provisioning"], p["warm"], p["busy"]) for p in points]
    assert got == [(10, 1, 0, 0), (12, 0, 1, 0), (20, 1, 0, 0), (23, 0, 1, 1), (30, 0, 1, 0), (40, 0, 1, 0)]
    (w,) = workers
    assert w["model"] == "b" and w["switches"] == [{"t": 20, "from": "a", "to": "b"}]
    assert w["ready_at"] == 23


def test_the_prompttuner_policy_serves_two_models_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ``serve --models tiny,tiny2 --workers 2`` runs it: one warm worker per model, each model's jobs
    on its own worker, both running at once."""
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    ccfg = ControllerConfig(tick_s=0.05, decide_every_s=0.2, chunk_s=0.3)
    cfg = ServiceConfig(
        home=tmp_path / "home", engine=FAKE_ENGINE, controller=ccfg, models=("tiny", "tiny2"), workers=2
    )
    service = Service(cfg)
    assert service.policy.name == "prompttuner" and getattr(service.policy, "switch", None) is True
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"
        wait_for(lambda: client.get("/v1/cluster").json()["warm_models"] == {"tiny": 1, "tiny2": 1})
        a = client.post("/v1/jobs", json=job_body(max_steps=60)).json()["id"]
        b = client.post("/v1/jobs", json=job_body(model="tiny2", max_steps=60)).json()["id"]

        def both_running() -> bool:
            jobs = [client.get(f"/v1/jobs/{j}").json() for j in (a, b)]
            return all(j["status"] == "running" and j["progress"]["steps_done"] > 0 for j in jobs)

        wait_for(both_running)
        held = {w["job"]: w["model"] for w in client.get("/v1/cluster").json()["workers"] if w["job"]}
        assert held == {a: "tiny", b: "tiny2"}
        for jid in (a, b):
            done = wait_done(client, jid)
            assert done["status"] == "succeeded" and done["progress"]["steps_done"] == 60
            got, want = _w(client, service, jid)
            assert got == pytest.approx(want, rel=1e-12)
        assert service.controller.policy_error is None


def test_the_prompttuner_policy_switches_an_idle_worker_when_the_pool_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three workers on two models, one warm each by the floor: a second job of tiny cold-starts a
    third worker; once it is idle and the pool is full, a second job of tiny2 gets that worker by a switch
    (a long keep-alive keeps the idle worker from being released first)."""
    from prompttuner.scheduler import make_policy

    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    ccfg = ControllerConfig(tick_s=0.05, decide_every_s=0.2, chunk_s=0.3)
    cfg = ServiceConfig(
        home=tmp_path / "home",
        engine=FAKE_ENGINE,
        controller=ccfg,
        models=("tiny", "tiny2"),
        workers=3,
        warm=2,
    )
    service = Service(cfg, policy=make_policy("prompttuner", switch=True, keep_factor=1000.0))
    assert service.controller.cfg.min_warm == {"tiny": 1, "tiny2": 1}
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"

        def cluster() -> dict[str, Any]:
            return dict(client.get("/v1/cluster").json())

        wait_for(lambda: cluster()["warm_models"] == {"tiny": 1, "tiny2": 1})
        long_a = client.post("/v1/jobs", json=job_body(max_steps=400)).json()["id"]
        short_a = client.post("/v1/jobs", json=job_body(max_steps=8)).json()["id"]
        assert wait_done(client, short_a)["status"] == "succeeded"
        long_b = client.post("/v1/jobs", json=job_body(model="tiny2", max_steps=400)).json()["id"]
        wait_for(lambda: client.get(f"/v1/jobs/{long_b}").json()["progress"]["steps_done"] > 0)
        assert cluster()["warm_models"] == {"tiny": 2, "tiny2": 1}  # the idle third worker holds tiny
        short_b = client.post("/v1/jobs", json=job_body(model="tiny2", max_steps=8)).json()["id"]
        assert wait_done(client, short_b)["status"] == "succeeded"
        switch = [e for e in _events(client, short_b) if e["kind"] == "switch"]
        assert len(switch) == 1 and switch[0]["data"] == {"from": "tiny", "to": "tiny2"}
        assert cluster()["warm_models"] == {"tiny": 1, "tiny2": 2}
        assert client.get(f"/v1/jobs/{long_a}").json()["status"] == "running"  # side by side all along
        for jid in (long_a, long_b):
            client.post(f"/v1/jobs/{jid}/cancel")
        assert service.controller.policy_error is None
