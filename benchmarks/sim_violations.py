"""Where the violations come from: every violating job of a run, put in the first class that explains it.

Settings of the comparison (``sim_comparison.py``): 128 A100, load 0.6, 2,000 jobs, random init,
``--work distribution``, SLO tightness 1.0 unless ``--tightness``, seeds 0-4.  Each workload is run with
the measured prediction error (the default) and with the oracle (the policy sees the true work), so a
job can be charged to the prediction when only the hidden work made it miss.  Classes, in order:

1. ``alone, warm``: even alone on an empty cluster, on already warm workers of the best GPU type with
   the most replicas its model takes, started at arrival, its true work at its true step time ends after
   the deadline.  No scheduler meets these.
2. ``prediction``: the same job met its SLO in the oracle run of the same seed: only the hidden work
   made it violate.
3. ``alone, cold``: feasible on warm workers, not after a cold start: only a worker already warm at
   arrival meets it (the pool's job; a cold-starting system cannot), and the oracle run missed it too.
4. ``contention``: the rest: the job could have been met alone even after a cold start, and the oracle
   run missed it too; it lost to other jobs for capacity.

Beside the classes: the violation rate by the offered load around a job's arrival (the smallest
GPU-seconds of the jobs arriving within one SLO length of it, either side, over the capacity's
GPU-seconds in those two SLO lengths), which shows how much of it the arrival bursts carry.

    python benchmarks/sim_violations.py [--workloads poisson,itp-cluster04] [--policies prompttuner,infless]
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import platform
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from prompttuner.core.types import JobSpec, ModelProfile
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.prediction import ErrorModel, predict_jobs
from prompttuner.sim.runner import simulate
from prompttuner.sim.workload import generate

OUT = Path(__file__).resolve().parent / "results"
CLASSES = ["alone, warm", "prediction", "alone, cold", "contention"]
LOAD_BINS = [0.0, 0.5, 1.0, 2.0, 4.0]


def alone_finish(prof: ModelProfile, gpus: dict[str, int], work: float, slow: float, cold: bool) -> float:
    """Seconds from arrival to finish alone on an empty cluster at the best GPU type and replica count."""
    best = float("inf")
    for gpu, cap in gpus.items():
        if gpu not in prof.step_time_s:
            continue
        n_max = min(prof.max_replicas, cap // prof.gpus_per_replica)
        for n in range(1, n_max + 1):
            t = work * slow / prof.throughput(gpu, n) + (prof.cold_start_s[gpu] if cold else 0.0)
            best = min(best, t)
    return best


def min_gpu_s(prof: ModelProfile, gpus: dict[str, int], work: float) -> float:
    return min(prof.gpus_per_replica * work / prof.throughput(g, 1) for g in gpus if g in prof.step_time_s)


def offered_load(
    jobs: list[JobSpec], models: dict[str, ModelProfile], gpus: dict[str, int]
) -> dict[str, float]:
    """Per job: the smallest GPU-seconds of the jobs arriving within one SLO length (deadline - arrival)
    of its arrival, either side, over the capacity's GPU-seconds in those two SLO lengths."""
    js = sorted(jobs, key=lambda j: j.arrival)
    t = [j.arrival for j in js]
    pref = [0.0]
    for j in js:
        pref.append(pref[-1] + min_gpu_s(models[j.model], gpus, j.work_steps))
    cap = sum(gpus.values())
    out = {}
    for j in js:
        span = max(1.0, j.deadline - j.arrival)
        lo = bisect.bisect_left(t, j.arrival - span)
        hi = bisect.bisect_right(t, j.arrival + span)
        out[j.job_id] = (pref[hi] - pref[lo]) / (cap * 2.0 * span)
    return out


def analyse(
    name: str, arrivals: str, trace: str | None, tight: float, seed: int, policies: list[str]
) -> dict[str, Any]:
    from sim_comparison import headline_config  # benchmarks/ is on the path

    cat = load_catalog()
    cfg = headline_config(arrivals, trace, tight, seed)
    jobs = generate(cfg, cat)  # true work
    _, _, slow = predict_jobs(jobs, ErrorModel.parse(cfg.prediction), cfg.seed)
    gpus = dict(cfg.capacity)
    load = offered_load(jobs, dict(cat.models), gpus)
    by_id = {j.job_id: j for j in jobs}
    out: dict[str, Any] = {"workload": name, "tightness": tight, "seed": seed, "jobs": len(jobs)}
    for pol in policies:
        measured = simulate(pol, jobs, cfg, cat)
        oracle_cfg = dataclasses.replace(cfg, prediction="oracle")
        oracle = simulate(pol, jobs, oracle_cfg, cat)
        met_oracle = {r["job_id"] for r in oracle.jobs if r["met_slo"]}
        classes: Counter[str] = Counter()
        declined: Counter[str] = Counter()
        bins: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for r in measured.jobs:
            j = by_id[r["job_id"]]
            b = bisect.bisect_right(LOAD_BINS, load[j.job_id]) - 1
            bins[b][0] += 1
            if r["met_slo"]:
                continue
            bins[b][1] += 1
            prof = cat.models[j.model]
            left = j.deadline - j.arrival
            s = slow.get(j.job_id, 1.0)
            if alone_finish(prof, gpus, j.work_steps, s, cold=False) > left:
                c = "alone, warm"
            elif j.job_id in met_oracle:
                c = "prediction"
            elif alone_finish(prof, gpus, j.work_steps, s, cold=True) > left:
                c = "alone, cold"
            else:
                c = "contention"
            classes[c] += 1
            if "declined" in r["phase"].lower():
                declined[c] += 1
        out[pol] = {
            "violations": sum(classes.values()),
            "oracle_violations": len(jobs) - len(met_oracle),
            "classes": dict(classes),
            "declined": dict(declined),
            "by_load": {f"{LOAD_BINS[b]:g}+": v for b, v in sorted(bins.items())},
        }
    return out


