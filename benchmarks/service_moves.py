"""What moving a job between warm workers costs, next to a cold start and a worker failure.

On two local worker processes holding the bundled LLM, for ``--rounds`` rounds:
- cold start: from asking for a worker to the worker holding the model (``load_s`` as the worker measures
  it, and the wall time the controller sees);
- warm move: a job trains on worker A; its state (bytes shipped) then goes to worker B; the first 1-step
  chunk on B (restore + step) against the next 1-step chunk on B (step only) gives the restore cost;
- failure: a busy worker is killed; the time until the backend reports it (detection).
Writes ``benchmarks/results/service_moves.json`` and ``.md``.  Run with ``nice -n 10``; numbers on a
shared CPU are noisy: the ratios within one round are what to read.

    PYTHONPATH=src nice -n 10 python benchmarks/service_moves.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from prompttuner import config
from prompttuner.runtime.backend import LocalBackend, Reply
from prompttuner.runtime.engine import JobPayload

RESULTS = Path(__file__).resolve().parent / "results"


_PENDING: list[Reply] = []


def wait_reply(backend: LocalBackend, wid: str, timeout: float = 900.0) -> Reply:
    """The next reply of ``wid``; replies of other workers that arrive meanwhile are kept for later."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for r in list(_PENDING):
            if r.worker_id == wid:
                _PENDING.remove(r)
                return r
        _PENDING.extend(backend.poll(1.0))
    raise TimeoutError(f"no reply from {wid}")


def call(backend: LocalBackend, wid: str, op: str, args: dict[str, Any]) -> tuple[dict[str, Any], float]:
    t0 = time.monotonic()
    backend.send(wid, op, args)
    r = wait_reply(backend, wid)
    if not r.ok:
        raise RuntimeError(f"{op} on {wid}: {r.error}")
    return r.result, time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="sst2", help="a bundled demo task")
    ap.add_argument("--tokens", type=int, default=8, help="virtual tokens")
    ap.add_argument("--out", default=str(RESULTS / "service_moves.json"))
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    task = config.REPO_DATA / "demo_tasks" / a.task
    rounds: list[dict[str, Any]] = []
    for i in range(a.rounds):
        backend = LocalBackend(threads_per_worker=1)
        row: dict[str, Any] = {"round": i}
        try:
            t0 = time.monotonic()
            for wid in ("A", "B"):
                backend.start_worker(wid, a.model)
            loads = {}
            for wid in ("A", "B"):
                r = wait_reply(backend, wid)
                if not r.ok:
                    raise RuntimeError(r.error)
                loads[wid] = r.result["load_s"]
            row["cold_start_load_s"] = statistics.mean(loads.values())
            row["cold_start_wall_s"] = time.monotonic() - t0  # both in parallel, process start included
            job = JobPayload(
                f"bench-{i}",
                a.model,
                str(task / "train.jsonl"),
                str(task / "test.jsonl"),
                ("negative", "positive"),
                max_steps=1000,
                num_virtual_tokens=a.tokens,
                batch_size=4,
                max_length=64,
                eval_every=0,
                max_eval=8,
            )
            res, _ = call(
                backend, "A", "train", {"job": job, "state": None, "version": 0, "steps": 3, "budget_s": 1e9}
            )
            state, version = res["state"], res["version"]
            row["state_bytes"] = len(state)
            # the move: B has never seen this job, so it restores the state, then steps
            res, wall_first = call(
                backend,
                "B",
                "train",
                {"job": job, "state": state, "version": version, "steps": 1, "budget_s": 1e9},
            )
            first = res["elapsed"]
            res, wall_next = call(
                backend,
                "B",
                "train",
                {"job": job, "state": res["state"], "version": res["version"], "steps": 1, "budget_s": 1e9},
            )
            row["move_restore_s"] = max(0.0, first - res["elapsed"])
            row["step_s"] = res["elapsed"]
            row["move_first_chunk_wall_s"] = wall_first
            row["next_chunk_wall_s"] = wall_next
            # failure detection: kill B while it is busy, time until the backend reports it
            backend.send(
                "B",
                "train",
                {"job": job, "state": res["state"], "version": res["version"], "steps": 50, "budget_s": 1e9},
            )
            time.sleep(0.5)  # let the request start; a worker killed mid-request is the case to measure
            t_kill = time.monotonic()
            backend.kill_worker("B")
            r = wait_reply(backend, "B", 60)
            assert r.failed, r
            row["failure_detect_s"] = time.monotonic() - t_kill
            row["move_vs_cold_start"] = row["move_restore_s"] / row["cold_start_load_s"]
        finally:
            backend.shutdown()
            _PENDING.clear()
        rounds.append(row)
        print(json.dumps(row), file=sys.stderr)
    keys = [k for k in rounds[0] if k != "round"]
    summary = {
        k: {
            "median": statistics.median(r[k] for r in rounds),
            "min": min(r[k] for r in rounds),
            "max": max(r[k] for r in rounds),
        }
        for k in keys
    }
    out = {
        "benchmark": "service_moves",
        "command": "PYTHONPATH=src nice -n 10 python benchmarks/service_moves.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, "
        f"Python {platform.python_version()}",
        "model": a.model,
        "task": a.task,
        "virtual_tokens": a.tokens,
        "rounds": rounds,
        "summary": summary,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    md = [
        "# service_moves: a warm move against a cold start",
        "",
        f"`{out['command']}` on {out['machine']}; model {a.model}, {a.tokens} virtual tokens, batch 4.",
        "",
        "| quantity | median | min | max |",
        "|---|---|---|---|",
    ]
    for k, v in summary.items():
        md.append(f"| {k} | {v['median']:.4g} | {v['min']:.4g} | {v['max']:.4g} |")
    md += [
        "",
        "move_restore_s: extra time of the first chunk on a worker that had never seen the job "
        "(state restore), over the next chunk there; state_bytes: what a move ships.",
    ]
    Path(a.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
