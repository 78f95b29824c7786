"""Admission and quotes plan from the predicted steps to target, with step times as workers run them.

- ``WorkPredictor``: the population prior the simulator's predictor was measured on, the service's own
  runs replacing it, rounding to evaluations, ``max_steps`` as a cap, the refresh past an estimate;
- ``ProfileBook``: step times kept by how many workers were busy, a margin from their spread, the bank's
  selection time;
- over HTTP (fake engine): a job's quote plans with the prediction, not ``max_steps``; ``POST /v1/quotes``
  runs the bank's selection and the job submitted next uses it (its time charged to the job); two jobs
  side by side measure the two-busy-workers step time.
"""

from __future__ import annotations

import json
import math
import statistics
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from prompttuner.api.app import create_app
from prompttuner.config import REPO_DATA
from prompttuner.core.types import JobPhase
from prompttuner.runtime.backend import Reply
from prompttuner.runtime.engine import JobPayload
from prompttuner.runtime.profiles import DEFAULT_SELECT_STEPS, DEFAULT_SIGMA, MARGIN_Z, ProfileBook
from prompttuner.runtime.records import JobRT, WorkerRec
from prompttuner.runtime.work import WorkPredictor, population_priors
from prompttuner.service import Service
from test_api_service import ROWS, job_body, make_service, wait_done, wait_for

# ------------------------------------------------------------------ the predictor


def _geomean(xs: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(max(1.0, x)) for x in xs))


def test_priors_are_the_population_medians_of_the_measured_runs() -> None:
    data = json.loads((REPO_DATA / "work_prediction.json").read_text())
    random_runs = [float(r["actual"]) for r in data["rows"] if r["init"] == "random"]
    bank = json.loads((REPO_DATA / "bank_speedup.json").read_text())["per_task_bank_steps"]
    bank_runs = [data["budget"] if s is None else float(s) for v in bank.values() for s in v]
    priors, ratios = population_priors()
    assert priors["random"] == pytest.approx(_geomean(random_runs))
    assert priors["bank"] == pytest.approx(_geomean(bank_runs))
    assert priors["bank"] < priors["random"]  # the bank's measured runs took fewer steps
    assert list(ratios) == sorted(ratios) and len(ratios) == len(data["loto"]["ratios"])


def test_prediction_rounds_up_to_an_evaluation_and_max_steps_only_caps_it() -> None:
    w = WorkPredictor(priors={"random": 9.2, "bank": 2.5}, ratios=(0.5, 1.0, 2.0))
    p = w.predict("m", "random", max_steps=1000, eval_every=4)
    assert p.steps == 12 and p.raw == 9.2 and "population" in p.source
    assert w.predict("m", "random", max_steps=10, eval_every=4).steps == 10  # the user's cap
    assert w.predict("m", "bank", max_steps=1000, eval_every=4).steps == 4
    assert w.predict("m", "bank", max_steps=1000, eval_every=1).steps == 3


def test_the_services_own_runs_replace_the_prior_and_a_miss_counts_its_budget() -> None:
    w = WorkPredictor(priors={"random": 30.0}, ratios=(1.0,))
    w.observe("m", "random", 4, reached=True, max_steps=40)
    assert w.predict("m", "random", 1000, 1).raw == 30.0  # one run is not enough
    w.observe("m", "random", 10, reached=False, max_steps=40)  # stopped early without the target
    p = w.predict("m", "random", 1000, 1)
    assert p.raw == pytest.approx(math.sqrt(4 * 40)) and "this service" in p.source
    assert w.predict("other", "random", 1000, 1).raw == 30.0  # per model


def test_refresh_past_the_estimate_follows_the_error_distribution() -> None:
    w = WorkPredictor(priors={"random": 10.0}, ratios=(0.5, 1.0, 1.5, 2.0, 3.0))
    # 10 steps done on an estimate of 10: outcomes above ratio 1.0 remain (1.5, 2, 3): their median 2.0
    assert w.refresh(10.0, 10, max_steps=100, eval_every=5) == 20.0
    assert w.refresh(10.0, 10, max_steps=16, eval_every=5) == 16.0  # capped
    # past every outcome seen: at least the next evaluation
    assert w.refresh(10.0, 40, max_steps=100, eval_every=5) == 45.0


# ------------------------------------------------------------------ measured step times


