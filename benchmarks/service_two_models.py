"""Two bundled base LLMs in one live service, on real tuning: ``serve --models smollm2-135m,gemma3-270m``.

Starts the service in this process (local worker processes, the real engine, the default policy) with
both bundled models and two workers, submits one job of each model at once (small slices of two shared
tasks, a few steps each), and records what happened: each job's worker(s) and the model they held, the
time both jobs ran side by side, cold starts and switches (the worker events), and every job's events.

    .venv/bin/python benchmarks/service_two_models.py [--steps 8]

Results: ``results/service_two_models.{json,md}``.  Real weights: run it after ``scripts/setup.sh``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("smollm2-135m", "gemma3-270m")
TASKS = {"smollm2-135m": "sst2", "gemma3-270m": "subj"}  # bundled demo slices (data/demo_tasks)
ENDED = ("succeeded", "failed", "cancelled", "declined")
EVAL = {"max_eval": 24}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--out", type=Path, default=RESULTS / "service_two_models.json")
    a = ap.parse_args()

    from fastapi.testclient import TestClient

    from prompttuner.api.app import create_app
    from prompttuner.cli.demo import _upload  # the demo's bundled slices, uploaded the same way
    from prompttuner.cli.service_common import build_service
    from prompttuner.runtime.worker import quiet_libraries

    quiet_libraries()
    t0 = time.time()
    home = Path(tempfile.mkdtemp(prefix="pt-two-models-"))
    service = build_service(home, 2, 2, MODELS, "local", "prompttuner", None, None, [], 3.0)
    samples: list[dict[str, Any]] = []  # the pool every second: worker -> (model, state, job)
    with TestClient(create_app(service)) as c:
        c.headers["Authorization"] = f"Bearer {service.default_key}"

        def cluster() -> dict[str, Any]:
            info = c.get("/v1/cluster").json()
            samples.append(
                {
                    "t": round(time.time() - t0, 1),
                    "workers": {w["id"]: [w["model"], w["state"], w["job"]] for w in info["workers"]},
                }
            )
            return dict(info)

        end = time.monotonic() + a.timeout
        while set(cluster()["warm_models"]) != set(MODELS):
            if time.monotonic() > end:
                raise TimeoutError("the two models did not get warm workers")
            time.sleep(1.0)
        warm_at = time.time() - t0
        jobs: dict[str, str] = {}
        for model in MODELS:
            train, val = _upload(c, TASKS[model])
            body = {
                "model": model,
                "training_file": train,
                "validation_file": val,
                "max_steps": a.steps,
                "duration_s": 600.0,
                "hyperparameters": {
                    "batch_size": 4,
                    "num_virtual_tokens": 8,
                    "eval_every": 4,
                    "max_eval": 24,
                },
            }
            resp = c.post("/v1/jobs", json=body)
            resp.raise_for_status()
            jobs[model] = resp.json()["id"]
        while not all(c.get(f"/v1/jobs/{j}").json()["status"] in ENDED for j in jobs.values()):
            if time.monotonic() > end:
                raise TimeoutError("the jobs did not end")
            cluster()
            time.sleep(1.0)
        info = cluster()
        rows = {}
        for model, jid in jobs.items():
            j = c.get(f"/v1/jobs/{jid}").json()
            ev = c.get(f"/v1/jobs/{jid}/events").json()["data"]
            ran_on = sorted({w for s in samples for w, (m, _st, job) in s["workers"].items() if job == jid})
            models_of = sorted(
                {m for s in samples for w, (m, _st, job) in s["workers"].items() if job == jid}
            )
            rows[model] = {
                "job": jid,
                "task": TASKS[model],
                "status": j["status"],
                "steps": j["progress"]["steps_done"],
                "accuracy": j["progress"]["accuracy"],
                "gpu_seconds": j["gpu_seconds"],
                "started_at": min((e["time"] for e in ev if e["kind"] == "start"), default=None),
                "finished_at": j["finished_at"],
                "workers": ran_on,
                "worker_models": models_of,
                "events": [e["kind"] for e in ev],
                "switches": [e["data"] for e in ev if e["kind"] == "switch"],
            }
        a_, b_ = (rows[m] for m in MODELS)
        overlap = None
        if all(r["started_at"] and r["finished_at"] for r in (a_, b_)):
            overlap = max(
                0.0, min(a_["finished_at"], b_["finished_at"]) - max(a_["started_at"], b_["started_at"])
            )
    result = {
        "command": "python benchmarks/service_two_models.py"
        + (f" --steps {a.steps}" if a.steps != 8 else ""),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "models": list(MODELS),
        "warm_after_s": round(warm_at, 1),
        "wall_s": round(time.time() - t0, 1),
        "jobs": rows,
        "side_by_side_s": None if overlap is None else round(overlap, 1),
        "final_workers": {w["id"]: w["model"] for w in info["workers"]},
        "warm_models": info["warm_models"],
        "samples": samples,
    }
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# service_two_models: two bundled base LLMs in one live service",
        "",
        f"`{result['command']}` on {result['machine']} (the shared 2-core CPU); 2 local workers, the real "
        f"engine, policy prompttuner, models {', '.join(MODELS)}. Both models warm after "
        f"{result['warm_after_s']:.0f}s; whole run {result['wall_s']:.0f}s.",
        "",
        "| model | task | status | steps | accuracy | GPU-s | worker(s) | model(s) the worker held "
        "| switches |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m, r in rows.items():
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}"
        lines.append(
            f"| {m} | {r['task']} | {r['status']} | {r['steps']} | {acc} | {r['gpu_seconds']:.1f} | "
            f"{', '.join(r['workers'])} | {', '.join(r['worker_models'])} | {len(r['switches'])} |"
        )
    lines += [
        "",
        f"Both jobs ran side by side for {result['side_by_side_s']}s (from the later start to the earlier "
        f"finish). Workers at the end: {result['final_workers']}; warm per model: {result['warm_models']}.",
        "",
        *[f"- {m}: events {' '.join(r['events'])}" for m, r in rows.items()],
    ]
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
