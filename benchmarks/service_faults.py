"""Fault injection on the live service: kill random workers (and once the service) during a batch of jobs.

Runs ``prompttuner serve`` on 127.0.0.1 with the deterministic fake engine of the tests (so a job's final
prompt after N steps is one known number, whatever happened on the way), submits a batch of small jobs,
then SIGKILLs a random worker process every ``--kill-every-s`` seconds (at most ``--kills``), and once,
half way, the service itself, which is restarted on the same home folder.  The same batch also runs once
without faults, for the cost of the faults.

Checked for every job: it succeeded, ran exactly its steps, and its prompt equals the fault-free prompt
of that many steps (max-abs error <= 1e-6; the fake engine's data-parallel rounds compute the same number,
so this holds whatever its replica count did).  Reported: kills, jobs, the prompt error, the failures and
recoveries the service recorded, and wall time and GPU-seconds with and without faults.

    python benchmarks/service_faults.py [--jobs 12] [--kills 10] [--kill-every-s 1.0] [--seed 0]

Writes ``benchmarks/results/service_faults.{json,md}``.  Bounded: every wait has a timeout, traffic goes
to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from safetensors.numpy import load

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
SRC = ROOT / "src"
OUT = ROOT / "benchmarks" / "results"
ROWS = [{"text": f"example number {i}", "label": "good" if i % 2 else "bad"} for i in range(24)]
STEP_S = 0.05  # the fake engine's seconds per step


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(home: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{TESTS}", FAKE_STEP_S=str(STEP_S))
    cmd = [sys.executable, "-m", "prompttuner", "serve", "--home", str(home), "--port", str(port)]
    cmd += ["--workers", str(workers), "--model", "tiny", "--engine", "service_fakes:FakeEngine"]
    cmd += ["--plugin", "service_fakes", "--chunk-s", "0.3"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(fn: Any, timeout: float, every: float = 0.1) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            v = fn()
        except (httpx.HTTPError, OSError, ValueError):
            v = None
        if v:
            return v
        time.sleep(every)
    raise TimeoutError(f"not reached within {timeout}s")


def worker_pids(service_pid: int) -> list[int]:
    """The service's worker processes (its spawned children, not multiprocessing's resource tracker)."""
    kids: list[int] = []
    for task in Path(f"/proc/{service_pid}/task").glob("*"):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    out = []
    for pid in kids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"resource_tracker" not in cmd:
            out.append(pid)
    return sorted(set(out))


def expected_w(train_path: str, steps: int, batch: int) -> float:
    """The fake engine's prompt after ``steps`` uninterrupted steps (see tests/service_fakes.py)."""
    # (no FAKE_STEP_S here: the fake's expected_w steps without sleeping by itself, and this runs in the
    # caller's process, a test run among them, whose later workers would inherit a changed environment)
    sys.path.insert(0, str(TESTS))
    from prompttuner.runtime.engine import JobPayload
    from service_fakes import expected_w as ew  # type: ignore[import-not-found]

    payload = JobPayload("x", "tiny", train_path, None, ("bad", "good"), steps, batch_size=batch)
    return float(ew(payload, steps))