def test_plans_use_step_times_measured_with_the_workers_busy_and_a_margin_from_their_spread(
    tmp_path: Path,
) -> None:
    book = ProfileBook(tmp_path / "p.json", "cpu", max_replicas=2)
    for s in (1.0, 1.0, 1.0):
        book.observe_step("m", s, busy=1)
    # alone, no spread: no margin; two busy workers not measured yet: the solo time scaled linearly
    assert book.planning_step_s("m", busy=1) == pytest.approx(1.0)
    assert book.planning_step_s("m") == pytest.approx(2.0)
    book.observe_step("m", 1.5, busy=2)  # one sample: the default spread until three
    assert book.planning_step_s("m") == pytest.approx(1.5 * math.exp(MARGIN_Z * DEFAULT_SIGMA))
    for s in (1.2, 1.8):
        book.observe_step("m", s, busy=2)
    logs = [math.log(x) for x in (1.5, 1.2, 1.8)]
    want = math.exp(statistics.fmean(logs) + MARGIN_Z * statistics.pstdev(logs))
    assert book.planning_step_s("m") == pytest.approx(want)
    assert book.planning_profile("m").step_time_s["cpu"] == pytest.approx(want)
    assert book.planning_step_s("m") > book.profile("m").step_time_s["cpu"]  # the average has no margin
    book.observe_step("m", 50.0, weak=True)  # estimates from data-parallel rounds are not kept
    assert book.planning_step_s("m") == pytest.approx(want)
    book.save()
    assert ProfileBook(tmp_path / "p.json", "cpu", max_replicas=2).planning_step_s("m") == pytest.approx(want)


def test_evaluations_are_planned_as_their_share_per_step_not_as_slow_steps(tmp_path: Path) -> None:
    """A chunk with an evaluation is not a slow step: steps keep their own spread (here none, so no
    margin), and the evaluations' seconds over the steps they came with are added per step."""
    book = ProfileBook(tmp_path / "p.json", "cpu", max_replicas=1)
    for s in (1.0, 1.0, 1.0):
        book.observe_step("m", s)
    assert book.eval_share_s("m") == 0.0 and book.planning_step_s("m") == pytest.approx(1.0)
    for eval_s, steps in ((0.0, 3), (3.0, 1), (0.0, 2), (3.0, 2)):  # every 4 steps a 3 s evaluation
        book.observe_eval("m", eval_s, steps)
    assert book.eval_share_s("m") == pytest.approx(6.0 / 8)
    assert book.planning_step_s("m") == pytest.approx(1.0 + 0.75)
    book.save()
    assert ProfileBook(tmp_path / "p.json", "cpu", max_replicas=1).eval_share_s("m") == pytest.approx(0.75)


def test_selection_time_is_measured_with_its_margin(tmp_path: Path) -> None:
    book = ProfileBook(None, "cpu", max_replicas=2)
    # before any selection ran: a measured number of steps of this worker's planned step time
    assert book.planning_select_s("m") == pytest.approx(DEFAULT_SELECT_STEPS * book.planning_step_s("m"))
    for s in (2.0, 2.2, 1.8):
        book.observe_step("m", s)
    assert book.planning_select_s("m") == pytest.approx(DEFAULT_SELECT_STEPS * book.planning_step_s("m"))
    assert book.planning_select_s("m") > DEFAULT_SELECT_STEPS * 1.8
    for s in (4.0, 4.0, 4.0):
        book.observe_select("m", s)
    assert book.planning_select_s("m") == pytest.approx(4.0)


# ------------------------------------------------------------------ over HTTP, fake engine


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[tuple[TestClient, Service]]:
    service = make_service(tmp_path / "home")
    with TestClient(create_app(service)) as client:
        _, key = service.store.create_tenant(f"t-{uuid.uuid4().hex[:8]}")
        client.headers["Authorization"] = f"Bearer {key}"
        wait_for(lambda: client.get("/v1/cluster").json()["warm_models"].get("tiny", 0) >= 2)
        yield client, service


def _upload(client: TestClient) -> str:
    blob = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    r = client.post("/v1/files", files={"file": ("train.jsonl", blob)})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_job_is_admitted_on_its_predicted_steps_not_its_max_steps(svc: tuple[TestClient, Service]) -> None:
    client, service = svc
    ctl = service.controller
    pred = ctl.work.predict("tiny", "random", 1000, 4)
    step = ctl.profiles.planning_step_s("tiny")
    # a deadline the prediction meets with room, and 1000 steps would miss by far
    duration = 3 * pred.steps * step + 5.0
    assert 1000 * step > 3 * duration
    r = client.post("/v1/jobs", json=job_body(max_steps=1000, duration_s=duration))
    assert r.status_code == 201, r.text
    q = r.json()["quote"]
    assert q["feasible"] and q["predicted_steps"] == pred.steps and q["work_steps"] == pred.steps
    assert "population" in q["prediction"]
    assert q["finish_time"] - r.json()["created_at"] == pytest.approx(pred.steps * step, abs=1.0)
    dry = client.post("/v1/quotes", json=job_body(max_steps=1000, duration_s=duration)).json()
    assert dry["object"] == "quote" and dry["predicted_steps"] == pred.steps and "selection" not in dry
    assert client.get("/v1/jobs").json()["data"][0]["id"] == r.json()["id"]  # a quote creates no job


def test_a_bank_quote_without_a_selection_includes_the_selection_still_to_run(
    svc: tuple[TestClient, Service],
) -> None:
    client, service = svc
    ctl = service.controller
    dry = client.post("/v1/quotes", json=job_body(bank_warm_start=True, max_steps=1000)).json()
    step, sel = ctl.profiles.planning_step_s("tiny"), ctl.profiles.planning_select_s("tiny")
    bank = ctl.work.predict("tiny", "bank", 1000, 4)
    assert dry["selection_s"] == pytest.approx(sel, rel=1e-3) and "selection" not in dry  # inline data
    assert dry["work_steps"] == pytest.approx(bank.steps + sel / step, rel=1e-3)