def workloads() -> dict[str, tuple[str, str | None]]:
    """The comparison's workloads by name: (arrivals, trace file)."""
    from sim_comparison import workloads as comparison_workloads  # benchmarks/ is on the path

    return {name: (arrivals, trace) for name, arrivals, trace in comparison_workloads()}


def _doc_paragraphs() -> list[str]:
    """The module text's settings, classes (a list, kept as lines) and load paragraphs, each then a blank."""
    parts = (__doc__ or "").split("\n\n")[1:4]
    out: list[str] = []
    for part in parts:
        out += [part if part.lstrip().startswith("1.") else part.replace("\n", " "), ""]
    return out


def report(rows: list[dict[str, Any]], policies: list[str], seeds: int) -> list[str]:
    md = [
        "# Where the violations come from",
        "",
        "    python benchmarks/sim_violations.py",
        "",
        *_doc_paragraphs(),
        "Each violating job of the measured-prediction run in the first class that explains it "
        f"(totals over {seeds} seeds, 2,000 jobs each; share of the violations in brackets).",
        "",
        "| workload | T | policy | violations | "
        + " | ".join(CLASSES)
        + " | declined of them | oracle run |",
        "|---|---|---|---|" + "---|" * len(CLASSES) + "---|---|",
    ]
    by: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["workload"], r["tightness"])].append(r)
    load_md = [
        "",
        "Violation rate by the offered load around a job's arrival (jobs in that bin in brackets):",
        "",
        "| workload | T | policy | "
        + " | ".join(f"load {a:g}-{b:g}" for a, b in zip(LOAD_BINS, LOAD_BINS[1:], strict=False))
        + f" | load {LOAD_BINS[-1]:g}+ |",
        "|---|---|---|" + "---|" * len(LOAD_BINS),
    ]
    for (wl, t), rs in sorted(by.items()):
        for p in policies:
            ps = [r[p] for r in rs if p in r]
            v = sum(x["violations"] for x in ps)
            cls = Counter()
            dec = 0
            for x in ps:
                cls.update(x["classes"])
                dec += sum(x["declined"].values())
            ov = sum(x["oracle_violations"] for x in ps)
            cells = [f"{cls[c]} ({100 * cls[c] / v:.0f} %)" if v else "0" for c in CLASSES]
            md.append(f"| {wl} | {t:g} | {p} | {v} | " + " | ".join(cells) + f" | {dec} | {ov} |")
            bins: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for x in ps:
                for k, (n, bad) in x["by_load"].items():
                    bins[k][0] += n
                    bins[k][1] += bad
            cells2 = []
            for a in LOAD_BINS:
                n, bad = bins.get(f"{a:g}+", [0, 0])
                cells2.append(f"{100 * bad / n:.1f} % ({n})" if n else "-")
            load_md.append(f"| {wl} | {t:g} | {p} | " + " | ".join(cells2) + " |")
    return md + load_md


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--workloads", default="poisson,itp-cluster01,itp-cluster04,itp-cluster10,azure-conv")
    ap.add_argument("--policies", default="prompttuner,infless")
    ap.add_argument("--tightness", default="1.0")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--out", type=Path, default=OUT / "sim_violations")
    a = ap.parse_args()
    wl = workloads()
    pols = a.policies.split(",")
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = []
    t0 = time.process_time()
    for name in a.workloads.split(","):
        arrivals, trace = wl[name]
        for t in (float(x) for x in a.tightness.split(",")):
            for s in seeds:
                rows.append(analyse(name, arrivals, trace, t, s, pols))
                print(name, t, s, {p: rows[-1][p]["classes"] for p in pols}, flush=True)
    md = report(rows, pols, len(seeds))
    md += [
        "",
        f"Machine: {platform.machine()}, shared 2-core CPU; {time.process_time() - t0:.0f} CPU-s in all; "
        "the simulator is deterministic.",
        f"Spread: per-seed violation counts of {pols[0]}: "
        + "; ".join(
            f"{n}: " + ", ".join(str(r[pols[0]]["violations"]) for r in rows if r["workload"] == n)
            for n in dict.fromkeys(r["workload"] for r in rows)
        ),
    ]
    a.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
