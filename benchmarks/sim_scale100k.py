"""Simulator at cloud scale: 100,000 jobs on 10,000 mixed A100/H100 GPUs, per policy (goal: <= 120 s of
process CPU time each, issue 11 deliverable 7).

The workload is the CLI's ``prompttuner simulate --jobs 100000 --gpus a100:5000,h100:5000`` (Poisson
arrivals, load 0.6, SLO tightness 1.0, ``--prediction measured``, random init, seed 0).  Each policy runs
in this process; CPU time is ``time.process_time`` around ``simulate`` (workload generation apart), the
number to compare with the goal on a shared machine.  A run that passes ``--stop-at`` CPU seconds is
stopped and recorded with how far it got (arrivals, decisions).  For a policy that finishes, the CLI
command itself is also run as a child process (``--cli``) and its CPU time (user + system, from
``getrusage``) recorded: that is the goal's literal command, output files included.

    PYTHONPATH=src python benchmarks/sim_scale100k.py [--policies prompttuner,infless,elasticflow] \\
        [--stop-at 150] [--cli] [--append]

Results: ``results/sim_scale100k.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.prediction import ErrorModel, predict_jobs
from prompttuner.sim.runner import clairvoyant, simulate
from prompttuner.sim.workload import WorkloadConfig, generate

OUT = Path(__file__).parent / "results"
GOAL_S = 120.0
KEEP = (
    "slo_violation_rate",
    "declined",
    "missed",
    "unfinished",
    "cost",
    "cost_per_met_job",
    "cost_gpu_hours",
    "busy_gpu_hours",
    "loading_gpu_hours",
    "cold_starts",
    "decisions",
    "makespan_s",
)


class OutOfTime(Exception):
    pass


def run_policy(name: str, cfg: WorkloadConfig, stop_at: float) -> dict[str, Any]:
    """One policy in this process, as ``simulate`` runs it (the live index feeds the policy)."""
    cat = load_catalog()
    jobs = generate(cfg, cat)
    seen = {"arrivals": 0, "decisions": 0}
    t0 = time.process_time()

    def progress(i: int, n: int) -> None:
        seen["arrivals"] = i
        seen["decisions"] += 1
        if seen["decisions"] % 500 == 0 and time.process_time() - t0 > stop_at:
            raise OutOfTime

    row: dict[str, Any] = {"policy": name}
    try:
        res = simulate(name, jobs, cfg, cat, progress=progress)
    except OutOfTime:
        cpu = time.process_time() - t0
        row.update(
            finished=False, cpu_s=cpu, arrivals_done=seen["arrivals"], decisions_done=seen["decisions"]
        )
        row["arrivals_per_cpu_s"] = seen["arrivals"] / cpu
        return row
    cpu = time.process_time() - t0
    row.update(finished=True, cpu_s=cpu, meets_goal=cpu <= GOAL_S)
    row.update({k: res.metrics[k] for k in KEEP})
    row["cpu_ms_per_decision"] = 1000 * cpu / max(1.0, res.metrics["decisions"])
    return row


def run_cli(name: str, cfg: WorkloadConfig) -> dict[str, Any]:
    """The goal's command as a child process; its CPU time from getrusage (user + system)."""
    caps = ",".join(f"{k}:{v}" for k, v in cfg.capacity.items())
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-c",
            "from prompttuner.cli import main; main()",
            "simulate",
            "--jobs",
            str(cfg.n_jobs),
            "--gpus",
            caps,
            "--policies",
            name,
            "--out",
            out,
            "--json",
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row: dict[str, Any] = {"command": "prompttuner " + " ".join(cmd[3:-3]), "rc": proc.returncode}
    row.update(cpu_s=cpu, wall_s=wall, meets_goal=proc.returncode == 0 and cpu <= GOAL_S)
    if proc.returncode != 0:
        row["stderr_tail"] = proc.stderr[-2000:]
    return row


def _f(x: Any, fmt: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, fmt)


