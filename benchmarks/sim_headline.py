"""Headline comparison: PromptTuner vs INFless, ElasticFlow, EDF and a reserved pool on the same jobs.

Three arrival processes (Poisson; Microsoft ITP cluster04 and Azure LLM conversation arrivals, rescaled
to the target load), then sweeps of load and SLO tightness on Poisson arrivals.  Settings are fixed up
front (not tuned per result): 128 A100, default model mix, random init, load 0.6, tightness 1.0.

    python benchmarks/sim_headline.py [--jobs 2000] [--sweep-jobs 1000] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.runner import run_workload, summary, sweep, versus, write_outputs
from prompttuner.sim.workload import WorkloadConfig

POLICIES = ["prompttuner", "infless", "elasticflow", "edf", "reserved"]
OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--sweep-jobs", type=int, default=1000)
    ap.add_argument("--load", type=float, default=0.6)
    ap.add_argument("--slo-tightness", type=float, default=1.0)
    ap.add_argument("--loads", default="0.3,0.5,0.7,0.9")
    ap.add_argument("--tightness", default="0.75,1,1.5,2,3")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds for the three workloads")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--name", default="sim_headline", help="results file stem")
    ap.add_argument("--no-sweeps", action="store_true")
    ap.add_argument(
        "--work",
        default="profiles",
        choices=["profiles", "distribution"],
        help="job sizes: measured convergence profiles (scaled) or the documented distribution",
    )
    args = ap.parse_args()
    cat = load_catalog()
    base = WorkloadConfig(n_jobs=args.jobs, load=args.load, slo_tightness=args.slo_tightness, work=args.work)
    result: dict[str, object] = {"config": asdict(base), "policies": POLICIES}
    workloads: dict[str, object] = {}
    t0 = time.time()
    for kind in ("poisson", "itp", "azure"):
        for seed in [int(s) for s in args.seeds.split(",")]:
            cfg = replace(base, arrivals=kind, seed=seed)
            jobs, res = run_workload(cfg, cat, POLICIES)
            name = f"{kind}_seed{seed}"
            if seed == 0 and not args.no_sweeps:
                folder = args.out / "sim_headline" / kind
                write_outputs(folder, cfg, cat, jobs, res)
                for f in folder.glob("jobs_*.jsonl"):  # per-job records, compressed for the repository
                    f.with_suffix(".jsonl.gz").write_bytes(gzip.compress(f.read_bytes(), mtime=0))
                    f.unlink()
            s = summary(cfg, cat, jobs, res)
            workloads[name] = {
                "metrics": {p: s[p] for p in POLICIES},
                "clairvoyant_bound": s["_clairvoyant_bound"],
                "versus_prompttuner": versus({p: s[p] for p in POLICIES}),
            }
            print(
                name,
                {p: round(s[p]["slo_violation_rate"], 4) for p in POLICIES},
                {p: round(s[p]["cost"], 1) for p in POLICIES},
                f"{time.time() - t0:.0f}s",
                flush=True,
            )
    result["workloads"] = workloads
    sb = replace(base, n_jobs=args.sweep_jobs)
    sweeps: dict[str, list[dict[str, object]]] = {}
    if not args.no_sweeps:
        sweeps["load"] = sweep(sb, cat, POLICIES, "load", [float(x) for x in args.loads.split(",")])
        sweeps["slo_tightness"] = sweep(
            sb, cat, POLICIES, "slo_tightness", [float(x) for x in args.tightness.split(",")]
        )
    result["sweeps"] = sweeps
    result["elapsed_s"] = time.time() - t0
    result["machine"] = f"{platform.machine()} shared 2-core CPU, Python {platform.python_version()}"
    (args.out).mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2, default=lambda x: None))
    if sweeps:
        from prompttuner.sim.runner import plot_all

        plot_all(args.out / "sim_headline", {}, sweeps)
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
