"""The service's run history survives a restart (fake engine): job rows with their quotes and starts, every
event, the step times the workers measured (saved as each job ends, so a crash keeps them too) and the
service's own predictions of steps to target (read back from the ended jobs' rows)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from prompttuner.api.app import create_app
from test_api_service import job_body, make_service, wait_done


def test_jobs_events_quotes_step_times_and_predictions_survive_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    service = make_service(home)
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"
        ids = []
        for _ in range(2):
            r = client.post("/v1/jobs", json=job_body(target_accuracy=0.4, max_steps=40))
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        before = {i: wait_done(client, i) for i in ids}
        events = {i: client.get(f"/v1/jobs/{i}/events").json()["data"] for i in ids}
        # saved as the jobs ended, before any clean stop
        saved = json.loads((home / "profiles.json").read_text())
        assert saved["tiny"]["step_samples"] > 0
        own = service.controller.work.predict("tiny", "random", 40, 4)
    assert "this service's 2 random-init runs" in own.source

    again = make_service(home)
    with TestClient(create_app(again)) as client:
        client.headers["Authorization"] = f"Bearer {again.default_key}"
        for i in ids:
            after = client.get(f"/v1/jobs/{i}").json()
            assert after["quote"] == before[i]["quote"] and after["quote"]["predicted_steps"] > 0
            for k in ("status", "progress", "slo_met", "finished_at", "gpu_seconds"):
                assert after[k] == before[i][k]
            kept = client.get(f"/v1/jobs/{i}/events").json()["data"]
            assert [e["kind"] for e in kept] == [e["kind"] for e in events[i]]
            assert {"arrive", "admit", "start", "finish"} <= {e["kind"] for e in kept}
        assert again.controller.profiles.measured("tiny")
        pred = again.controller.work.predict("tiny", "random", 40, 4)
        assert pred.source == own.source and pred.steps == own.steps  # learned from the rows