def test_a_quote_with_the_bank_runs_the_selection_and_the_job_then_uses_it(
    svc: tuple[TestClient, Service],
) -> None:
    client, service = svc
    file_id = _upload(client)
    body = job_body(training_file=file_id, bank_warm_start=True, max_steps=40)
    body.pop("training_data")
    dry = client.post("/v1/quotes", json=body)
    assert dry.status_code == 200, dry.text
    q = dry.json()
    # the fake bank predicts 3 steps: rounded up to the job's next evaluation (every 4)
    assert q["prediction"] == "prompt bank" and q["predicted_steps"] == 4 and q["selection_s"] == 0.0
    assert q["selection"]["init"] == "bank:fake" and q["selection"]["seconds"] >= 0
    without = client.post("/v1/quotes", json={**body, "bank_warm_start": False}).json()
    assert without["predicted_steps"] > q["predicted_steps"] and without["finish_time"] > q["finish_time"]
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["quote"]["prediction"] == "prompt bank" and job["init"] == "bank:fake"
    done = wait_done(client, job["id"])
    events = client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    starts = [e for e in events if e["kind"] == "warm_start"]
    assert len(starts) == 1 and starts[0]["data"]["at_quote"] is True  # no second selection
    assert done["gpu_seconds"] >= q["selection"]["seconds"]
    assert service.controller.selections == {}  # taken by the job
    # the measured selection time now feeds quotes of bank jobs that have none
    book = service.controller.profiles
    assert book.planning_select_s("tiny") != DEFAULT_SELECT_STEPS * book.planning_step_s("tiny")


def test_a_step_time_is_kept_with_the_number_of_workers_busy_while_it_ran(tmp_path: Path) -> None:
    """Two workers each running a chunk: the reply's step time counts as measured with two busy; a chunk
    that ran alone counts as one (the controller driven directly, no process, no timing)."""
    service = make_service(tmp_path / "home")
    ctl = service.controller
    sent: list[tuple[str, str]] = []
    ctl.backend = SimpleNamespace(send=lambda wid, op, args: sent.append((wid, op)))  # type: ignore[assignment]
    for wid in ("a", "b"):
        ctl.workers[wid] = WorkerRec(wid, "tiny", requested_at=0.0, ready_at=0.0)
    jobs = []
    for jid in ("j1", "j2"):
        payload = JobPayload(jid, "tiny", "train.jsonl", None, ("bad", "good"), max_steps=40)
        rt = JobRT(jid, "t", payload, 0.0, 100.0, False, 8.0, JobPhase.RUNNING, admitted=True, selected=True)
        ctl.jobs[jid] = rt
        jobs.append(rt)

    def reply(wid: str, elapsed: float, eval_s: float = 0.0) -> Reply:
        res = {"elapsed": elapsed, "steps_run": 2, "state": b"s", "version": 1, "steps_done": 2}
        return Reply(wid, "train", True, {**res, "loss": 0.5, "accuracy": None, "eval_s": eval_s})

    ctl._send(ctl.workers["a"], jobs[0], "train", {}, 0.0)
    ctl._send(ctl.workers["b"], jobs[1], "train", {}, 0.0)
    ctl._on_reply(reply("a", 6.0), 6.0)  # ran while b was busy too
    ctl._on_reply(reply("b", 6.0), 6.0)
    ctl._send(ctl.workers["a"], jobs[0], "train", {}, 7.0)  # alone this time
    ctl._on_reply(reply("a", 2.0), 9.0)
    ctl._send(ctl.workers["a"], jobs[0], "train", {}, 10.0)  # alone, 2 s of its 4.4 s evaluating
    ctl._on_reply(reply("a", 4.4, eval_s=2.0), 14.4)
    levels = ctl.profiles._get("tiny").levels
    assert sent == [("a", "train"), ("b", "train"), ("a", "train"), ("a", "train")]
    assert levels["2"] == pytest.approx([math.log(3.0), math.log(3.0)])
    assert levels["1"] == pytest.approx([math.log(1.0), math.log(1.2)])  # the steps, without the evaluation
    assert ctl.profiles.eval_share_s("tiny") == pytest.approx(2.0 / 8)  # 2 s over the 8 steps replied
    service.store.engine.dispose()


def test_max_replicas_caps_what_the_policy_plans_a_job_with(tmp_path: Path) -> None:
    from prompttuner.runtime.controller import ControllerConfig
    from prompttuner.service import ServiceConfig
    from service_fakes import FAKE_ENGINE

    def planned(cap: int | None) -> int:
        ccfg = ControllerConfig(max_workers=2, max_replicas=cap)
        cfg = ServiceConfig(home=tmp_path / f"h{cap}", engine=FAKE_ENGINE, controller=ccfg, models=("tiny",))
        return int(Service(cfg).controller.profiles.planning_profile("tiny").max_replicas)

    assert planned(None) == 2  # by default a job may take every worker
    assert planned(1) == 1  # the demo's cap: one replica per job on a shared CPU
