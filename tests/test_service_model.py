"""End to end over HTTP with real tuning: the bundled LLM on two local worker processes.

Tiny on purpose (a 48-row task slice, batch 4, 3 steps, 4 virtual tokens): it checks that the real
engine behind the worker interface trains, checkpoints, exports a prompt that the engine can load, and
serves predictions, with the real PromptTuner policy deciding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from prompttuner import config
from prompttuner.api.app import create_app
from prompttuner.runtime.controller import ControllerConfig
from prompttuner.service import Service, ServiceConfig
from test_api_service import wait_done

pytestmark = pytest.mark.model

TASK = config.REPO_DATA / "demo_tasks" / "sst2"


def test_real_tuning_end_to_end_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    cfg = ServiceConfig(
        home=tmp_path / "home",
        workers=2,
        warm=2,
        policy="prompttuner",
        controller=ControllerConfig(tick_s=0.1, decide_every_s=0.5, chunk_s=2.0),
    )
    service = Service(cfg)
    with TestClient(create_app(service)) as client:
        client.headers["Authorization"] = f"Bearer {service.default_key}"
        assert "smollm2-135m" in [m["id"] for m in client.get("/v1/models").json()["data"]]
        ids = []
        for split in ("train", "test"):
            r = client.post(
                "/v1/files", files={"file": (f"{split}.jsonl", (TASK / f"{split}.jsonl").read_bytes())}
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        body = {
            "model": "smollm2-135m",
            "training_file": ids[0],
            "validation_file": ids[1],
            "max_steps": 3,
            "duration_s": 3600,
            "hyperparameters": {
                "batch_size": 4,
                "num_virtual_tokens": 4,
                "eval_every": 3,
                "max_length": 48,
                "max_eval": 8,
            },
        }
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["labels"] == ["negative", "positive"]
        done = wait_done(client, r.json()["id"], timeout=600)
        assert done["status"] == "succeeded", done
        assert done["progress"]["steps_done"] == 3 and done["progress"]["accuracy"] is not None
        assert done["deadline_met"] is True and done["gpu_seconds"] > 0
        from prompttuner.tuning import load_prompt

        path = tmp_path / "p.safetensors"
        path.write_bytes(client.get(f"/v1/jobs/{done['id']}/prompt").content)
        tensor, meta = load_prompt(path)
        assert tuple(tensor.shape) == (4, 576) and meta["steps"] == 3
        pred = client.post("/v1/predict", json={"job": done["id"], "texts": ["a wonderful film", "dull"]})
        assert pred.status_code == 200, pred.text
        assert set(pred.json()["predictions"]) <= {"negative", "positive"}
        assert client.get("/v1/cluster").json()["profiles"]["smollm2-135m"]["measured"] is True
        from prompttuner.state.models import EventRow

        with service.store.session() as s:  # each worker timed steps of its own as it warmed up
            ready = [e.data for e in s.query(EventRow).filter(EventRow.kind == "worker_ready")]
        assert len(ready) == 2 and all(d["calibration_step_s"] > 0 for d in ready)


def test_a_real_worker_switches_between_the_two_bundled_models_and_trains_on_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's ``switch`` on the real engine: SmolLM2-135M out, Gemma-3-270M in (and back); a job
    trains a step on the model the worker holds, and the model it left is no longer in the process's cache."""
    from prompttuner.runtime.engine import REAL_ENGINE, JobPayload
    from prompttuner.runtime.worker import WorkerCore
    from prompttuner.tuning import models as tmodels

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    core = WorkerCore("w-real", "smollm2-135m", REAL_ENGINE)
    assert core.loaded.embed_dim == 576

    def one_step(model: str) -> dict[str, object]:
        job = JobPayload(
            job_id=f"j-{model}",
            model=model,
            train_path=str(TASK / "train.jsonl"),
            test_path=None,
            labels=("negative", "positive"),
            max_steps=1,
            num_virtual_tokens=4,
            max_length=32,
            eval_every=0,
        )
        return core.handle("train", {"job": job, "state": None, "version": 0, "steps": 1, "budget_s": 60.0})

    smollm = core.loaded
    out = core.handle("switch", {"model": "gemma3-270m"})
    assert core.model == "gemma3-270m" and core.loaded.name == "gemma3-270m"
    assert core.loaded.embed_dim == 640  # Gemma-3-270M's width, not SmolLM2's
    assert out["load_s"] > 0 and out["unload_s"] >= 0
    assert all(v is not smollm for v in tmodels._LOADED.values())  # the process let it go
    assert one_step("gemma3-270m")["steps_done"] == 1
    gemma = core.loaded
    core.handle("switch", {"model": "smollm2-135m"})
    assert core.loaded.embed_dim == 576 and core._sessions == {}
    assert all(v is not gemma for v in tmodels._LOADED.values())
    assert one_step("smollm2-135m")["steps_done"] == 1
