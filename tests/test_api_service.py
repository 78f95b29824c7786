"""The job API over HTTP with the fake engine: lifecycle, events, isolation and every bad input."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prompttuner.api.app import create_app
from prompttuner.core.types import JobPhase
from prompttuner.runtime.controller import ControllerConfig
from prompttuner.scheduler import make_policy
from prompttuner.service import Service, ServiceConfig
from prompttuner.state.models import Job
from service_fakes import FAKE_ENGINE, HOLD_ENV, GreedyPolicy, Hold

ROWS = [{"text": f"example number {i}", "label": "good" if i % 2 else "bad"} for i in range(24)]


def wait_for(fn: Any, timeout: float = 30.0, every: float = 0.05) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


def make_service(home: Path, policy: Any = None, **kw: Any) -> Service:
    ccfg = ControllerConfig(tick_s=0.05, decide_every_s=0.2, chunk_s=0.3)
    opts: dict[str, Any] = {"models": ("tiny",), "workers": 2, "warm": 2, **kw}
    cfg = ServiceConfig(home=home, engine=FAKE_ENGINE, controller=ccfg, **opts)
    return Service(cfg, policy=policy or GreedyPolicy())


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Service]]:
    """One running service for the module; each test gets its own tenant, so tests do not see each other.
    Its workers can hold a tenant's jobs while they run (``tenant_hold``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(HOLD_ENV, str(tmp_path_factory.mktemp("hold")))  # before the workers start
        service = make_service(
            tmp_path_factory.mktemp("svc") / "home",
            policy=make_policy("prompttuner"),  # the real policy in the loop
            max_request_bytes=64_000,
            max_upload_bytes=32_000,
        )
        with TestClient(create_app(service)) as client:
            yield client, service


@pytest.fixture
def svc(shared: tuple[TestClient, Service]) -> Iterator[tuple[TestClient, Service]]:
    client, service = shared
    _, key = service.store.create_tenant(f"t-{uuid.uuid4().hex[:8]}")
    client.headers["Authorization"] = f"Bearer {key}"
    yield client, service


def tenant_hold(client: TestClient, service: Service) -> Hold:
    """The fake engine's hold on the jobs of the client's tenant (``service_fakes.Hold``)."""
    tenant = service.store.tenant_for_key(client.headers["Authorization"].removeprefix("Bearer "))
    assert tenant is not None
    return Hold.of(tenant.id)


def job_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "tiny",
        "training_data": ROWS,
        "labels": ["bad", "good"],
        "max_steps": 12,
        "duration_s": 600,
        "hyperparameters": {"batch_size": 4, "eval_every": 4},
    }
    body.update(over)
    return body


