"""Simulator speed: time to simulate a 10,000-job workload with each policy (goal: <= 60 s).

The machine is shared (load average 5-8 on 2 cores while this ran), so CPU time of this process is the
number to compare with the goal; wall time is reported beside it.

python benchmarks/sim_speed.py [--jobs 10000] [--policies prompttuner,infless,...]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.runner import simulate
from prompttuner.sim.workload import WorkloadConfig, generate

OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--arrivals", default="itp")
    ap.add_argument("--load", type=float, default=0.6)
    ap.add_argument("--slo-tightness", type=float, default=1.0)
    ap.add_argument("--policies", default="prompttuner,infless,elasticflow,edf,reserved")
    ap.add_argument("--out", type=Path, default=OUT / "sim_speed.json")
    ap.add_argument("--append", action="store_true", help="keep the other policies already in --out")
    args = ap.parse_args()
    cat = load_catalog()
    cfg = WorkloadConfig(
        arrivals=args.arrivals, n_jobs=args.jobs, load=args.load, slo_tightness=args.slo_tightness
    )
    t = time.perf_counter()
    jobs = generate(cfg, cat)
    gen_s = time.perf_counter() - t
    res: dict[str, dict[str, float]] = {}
    if args.append and args.out.exists():
        res = json.loads(args.out.read_text()).get("policies", {})
    for name in args.policies.split(","):
        t = time.perf_counter()
        c = time.process_time()
        r = simulate(name, jobs, cfg, cat)
        wall = time.perf_counter() - t
        cpu = time.process_time() - c
        res[name] = {
            "cpu_s": cpu,
            "wall_s": wall,
            "decisions": r.metrics["decisions"],
            "cpu_ms_per_decision": 1000 * cpu / max(1.0, r.metrics["decisions"]),
            "simulated_hours": r.metrics["makespan_s"] / 3600,
        }
        print(
            f"{name:12s} wall {wall:7.1f} s  cpu {cpu:7.1f} s  {r.metrics['decisions']:.0f} decisions",
            flush=True,
        )
        out = {
            "jobs": args.jobs,
            "arrivals": args.arrivals,
            "load": args.load,
            "slo_tightness": args.slo_tightness,
            "generate_s": gen_s,
            "policies": res,
            "goal_s": 60.0,
            "machine": f"{platform.machine()} shared 2-core CPU, Python {platform.python_version()}",
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))  # after every policy: a long one loses nothing


if __name__ == "__main__":
    main()
