"""The bank-init table of ``sim_headline.md``: PromptTuner and INFless on workloads whose jobs start from
random init, from the bank, or half and half (a bank job's work: a random-init job's times one measured
(random, bank) pair's ratio of the service stream, ``data/bank_stream_pairs.json``).

The runs come from ``sim_comparison.py`` (5 seeds, 2,000 jobs, 128 A100, load 0.6)::

    python benchmarks/sim_comparison.py --init random --policies prompttuner,infless \\
        --workloads poisson,azure-conv --tightness 1,2 \\
        --runs benchmarks/results/sim_bank_init_random.runs.jsonl
    python benchmarks/sim_comparison.py --init bank ... --runs .../sim_bank_init_bank.runs.jsonl
    python benchmarks/sim_comparison.py --init random:0.5,bank:0.5 ... --runs .../sim_bank_init_mix.runs.jsonl
    python benchmarks/sim_bank_init.py         # the table from the three runs files, and the pairs' ratios
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
INITS = (("random", "random"), ("bank", "bank"), ("mix", "half bank"))
NAMES = {"poisson": "Poisson", "azure-conv": "Azure conv"}


def runs(kind: str) -> list[dict]:
    path = RESULTS / f"sim_bank_init_{kind}.runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table() -> list[str]:
    out = [
        "| workload, tightness | init | seeds | PromptTuner violations | INFless violations | "
        "PromptTuner cost | INFless / PromptTuner cost (range over seeds) |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {kind: runs(kind) for kind, _ in INITS}
    found = {(r["workload"], r["tightness"]) for r in by["random"]}
    cells = sorted(found, key=lambda c: (c[0] != "poisson", c))
    for wl, t in cells:
        for kind, label in INITS:
            rows = [r for r in by[kind] if r["workload"] == wl and r["tightness"] == t]
            if not rows:
                continue
            pt = [r["policies"]["prompttuner"] for r in rows]
            inf = [r["policies"]["infless"] for r in rows]
            ratios = [b["cost"] / a["cost"] for a, b in zip(pt, inf, strict=True)]
            out.append(
                f"| {NAMES.get(wl, wl)}, {t:g} | {label} | {len(rows)} | "
                f"{100 * statistics.fmean(p['slo_violation_rate'] for p in pt):.1f} % | "
                f"{100 * statistics.fmean(p['slo_violation_rate'] for p in inf):.1f} % | "
                f"${statistics.fmean(p['cost'] for p in pt):,.0f} | "
                f"{statistics.fmean(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |"
            )
    return out


def pair_ratios() -> str:
    """The measured pairs the bank-init work is drawn from: bank / random steps."""
    data = json.loads(
        (RESULTS.parent.parent / "src" / "prompttuner" / "data" / "bank_stream_pairs.json").read_text()
    )
    r = [b / a for a, b in data["pairs"]]
    return (
        f"{len(r)} pairs: bank / random steps median {statistics.median(r):.2f}, "
        f"mean {statistics.fmean(r):.2f} (range {min(r):.2f}-{max(r):.2f})"
    )


if __name__ == "__main__":
    print("\n".join(table()))
    print()
    print(pair_ratios())