def wait_done(client: TestClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    def ended() -> Any:
        j = client.get(f"/v1/jobs/{job_id}").json()
        return j if j["status"] in ("succeeded", "failed", "cancelled", "declined") else None

    return wait_for(ended, timeout)  # type: ignore[no-any-return]


def test_job_lifecycle_over_http(svc: tuple[TestClient, Service]) -> None:
    client, service = svc
    r = client.post("/v1/jobs", json=job_body())
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["quote"]["feasible"] is True
    done = wait_done(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"]["steps_done"] == 12 and done["deadline_met"] is True
    kinds = [e["kind"] for e in client.get(f"/v1/jobs/{job['id']}/events").json()["data"]]
    for k in ("arrive", "admit", "allocate", "start", "progress", "finish"):
        assert k in kinds, kinds
    assert kinds.index("admit") < kinds.index("allocate") < kinds.index("finish")
    events = client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    ckpts = [e["data"]["checkpoint_step"] for e in events if e["kind"] == "progress"]
    assert ckpts and ckpts == sorted(ckpts) and ckpts[-1] == 12  # every progress event names its checkpoint
    quote = next(e for e in events if e["kind"] == "quote")  # its own event, just before the admission
    assert kinds.index("quote") == kinds.index("admit") - 1
    assert quote["data"]["feasible"] is True and quote["data"]["finish_time"] == done["quote"]["finish_time"]
    assert quote["data"]["predicted_steps"] > 0 and quote["data"]["prediction"]  # the work it planned
    blob = client.get(f"/v1/jobs/{job['id']}/prompt")
    assert blob.status_code == 200
    from safetensors.numpy import load

    assert load(blob.content)["prompt"].shape == (8, 4)
    pred = client.post("/v1/predict", json={"job": job["id"], "texts": ["a", "bb"]})
    assert pred.status_code == 200, pred.text
    assert pred.json()["predictions"] == ["good", "bad"]  # the fake's rule: labels[len % 2]
    listed = client.get("/v1/jobs").json()["data"]
    assert [j["id"] for j in listed] == [job["id"]]
    m = client.get("/metrics", headers={"Authorization": f"Bearer {service.admin_key}"}).text
    assert 'prompttuner_events_total{kind="finish"}' in m
    assert 'prompttuner_deadlines_total{outcome="met"}' in m
    info = client.get("/v1/cluster").json()
    assert info["warm_models"] == {"tiny": 2} and info["gpu_seconds_busy"] > 0
    assert info["your_jobs"] == {"succeeded": 1}


def test_upload_then_reference_and_cancel(svc: tuple[TestClient, Service]) -> None:
    client, service = svc
    raw = "\n".join(json.dumps(r) for r in ROWS).encode()
    up = client.post("/v1/files", files={"file": ("train.jsonl", raw)})
    assert up.status_code == 201, up.text
    assert up.json()["rows"] == 24 and up.json()["labels"] == ["bad", "good"]
    # held after its first step, the job is certainly running when the cancel comes (a step budget alone
    # is not enough: with FAKE_STEP_S=0 leaked by another test, 5000 steps took well under a second)
    with tenant_hold(client, service) as hold:
        r = client.post(
            "/v1/jobs",
            json=job_body(
                training_data=None,
                training_file=up.json()["id"],
                labels=None,
                max_steps=5000,
                best_effort=True,
            ),
        )
        assert r.status_code == 201, r.text
        jid = r.json()["id"]
        wait_for(hold.holding)
        assert client.get(f"/v1/jobs/{jid}").json()["status"] == "running"
        c = client.post(f"/v1/jobs/{jid}/cancel")
        assert c.status_code == 200 and c.json()["status"] == "cancelled"
    again = client.post(f"/v1/jobs/{jid}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["error"]["message"]
    assert client.get(f"/v1/jobs/{jid}/prompt").status_code == 409


def test_a_job_that_ends_while_its_cancel_waits_is_not_reported_cancelled(
    svc: tuple[TestClient, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job ends (its last step, its export) after the cancel found it running and before the controller
    took the cancel: the answer is 409, it already ended, not 200 with the job's final status."""
    client, service = svc
    ctl = service.controller
    cancel = ctl.cancel

    def ended_first(job_id: str) -> bool:
        hold.release()  # the job runs its last step and ends before this cancel reaches the controller

        def ended() -> bool:
            with service.store.session() as s:
                row = s.get(Job, job_id)
                return row is not None and JobPhase(row.phase).terminal

        wait_for(ended)
        return cancel(job_id)

    with tenant_hold(client, service) as hold:
        jid = client.post("/v1/jobs", json=job_body(max_steps=2)).json()["id"]
        wait_for(hold.holding)
        monkeypatch.setattr(ctl, "cancel", ended_first)
        c = client.post(f"/v1/jobs/{jid}/cancel")
    assert c.status_code == 409, c.text
    assert f"job {jid} already ended (succeeded)" in c.json()["error"]["message"]
    done = client.get(f"/v1/jobs/{jid}").json()
    assert done["status"] == "succeeded" and done["progress"]["steps_done"] == 2


def test_a_job_cancelled_before_the_controller_takes_it_never_runs(
    svc: tuple[TestClient, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that comes between the job's row and its hand-over to the controller (``submit``) cancels
    it: the controller then leaves it alone (before, the cancel was a no-op answered 200 and the job ran)."""
    client, service = svc
    ctl = service.controller
    submit = ctl.submit
    answers: list[bool] = []

    def cancelled_first(job_id: str, *args: Any, **kw: Any) -> None:
        answers.append(ctl.cancel(job_id))  # the row is committed, the controller does not have it yet
        submit(job_id, *args, **kw)

    monkeypatch.setattr(ctl, "submit", cancelled_first)
    r = client.post("/v1/jobs", json=job_body())
    assert r.status_code == 201, r.text
    jid = r.json()["id"]
    assert answers == [True] and r.json()["status"] == "cancelled"
    with ctl.lock:
        assert jid not in ctl.jobs and jid not in ctl.new_ids
    kinds = [e["kind"] for e in client.get(f"/v1/jobs/{jid}/events").json()["data"]]
    assert kinds == ["cancel"], kinds  # never admitted, never started
    again = client.post(f"/v1/jobs/{jid}/cancel")
    assert again.status_code == 409 and "already ended (cancelled)" in again.json()["error"]["message"]


def test_tenant_isolation(svc: tuple[TestClient, Service]) -> None:
    client, service = svc
    _, other_key = service.store.create_tenant("other")
    mine = client.post("/v1/jobs", json=job_body()).json()["id"]
    up = client.post("/v1/files", files={"file": ("t.jsonl", b'{"text": "x", "label": "a"}\n')}).json()["id"]
    other = {"Authorization": f"Bearer {other_key}"}
    assert client.get(f"/v1/jobs/{mine}", headers=other).status_code == 404
    assert client.get(f"/v1/jobs/{mine}/events", headers=other).status_code == 404
    assert client.get(f"/v1/jobs/{mine}/prompt", headers=other).status_code == 404
    assert client.post(f"/v1/jobs/{mine}/cancel", headers=other).status_code == 404
    assert client.post("/v1/predict", json={"job": mine, "texts": ["x"]}, headers=other).status_code == 404
    assert client.get("/v1/jobs", headers=other).json()["data"] == []
    assert client.get("/v1/files", headers=other).json()["data"] == []
    r = client.post("/v1/jobs", json=job_body(training_data=None, training_file=up), headers=other)
    assert r.status_code == 404 and up in r.json()["error"]["message"]
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/jobs", headers={"Authorization": ""}).status_code == 401
    wait_done(client, mine)
    workers = client.get("/v1/cluster", headers=other).json()["workers"]
    assert all(w["job"] in (None, "(another tenant)") for w in workers)


@pytest.mark.parametrize(
    ("over", "status", "needle"),
    [
        ({"model": "gpt-99"}, 422, "unknown model 'gpt-99'"),
        ({"training_data": []}, 422, "no rows"),
        (
            {"training_data": [{"text": "x", "label": "good"}, {"text": "y", "label": "meh"}]},
            422,
            "line 2: label 'meh' is not one of",
        ),
        ({"training_data": [{"text": "", "label": "good"}]}, 422, "text"),
        ({"labels": ["good"]}, 422, "at least two label words"),
        ({"duration_s": None, "deadline": 1000.0}, 422, "is in the past"),
        ({"duration_s": None, "deadline": "2020-01-01T00:00:00Z"}, 422, "is in the past"),
        ({"duration_s": None, "deadline": "tomorrow"}, 422, "not ISO 8601"),
        ({"duration_s": None}, 422, "an SLO is required"),
        ({"max_steps": 0}, 422, "max_steps"),
        ({"hyperparameters": {"batch_size": 0}}, 422, "hyperparameters.batch_size"),
        ({"bogus": 1}, 422, "bogus"),
        ({"training_file": "file-nope"}, 422, "exactly one of training_file and training_data"),
        ({"training_data": None, "training_file": "file-nope"}, 404, "no file 'file-nope'"),
    ],
)
def test_bad_job_inputs_name_the_problem(
    svc: tuple[TestClient, Service], over: dict[str, Any], status: int, needle: str
) -> None:
    client, service = svc
    before = sorted(p.name for p in (service.store.home / "files").iterdir())
    r = client.post("/v1/jobs", json=job_body(**over))
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    assert client.get("/v1/jobs").json()["data"] == []  # nothing half-written
    assert sorted(p.name for p in (service.store.home / "files").iterdir()) == before


def test_malformed_oversized_and_bad_uploads(svc: tuple[TestClient, Service]) -> None:
    client, _ = svc
    r = client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "malformed JSON" in r.json()["error"]["message"]
    big = job_body(training_data=[{"text": "x" * 1000, "label": "good"}] * 100)
    r = client.post("/v1/jobs", json=big)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    r = client.post("/v1/files", files={"file": ("big.jsonl", b'{"text": "x", "label": "a"}\n' * 2000)})
    assert r.status_code == 413
    r = client.post("/v1/files", files={"file": ("bad.jsonl", b'{"text": "x", "label": "a"}\n{oops\n')})
    assert r.status_code == 422 and "bad.jsonl line 2: not valid JSON" in r.json()["error"]["message"]
    r = client.post("/v1/files", files={"file": ("e.jsonl", b"\n\n")})
    assert r.status_code == 422 and "no rows" in r.json()["error"]["message"]
    assert client.get("/v1/files").json()["data"] == []


def test_infeasible_slo_gets_tightest_deadline_unless_best_effort(svc: tuple[TestClient, Service]) -> None:
    client, _ = svc
    r = client.post("/v1/jobs", json=job_body(duration_s=0.001, max_steps=5000))
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["type"] == "infeasible_slo" and err["tightest_deadline"] > time.time()
    assert client.get("/v1/jobs").json()["data"] == []
    r = client.post("/v1/jobs", json=job_body(duration_s=0.001, max_steps=3, best_effort=True))
    assert r.status_code == 201
    done = wait_done(client, r.json()["id"])
    assert done["status"] == "succeeded" and done["deadline_met"] is False
    kinds = [e["kind"] for e in client.get(f"/v1/jobs/{done['id']}/events").json()["data"]]
    assert "miss" in kinds


def test_bank_warm_start_selects_then_trains(svc: tuple[TestClient, Service]) -> None:
    client, _ = svc
    r = client.post("/v1/jobs", json=job_body(bank_warm_start=True, max_steps=6))
    assert r.status_code == 201, r.text
    done = wait_done(client, r.json()["id"])
    assert done["status"] == "succeeded" and done["init"] == "bank:fake"
    events = client.get(f"/v1/jobs/{done['id']}/events").json()["data"]
    phases = [e["data"]["to"] for e in events if e["kind"] == "phase"]
    assert phases[:2] == ["selecting_prompt", "running"]
    warm = next(e for e in events if e["kind"] == "warm_start")
    assert warm["data"]["init"] == "bank:fake" and warm["data"]["predicted_steps"] == 3
    assert client.get("/v1/bank/prompts").json()["data"] == []  # nothing added: the fake tunes no real prompt


def test_tenant_command_creates_a_working_key(svc: tuple[TestClient, Service]) -> None:
    from typer.testing import CliRunner

    from prompttuner.cli import app

    client, service = svc
    name = f"acme-{uuid.uuid4().hex[:6]}"
    out = CliRunner().invoke(app, ["tenant", name, "--home", str(service.store.home), "--json"])
    assert out.exit_code == 0, out.output
    key = json.loads(out.stdout)["api_key"]
    r = client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.json()["data"] == []
    again = CliRunner().invoke(app, ["tenant", name, "--home", str(service.store.home)])
    assert again.exit_code != 0 and "already exists" in again.output


def test_one_service_per_home(svc: tuple[TestClient, Service]) -> None:
    _, service = svc
    second = make_service(service.store.home)
    with pytest.raises(RuntimeError, match="another PromptTuner service .* is running"):
        second.start()
    second.stop()


def test_slo_is_the_target_reached_by_the_deadline_in_the_api_and_metrics(
    svc: tuple[TestClient, Service],
) -> None:
    client, service = svc
    # the fake engine's accuracy is 0.3 + 0.02 x steps: 0.35 is reached at the first evaluation (step 4),
    # 0.9 never within 12 steps, so that job stops at max_steps on time but below its target
    low = client.post("/v1/jobs", json=job_body(target_accuracy=0.35)).json()
    high = client.post("/v1/jobs", json=job_body(target_accuracy=0.9)).json()
    reached, below = wait_done(client, low["id"]), wait_done(client, high["id"])
    assert reached["status"] == "succeeded" and reached["progress"]["steps_done"] == 4
    assert (reached["target_reached"], reached["deadline_met"], reached["slo_met"]) == (True, True, True)
    assert below["status"] == "succeeded" and below["progress"]["steps_done"] == 12
    assert (below["target_reached"], below["deadline_met"], below["slo_met"]) == (False, True, False)
    kinds = [e["kind"] for e in client.get(f"/v1/jobs/{high['id']}/events").json()["data"]]
    assert "miss" in kinds
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {service.admin_key}"}).text
    missed = [
        ln
        for ln in metrics.splitlines()
        if ln.startswith('prompttuner_slo_total{model="tiny",outcome="missed"}')
    ]
    assert missed and float(missed[0].split()[-1]) >= 1


def test_a_jobs_description_reaches_its_row_its_payload_and_its_engine_task(
    svc: tuple[TestClient, Service], tmp_path: Path
) -> None:
    """``description`` (the task in the user's words) is kept with the job, shown by the API, carried in the
    payload the workers get (rebuilt from the row, as a recovery rebuilds it) and becomes the real engine's
    task description (the text init's instruction, the bank's features); without one, the default from the
    label words, as before; a blank one is refused."""
    from prompttuner.runtime.engine import JobPayload
    from prompttuner.runtime.real_engine import RealEngine
    from prompttuner.tuning.data import default_description

    client, service = svc
    said = "Is this review good or bad?"
    r = client.post("/v1/jobs", json=job_body(description=said))
    assert r.status_code == 201, r.text
    jid = r.json()["id"]
    assert client.get(f"/v1/jobs/{jid}").json()["description"] == said
    assert service.controller.jobs[jid].payload.description == said
    plain = client.post("/v1/jobs", json=job_body()).json()
    assert plain["description"] is None and service.controller.jobs[plain["id"]].payload.description is None
    assert client.post("/v1/jobs", json=job_body(description="  ")).status_code == 422
    assert client.post("/v1/jobs", json=job_body(description="spam\x00?")).status_code == 422  # a text column
    assert client.post("/v1/jobs", json=job_body(description="\x00")).status_code == 422
    assert client.post("/v1/jobs", json=job_body(description="Good?\nOr bad?")).status_code == 201

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    labels = ("bad", "good")
    pay = JobPayload(job_id="j", model="m", train_path=str(data), test_path=None, labels=labels, max_steps=1)
    engine = RealEngine()
    assert engine._task(replace(pay, description=said)).description == said
    assert engine._task(pay).description == default_description(["bad", "good"])
