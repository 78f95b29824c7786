"""The runtime under faults: data-parallel rounds, a worker killed mid-job, the service killed mid-run.

The fake engine makes results exact: a job's final prompt after N steps must equal the prompt of an
uninterrupted single-worker run of N steps, so a lost, repeated or misapplied step shows up as a mismatch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import load

from prompttuner.api.app import create_app
from prompttuner.runtime.engine import JobPayload
from prompttuner.state.models import Base
from prompttuner.state.store import Store
from service_fakes import FAKE_ENGINE, GreedyPolicy, expected_w
from test_api_service import ROWS, job_body, make_service, wait_done, wait_for

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def _payload(client: TestClient, job: dict[str, Any], service: Any) -> JobPayload:
    with service.store.session() as s:
        from prompttuner.runtime.controller import default_payload
        from prompttuner.state.models import Job

        return default_payload(s.get(Job, job["id"]), s)


def _prompt_w(blob: bytes) -> float:
    return float(load(blob)["prompt"][0, 0])


def _kinds(client: Any, jid: str) -> list[str]:
    return [e["kind"] for e in client.get(f"/v1/jobs/{jid}/events").json()["data"]]


def test_data_parallel_rounds_and_shrinking_match_single_worker_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_STEP_S", "0.05")  # slow enough that the job outlives the policy's change
    service = make_service(tmp_path / "home")
    policy = GreedyPolicy(per_job=2)
    service.policy = service.controller.policy = policy
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"
        wait_for(lambda: client.get("/v1/cluster").json()["warm_models"].get("tiny") == 2)
        job = client.post("/v1/jobs", json=job_body(max_steps=60)).json()
        jid = job["id"]
        wait_for(lambda: client.get(f"/v1/jobs/{jid}").json()["progress"]["steps_done"] >= 3)
        policy.per_job = 1  # the policy shrinks the job to one worker: it goes on at a step boundary
        done = wait_done(client, jid)
        assert done["status"] == "succeeded" and done["progress"]["steps_done"] == 60
        events = client.get(f"/v1/jobs/{jid}/events").json()["data"]
        allocs = [(e["data"]["workers"], e["data"]["previous"]) for e in events if e["kind"] == "allocate"]
        assert len(allocs[0][0]) == 2, allocs
        assert any(len(w) == 1 and len(p) == 2 and w[0] in p for w, p in allocs[1:]), allocs
        replicas = [e["data"]["replicas"] for e in events if e["kind"] == "progress"]
        assert 2 in replicas and replicas[-1] == 1
        w = _prompt_w(client.get(f"/v1/jobs/{jid}/prompt").content)
        assert w == pytest.approx(expected_w(_payload(client, job, service), 60), rel=1e-12)


def test_worker_killed_mid_job_resumes_from_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_STEP_S", "0.05")  # the workers (spawned after this) step slowly enough to hit
    service = make_service(tmp_path / "home")
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"
        job = client.post("/v1/jobs", json=job_body(max_steps=40, best_effort=True)).json()
        jid = job["id"]
        wait_for(lambda: client.get(f"/v1/jobs/{jid}").json()["progress"]["checkpoint_step"] >= 4)
        victim = next(w for w in client.get("/v1/cluster").json()["workers"] if w["job"] == jid)
        service.controller.kill_worker(victim["id"])
        done = wait_done(client, jid)
        assert done["status"] == "succeeded" and done["progress"]["steps_done"] == 40
        events = client.get(f"/v1/jobs/{jid}/events").json()["data"]
        fails = [e for e in events if e["kind"] == "fail"]
        assert len(fails) == 1 and fails[0]["worker"] == victim["id"]
        assert fails[0]["data"]["recovered_from_step"] >= 4
        later = [e for e in events if e["id"] > fails[0]["id"] and e["kind"] in ("allocate", "move")]
        assert later and victim["id"] not in later[0]["data"]["workers"]
        w = _prompt_w(client.get(f"/v1/jobs/{jid}/prompt").content)
        assert w == pytest.approx(expected_w(_payload(client, job, service), 40), rel=1e-12)
        assert victim["id"] not in [x["id"] for x in client.get("/v1/cluster").json()["workers"]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{TESTS}", FAKE_STEP_S="0.05")
    cmd = [
        sys.executable,
        "-m",
        "prompttuner",
        "serve",
        "--home",
        str(home),
        "--port",
        str(port),
        "--workers",
        "2",
        "--model",
        "tiny",
        "--engine",
        FAKE_ENGINE,
        "--plugin",
        "service_fakes",
        "--policy",
        "test-greedy",
        "--chunk-s",
        "0.3",
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_service_killed_and_restarted_loses_nothing(tmp_path: Path) -> None:
    home, port = tmp_path / "home", _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(home, port)
    try:
        key = wait_for(lambda: (home / "api_key").exists() and (home / "api_key").read_text().strip(), 60)
        c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10)

        def up() -> bool:
            try:
                return c.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, 0.2)
        steps = (40, 120, 3)
        ids = [c.post("/v1/jobs", json=job_body(max_steps=n, best_effort=True)).json()["id"] for n in steps]
        wait_for(lambda: c.get(f"/v1/jobs/{ids[1]}").json()["progress"]["checkpoint_step"] >= 3, 60)
        before = {j: c.get(f"/v1/jobs/{j}").json() for j in ids}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc = _serve(home, port)
        wait_for(up, 60, 0.2)
        for jid in ids:
            done = wait_for(
                lambda jid=jid: (
                    c.get(f"/v1/jobs/{jid}").json()["status"] == "succeeded"
                    and c.get(f"/v1/jobs/{jid}").json()
                ),
                90,
                0.2,
            )
            assert done["progress"]["steps_done"] == done["max_steps"]
            w = _prompt_w(c.get(f"/v1/jobs/{jid}/prompt").content)
            n = done["max_steps"]
            payload = JobPayload(jid, "tiny", str(home / "files" / "x"), None, ("bad", "good"), n)
            Path(payload.train_path).write_text("\n".join(json.dumps(r) for r in ROWS))
            assert w == pytest.approx(expected_w(payload, n), rel=1e-12)  # no step lost or repeated
        # the long job was certainly in flight: it resumed from its checkpoint, not from step 0
        rec = [e for e in c.get(f"/v1/jobs/{ids[1]}/events").json()["data"] if e["kind"] == "recover"]
        assert len(rec) == 1 and rec[0]["data"]["was"] in ("running", "queued")
        assert rec[0]["data"]["from_step"] >= before[ids[1]]["progress"]["checkpoint_step"] > 0
        # the CLI finds the server and the key through the home folder
        data = home / "cli.jsonl"
        data.write_text("\n".join(json.dumps(r) for r in ROWS))
        env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{TESTS}")
        cli = [sys.executable, "-m", "prompttuner"]
        args = ["--home", str(home), "--data", str(data), "--model", "tiny", "--max-steps", "2", "--json"]
        args += ["--description", "Is the example good or bad?"]
        sub = subprocess.run(cli + ["submit", *args], env=env, capture_output=True, text=True, timeout=60)
        assert sub.returncode == 0, sub.stderr
        new_id = json.loads(sub.stdout)["id"]
        assert json.loads(sub.stdout)["description"] == "Is the example good or bad?"
        run = {"env": env, "capture_output": True, "text": True, "timeout": 60}
        st = subprocess.run(cli + ["status", "--home", str(home), "--json"], **run)  # type: ignore[call-overload]
        assert st.returncode == 0, st.stderr
        assert new_id in [j["id"] for j in json.loads(st.stdout)["jobs"]]
        bad = subprocess.run(cli + ["status", "job-nope", "--home", str(home)], **run)  # type: ignore[call-overload]
        assert bad.returncode != 0 and "no job 'job-nope'" in bad.stderr
        watched = subprocess.run(cli + ["status", new_id, "--home", str(home), "--watch"], **run)  # type: ignore[call-overload]
        assert watched.returncode == 0 and "succeeded" in watched.stderr
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_migrations_match_the_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = Store(tmp_path / "h")
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    Store(tmp_path / "h")  # a second start upgrades nothing and fails nothing


def test_a_model_that_does_not_load_is_retried_and_fails_its_jobs_only_when_their_deadlines_pass(
    tmp_path: Path,
) -> None:
    service = make_service(tmp_path / "home", models=("tiny", "broken-model"), workers=3, warm=1)
    service.controller.cfg.load_backoff_s = 0.2
    service.controller.profiles.observe_load("broken-model", 0.5)  # what it would take if it loaded
    service.controller.profiles.observe_step("broken-model", 0.02)
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"
        r = client.post("/v1/jobs", json=job_body(model="broken-model", duration_s=12))
        assert r.status_code == 201, r.text
        jid = r.json()["id"]
        # cold starts are retried with a growing backoff while the job waits in the queue
        wait_for(lambda: len([e for e in _events(client, jid=None) if e["kind"] == "load_failure"]) >= 3)
        assert client.get(f"/v1/jobs/{jid}").json()["status"] == "queued"
        ready = client.get("/readyz")
        assert ready.status_code == 503
        model = ready.json()["models"]["broken-model"]
        assert not model["ready"] and "cannot load broken-model" in model["error"]
        again = client.post("/v1/jobs", json=job_body(model="broken-model", best_effort=True))
        assert again.status_code == 503 and "cold starts failed in a row" in again.json()["error"]["message"]
        ok = client.post("/v1/jobs", json=job_body(max_steps=3)).json()  # the other model is unaffected
        assert wait_done(client, ok["id"])["status"] == "succeeded"
        done = wait_done(client, jid, timeout=30)
        assert done["status"] == "failed" and "cannot load broken-model" in done["error"]
        assert "the deadline can no longer be met" in done["error"]
        waits = [e["data"]["retry_in_s"] for e in _events(client, jid=None) if e["kind"] == "load_failure"]
        assert waits[:3] == [0.2, 0.4, 0.8]
        assert client.get("/healthz").status_code == 200  # alive, though not ready


def test_a_best_effort_job_waits_out_failed_cold_starts_until_its_deadline(tmp_path: Path) -> None:
    service = make_service(tmp_path / "home", models=("tiny", "broken-model"), workers=2, warm=1)
    service.controller.cfg.load_backoff_s = 0.2
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"
        body = job_body(model="broken-model", best_effort=True, duration_s=600)
        jid = client.post("/v1/jobs", json=body).json()["id"]
        wait_for(lambda: len([e for e in _events(client, jid=None) if e["kind"] == "load_failure"]) >= 3)
        assert client.get(f"/v1/jobs/{jid}").json()["status"] == "queued"  # not failed: it may still run
        client.post(f"/v1/jobs/{jid}/cancel")


def test_a_model_whose_first_loads_fail_comes_up_and_runs_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FLAKY_DIR", str(tmp_path / "tries"))
    service = make_service(tmp_path / "home", models=("flaky-2",), workers=2, warm=1)
    service.controller.cfg.load_backoff_s = 0.1
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"
        wait_for(lambda: client.get("/readyz").status_code == 200 and _warm(client, "flaky-2") >= 1)
        job = client.post("/v1/jobs", json=job_body(model="flaky-2", max_steps=5)).json()
        done = wait_done(client, job["id"])
        assert done["status"] == "succeeded" and done["progress"]["steps_done"] == 5
        fails = [e for e in _events(client, jid=None) if e["kind"] == "load_failure"]
        assert [e["data"]["failures"] for e in fails] == [1, 2]


def test_an_idle_worker_that_dies_is_replaced_without_waiting_for_a_job(tmp_path: Path) -> None:
    service = make_service(tmp_path / "home", workers=2, warm=2)
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"
        wait_for(lambda: _warm(client, "tiny") == 2)
        victim = client.get("/v1/cluster").json()["workers"][0]["id"]
        service.controller.kill_worker(victim)
        wait_for(lambda: victim not in [w["id"] for w in client.get("/v1/cluster").json()["workers"]])
        wait_for(lambda: _warm(client, "tiny") == 2)  # refilled to the warm minimum, no job submitted
        assert client.get("/v1/jobs").json()["data"] == []


def _warm(client: TestClient, model: str) -> int:
    return int(client.get("/v1/cluster").json()["warm_models"].get(model, 0))


def _events(client: TestClient, jid: str | None) -> list[dict[str, Any]]:
    """A job's events, or (``jid`` None) every stored event, read from the store."""
    if jid is not None:
        return list(client.get(f"/v1/jobs/{jid}/events").json()["data"])
    service = client.app.state.service  # type: ignore[attr-defined]
    from prompttuner.state.models import EventRow

    with service.store.session() as s:
        rows = s.query(EventRow).order_by(EventRow.id).all()
        return [{"kind": e.kind, "data": e.data, "job": e.job_id} for e in rows]


