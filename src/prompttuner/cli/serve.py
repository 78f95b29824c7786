"""CLI for the service: ``serve``, ``submit``, ``status`` and the end-to-end ``demo``.

``serve`` runs the API and the controller in one process (workers are child processes or Ray actors) and
records its address in ``$PROMPTTUNER_HOME/server.json``; ``submit`` and ``status`` find the server and
the default API key there, so on one machine they work without flags.  ``serve`` creates what it writes
private to its user (umask 077: files 0600, folders 0700).

Tenants and keys: ``cli/tenants.py``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer

from prompttuner.cli.common import JSON_OPTION, console, emit_json, fail
from prompttuner.cli.service_common import build_service, cluster_line, home_dir, jobs_table, parse_duration

DEFAULT_PORT = 8321


def _client_target(url: str | None, key: str | None, home: Path | None) -> tuple[str, str]:
    h = home_dir(home)
    info: dict[str, Any] = {}
    if (h / "server.json").exists():
        info = json.loads((h / "server.json").read_text())
    url = url or os.environ.get("PROMPTTUNER_URL") or info.get("url") or f"http://127.0.0.1:{DEFAULT_PORT}"
    key = key or os.environ.get("PROMPTTUNER_API_KEY")
    if not key and (h / "api_key").exists():
        key = (h / "api_key").read_text().strip()
    if not key:
        fail(f"no API key: pass --key, set PROMPTTUNER_API_KEY, or run on the server's machine ({h}/api_key)")
    return url.rstrip("/"), str(key)


def _request(method: str, url: str, key: str, path: str, **kw: Any) -> Any:
    import httpx

    try:
        r = httpx.request(method, url + path, headers={"Authorization": f"Bearer {key}"}, timeout=60, **kw)
    except httpx.HTTPError as e:
        fail(f"cannot reach the service at {url}: {e} (is `prompttuner serve` running?)")
    if r.status_code >= 400:
        try:
            msg = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            msg = r.text
        fail(f"{r.status_code}: {msg}")
    return r.json()


def serve_cmd(
    port: int = typer.Option(DEFAULT_PORT, "--port", help="HTTP port"),
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on"),
    workers: int = typer.Option(2, "--workers", min=1, help="most workers (GPUs) held at once"),
    warm: int = typer.Option(
        -1, "--warm", help="workers kept warm, spread over the models in order (default: --workers)"
    ),
    model: str = typer.Option("smollm2-135m", "--model", help="base LLM the warm pool holds"),
    models: str = typer.Option(
        None,
        "--models",
        help="several base LLMs, comma-separated (e.g. smollm2-135m,gemma3-270m): a warm pool each, and "
        "an idle worker may switch models instead of a cold start; overrides --model",
    ),
    backend: str = typer.Option("local", "--backend", help="local (worker processes) or ray"),
    policy: str = typer.Option("prompttuner", "--policy", help="scheduling policy"),
    db: str = typer.Option(None, "--db", help="SQLAlchemy URL (default: SQLite in $PROMPTTUNER_HOME)"),
    home: Path = typer.Option(None, "--home", help="state folder (default: $PROMPTTUNER_HOME)"),
    engine: str = typer.Option(None, "--engine", hidden=True, help="engine 'module:attr' (tests)"),
    plugin: list[str] = typer.Option([], "--plugin", hidden=True, help="modules to import first"),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster to join (default: start one)"),
    ray_gpus: int = typer.Option(None, "--ray-gpus", help="GPUs to declare on a local Ray cluster"),
    chunk_s: float = typer.Option(
        4.0, "--chunk-s", help="seconds of training per unit of work (checkpoint period)"
    ),
) -> None:
    """Run the service: the HTTP API, the controller and a pool of warm workers."""
    import uvicorn

    from prompttuner.api.app import create_app
    from prompttuner.state.store import write_private

    os.umask(0o077)  # everything the service writes (database, data, checkpoints, prompts) is private
    h = home_dir(home)
    served = tuple(dict.fromkeys(m.strip() for m in models.split(",") if m.strip())) if models else (model,)
    if not served:
        fail("--models names no model")
    try:
        service = build_service(
            h,
            workers,
            None if warm < 0 else warm,
            served,
            backend,
            policy,
            db,
            engine,
            plugin,
            chunk_s,
            {"address": ray_address, "num_gpus": ray_gpus} if backend == "ray" else None,
        )
    except ValueError as e:
        fail(str(e))
    url = f"http://{host}:{port}"
    write_private(h / "server.json", json.dumps({"url": url, "pid": os.getpid(), "started": time.time()}))
    console.print(f"PromptTuner on [bold]{url}[/] (docs: {url}/docs) home={h} models={','.join(served)}")
    console.print(f"API key of tenant 'default' in {h / 'api_key'}; the admin key in {h / 'admin_key'}")
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")


def submit_cmd(
    data: Path = typer.Option(
        ..., "--data", exists=True, dir_okay=False, help="training JSONL (text, label)"
    ),
    validation: Path = typer.Option(
        None, "--validation", exists=True, dir_okay=False, help="validation JSONL"
    ),
    labels: str = typer.Option(None, "--labels", help="comma-separated label words (default: from the data)"),
    description: str = typer.Option(
        None, "--description", help="the task in a sentence (the text init; what the bank matches)"
    ),
    model: str = typer.Option("smollm2-135m", "--model"),
    target: float = typer.Option(None, "--target", help="target validation accuracy (0-1)"),
    max_steps: int = typer.Option(100, "--max-steps", help="step budget"),
    deadline: str = typer.Option("30m", "--deadline", help="SLO as a duration from now (90s, 15m, 2h)"),
    best_effort: bool = typer.Option(
        False, "--best-effort", help="run even if the deadline looks infeasible"
    ),
    bank: bool = typer.Option(False, "--bank", help="warm start from the Prompt Bank"),
    batch_size: int = typer.Option(4, "--batch-size"),
    virtual_tokens: int = typer.Option(8, "--virtual-tokens"),
    url: str = typer.Option(None, "--url", help="service URL (default: from $PROMPTTUNER_HOME/server.json)"),
    key: str = typer.Option(None, "--key", help="API key (default: $PROMPTTUNER_API_KEY or the home's)"),
    home: Path = typer.Option(None, "--home"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Upload data and create a prompt-tuning job; prints the job and its quote."""
    u, k = _client_target(url, key, home)
    try:
        seconds = parse_duration(deadline)
    except ValueError as e:
        fail(str(e))
    f = _request("POST", u, k, "/v1/files", files={"file": (data.name, data.read_bytes())})
    body: dict[str, Any] = {
        "model": model,
        "training_file": f["id"],
        "max_steps": max_steps,
        "duration_s": seconds,
        "best_effort": best_effort,
        "bank_warm_start": bank,
        "hyperparameters": {"batch_size": batch_size, "num_virtual_tokens": virtual_tokens},
    }
    if validation is not None:
        body["validation_file"] = _request(
            "POST", u, k, "/v1/files", files={"file": (validation.name, validation.read_bytes())}
        )["id"]
    if labels:
        body["labels"] = [x.strip() for x in labels.split(",")]
    if target is not None:
        body["target_accuracy"] = target
    if description:
        body["description"] = description
    job = _request("POST", u, k, "/v1/jobs", json=body)
    if json_out:
        emit_json(job)
        return
    q = job["quote"]
    console.print(
        f"[bold]{job['id']}[/] {job['status']}: deadline {job['deadline_iso']}, "
        f"quote finish {q['finish_iso']} cost {q['cost']:.4f} on {q['gpus']} worker(s)"
    )


