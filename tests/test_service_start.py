"""A worker's warm-up and a job's start, as the service runs them (fake engine).

A worker times a few steps as it warms up (``WorkerCore.calibrate``): the first quotes plan with them.
A job's start as the service makes it (``bank.warm_start`` on a worker, fake engine): the chosen start,
the candidates and the race go into the job's ``warm_start`` event and its quote, and the race's steps
are the job's (the winner's in its state, the losers' counted beside them).  The real engine's reply is
checked on the bundled LLM in ``tests/bank/test_bank_model.py``."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prompttuner.api.app import create_app
from prompttuner.core.types import JobPhase
from prompttuner.runtime.controller import ControllerConfig
from prompttuner.runtime.engine import JobPayload
from prompttuner.runtime.records import JobRT
from prompttuner.runtime.recovery import Recovery
from prompttuner.service import Service, ServiceConfig
from prompttuner.state.models import EventRow
from service_fakes import HOLD_ENV, GreedyPolicy, Hold
from test_api_service import job_body, wait_done, wait_for
from test_service_work import _upload


def _service(home: Path, engine: str) -> Service:
    cfg = ServiceConfig(
        home=home,
        engine=engine,
        controller=ControllerConfig(tick_s=0.05, decide_every_s=0.2, chunk_s=0.3),
        models=("tiny",),
        workers=2,
        warm=2,
    )
    return Service(cfg, policy=GreedyPolicy())


@contextmanager
def _race_service(home: Path) -> Iterator[tuple[TestClient, Service]]:
    """The service on the race fake engine: a tenant's key set, both workers warm."""
    service = _service(home, "service_fakes:RaceFakeEngine")
    with TestClient(create_app(service)) as client:
        _, key = service.store.create_tenant(f"t-{uuid.uuid4().hex[:8]}")
        client.headers["Authorization"] = f"Bearer {key}"
        wait_for(lambda: client.get("/v1/cluster").json()["warm_models"].get("tiny", 0) >= 2)
        yield client, service


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[tuple[TestClient, Service]]:
    with _race_service(tmp_path / "home") as (client, service):
        yield client, service


def _start_event(client: TestClient, job_id: str) -> dict[str, Any]:
    events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    starts = [e for e in events if e["kind"] == "warm_start"]
    assert len(starts) == 1
    return dict(starts[0]["data"])


def test_a_raced_start_is_in_the_jobs_events_and_quote_and_its_steps_are_the_jobs(
    svc: tuple[TestClient, Service],
) -> None:
    client, _ = svc
    r = client.post("/v1/jobs", json=job_body(bank_warm_start=True, max_steps=12))
    assert r.status_code == 201, r.text
    done = wait_done(client, r.json()["id"])
    ev = _start_event(client, done["id"])
    assert ev["chosen"] == "entry:mr/e1" and ev["raced"] and ev["race_steps"] == 3 and ev["steps_done"] == 2
    assert [c["name"] for c in ev["candidates"]] == ["entry:mr/e1", "text", "random"]
    assert done["init"] == "bank:e1"
    start = done["quote"]["start"]  # the quote it was admitted with, and the start it got
    assert start["chosen"] == "entry:mr/e1" and start["race_steps"] == 3 and start["steps_done"] == 2
    assert done["quote"]["after_start"]["prediction"] == "prompt bank"
    events = client.get(f"/v1/jobs/{done['id']}/events").json()["data"]
    first = next(e for e in events if e["kind"] == "progress")
    assert first["data"]["steps_done"] > 2  # training went on from the race winner's steps
    assert done["progress"]["steps_done"] <= 12


