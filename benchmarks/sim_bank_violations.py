"""Where the bank-init workload's violations come from (``sim_bank_violations.md`` / ``.json``).

A bank workload is the random-init one with only the bank jobs' work changed (same arrivals, models,
deadlines and random-init work; ``sim.workload``, ``bank_deadline="random"``), so every job can be
followed from one workload to the other. The text-init workload is the same jobs again, each with a
measured (random, text) pair of its random-init rank. Each job is classed by what the bank's pair drawn
for it did to its work (bank / random steps: at most 0.5, 0.5-1, 1-2, above 2) and, per class and
policy, the page counts its violations with random init, text init and the bank. Settings as
``sim_bank_init.py``'s runs: 2,000 jobs, 128 A100, load 0.6, ``--work distribution``, ``--prediction
measured``, seeds 0-4::

    python benchmarks/sim_bank_violations.py          # ~5 min on a 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.runner import run_workload
from prompttuner.sim.workload import generate
from sim_comparison import headline_config, workloads

RESULTS = Path(__file__).parent / "results"
CLASSES = ((0.5, "<= 0.5x"), (1.0, "0.5-1x"), (2.0, "1-2x"), (float("inf"), "> 2x"))
POLICIES = ("prompttuner", "infless")


def klass(ratio: float) -> str:
    return next(name for hi, name in CLASSES if ratio <= hi + 1e-9)


def measure(names: list[str], tights: list[float], seeds: list[int]) -> list[dict]:
    cat = load_catalog()
    rows = []
    for name, arrivals, trace in (w for w in workloads() if w[0] in names):
        for tight in tights:
            for seed in seeds:
                cfg = headline_config(arrivals, trace, tight, seed)
                rand = generate(cfg, cat)
                bank = generate(replace(cfg, init_mix={"bank": 1.0}), cat)
                text = generate(replace(cfg, init_mix={"text": 1.0}), cat)
                assert [j.deadline for j in rand] == [j.deadline for j in bank] == [j.deadline for j in text]
                ratio = {b.job_id: b.work_steps / r.work_steps for r, b in zip(rand, bank, strict=True)}
                met: dict[str, dict[str, dict[str, bool]]] = {}
                for init, jobs in (("random", rand), ("text", text), ("bank", bank)):
                    _, res = run_workload(cfg, cat, POLICIES, jobs=jobs)
                    met[init] = {
                        p: {row["job_id"]: bool(row["met_slo"]) for row in r.jobs} for p, r in res.items()
                    }
                count: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
                for jid, x in ratio.items():
                    c = count[klass(x)]
                    c["jobs"] += 1
                    for p in POLICIES:
                        for init in ("random", "text", "bank"):
                            c[f"{p}_{init}"] += not met[init][p][jid]
                rows.append(
                    {
                        "workload": name,
                        "tightness": tight,
                        "seed": seed,
                        "classes": {k: dict(v) for k, v in count.items()},
                    }
                )
    return rows


def report(rows: list[dict]) -> list[str]:
    out = [
        "| workload | T | bank / random work | jobs | PromptTuner violations random / text / bank | "
        "INFless random / text / bank |",
        "|---|---|---|---|---|---|",
    ]
    cells = sorted({(r["workload"], r["tightness"]) for r in rows}, key=lambda c: (c[0] != "poisson", c))
    for wl, t in cells:
        sel = [r for r in rows if (r["workload"], r["tightness"]) == (wl, t)]
        tot: dict[str, int] = defaultdict(int)
        for _, cname in CLASSES:
            c: dict[str, int] = defaultdict(int)
            for r in sel:
                for k, v in r["classes"].get(cname, {}).items():
                    c[k] += v
                    tot[k] += v
            out.append(_line(wl, t, cname, c))
        out.append(_line(wl, t, "all", tot))
    return out


def _line(wl: str, t: float, cname: str, c: dict[str, int]) -> str:
    def pair(p: str) -> str:
        n = max(1, c["jobs"])
        return " / ".join(f"{c[f'{p}_{i}']}" for i in ("random", "text", "bank")) + (
            " (" + " / ".join(f"{100 * c[f'{p}_{i}'] / n:.1f}" for i in ("random", "text", "bank")) + " %)"
        )

    return f"| {wl} | {t:g} | {cname} | {c['jobs']} | {pair('prompttuner')} | {pair('infless')} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="poisson,azure-conv")
    ap.add_argument("--tightness", default="1,2")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--out", type=Path, default=RESULTS / "sim_bank_violations")
    a = ap.parse_args()
    t0 = time.process_time()
    rows = measure(
        a.workloads.split(","),
        [float(x) for x in a.tightness.split(",")],
        [int(x) for x in a.seeds.split(",")],
    )
    cpu = time.process_time() - t0
    a.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "cpu_s": round(cpu, 1)}, indent=1))
    md = [
        "# Where the bank-init workload's violations come from",
        "",
        "    python benchmarks/sim_bank_violations.py",
        "",
        (__doc__ or "").split("\n\n")[1].replace("\n", " "),
        "",
        "Violating jobs (totals over the seeds; declined + missed) of the same jobs with random init, text "
        "init and from the bank, by the class of the bank's pair drawn for the job (its bank / random "
        "steps).",
        "",
        *report(rows),
        "",
        f"{len(rows)} workload x tightness x seed runs, {cpu:.0f} CPU-s.",
    ]
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
