"""The Ray backend on a local Ray cluster with fake GPUs: same jobs, same exact results, same recovery."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prompttuner.api.app import create_app
from prompttuner.runtime.controller import ControllerConfig
from prompttuner.service import Service, ServiceConfig
from service_fakes import FAKE_ENGINE, GreedyPolicy, expected_w
from test_api_service import job_body, wait_done, wait_for
from test_runtime_service import _payload, _prompt_w

pytestmark = pytest.mark.ray

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = False
    if not ray.is_initialized():
        path = os.pathsep.join([str(TESTS.parent / "src"), str(TESTS), os.environ.get("PYTHONPATH", "")])
        ray.init(
            num_cpus=2,
            num_gpus=4,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": path, "FAKE_STEP_S": "0.05"}},
        )
        started = True
    yield ray
    if started:
        ray.shutdown()


def test_ray_backend_runs_jobs_and_survives_an_actor_kill(ray_cluster: Any, tmp_path: Path) -> None:
    from prompttuner.runtime.ray_backend import RayBackend

    cfg = ServiceConfig(
        home=tmp_path / "home",
        backend="ray",  # the service's assembly picks the Ray backend by name
        backend_options={"load_timeout_s": 120, "op_timeout_s": 120},
        engine=FAKE_ENGINE,
        models=("tiny",),
        workers=2,
        warm=2,
        controller=ControllerConfig(tick_s=0.05, decide_every_s=0.2, chunk_s=0.3),
    )
    service = Service(cfg, policy=GreedyPolicy())
    assert isinstance(service.backend, RayBackend)
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"
        wait_for(lambda: client.get("/v1/cluster").json()["warm_models"].get("tiny") == 2, 120)
        admin = {"Authorization": f"Bearer {service.admin_key}"}  # worker PIDs are for the operator
        info = client.get("/v1/cluster", headers=admin).json()
        assert info["backend"] == "ray" and len({w["pid"] for w in info["workers"]}) == 2
        job = client.post("/v1/jobs", json=job_body(max_steps=40, best_effort=True)).json()
        jid = job["id"]
        wait_for(lambda: client.get(f"/v1/jobs/{jid}").json()["progress"]["checkpoint_step"] >= 4, 60)
        victim = next(w for w in client.get("/v1/cluster").json()["workers"] if w["job"] == jid)
        service.controller.kill_worker(victim["id"])
        done = wait_done(client, jid, timeout=120)
        assert done["status"] == "succeeded" and done["progress"]["steps_done"] == 40
        fails = [e for e in client.get(f"/v1/jobs/{jid}/events").json()["data"] if e["kind"] == "fail"]
        assert [f["worker"] for f in fails] == [victim["id"]]
        w = _prompt_w(client.get(f"/v1/jobs/{jid}/prompt").content)
        assert w == pytest.approx(expected_w(_payload(client, job, service), 40), rel=1e-12)