def write_md(out: dict[str, Any], path: Path) -> None:
    cmds = dict.fromkeys(r.get("args", out["args"]) for r in out["policies"].values())
    lines = [
        "# Simulator at cloud scale: 100,000 jobs on 10,000 GPUs",
        "",
        *("    PYTHONPATH=src nice -n 10 python benchmarks/sim_scale100k.py " + c for c in cmds),
        "",
        f"Workload: `prompttuner simulate --jobs {out['jobs']} --gpus {out['gpus']}` (Poisson arrivals, "
        f"load {out['load']}, SLO tightness {out['slo_tightness']}, `--prediction {out['prediction']}`, "
        f"random init, seed {out['seed']}). CPU time is `time.process_time` around `simulate` (workload "
        f"generation apart); goal <= {GOAL_S:.0f} CPU-s per policy. {out['machine']}. Revisions: "
        + ", ".join(f"{n} {r.get('revision', out['revision'])}" for n, r in out["policies"].items())
        + ".",
        "",
        "| policy | finished | CPU-s | decisions | CPU ms / decision | violations | declined | missed "
        "| cost $ | cost / met job $ | cold starts |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in out["policies"].items():
        if r.get("simulator"):
            name = f"{name} (feed)"
        if r["finished"]:
            lines.append(
                f"| {name} | yes | {r['cpu_s']:.1f} | {r['decisions']:.0f} | "
                f"{r['cpu_ms_per_decision']:.3f} | "
                f"{100 * r['slo_violation_rate']:.2f} % | {r['declined']:.0f} | {r['missed']:.0f} | "
                f"{r['cost']:,.0f} | {_f(r['cost_per_met_job'], '.3f')} | {r['cold_starts']:.0f} |"
            )
        else:
            lines.append(
                f"| {name} | no: stopped at {r['cpu_s']:.0f} CPU-s | - | {r['decisions_done']} so far "
                "| - | "
                f"{r['arrivals_done']:,} of {out['jobs']:,} arrivals | | | | | |"
            )
    lines.append("")
    lines.append(
        f"Clairvoyant bound (cost): ${out['bound_cost']:,.0f}. "
        f"Workload generation: {out['generate_s']:.1f} s."
    )
    for c in out.get("cli", {}).values():
        lines.append(
            f"- CLI `{c['command']}`: {c['cpu_s']:.1f} CPU-s (user + system of the child), "
            f"rc {c['rc']}{'' if c['meets_goal'] else ', over the goal'}"
        )
    for note in out.get("notes", []):
        lines.append(f"- {note}")
    if out.get("cost_ratio_infless_over_prompttuner") is not None:
        lines.append(
            f"- cost INFless / PromptTuner at 10,000 GPUs: {out['cost_ratio_infless_over_prompttuner']:.3f}"
        )
    else:
        lines.append("- cost INFless / PromptTuner at 10,000 GPUs: n/a (a policy did not finish)")
    lines.append("")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--gpus", default="a100:5000,h100:5000")
    ap.add_argument("--policies", default="prompttuner,infless,elasticflow")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stop-at", type=float, default=150.0, help="stop a run after this many CPU seconds")
    ap.add_argument("--cli", action="store_true", help="also time the CLI command of a policy that finished")
    ap.add_argument("--append", action="store_true", help="keep the other policies already in the results")
    ap.add_argument("--out", type=Path, default=OUT / "sim_scale100k.json")
    ap.add_argument("--md-only", action="store_true", help="rewrite the .md from the .json, run nothing")
    args = ap.parse_args()
    if args.md_only:
        write_md(json.loads(args.out.read_text()), args.out.with_suffix(".md"))
        return
    cap = {k: int(v) for k, v in (p.split(":") for p in args.gpus.split(","))}
    cfg = WorkloadConfig(
        n_jobs=args.jobs, load=0.6, slo_tightness=1.0, capacity=cap, prediction="measured", seed=args.seed
    )
    cat = load_catalog()
    t = time.process_time()
    jobs = generate(cfg, cat)
    gen_s = time.process_time() - t
    _, _, slow = predict_jobs(jobs, ErrorModel.parse(cfg.prediction), cfg.seed)
    bound = clairvoyant(jobs, cat.models, cat.gpu_types, cfg.capacity, slow)
    out: dict[str, Any] = {"policies": {}, "cli": {}}
    if args.append and args.out.exists():
        old = json.loads(args.out.read_text())
        out["policies"], out["cli"] = old.get("policies", {}), old.get("cli", {})
        out["notes"] = old.get("notes", [])
    out.update(
        jobs=args.jobs,
        gpus=args.gpus,
        load=cfg.load,
        slo_tightness=cfg.slo_tightness,
        prediction=cfg.prediction,
        seed=args.seed,
        generate_s=gen_s,
        bound_cost=bound["cost"],
        goal_cpu_s=GOAL_S,
        args=" ".join(a for a in sys.argv[1:]),
        machine=f"{platform.machine()} shared 2-core CPU (another CPU benchmark running), Python "
        f"{platform.python_version()}",
        revision=_revision(),
    )
    for name in args.policies.split(","):
        row = run_policy(name, cfg, args.stop_at)
        row.update(args=out["args"], revision=out["revision"])
        out["policies"][name] = row
        print(json.dumps(row), flush=True)
        if args.cli and row["finished"]:
            out["cli"][name] = run_cli(name, cfg)
            print(json.dumps(out["cli"][name]), flush=True)
        pt, inf = out["policies"].get("prompttuner"), out["policies"].get("infless")
        ok = pt is not None and inf is not None and pt["finished"] and inf["finished"]
        out["cost_ratio_infless_over_prompttuner"] = inf["cost"] / pt["cost"] if ok else None  # type: ignore[index]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2, default=lambda x: None))
        write_md(out, args.out.with_suffix(".md"))


def _revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
