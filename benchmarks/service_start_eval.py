"""A job whose bank start already meets its target, run by the live service on the real engine.

The service stream (``bank_stream.py``) ends such a job at its start; this benchmark asks whether the
service does.  It starts the embedded service (one local worker, the bundled smollm2-135m), fills its
Prompt Bank with four committed stream prompts (``results/bank_stream_evalsched/bank_stream_prompts/``:
the first job of four single-text tasks, public entries) and submits, one at a time, the other job of
each task exactly as the stream ran it: its half of the task's training rows, seed, target and engine
settings (``benchmarks/results/bank_stream_evalsched/settings.json``), ``bank_warm_start`` with the
service's defaults.  In the stream all four started at their targets (0 steps).  Per job it records the
start (chosen, race, the check, ``start_accuracy``), the steps the job ran, whether it reached its target,
its GPU seconds and its time from submission to the end.

    python benchmarks/service_start_eval.py                       # this checkout
    python benchmarks/service_start_eval.py --describe --out benchmarks/results/service_start_eval_described
    PYTHONPATH=/tmp/old/src python benchmarks/service_start_eval.py --out results/service_start_eval_OLD

(the second: the same jobs on another commit's package, e.g. a ``git worktree`` of the commit before the
service ended such jobs at their start).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bank_stream import job_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STREAM = RESULTS / "bank_stream_evalsched"
# (the job, the committed prompt of its task's other job that the bank holds: order, job)
JOBS = (
    ("sms_spam#1", ("1", "sms_spam#0")),
    ("mr#0", ("0", "mr#1")),
    ("subj#1", ("0", "subj#0")),
    ("sst5#1", ("1", "sst5#0")),
)


def seed_bank(folder: Path, st: dict[str, Any]) -> None:
    """The four prompts as public entries, as ``bank_stream.add_to_bank`` adds a finished job's."""
    from bank_stream import entry_of
    from prompttuner.bank import PromptBank
    from prompttuner.tuning import load_prompt

    runs = {(r["order"], r["job"]): r for r in map(json.loads, (STREAM / "bank_stream.runs.jsonl").open())}
    entries = []
    for _, (order, other) in JOBS:
        rec = runs[(order, other)]
        assert rec["reached"], other
        tensor, meta = load_prompt(
            STREAM / "bank_stream_prompts" / f"order-{order}" / f"{other.replace('#', '-')}.safetensors"
        )
        task, _ = job_task(st, other)
        entries.append(
            entry_of(
                _Loaded(meta["model"], int(tensor.shape[1])),
                task,
                tensor,
                rec["accuracy"],
                rec["steps"],
                source_job=other,
            )
        )
    with PromptBank(folder) as bank:
        bank.add_many(entries)


class _Loaded:
    """What ``entry_of`` reads of a loaded model (its name), without loading it in this process."""

    def __init__(self, name: str, embed_dim: int) -> None:
        self.name, self.embed_dim = name, embed_dim


def job_body(st: dict[str, Any], job: str, describe: bool = False) -> dict[str, Any]:
    """The job as the stream ran it; ``describe``: with the task's description (the stream's jobs had it;
    the API takes one since cdd4a98)."""
    task, seed = job_task(st, job)
    return {
        **({"description": task.description} if describe else {}),
        "model": st["model"],
        "training_data": [{"text": e.text, "label": e.label} for e in task.train],
        "labels": list(task.labels),
        "target_accuracy": float(st["targets"][job.split("#")[0]]),
        "max_steps": int(st["max_steps"]),
        "duration_s": 3600,
        "bank_warm_start": True,
        "hyperparameters": {
            "num_virtual_tokens": st["num_virtual_tokens"],
            "batch_size": st["batch_size"],
            "seed": seed,
            "eval_every": st["eval_every"],
            "max_length": st["max_length"],
            "max_eval": st["eval_size"],
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RESULTS / "service_start_eval")
    ap.add_argument("--describe", action="store_true", help="send each job's task description")
    a = ap.parse_args()
    from fastapi.testclient import TestClient

    import prompttuner
    from prompttuner.api.app import create_app
    from prompttuner.cli.service_common import build_service

    st = json.loads((STREAM / "settings.json").read_text())
    commit = subprocess.run(
        ["git", "-C", str(Path(prompttuner.__file__).parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pt-start-eval-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        seed_bank(home / "bank", st)
        service = build_service(
            home, 1, 1, st["model"], "local", "prompttuner", None, None, [], 3.0, max_replicas=1
        )
        with TestClient(create_app(service)) as client:
            client.headers["Authorization"] = f"Bearer {service.default_key}"
            end = time.monotonic() + 600
            while client.get("/v1/cluster").json()["warm_models"].get(st["model"], 0) < 1:
                if time.monotonic() > end:
                    raise SystemExit("no warm worker within 600 s")
                time.sleep(0.5)
            for job, _ in JOBS:
                r = client.post("/v1/jobs", json=job_body(st, job, a.describe))
                r.raise_for_status()
                jid = r.json()["id"]
                end = time.monotonic() + 1200
                while (j := client.get(f"/v1/jobs/{jid}").json())["status"] not in (
                    "succeeded",
                    "failed",
                    "cancelled",
                    "declined",
                ):
                    if time.monotonic() > end:
                        raise SystemExit(f"{job} did not end within 1200 s")
                    time.sleep(0.5)
                events = client.get(f"/v1/jobs/{jid}/events").json()["data"]
                start = next((e["data"] for e in events if e["kind"] == "warm_start"), {})
                rows.append(
                    {
                        "job": job,
                        "target": job_body(st, job)["target_accuracy"],
                        "status": j["status"],
                        "target_reached": j["target_reached"],
                        "steps_done": j["progress"]["steps_done"],
                        "race_steps": start.get("race_steps"),
                        "accuracy": j["progress"]["accuracy"],
                        "chosen": start.get("chosen"),
                        "raced": start.get("raced"),
                        "no_race": start.get("no_race"),
                        "first_check": (start.get("first_check") or {}).get("val_accuracy"),
                        "start_accuracy": start.get("start_accuracy"),
                        "gpu_seconds": j["gpu_seconds"],
                        "took_s": round(float(j["finished_at"]) - float(j["created_at"]), 2),
                        "training_chunks": sum(e["kind"] == "progress" for e in events),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    out = {
        "commit": commit,
        "machine": _cpu(),
        "wall_s": round(time.time() - t0, 1),
        "settings": str((STREAM / "settings.json").relative_to(ROOT)),
        "described": a.describe,
        "jobs": rows,
    }
    a.out.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out.with_suffix('.json')}")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
