"""Ablation: PromptTuner with one mechanism switched off (or, for boost, on) at a time.

python benchmarks/sim_ablation.py [--jobs 2000]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.runner import run_workload, versus
from prompttuner.sim.workload import WorkloadConfig

VARIANTS = [
    "prompttuner",
    "prompttuner-no-warm-pool",
    "prompttuner-no-min-gpus",
    "prompttuner-no-elastic",
    "prompttuner-with-boost",
    "prompttuner-no-admission",
]
OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--load", type=float, default=0.6)
    ap.add_argument("--slo-tightness", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=OUT / "sim_ablation.json")
    ap.add_argument("--work", default="profiles", choices=["profiles", "distribution"], help="job sizes")
    args = ap.parse_args()
    cat = load_catalog()
    base = WorkloadConfig(n_jobs=args.jobs, load=args.load, slo_tightness=args.slo_tightness, work=args.work)
    out: dict[str, object] = {"config": asdict(base), "variants": VARIANTS, "workloads": {}}
    t0 = time.time()
    for kind in ("poisson", "itp", "azure"):
        cfg = replace(base, arrivals=kind)
        _, res = run_workload(cfg, cat, VARIANTS)
        metrics = {n: r.metrics for n, r in res.items()}
        out["workloads"][kind] = {"metrics": metrics, "versus_prompttuner": versus(metrics)}  # type: ignore[index]
        for n in VARIANTS:
            m = metrics[n]
            print(
                f"{kind:8s} {n:28s} viol {m['slo_violation_rate']:.4f} cost {m['cost']:8.1f} "
                f"cold {m['cold_starts']:6.0f} util {m['utilisation']:.2f}",
                flush=True,
            )
    out["elapsed_s"] = time.time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=lambda x: None))


if __name__ == "__main__":
    main()