def run(
    home: Path,
    jobs: int = 12,
    kills: int = 10,
    kill_every_s: float = 1.0,
    seed: int = 0,
    workers: int = 3,
    service_kill: bool = True,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """One batch; ``kills`` 0 is the fault-free run.  Returns the figures (see the module docstring)."""
    rng = random.Random(seed)
    specs = [(rng.randint(20, 60), rng.choice((2, 4, 8))) for _ in range(jobs)]
    port = _port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(home, port, workers)
    t0 = time.monotonic()
    worker_kills = service_kills = 0
    try:
        key = _wait(lambda: (home / "api_key").exists() and (home / "api_key").read_text().strip(), 60)
        c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        _wait(lambda: c.get("/healthz").status_code == 200, 60)
        ids = []
        for steps, batch in specs:
            body = {
                "model": "tiny",
                "training_data": ROWS,
                "labels": ["bad", "good"],
                "max_steps": steps,
                "duration_s": 3600,
                "best_effort": True,
                "hyperparameters": {"batch_size": batch, "eval_every": 1000},
            }
            r = c.post("/v1/jobs", json=body)
            r.raise_for_status()
            ids.append(r.json()["id"])

        def done() -> bool:
            js = [c.get(f"/v1/jobs/{j}").json() for j in ids]
            return all(j["status"] in ("succeeded", "failed", "cancelled", "declined") for j in js)

        while worker_kills + service_kills < kills and not done():
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError("the batch did not finish in time")
            time.sleep(kill_every_s)  # pacing of the fault injection, not synchronisation
            if service_kill and service_kills == 0 and worker_kills >= kills // 2:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                service_kills += 1
                proc = _serve(home, port, workers)
                _wait(lambda: c.get("/healthz").status_code == 200, 60)
                continue
            pids = worker_pids(proc.pid)
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                worker_kills += 1
        _wait(done, timeout_s, 0.2)
        wall = time.monotonic() - t0
        rows: list[dict[str, Any]] = []
        kinds: dict[str, int] = {}
        for jid, (steps, batch) in zip(ids, specs, strict=True):
            j = c.get(f"/v1/jobs/{jid}").json()
            w = float("nan")
            if j["status"] == "succeeded":
                w = float(load(c.get(f"/v1/jobs/{jid}/prompt").content)["prompt"][0, 0])
            train = Path(tempfile.mkdtemp()) / "train.jsonl"
            train.write_text("\n".join(json.dumps(r) for r in ROWS))
            want = expected_w(str(train), steps, batch)
            events = c.get(f"/v1/jobs/{jid}/events").json()["data"]
            for e in events:
                kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
            rows.append(
                {
                    "job": jid,
                    "max_steps": steps,
                    "batch_size": batch,
                    "status": j["status"],
                    "steps_done": j["progress"]["steps_done"],
                    "prompt_abs_error": abs(w - want),
                    "gpu_seconds": j["gpu_seconds"],
                    "replica_counts": sorted(
                        {e["data"]["replicas"] for e in events if e["kind"] == "progress"}
                    ),
                    "recovered_from": [
                        e["data"].get("recovered_from_step", e["data"].get("from_step"))
                        for e in events
                        if e["kind"] in ("fail", "recover")
                    ],
                }
            )
        return {
            "jobs": jobs,
            "worker_kills": worker_kills,
            "service_kills": service_kills,
            "succeeded": sum(r["status"] == "succeeded" for r in rows),
            "exact_steps": sum(r["steps_done"] == r["max_steps"] for r in rows),
            "max_prompt_abs_error": max(r["prompt_abs_error"] for r in rows),
            "job_fail_events": kinds.get("fail", 0),
            "recover_events": kinds.get("recover", 0),
            "wall_s": wall,
            "gpu_seconds_jobs": sum(r["gpu_seconds"] for r in rows),
            "steps_total": sum(r["max_steps"] for r in rows),
            "rows": rows,
        }
    finally:
        proc.kill()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--kill-every-s", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT / "service_faults")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        clean = run(Path(d) / "clean", a.jobs, kills=0, seed=a.seed)
        faults = run(Path(d) / "faults", a.jobs, kills=a.kills, kill_every_s=a.kill_every_s, seed=a.seed)
    result = {
        "command": "python benchmarks/service_faults.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), "
        f"Python {platform.python_version()}",
        "fault_free": clean,
        "with_faults": faults,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    f, c = faults, clean
    lines = [
        "# service_faults: random workers and the service killed during a batch of jobs",
        "",
        f"`{result['command']}` on {result['machine']}; fake engine ({STEP_S}s/step), 3 workers, "
        "policy prompttuner, jobs of 20-60 steps at batch 2/4/8, best effort.",
        "",
        "| run | jobs | worker kills | service kills | succeeded | exact steps | max prompt error | "
        "job fail events | recoveries | wall s | GPU-s charged |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in (("fault-free", c), ("with faults", f)):
        lines.append(
            f"| {name} | {r['jobs']} | {r['worker_kills']} | {r['service_kills']} | {r['succeeded']} | "
            f"{r['exact_steps']} | {r['max_prompt_abs_error']:.1e} | {r['job_fail_events']} | "
            f"{r['recover_events']} | {r['wall_s']:.1f} | {r['gpu_seconds_jobs']:.1f} |"
        )
    extra = f["gpu_seconds_jobs"] - c["gpu_seconds_jobs"]
    lines += [
        "",
        f"Progress lost to the faults: {extra:+.1f} GPU-seconds charged to jobs beyond the fault-free run "
        f"({f['wall_s'] - c['wall_s']:+.1f} s wall); every job ends with the prompt of an uninterrupted "
        "run of its steps (error column).  One run each on a shared CPU: wall and GPU-seconds carry its "
        "noise; the counts and the prompt check do not.",
    ]
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    ok = f["succeeded"] == f["jobs"] == f["exact_steps"] and f["max_prompt_abs_error"] <= 1e-6
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
