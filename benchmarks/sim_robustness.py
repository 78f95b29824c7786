"""What hidden work costs each policy, and what PromptTuner's re-estimation and elasticity buy back.

Two studies on Poisson and the Microsoft ITP cluster04 arrivals (128 A100, load 0.6, 2,000 jobs,
``--work distribution``), SLO tightness 1.0 and 2.0, seeds 0 and 1:

- **Width of the prediction error**: PromptTuner and INFless with ``--prediction oracle``,
  ``lognormal:0.3``, ``lognormal:0.62`` (the width measured for the predictor) and ``lognormal:1.0``
  (log-normal ratios; the step-time noise stays the measured one except for the oracle).
- **Ablation under the measured error** (``--prediction measured``): PromptTuner; without the refresh of
  the estimate from each job's progress; without elasticity (a job keeps the allocation it started with);
  and INFless, which cannot resize.

    python benchmarks/sim_robustness.py            # -> benchmarks/results/sim_robustness.{json,md}
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from prompttuner.config import shared_data
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.runner import run_workload
from prompttuner.sim.workload import WorkloadConfig, generate

OUT = Path(__file__).resolve().parent / "results" / "sim_robustness"
SEEDS = (0, 1)
TIGHT = (1.0, 2.0)


def main() -> None:
    cat = load_catalog()
    itp = str(shared_data() / "traces/microsoft-itp/raw/cluster04.csv")
    rows = []
    t0 = time.time()
    for wl, arrivals, trace in (("poisson", "poisson", None), ("itp-cluster04", "itp", itp)):
        for tight in TIGHT:
            for seed in SEEDS:
                base = WorkloadConfig(
                    arrivals=arrivals,
                    trace=trace,
                    n_jobs=2000,
                    load=0.6,
                    slo_tightness=tight,
                    work="distribution",
                    seed=seed,
                )
                jobs = generate(base, cat)
                runs = [
                    (f"width {p}", replace(base, prediction=p), ["prompttuner", "infless"])
                    for p in ("oracle", "lognormal:0.3", "lognormal:0.62", "lognormal:1.0")
                ]
                runs += [
                    (
                        "measured",
                        replace(base, prediction="measured"),
                        ["prompttuner", "prompttuner-no-elastic", "infless"],
                    ),
                    (
                        "measured, no refresh",
                        replace(base, prediction="measured", refresh=False),
                        ["prompttuner"],
                    ),
                ]
                for study, cfg, pols in runs:
                    _, res = run_workload(cfg, cat, pols, jobs=jobs)
                    for p, r in res.items():
                        m = r.metrics
                        rows.append(
                            {
                                "workload": wl,
                                "tightness": tight,
                                "seed": seed,
                                "study": study,
                                "policy": p,
                                **{k: m[k] for k in ("slo_violation_rate", "declined", "missed", "cost")},
                            }
                        )
                    print(
                        wl,
                        tight,
                        seed,
                        study,
                        {p: round(r.metrics["slo_violation_rate"], 3) for p, r in res.items()},
                        flush=True,
                    )
    OUT.with_suffix(".json").write_text(
        json.dumps(
            {"command": "python benchmarks/sim_robustness.py", "wall_s": time.time() - t0, "rows": rows},
            indent=1,
        )
        + "\n"
    )
    keyed: dict[tuple[str, float, str, str], list[dict[str, float]]] = {}
    for r in rows:
        keyed.setdefault((r["workload"], r["tightness"], r["study"], r["policy"]), []).append(r)
    md = [
        "# Robustness to hidden work: the width of the prediction error, and the ablation",
        "",
        "    python benchmarks/sim_robustness.py",
        "",
        (__doc__ or "").split("\n\n")[1].replace("\n", " "),
        "",
        "Violation rate (mean of seeds 0 and 1; declined / missed jobs summed over them) and cost (mean).",
        "",
        "| workload | T | study | policy | violations | declined / missed | cost $ |",
        "|---|---|---|---|---|---|---|",
    ]
    for (wl, t, study, p), rs in keyed.items():
        v = statistics.fmean(r["slo_violation_rate"] for r in rs)
        d = sum(r["declined"] for r in rs)
        mi = sum(r["missed"] for r in rs)
        c = statistics.fmean(r["cost"] for r in rs)
        md.append(f"| {wl} | {t:g} | {study} | {p} | {v:.3f} | {d:.0f} / {mi:.0f} | {c:.0f} |")
    md += ["", "Deterministic simulator; the spread comes from the two job draws (seeds)."]
    OUT.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    sys.exit(0)


if __name__ == "__main__":
    main()