def test_a_start_made_at_the_quote_is_shown_there_and_kept_in_the_jobs_quote(
    svc: tuple[TestClient, Service],
) -> None:
    client, _ = svc
    body = job_body(training_file=_upload(client), bank_warm_start=True, max_steps=40)
    body.pop("training_data")
    q = client.post("/v1/quotes", json=body).json()
    sel = q["selection"]
    assert sel["chosen"] == "entry:mr/e1" and sel["raced"] and sel["race_steps"] == 3
    assert len(sel["candidates"]) == 3
    assert q["start"]["race_steps"] == 3 and q["prediction"] == "prompt bank"
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["quote"]["start"]["chosen"] == "entry:mr/e1" and job["progress"]["steps_done"] == 2
    done = wait_done(client, job["id"])
    ev = _start_event(client, done["id"])
    assert ev["at_quote"] is True and ev["race_steps"] == 3


def test_a_start_already_at_its_target_ends_the_job_there_without_a_training_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warm start's reply carries the start's evaluation on the job's validation rows (the fake bank's
    start at step 0 is at 0.6 with ``FAKE_BANK_BONUS`` 0.3): at or above the target (0.55) the job is done
    there -- succeeded at step 0, exported, no training chunk -- as ``PromptTrainer.train_to_target`` ends
    a run whose start meets its target.  Before, the service ignored that evaluation and trained to its
    next one (step 4).  A race's winner (step 2, between evaluation steps) is not evaluated there: it
    trains to its first evaluation at step 4 (0.3 + 4 x 0.02 + 0.3 = 0.68, at its 0.6 target)."""
    monkeypatch.setenv("FAKE_BANK_BONUS", "0.3")  # before the workers start: they read it
    with _race_service(tmp_path / "home") as (client, service):
        hp = {"batch_size": 4, "eval_every": 4, "bank_race": False}
        body = job_body(bank_warm_start=True, max_steps=12, target_accuracy=0.55, hyperparameters=hp)
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        done = wait_done(client, r.json()["id"])
        assert done["status"] == "succeeded" and done["target_reached"] is True
        assert done["progress"]["steps_done"] == 0 and done["progress"]["accuracy"] == pytest.approx(0.6)
        assert _start_event(client, done["id"])["start_accuracy"] == pytest.approx(0.6)
        events = client.get(f"/v1/jobs/{done['id']}/events").json()["data"]
        assert not [e for e in events if e["kind"] == "progress"]  # no training chunk ran
        assert client.get(f"/v1/jobs/{done['id']}/prompt").status_code == 200

        # made at a quote: the quote plans no training for it, and the job it is used for ends at its start
        quoted = {**body, "training_file": _upload(client)}
        quoted.pop("training_data")
        q = client.post("/v1/quotes", json=quoted).json()
        assert q["selection"]["start_accuracy"] == pytest.approx(0.6)
        assert q["prediction"] == "start at its target" and q["predicted_steps"] == 0
        jq = wait_done(client, client.post("/v1/jobs", json=quoted).json()["id"])
        assert jq["target_reached"] is True and jq["progress"]["steps_done"] == 0
        assert jq["quote"]["start"]["start_accuracy"] == pytest.approx(0.6)

        r2 = client.post("/v1/jobs", json=job_body(bank_warm_start=True, max_steps=12, target_accuracy=0.6))
        raced = wait_done(client, r2.json()["id"])
        assert _start_event(client, raced["id"])["start_accuracy"] is None
        assert raced["target_reached"] is True and raced["progress"]["steps_done"] == 4
        assert raced["progress"]["accuracy"] == pytest.approx(0.68)


def test_a_job_that_asks_for_no_race_gets_the_probes_best_start_and_its_own_selection(
    svc: tuple[TestClient, Service],
) -> None:
    """``hyperparameters.bank_race: false`` reaches the worker's warm start (no race steps), and a quote
    made with the race is not the selection such a job takes (the setting is part of the selection key)."""
    client, _ = svc
    body = job_body(training_file=_upload(client), bank_warm_start=True, max_steps=40)
    body.pop("training_data")
    raced = client.post("/v1/quotes", json=body).json()["selection"]
    assert raced["raced"] and raced["race_steps"] == 3
    body["hyperparameters"] = {**body.get("hyperparameters", {}), "bank_race": False}
    q = client.post("/v1/quotes", json=body).json()
    assert q["selection"]["raced"] is False and q["selection"]["race_steps"] == 0
    assert q["selection"]["no_race"] == "not asked"
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    done = wait_done(client, r.json()["id"])
    ev = _start_event(client, done["id"])
    assert ev["at_quote"] is True and ev["raced"] is False and ev["race_steps"] == 0 and ev["steps_done"] == 0
    assert done["hyperparameters"]["bank_race"] is False


def test_workers_time_steps_as_they_warm_up_and_the_first_quote_plans_with_them(tmp_path: Path) -> None:
    service = _service(tmp_path / "home", "service_fakes:CalibratingFakeEngine")
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"
        wait_for(lambda: client.get("/v1/cluster").json()["warm_models"].get("tiny", 0) >= 2)
        prof = service.controller.profiles
        assert client.get("/v1/cluster").json()["profiles"]["tiny"]["measured"] is True  # no job ran
        kept = sorted(round(math.exp(x), 6) for logs in prof._m["tiny"].levels.values() for x in logs)
        assert kept == [0.5, 0.5, 0.55, 0.55, 0.6, 0.6]  # three steps from each of the two workers
        with service.store.session() as s:
            ready = [e.data for e in s.query(EventRow).filter(EventRow.kind == "worker_ready")]
        assert [d["calibration_step_s"] for d in ready] == [0.55, 0.55]  # the median of each
        assert all(d["calibration_busy"] in (1, 2) for d in ready)
        q = client.post("/v1/quotes", json=job_body(max_steps=1000)).json()
        step = prof.planning_step_s("tiny")
        assert step >= 0.5  # this machine's (fake) steps, with the margin from their spread
        asked = q["deadline"] - 600  # job_body's duration_s
        assert q["finish_time"] - asked == pytest.approx(q["work_steps"] * step, rel=0.05)


def test_a_start_that_lags_at_the_fallback_step_goes_on_from_random_init_with_the_steps_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hyperparameters.bank_fallback_at``: the fake bank's start (the race's winner at step 2) is 0.2
    behind random init, so at its evaluation at step 4 it is at 0.18 against a 0.4 target: the job drops it
    (a ``fallback`` event), its 4 steps count beside the race's 3, and it goes on from random init, which
    reaches 0.46 at step 8 of the 16 steps left; without the fallback the start would need 16 steps."""
    monkeypatch.setenv("FAKE_BANK_BONUS", "-0.2")  # before the workers start: they read it
    with _race_service(tmp_path / "home") as (client, service):
        hp = {"batch_size": 4, "eval_every": 4, "bank_fallback_at": 4, "bank_fallback_rows": 0}
        body = job_body(bank_warm_start=True, max_steps=20, target_accuracy=0.4, hyperparameters=hp)
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        done = wait_done(client, r.json()["id"])
        events = client.get(f"/v1/jobs/{done['id']}/events").json()["data"]
        falls = [e["data"] for e in events if e["kind"] == "fallback"]
        assert len(falls) == 1
        fb = falls[0]
        assert fb["from"] == "bank:e1" and fb["step"] == 4 and fb["steps_left"] == 16
        assert fb["accuracy"] == pytest.approx(0.18) and fb["threshold"] == pytest.approx(0.4)
        assert done["status"] == "succeeded" and done["target_reached"] and done["init"] == "random"
        assert done["progress"]["steps_done"] == 8 and done["progress"]["accuracy"] == pytest.approx(0.46)

        off = {"batch_size": 4, "eval_every": 4}  # the default: no fallback
        no = job_body(bank_warm_start=True, max_steps=20, target_accuracy=0.4, hyperparameters=off)
        r2 = client.post("/v1/jobs", json=no)
        kept = wait_done(client, r2.json()["id"])
        ev2 = client.get(f"/v1/jobs/{kept['id']}/events").json()["data"]
        assert not [e for e in ev2 if e["kind"] == "fallback"]
        assert kept["init"] == "bank:e1" and kept["progress"]["steps_done"] == 16


