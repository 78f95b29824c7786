"""``prompttuner demo``: the service end to end on this machine, in a few minutes.

Starts the service (API + controller + 2-4 local workers holding the bundled LLM) in this process, on a
fresh ``$PROMPTTUNER_HOME`` sub-folder, then acts as a user over HTTP: submits prompt-tuning jobs on the
bundled task slices with different deadlines (one of them tighter than the service can promise, to show
the 422 with the tightest feasible deadline, then resubmitted as best effort), shows live progress, and
ends with a table of jobs, deadlines met or missed, and GPU-seconds used.

Deadlines are set from the step time the workers measure on the first job, so the demo tells the same
story on a slow laptop and on a fast server.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from prompttuner import config
from prompttuner.cli.common import console
from prompttuner.cli.service_common import build_service, cluster_line, jobs_table

DEMO_TASKS = config.REPO_DATA / "demo_tasks"
TASKS = ("sst2", "sms_spam", "subj", "cr")
STEPS, EVAL_EVERY, TARGET = 12, 4, 0.7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """uvicorn in a thread, so the demo talks to the service over real HTTP."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="prompttuner-http", daemon=True)

    def start(self, timeout: float = 300.0) -> None:
        self.thread.start()
        end = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > end:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def run_demo(
    workers: int = 2,
    n_jobs: int = 4,
    home: Path | None = None,
    policy: str = "prompttuner",
    kill_worker: bool = False,
    engine: str | None = None,
    plugins: list[str] | None = None,
    model: str = "smollm2-135m",
    steps: int = STEPS,
) -> dict[str, Any]:
    import httpx
    from rich.live import Live

    from prompttuner.api.app import create_app

    home = home or config.home() / "demo" / time.strftime("%Y%m%d-%H%M%S")
    home.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]PromptTuner demo[/]: state in {home}; {workers} local workers on {model}")
    service = build_service(home, workers, workers, model, "local", policy, None, engine, plugins or [], 3.0)
    port = _free_port()
    server = _Server(create_app(service), port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {service.default_key}"}, timeout=120)
    names: dict[str, str] = {}
    notes: list[str] = []
    try:
        with console.status(f"loading {model} on {workers} workers (a cold start)..."):
            _wait(lambda: c.get("/v1/cluster").json()["warm_models"].get(model, 0) >= workers, 900)
        info = c.get("/v1/cluster").json()
        console.print(
            f"workers warm after {time.time() - service.controller.started_at:.1f}s: " + cluster_line(info)
        )

        files = {t: _upload(c, t) for t in TASKS}

        def submit(task: str, duration: float | None, best_effort: bool = False) -> httpx.Response:
            body = {
                "model": model,
                "training_file": files[task][0],
                "validation_file": files[task][1],
                "target_accuracy": TARGET,
                "max_steps": steps,
                "duration_s": duration,
                "best_effort": best_effort,
                "hyperparameters": {
                    "batch_size": 4,
                    "num_virtual_tokens": 8,
                    "eval_every": EVAL_EVERY,
                    "max_length": 64,
                    "max_eval": 24,
                    "lr": 0.03,
                },
            }
            r = c.post("/v1/jobs", json=body)
            if r.status_code == 201:
                names[r.json()["id"]] = task
            return r

        tasks = [TASKS[i % len(TASKS)] for i in range(n_jobs)]
        first = submit(tasks[0], 3600.0)
        first.raise_for_status()
        console.print(
            f"submitted {first.json()['id']} ({tasks[0]}), deadline in 1h; measuring the step time..."
        )
        with console.status("first job: measuring seconds per step"):
            _wait(lambda: c.get("/v1/cluster").json()["profiles"][model]["measured"], 900)
        step_s = float(c.get("/v1/cluster").json()["profiles"][model]["step_s"])
        solo = steps * step_s * 1.3  # a job alone on one worker, evaluations included
        console.print(f"measured {step_s:.2f}s per step: a {steps}-step job alone takes about {solo:.0f}s")

        # the others: relaxed, moderate, and one tighter than any allocation can meet
        factors = [3.0, 1.6, 0.25, 2.2, 1.2, 4.0, 0.8][: max(0, n_jobs - 1)]
        for task, f in zip(tasks[1:], factors, strict=False):
            r = submit(task, solo * f)
            if r.status_code == 201:
                q = r.json()["quote"]
                console.print(
                    f"submitted {r.json()['id']} ({task}): deadline in {solo * f:.0f}s, quoted finish "
                    f"in {q['finish_time'] - time.time():.0f}s on {q['gpus']} worker(s)"
                )
            else:
                err = r.json()["error"]
                msg = (
                    f"[yellow]{r.status_code}[/] for {task} with a {solo * f:.0f}s deadline: {err['message']}"
                )
                console.print(msg)
                notes.append(
                    f"{task}: refused at {solo * f:.0f}s ({err['type']}); resubmitted as best effort"
                )
                r2 = submit(task, solo * f, best_effort=True)
                r2.raise_for_status()
                console.print(f"resubmitted as best effort: {r2.json()['id']}")
            time.sleep(1.0)  # staggered arrivals: the policy re-plans at each one

        killed = False
        with Live(console=console, refresh_per_second=2, transient=True) as live:
            while True:
                jobs = [j for j in c.get("/v1/jobs").json()["data"] if j["id"] in names]
                info = c.get("/v1/cluster").json()
                live.update(_view(jobs, names, info, jobs_table, cluster_line))
                if kill_worker and not killed:
                    busy = [w for w in info["workers"] if w["job"] and w["op"] == "train"]
                    if busy and any(j["progress"]["steps_done"] >= 2 for j in jobs):
                        service.controller.kill_worker(busy[0]["id"])
                        notes.append(f"killed worker {busy[0]['id']} while it ran {busy[0]['job']}")
                        killed = True
                if all(j["status"] in ("succeeded", "failed", "cancelled", "declined") for j in jobs):
                    break
                time.sleep(0.5)
        jobs = [j for j in c.get("/v1/jobs").json()["data"] if j["id"] in names]
        jobs.sort(key=lambda j: j["created_at"])
        info = c.get("/v1/cluster").json()
        console.print(
            jobs_table(jobs, title="PromptTuner demo: jobs (ids shortened)", names=names, short=True)
        )
        met = sum(1 for j in jobs if j["slo_met"])
        on_time = sum(1 for j in jobs if j["deadline_met"])
        job_s = sum(j["gpu_seconds"] for j in jobs)
        console.print(
            f"SLO met (target reached by the deadline): {met}/{len(jobs)} (finished by the deadline: "
            f"{on_time}/{len(jobs)}); GPU-seconds: {job_s:.1f} charged to jobs, "
            f"{info['gpu_seconds_held']:.1f} held by the warm pool (utilisation {info['utilisation']:.0%})"
        )
        for n in notes:
            console.print(f"note: {n}")
        console.print(
            f"state kept in {home}; run it yourself: prompttuner serve --home {home} (then submit / status)"
        )
        return {
            "home": str(home),
            "step_s": step_s,
            "jobs": [
                {
                    "id": j["id"],
                    "task": names[j["id"]],
                    "status": j["status"],
                    "steps": j["progress"]["steps_done"],
                    "accuracy": j["progress"]["accuracy"],
                    "target_reached": j["target_reached"],
                    "deadline_met": j["deadline_met"],
                    "slo_met": j["slo_met"],
                    "gpu_seconds": j["gpu_seconds"],
                }
                for j in jobs
            ],
            "slo_met": met,
            "deadlines_met": on_time,
            "gpu_seconds_jobs": job_s,
            "gpu_seconds_held": info["gpu_seconds_held"],
            "notes": notes,
        }
    finally:
        c.close()
        server.stop()


def _upload(c: Any, task: str) -> tuple[str, str]:
    ids = []
    for split in ("train", "test"):
        path = DEMO_TASKS / task / f"{split}.jsonl"
        r = c.post("/v1/files", files={"file": (f"{task}-{split}.jsonl", path.read_bytes())})
        r.raise_for_status()
        ids.append(r.json()["id"])
    return ids[0], ids[1]


def _wait(cond: Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"gave up after {timeout:.0f}s")
        time.sleep(0.25)


def _view(
    jobs: list[dict[str, Any]], names: dict[str, str], info: dict[str, Any], table: Any, line: Any
) -> Any:
    from rich.console import Group
    from rich.text import Text

    jobs = sorted(jobs, key=lambda j: j["created_at"])
    return Group(table(jobs, title="jobs (live)", names=names, short=True), Text(line(info)))
