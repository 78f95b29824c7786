"""Policy settings chosen from measurements: PromptTuner's work margin and admission tolerance, INFless's
censored histogram.

1. ``work_margin`` (PromptTuner plans for this times its estimated steps left): swept over 1.0, 1.15,
   1.3, 1.5, 2.0 on *tuning* seeds 100-101, disjoint from the comparison's 0-4 (Poisson T 1 and 2,
   Microsoft ITP cluster04 T 1, Azure conv T 1); then 1.0 against the chosen 1.3 on the comparison's
   seeds 0-4 (Poisson T 1), as a check, not a choice.
2. INFless ``censored`` (released idle periods as right-censored samples) against the plain histogram,
   seeds 0-1, Poisson and cluster04, T 1.
3. ``admit_tolerance`` (PromptTuner declines a job only if even its plain estimate finishes later than its
   deadline plus this share of its time left; default 0.5): 0.5, 1.0, 1.5 and admission off on the tuning
   seeds 100-101 (Poisson T 1 and 2, cluster04 T 1, Azure conv T 1); then 0.5 against 1.0 on the
   comparison's seeds 0-4 (Poisson, cluster04, Azure conv, T 1), as a check, not a choice.

Setting of the comparison otherwise: 128 A100, load 0.6, 2,000 jobs, ``--work distribution``,
``--prediction measured``.

    python benchmarks/sim_knobs.py          # -> benchmarks/results/sim_knobs.{json,md}
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from prompttuner.scheduler import make_policy
from prompttuner.sim import runner
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.workload import WorkloadConfig, generate
from sim_comparison import workloads  # benchmarks/ is on the path

OUT = Path(__file__).resolve().parent / "results" / "sim_knobs"
MARGINS = (1.0, 1.15, 1.3, 1.5, 2.0)
TOLERANCES: list[dict[str, Any]] = [{"admit_tolerance": t} for t in (0.5, 1.0, 1.5)] + [{"admission": False}]


def run(policy: str, kwargs: dict[str, Any], cfg: WorkloadConfig, jobs: list[Any]) -> dict[str, float]:
    """One run of ``policy`` with ``kwargs``, driven exactly as ``runner.simulate`` drives a named one."""
    orig = runner.build_policy
    runner.build_policy = lambda name, c, cat, js: make_policy(policy, **kwargs)  # type: ignore[assignment]
    try:
        m = runner.simulate(policy, jobs, cfg, load_catalog()).metrics
    finally:
        runner.build_policy = orig
    return {k: m[k] for k in ("slo_violation_rate", "declined", "missed", "cost")}


def main() -> None:
    cat = load_catalog()
    wl = {n: (a, t) for n, a, t in workloads()}
    rows: list[dict[str, Any]] = []
    t0 = time.process_time()

    def cfg(name: str, tight: float, seed: int) -> WorkloadConfig:
        a, tr = wl[name]
        return WorkloadConfig(
            arrivals=a, trace=tr, n_jobs=2000, load=0.6, slo_tightness=tight,
            work="distribution", prediction="measured", seed=seed,
        )  # fmt: skip

    sweeps = (
        [
            ("work_margin", "prompttuner", name, tight, seeds, [{"work_margin": m} for m in margins])
            for name, tight, seeds, margins in (
                ("poisson", 1.0, (100, 101), MARGINS),
                ("poisson", 2.0, (100, 101), MARGINS),
                ("itp-cluster04", 1.0, (100, 101), MARGINS),
                ("azure-conv", 1.0, (100, 101), MARGINS),
                ("poisson", 1.0, (0, 1, 2, 3, 4), (1.0, 1.3)),
            )
        ]
        + [
            ("censored", "infless", name, 1.0, (0, 1), [{"censored": False}, {"censored": True}])
            for name in ("poisson", "itp-cluster04")
        ]
        + [
            ("admit_tolerance", "prompttuner", name, tight, (100, 101), TOLERANCES)
            for name, tight in (
                ("poisson", 1.0),
                ("poisson", 2.0),
                ("itp-cluster04", 1.0),
                ("azure-conv", 1.0),
            )
        ]
        + [
            ("admit_tolerance", "prompttuner", name, 1.0, (0, 1, 2, 3, 4), TOLERANCES[:2])
            for name in ("poisson", "itp-cluster04", "azure-conv")
        ]
    )
    for i, (study, pol, name, tight, seeds, variants) in enumerate(sweeps):
        for seed in seeds:
            c = cfg(name, tight, seed)
            jobs = generate(c, cat)
            for kw in variants:
                m = run(pol, kw, c, jobs)
                rows.append({"sweep": i, "study": study, "policy": pol, "workload": name, "tightness": tight,
                             "seeds": list(seeds), "seed": seed, "kwargs": kw, **m})  # fmt: skip
                print(
                    study,
                    name,
                    tight,
                    seed,
                    kw,
                    round(m["slo_violation_rate"], 4),
                    round(m["cost"]),
                    flush=True,
                )
    cpu = time.process_time() - t0
    OUT.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    md = [
        "# Policy settings chosen from measurements",
        "",
        "    python benchmarks/sim_knobs.py",
        "",
        (__doc__ or "").split("\n\n")[1].replace("\n", " "),
        "",
        "Mean over the seeds (min-max of the violation rate); declined and missed jobs summed over the seeds;"
        " cost in dollars, mean.",
        "",
        "| study | workload | T | seeds | setting | violations % | declined | missed | cost $ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        key = (
            r["sweep"],
            r["study"],
            r["workload"],
            r["tightness"],
            tuple(r["seeds"]),
            json.dumps(r["kwargs"]),
        )
        groups[key].append(r)
    for (_, study, name, tight, seeds, kw), rs in groups.items():
        v = [100 * r["slo_violation_rate"] for r in rs]
        md.append(
            f"| {study} | {name} | {tight:g} | {','.join(map(str, seeds))} | `{kw}` | "
            f"{statistics.fmean(v):.2f} ({min(v):.2f}-{max(v):.2f}) | "
            f"{sum(r['declined'] for r in rs):.0f} | {sum(r['missed'] for r in rs):.0f} | "
            f"{statistics.fmean(r['cost'] for r in rs):.0f} |"
        )
    md += [
        "",
        f"Machine: {platform.machine()}, shared 2-core CPU; {cpu:.0f} CPU-s; the simulator is deterministic.",
    ]
    OUT.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
