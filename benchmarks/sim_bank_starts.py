"""The Prompt Bank's start variants judged as a service meets them (``sim_bank_starts.md`` / ``.json``).

Every variant of the bank's start measured on both orders of the service stream (``results/bank_stream*/
bank_stream.json``: its 64 jobs' steps from the bank, with random and text init on the same data and seeds)
gives the simulator its own measured pairs (``bank_stream.sim_pairs``); each is run on the same jobs
(``sim.workload``: a bank job's work is its random-init work times the pair of its random-init rank, its
deadline from its random-init work) with PromptTuner and INFless: SLO violations and cost per variant,
beside random and text init on the same jobs.  The stream measures steps; this page asks what those steps
do to deadlines.  Settings as ``sim_bank_init.py``'s: 2,000 jobs, 128 A100, load 0.6, ``--work
distribution``, ``--prediction measured``, Poisson and Azure conv, tightness 1 and 2, seeds 0-4::

    python benchmarks/sim_bank_starts.py            # ~10 min on a 2-core CPU

The seeds redraw the simulated jobs over the same 64 measured pairs, so their spread leaves out the
stream's own sampling error; ``--bootstrap N`` resamples the stream's jobs for the two closest variants.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bank_stream import sim_pairs
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.runner import run_workload
from prompttuner.sim.workload import generate, load_work_model
from sim_comparison import headline_config, workloads

RESULTS = Path(__file__).parent / "results"
POLICIES = ("prompttuner", "infless")
# (name, summary, what it is); each summary holds both orders of the stream (bank_stream_sep ran the novel
# phase only: its stream rows are the former default's; bank_stream_cheapcheck ran order 0 only)
VARIANTS = (
    ("former default", "bank_stream.json", "bank.CHEAP, race of three (bank, text, random), no check"),
    ("near", "bank_stream_near/bank_stream.json", "bank.NEAR, race of three"),
    ("near + check", "bank_stream_check/bank_stream.json", "bank.NEAR, check at step 0, race of three"),
    ("default (race2)", "bank_stream_race2/bank_stream.json", "bank.NEAR, check, race of two (bank, text)"),
    (
        "fallback (replay)",
        "bank_stream_fallback/replay_summary.json",
        "the default, back to random init when 2 rows below the target at step 5 (replayed)",
    ),
    (
        "fallback (live)",
        "bank_stream_fallback/bank_stream.json",
        "the same, run live on both orders (the default from 2026-12-07 to 2026-12-08)",
    ),
    (
        "eval schedule (live)",
        "bank_stream_evalsched/bank_stream.json",
        "the race of two, the race's winner first evaluated at step 5 (the default since 2026-12-08)",
    ),
)


def pairs_file(summary: Path, folder: Path) -> Path:
    data = json.loads(summary.read_text())
    budget = int(data.get("settings", {}).get("max_steps", 50))
    out = folder / (summary.parent.name + ".json")
    out.write_text(json.dumps(sim_pairs(data["rows"], budget)))
    return out


def measure(
    names: list[str], tights: list[float], seeds: list[int], variants: list[str] | None = None
) -> dict:
    cat = load_catalog()
    none = Path("/nonexistent/prompttuner/no-profiles.json")  # --work distribution
    out: dict = {"cells": []}
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for name, rel, what in VARIANTS:
            if variants is not None and name not in variants and name != "default (race2)":
                continue
            f = pairs_file(RESULTS / rel, Path(tmp))
            wm = load_work_model(profiles_file=none, bank_pairs_file=f)
            pairs = wm.bank_pairs
            models[name] = wm
            out.setdefault("variants", []).append(
                {
                    "name": name,
                    "summary": rel,
                    "what": what,
                    "pairs": len(pairs),
                    "bank_over_random_total": sum(b for _, b in pairs) / sum(r for r, _ in pairs),
                    "longer_than_random": sum(b > r for r, b in pairs),
                    "over_2x_random": sum(b > 2 * r for r, b in pairs),
                    "mean_work_factor": wm.init_factor["bank"],
                }
            )
        for wl, arrivals, trace in (w for w in workloads() if w[0] in names):
            for tight in tights:
                for seed in seeds:
                    cfg = headline_config(arrivals, trace, tight, seed)
                    base = models["default (race2)"]  # random and text init do not depend on the variant
                    runs = {
                        "random": generate(cfg, cat, base),
                        "text": generate(replace(cfg, init_mix={"text": 1.0}), cat, base),
                    }
                    for name, wm in models.items():
                        runs[name] = generate(replace(cfg, init_mix={"bank": 1.0}), cat, wm)
                    deadlines = [j.deadline for j in runs["random"]]
                    assert all([j.deadline for j in jobs] == deadlines for jobs in runs.values())
                    cell = {"workload": wl, "tightness": tight, "seed": seed, "runs": {}}
                    for init, jobs in runs.items():
                        _, res = run_workload(cfg, cat, POLICIES, jobs=jobs)
                        cell["runs"][init] = {
                            p: {k: r.metrics[k] for k in ("slo_violation_rate", "declined", "missed", "cost")}
                            for p, r in res.items()
                        }
                    out["cells"].append(cell)
    return out


def bootstrap(pair: tuple[str, str], cells: list[tuple[str, float]], n: int, seed: int = 0) -> dict:
    """The stream's own sampling error: the 64 measured jobs resampled with replacement (the same jobs for
    both variants, matched by job and order), each resample run through the simulator (PromptTuner, seed 0
    of each cell); the difference in violation rate, first variant minus second, per resample."""
    cat = load_catalog()
    none = Path("/nonexistent/prompttuner/no-profiles.json")
    rows = {}
    for name, rel, _ in VARIANTS:
        if name in pair:
            data = json.loads((RESULTS / rel).read_text())
            rows[name] = {(x["job"], str(x["order"])): x for x in data["rows"] if "random_steps" in x}
    keys = sorted(set(rows[pair[0]]) & set(rows[pair[1]]))
    rng = random.Random(seed)
    out: dict = {"pair": list(pair), "jobs": len(keys), "resamples": n, "cells": {}}
    draws = [[rng.choice(keys) for _ in keys] for _ in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        for wl, tight in cells:
            arrivals, trace = next((w[1], w[2]) for w in workloads() if w[0] == wl)
            cfg = headline_config(arrivals, trace, tight, 0, init_mix={"bank": 1.0})
            diffs = []
            for k, draw in enumerate(draws):
                rates = []
                for name in pair:
                    f = Path(tmp) / f"b{k}.json"
                    f.write_text(json.dumps(sim_pairs([rows[name][key] for key in draw], 50)))
                    wm = load_work_model(profiles_file=none, bank_pairs_file=f)
                    _, res = run_workload(cfg, cat, ["prompttuner"], jobs=generate(cfg, cat, wm))
                    rates.append(res["prompttuner"].metrics["slo_violation_rate"])
                diffs.append(rates[0] - rates[1])
            out["cells"][f"{wl} T {tight:g}"] = diffs
    return out


def report(data: dict) -> list[str]:
    lines = [
        "| variant | what | pairs | bank / random steps (total) | longer than random (> 2x) | "
        "mean work in the simulator |",
        "|---|---|---|---|---|---|",
    ]
    for v in data["variants"]:
        lines.append(
            f"| {v['name']} | {v['what']} | {v['pairs']} | {v['bank_over_random_total']:.2f} | "
            f"{v['longer_than_random']} ({v['over_2x_random']}) | {v['mean_work_factor']:.2f}x |"
        )
    lines += [
        "",
        "| workload | T | init | PromptTuner violations (min-max over seeds) | PromptTuner cost $ | "
        "INFless violations | INFless cost $ |",
        "|---|---|---|---|---|---|---|",
    ]
    cells = sorted(
        {(c["workload"], c["tightness"]) for c in data["cells"]}, key=lambda c: (c[0] != "poisson", c)
    )
    inits = ["random", "text", *(v["name"] for v in data["variants"])]
    for wl, t in cells:
        sel = [c for c in data["cells"] if (c["workload"], c["tightness"]) == (wl, t)]
        for init in inits:

            def col(p: str, k: str, sel: list = sel, init: str = init) -> list[float]:
                return [c["runs"][init][p][k] for c in sel]

            pv, iv = col("prompttuner", "slo_violation_rate"), col("infless", "slo_violation_rate")
            lines.append(
                f"| {wl} | {t:g} | {init} | {100 * statistics.fmean(pv):.1f} % ({100 * min(pv):.1f}-"
                f"{100 * max(pv):.1f}) | {statistics.fmean(col('prompttuner', 'cost')):,.0f} | "
                f"{100 * statistics.fmean(iv):.1f} % | {statistics.fmean(col('infless', 'cost')):,.0f} |"
            )
    boot = data.get("bootstrap")
    if boot:
        a, b = boot["pair"]
        lines.append("")
        for wl, t in cells:
            sel = [c for c in data["cells"] if (c["workload"], c["tightness"]) == (wl, t)]
            lower = sum(
                c["runs"][a]["prompttuner"]["slo_violation_rate"]
                < c["runs"][b]["prompttuner"]["slo_violation_rate"]
                for c in sel
            )
            lines.append(
                f"- {wl} T {t:g}: PromptTuner violates less from {a} than from {b} in {lower} of "
                f"{len(sel)} seeds"
            )
        lines += [
            "",
            f"Sampling error of the stream ({boot['resamples']} resamples of its {boot['jobs']} jobs, the "
            f"same jobs for both, PromptTuner, seed 0): violations of {a} minus {b}, in percentage points.",
            "",
            "| cell | median | 5th-95th percentile | resamples where the first is lower |",
            "|---|---|---|---|",
        ]
        for cell, diffs in boot["cells"].items():
            d = sorted(100 * x for x in diffs)
            lo, hi = d[int(0.05 * (len(d) - 1))], d[int(round(0.95 * (len(d) - 1)))]
            lines.append(
                f"| {cell} | {statistics.median(d):+.1f} | {lo:+.1f} to {hi:+.1f} | "
                f"{sum(x < 0 for x in d)} of {len(d)} |"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="poisson,azure-conv")
    ap.add_argument("--tightness", default="1,2")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--out", type=Path, default=RESULTS / "sim_bank_starts")
    ap.add_argument("--bootstrap", type=int, default=40, help="resamples of the stream's jobs (0: none)")
    ap.add_argument("--variants", default=None, help="comma-separated names (default: all; race2 always)")
    ap.add_argument("--bootstrap-pair", default="near + check,default (race2)", help="the two variants")
    ap.add_argument("--from-json", action="store_true", help="rewrite the page from the committed .json only")
    a = ap.parse_args()
    if a.from_json:
        data = json.loads(a.out.with_suffix(".json").read_text())
        write(a.out, data)
        return
    t0 = time.process_time()
    data = measure(
        a.workloads.split(","),
        [float(x) for x in a.tightness.split(",")],
        [int(x) for x in a.seeds.split(",")],
        a.variants.split(",") if a.variants else None,
    )
    if a.bootstrap:
        data["bootstrap"] = bootstrap(
            tuple(a.bootstrap_pair.split(",")),  # type: ignore[arg-type]
            [("poisson", 1.0), ("poisson", 2.0)],
            a.bootstrap,
        )
    data["cpu_s"] = round(time.process_time() - t0, 1)
    if a.variants or a.out != RESULTS / "sim_bank_starts":
        data["args"] = f" --variants '{a.variants}' --bootstrap-pair '{a.bootstrap_pair}' --out {_rel(a.out)}"
    a.out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    write(a.out, data)


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def write(out: Path, data: dict) -> None:
    md = [
        "# The bank's start variants judged as a service meets them",
        "",
        "    python benchmarks/sim_bank_starts.py" + data.get("args", ""),
        "",
        (__doc__ or "").split("\n\n")[1].replace("\n", " "),
        "",
        *report(data),
        "",
        f"{len(data['cells'])} workload x tightness x seed cells, "
        f"{len(data['variants']) + 2} workloads each, "
        f"{data['cpu_s']:.0f} CPU-s.",
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