def status_cmd(
    job: str = typer.Argument(None, help="a job id (default: all your jobs and the cluster)"),
    url: str = typer.Option(None, "--url"),
    key: str = typer.Option(None, "--key"),
    home: Path = typer.Option(None, "--home"),
    events: bool = typer.Option(False, "--events", help="also print the job's events"),
    watch: bool = typer.Option(False, "--watch", help="refresh until every shown job has ended"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Show jobs (progress, deadline met or missed, GPU-seconds) and the worker pool."""
    u, k = _client_target(url, key, home)
    if watch and not json_out:
        _watch(u, k, job)
        return
    if job:
        j = _request("GET", u, k, f"/v1/jobs/{job}")
        ev = _request("GET", u, k, f"/v1/jobs/{job}/events")["data"] if events else None
        if json_out:
            emit_json({"job": j, "events": ev})
            return
        console.print(jobs_table([j]))
        for e in ev or []:
            stamp = time.strftime("%H:%M:%S", time.localtime(e["time"]))
            console.print(f"{stamp} {e['kind']:<12} {e['worker'] or '':<10} {json.dumps(e['data'])}")
        return
    jobs = _request("GET", u, k, "/v1/jobs")["data"]
    cluster = _request("GET", u, k, "/v1/cluster")
    if json_out:
        emit_json({"jobs": jobs, "cluster": cluster})
        return
    console.print(jobs_table(jobs))
    console.print(cluster_line(cluster))


def _watch(url: str, key: str, job: str | None) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    ended = ("succeeded", "failed", "cancelled", "declined")
    with Live(console=console, refresh_per_second=2) as live:
        while True:
            jobs = (
                [_request("GET", url, key, f"/v1/jobs/{job}")]
                if job
                else _request("GET", url, key, "/v1/jobs")["data"]
            )
            live.update(Group(jobs_table(jobs), Text(cluster_line(_request("GET", url, key, "/v1/cluster")))))
            if all(j["status"] in ended for j in jobs):
                return
            time.sleep(1.0)


def demo_cmd(
    workers: int = typer.Option(2, "--workers", min=1, max=4, help="local workers (2-4)"),
    jobs: int = typer.Option(4, "--jobs", min=1, max=8, help="jobs to submit"),
    home: Path = typer.Option(
        None, "--home", help="state folder (default: a fresh one under $PROMPTTUNER_HOME/demo/)"
    ),
    policy: str = typer.Option("prompttuner", "--policy"),
    kill_worker: bool = typer.Option(
        False, "--kill-worker", help="kill a busy worker mid-job to show recovery"
    ),
    engine: str = typer.Option(None, "--engine", hidden=True),
    plugin: list[str] = typer.Option([], "--plugin", hidden=True),
    json_out: bool = JSON_OPTION,
) -> None:
    """Start the service with local workers, submit jobs with different deadlines, watch them, report."""
    from prompttuner.cli.demo import run_demo

    try:
        result = run_demo(
            workers=workers,
            n_jobs=jobs,
            home=home,
            policy=policy,
            kill_worker=kill_worker,
            engine=engine,
            plugins=plugin,
        )
    except (ValueError, RuntimeError, TimeoutError) as e:
        fail(str(e))
    if json_out:  # one line: the last line of the demo's output
        sys.stdout.write(json.dumps(result, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("serve")(serve_cmd)
    app.command("submit")(submit_cmd)
    app.command("status")(status_cmd)
    app.command("demo")(demo_cmd)