def test_the_service_and_the_bank_share_one_fallback_default() -> None:
    """The API's default, the worker payload's and ``bank.RaceSettings``' (what bank_stream.py measures)."""
    from prompttuner.api.schemas import Hyperparameters
    from prompttuner.bank import RaceSettings
    from prompttuner.runtime.engine import JobPayload

    hp, rs = Hyperparameters(), RaceSettings()
    pay = JobPayload(job_id="j", model="m", train_path="t", test_path=None, labels=("a",), max_steps=1)
    assert hp.bank_fallback_at == pay.bank_fallback_at == rs.fallback_at
    assert hp.bank_fallback_rows == pay.bank_fallback_rows == rs.fallback_rows


def test_a_job_recovered_after_its_fallback_keeps_the_budget_the_fallback_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service stops while a job runs from random init after its fallback (held after its first step
    there); restarted, the job goes on from that checkpoint with the 16 steps the fallback left of its 20,
    not the whole budget again (its target, 0.9, is out of reach: it runs to the end of its budget)."""
    monkeypatch.setenv("FAKE_BANK_BONUS", "-0.2")
    monkeypatch.setenv(HOLD_ENV, str(tmp_path / "hold"))  # before the workers start: they read both
    (tmp_path / "hold").mkdir()
    home = tmp_path / "home"
    service = _service(home, "service_fakes:RaceFakeEngine")
    hp = {"batch_size": 4, "eval_every": 4, "bank_fallback_at": 4, "bank_fallback_rows": 0}
    body = job_body(bank_warm_start=True, max_steps=20, target_accuracy=0.9, hyperparameters=hp)
    with TestClient(create_app(service)) as client:
        tenant, key = service.store.create_tenant(f"t-{uuid.uuid4().hex[:8]}")
        client.headers["Authorization"] = f"Bearer {key}"
        wait_for(lambda: client.get("/v1/cluster").json()["warm_models"].get("tiny", 0) >= 2)
        hold = Hold.of(tenant.id, cold_only=True)
        with hold:
            r = client.post("/v1/jobs", json=body)
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            wait_for(hold.holding)  # the bank start fell back; random init ran one step and waits
            backend = service.controller.backend
            stop = backend.shutdown

            def release_then_stop() -> None:  # the controller has stopped: the held unit's reply is lost
                hold.release()
                stop()

            monkeypatch.setattr(backend, "shutdown", release_then_stop)
        falls = [e for e in client.get(f"/v1/jobs/{job_id}/events").json()["data"] if e["kind"] == "fallback"]
        assert len(falls) == 1 and falls[0]["data"]["steps_left"] == 16

    again = _service(home, "service_fakes:RaceFakeEngine")
    with TestClient(create_app(again)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        done = wait_done(client, job_id)
        events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    rec = [e["data"] for e in events if e["kind"] == "recover"]
    assert len(rec) == 1 and rec[0]["max_steps"] == 16 and rec[0]["from_step"] == 0
    assert done["init"] == "random" and not done["target_reached"]
    assert done["progress"]["steps_done"] == 16  # without the stored budget: 20


def test_a_checkpoint_header_restores_a_reduced_budget_only() -> None:
    """``Recovery._restore_budget``: a header's smaller budget comes back; a checkpoint written before the
    header named it (or a larger budget) leaves the job's own budget."""
    payload = JobPayload("j", "tiny", "train.jsonl", None, ("a", "b"), 20)
    for header, budget in (({"max_steps": 16}, 16), ({}, 20), ({"max_steps": 30}, 20)):
        rt = JobRT("j", "t", payload, 0.0, 1.0, False, 10.0, JobPhase.QUEUED, True)
        Recovery._restore_budget(rt, header)
        assert rt.payload.max_steps == budget
