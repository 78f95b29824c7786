"""The bank-init table of ``sim_headline.md``: PromptTuner and INFless on workloads whose jobs start from
random init, text init, from the bank, or half and half (a bank job's work: a random-init job's times one
measured (random, bank) pair's ratio of the service stream, ``data/bank_stream_pairs.json``; by default
the pair of the job's own random-init rank, ``--bank-pairing independent`` any pair, as before 2026-12-07;
a bank job's deadline from its random-init work, ``--bank-deadline own`` from its bank work, as before; a
text job's work likewise from the same jobs' measured (random, text) pairs).

The runs come from ``sim_comparison.py`` (5 seeds, 2,000 jobs, 128 A100, load 0.6)::

    python benchmarks/sim_comparison.py --init random --policies prompttuner,infless \\
        --workloads poisson,azure-conv --tightness 1,2 \\
        --runs benchmarks/results/sim_bank_init_random.runs.jsonl
    python benchmarks/sim_comparison.py --init text ... --runs .../sim_bank_init_text.runs.jsonl
    python benchmarks/sim_comparison.py --init bank ... --runs .../sim_bank_init_bank.runs.jsonl
    python benchmarks/sim_comparison.py --init random:0.5,bank:0.5 ... --runs .../sim_bank_init_mix.runs.jsonl
    python benchmarks/sim_comparison.py --init bank --bank-deadline own ... \\
        --runs .../sim_bank_init_bank_own.runs.jsonl
    python benchmarks/sim_comparison.py --init bank --bank-pairing independent --bank-deadline own ... \\
        --runs .../sim_bank_init_bank_indep_own.runs.jsonl    (and mix_indep_own: the rules before 2026-12-07)
    python benchmarks/sim_bank_init.py         # the table from the runs files, and the pairs' ratios
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
INITS = (
    ("random", "random"),
    ("text", "text"),
    ("bank", "bank"),
    ("mix", "half bank"),
    ("bank_own", "bank, deadline from its own work"),
    ("bank_indep_own", "bank, any pair, own deadline (before)"),
    ("mix_indep_own", "half bank, any pair, own deadline (before)"),
)
NAMES = {"poisson": "Poisson", "azure-conv": "Azure conv"}


def runs(kind: str) -> list[dict]:
    path = RESULTS / f"sim_bank_init_{kind}.runs.jsonl"
    if not path.exists():
        return []
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
    """The measured pairs the bank-init work is drawn from (bank / random steps), in thirds by their
    random-init steps, and the mean bank work over random work each pairing gives the simulator."""
    from prompttuner.sim.workload import BANK_PAIRS_FILE, load_work_model

    data = json.loads(BANK_PAIRS_FILE.read_text())
    pairs = sorted((float(a), float(b)) for a, b in data["pairs"])
    r = [b / a for a, b in pairs]
    k = len(pairs)
    thirds = [pairs[i * k // 3 : (i + 1) * k // 3] for i in range(3)]
    text = [(float(a), float(t)) for a, t in data.get("text_pairs", ())]
    none = Path("/nonexistent/prompttuner/no-profiles.json")  # the headline's --work distribution
    factor = {
        p: load_work_model(profiles_file=none, bank_pairing=p).init_factor["bank"]
        for p in ("rank", "independent")
    }
    text_factor = load_work_model(profiles_file=none).init_factor["text"]
    return (
        f"{k} pairs: bank / random steps median {statistics.median(r):.2f}, mean {statistics.fmean(r):.2f} "
        f"(range {min(r):.2f}-{max(r):.2f}); total bank steps / total random steps "
        f"{sum(b for _, b in pairs):.0f} / {sum(a for a, _ in pairs):.0f} = "
        f"{sum(b for _, b in pairs) / sum(a for a, _ in pairs):.2f}; by thirds of random-init steps "
        + ", ".join(
            f"{t[0][0]:g}-{t[-1][0]:g} steps: {sum(b for _, b in t) / sum(a for a, _ in t):.2f}"
            for t in thirds
        )
        + f". Mean bank work / mean random work in the simulator (--work distribution): rank pairing "
        f"{factor['rank']:.2f}, independent {factor['independent']:.2f}. Pairs longer than random init "
        f"(more than 2x): bank {sum(b > a for a, b in pairs)} ({sum(b > 2 * a for a, b in pairs)}), text "
        f"{sum(t > a for a, t in text)} ({sum(t > 2 * a for a, t in text)}); total text / random steps "
        f"{sum(t for _, t in text) / sum(a for a, _ in text):.2f}; text's mean work in the simulator (rank) "
        f"{text_factor:.2f}. Random-init steps: {sum(a == pairs[0][0] for a, _ in pairs)} pairs at "
        f"{pairs[0][0]:g}, {sum(a == data['budget'] for a, _ in pairs)} at the {data['budget']}-step budget"
    )


if __name__ == "__main__":
    print("\n".join(table()))
    print()
    print(pair_ratios())