def test_profile_book_prefers_direct_measurements_and_persists(tmp_path: Path) -> None:
    from prompttuner.runtime.profiles import DEFAULT_STEP_S, ProfileBook

    book = ProfileBook(tmp_path / "p.json", "cpu", max_replicas=2)
    assert not book.measured("m") and book.profile("m").step_time_s["cpu"] == DEFAULT_STEP_S
    book.observe_step("m", 8.0, weak=True)  # from a data-parallel round: an estimate
    assert book.measured("m") and book.profile("m").step_time_s["cpu"] == 8.0
    book.observe_step("m", 2.0)  # the first direct measurement replaces the estimate
    book.observe_step("m", 50.0, weak=True)  # estimates no longer count
    assert book.profile("m").step_time_s["cpu"] == 2.0
    book.observe_step("m", 4.0)
    assert book.profile("m").step_time_s["cpu"] == pytest.approx(0.7 * 2.0 + 0.3 * 4.0)
    book.observe_load("m", 30.0)
    book.save()
    again = ProfileBook(tmp_path / "p.json", "cpu", max_replicas=2)
    assert again.profile("m").step_time_s["cpu"] == pytest.approx(2.6)
    assert again.profile("m").cold_start_s["cpu"] == 30.0


def test_policy_sees_recent_arrivals_with_their_deadlines_and_work(tmp_path: Path) -> None:
    """Pool sizing needs each recent job's deadline and work, aligned with its arrival (as in the sim)."""

    class Recording(GreedyPolicy):
        def __init__(self) -> None:
            super().__init__(per_job=1)
            self.seen: list[Any] = []

        def decide(self, snap: Any) -> Any:
            self.seen.append(snap.arrivals.get("tiny"))
            return super().decide(snap)

    service = make_service(tmp_path / "home")
    policy = Recording()
    service.policy = service.controller.policy = policy
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"
        jobs = [client.post("/v1/jobs", json=job_body(duration_s=d)).json() for d in (600, 900)]
        for j in jobs:
            wait_done(client, j["id"])
    stats = next(s for s in reversed(policy.seen) if s is not None and len(s.recent_arrivals) == 2)
    assert len(stats.recent_deadlines) == len(stats.recent_work) == 2
    gaps = [d - a for a, d in zip(stats.recent_arrivals, stats.recent_deadlines, strict=True)]
    assert gaps == pytest.approx([600, 900], abs=1.0)
    assert all(w > 0 for w in stats.recent_work)
