"""Run several policies on one workload, compare them, and write summaries, records and plots.

Used by ``prompttuner simulate`` and the ``benchmarks/sim_*.py`` scripts, so the numbers in the results
files and the CLI come from the same code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from prompttuner.core.types import GPUType, JobSpec, ModelProfile
from prompttuner.scheduler import make_policy
from prompttuner.scheduler.base import Policy
from prompttuner.sim.catalog import Catalog
from prompttuner.sim.engine import SimResult, Simulator
from prompttuner.sim.prediction import ErrorModel, predict_jobs
from prompttuner.sim.workload import WorkloadConfig, generate

RESERVED_HEADROOM = 1.25  # the naive operator reserves 25% above the mean offered load
BASELINES = ("infless", "elasticflow", "edf", "reserved")


def clairvoyant(
    jobs: Sequence[JobSpec],
    models: Mapping[str, ModelProfile],
    gpu_types: Mapping[str, GPUType],
    capacity: Mapping[str, int],
    slowdown: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Lower bound on cost: each job's true work at its true step time and its most efficient replica
    count, no idle, no cold start (``jobs`` carry their true work)."""
    cost = 0.0
    gpu_s = 0.0
    for j in jobs:
        prof = models[j.model]
        best: tuple[float, float] | None = None
        for gpu in capacity:
            if gpu not in prof.step_time_s:
                continue
            for n in range(1, prof.max_replicas + 1):
                slow = (slowdown or {}).get(j.job_id, 1.0)
                g_s = n * prof.gpus_per_replica * j.work_steps * slow / prof.throughput(gpu, n)
                c = g_s * gpu_types[gpu].price_per_hour / 3600.0
                if best is None or c < best[0]:
                    best = (c, g_s)
        if best is not None:
            cost += best[0]
            gpu_s += best[1]
    return {"cost": cost, "cost_gpu_hours": gpu_s / 3600.0}


def reserved_pool(cfg: WorkloadConfig, catalog: Catalog, jobs: Sequence[JobSpec]) -> dict[str, int]:
    """A static pool sized like a careful naive operator would: mean demand x headroom, split by model."""
    demand: dict[str, float] = {}
    for j in jobs:
        prof = catalog.models[j.model]
        demand[j.model] = demand.get(j.model, 0.0) + (
            j.work_steps * prof.step_time(cfg.ref_gpu, 1) * prof.gpus_per_replica
        )
    span = max(1.0, max(j.arrival for j in jobs) - min(j.arrival for j in jobs)) if jobs else 1.0
    total_gpus = sum(cfg.capacity.values())
    pool_gpus = min(total_gpus, sum(demand.values()) / span * RESERVED_HEADROOM)
    tot = sum(demand.values()) or 1.0
    pool: dict[str, int] = {}
    for m, d in demand.items():
        g = catalog.models[m].gpus_per_replica
        pool[m] = max(1, round(pool_gpus * d / tot / g))
    # never more than the cluster holds
    while sum(pool[m] * catalog.models[m].gpus_per_replica for m in pool) > total_gpus:
        m = max(pool, key=lambda k: pool[k] * catalog.models[k].gpus_per_replica)
        pool[m] -= 1
    return pool


def build_policy(name: str, cfg: WorkloadConfig, catalog: Catalog, jobs: Sequence[JobSpec]) -> Policy:
    """A policy by name; ``prompttuner-no-X`` switches off one mechanism (the ablation)."""
    if name == "reserved":
        return make_policy("reserved", pool=reserved_pool(cfg, catalog, jobs), gpu_type=cfg.ref_gpu)
    if name.startswith("prompttuner-no-"):
        knob = name[len("prompttuner-no-") :].replace("-", "_")
        return make_policy("prompttuner", **{knob: False})
    if name.startswith("prompttuner-with-"):
        knob = name[len("prompttuner-with-") :].replace("-", "_")
        return make_policy("prompttuner", **{knob: True})
    return make_policy(name)


def simulate(
    name: str,
    jobs: Sequence[JobSpec],
    cfg: WorkloadConfig,
    catalog: Catalog,
    progress: Callable[[int, int], None] | None = None,
    incremental: bool = True,
    *,
    policy: Policy | None = None,
    simulator: type[Simulator] = Simulator,
) -> SimResult:
    """One policy on ``jobs``; ``incremental=False`` hands the policy snapshots without the simulator's
    live index, so it plans from the snapshot alone (the reference the incremental path must equal).

    ``policy``: a policy built by the caller (e.g. with keyword arguments no name carries), run under
    ``name``; ``simulator``: a subclass of the simulator that accounts for more (benchmarks), driven
    the same way."""
    estimates = ErrorModel.parse(cfg.prediction)
    seen, true, slow = predict_jobs(jobs, estimates, cfg.seed)  # the policies see estimates only
    if policy is None:
        policy = build_policy(name, cfg, catalog, seen)
    sim = simulator(
        policy,
        seen,
        catalog.models,
        catalog.gpu_types,
        cfg.capacity,
        true_work=true,
        slowdown=slow,
        estimates=estimates if cfg.refresh else None,
        progress=progress,
        incremental=incremental,
    )
    res = sim.run()
    res.policy = name
    m = res.metrics
    met = m["jobs"] - m["missed"] - m["declined"] - m["unfinished"]
    m["cost_per_met_job"] = m["cost"] / met if met > 0 else math.inf
    return res


MIN_VIOLATING_JOBS = 10  # a violation ratio is printed only where both sides have at least this many


def violating_jobs(m: Mapping[str, float]) -> int:
    return int(round(m["missed"] + m["declined"] + m["unfinished"]))


def versus(
    metrics: Mapping[str, Mapping[str, float]], ref: str = "prompttuner", min_jobs: int = MIN_VIOLATING_JOBS
) -> dict[str, dict[str, Any]]:
    """Each baseline against ``ref`` (PromptTuner): the difference of violation rates in percentage
    points, the violating jobs of both, their ratio only where both have at least ``min_jobs``
    violating jobs (else None, and the text says ``n/a (x vs y jobs)``), and the cost ratios (>1: the
    baseline costs more)."""
    out: dict[str, dict[str, Any]] = {}
    if ref not in metrics:
        return out
    r = metrics[ref]
    rv = violating_jobs(r)
    for name, m in metrics.items():
        if name == ref:
            continue
        bv = violating_jobs(m)
        ratio = bv / rv if rv >= min_jobs and bv >= min_jobs else None
        out[name] = {
            "violation_pp": 100.0 * (m["slo_violation_rate"] - r["slo_violation_rate"]),
            "violating_jobs": bv,
            "violating_jobs_ref": rv,
            "violation_ratio": ratio,
            "violation_ratio_text": f"{ratio:.2f}x" if ratio is not None else f"n/a ({bv} vs {rv} jobs)",
            "cost_ratio": m["cost"] / r["cost"] if r["cost"] > 0 else None,
            "cost_per_met_job_ratio": (
                m["cost_per_met_job"] / r["cost_per_met_job"]
                if math.isfinite(r.get("cost_per_met_job", math.inf))
                and math.isfinite(m.get("cost_per_met_job", math.inf))
                and r["cost_per_met_job"] > 0
                else None
            ),
        }
    return out


def run_workload(
    cfg: WorkloadConfig,
    catalog: Catalog,
    policies: Sequence[str],
    jobs: Sequence[JobSpec] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[list[JobSpec], dict[str, SimResult]]:
    jobs = list(jobs) if jobs is not None else generate(cfg, catalog)
    results: dict[str, SimResult] = {}
    for name in policies:
        cb = (lambda i, n, _name=name: progress(_name, i, n)) if progress else None
        results[name] = simulate(name, jobs, cfg, catalog, progress=cb)
    return jobs, results


def summary(
    cfg: WorkloadConfig, catalog: Catalog, jobs: Sequence[JobSpec], results: Mapping[str, SimResult]
) -> dict[str, Any]:
    out: dict[str, Any] = {name: r.metrics for name, r in results.items()}
    _, _, slow = predict_jobs(jobs, ErrorModel.parse(cfg.prediction), cfg.seed)
    out["_clairvoyant_bound"] = clairvoyant(jobs, catalog.models, catalog.gpu_types, cfg.capacity, slow)
    out["_versus_prompttuner"] = versus({n: r.metrics for n, r in results.items()})
    meta = asdict(replace(cfg))
    meta["n_jobs"] = len(jobs)
    out["_workload"] = meta
    return out


def write_outputs(
    out_dir: Path,
    cfg: WorkloadConfig,
    catalog: Catalog,
    jobs: Sequence[JobSpec],
    results: Mapping[str, SimResult],
    sweeps: Mapping[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    summ = summary(cfg, catalog, jobs, results)
    if sweeps:
        summ["_sweeps"] = sweeps
    (out_dir / "summary.json").write_text(json.dumps(summ, indent=2, default=_jsonable))
    for name, r in results.items():
        with open(out_dir / f"jobs_{name}.jsonl", "w") as f:
            for row in r.jobs:
                f.write(json.dumps(row, default=_jsonable) + "\n")
    plot_all(out_dir, results, sweeps or {})
    return summ


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return None
    return str(x)


def sweep(
    base: WorkloadConfig,
    catalog: Catalog,
    policies: Sequence[str],
    field: str,
    values: Sequence[float],
    progress: Callable[[str, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every policy at each value of ``load`` or ``slo_tightness``; rows of metrics."""
    rows: list[dict[str, Any]] = []
    for v in values:
        if field == "load":
            cfg = replace(base, load=v)
        elif field == "slo_tightness":
            cfg = replace(base, slo_tightness=v)
        else:
            raise ValueError(f"cannot sweep {field!r}; use load or slo_tightness")
        _, res = run_workload(cfg, catalog, policies, progress=progress)
        rows.append({field: v, **{n: r.metrics for n, r in res.items()}})
    return rows


def plot_all(
    out_dir: Path, results: Mapping[str, SimResult], sweeps: Mapping[str, list[dict[str, Any]]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if results:
        _plot_runs(plt, out_dir, results)
    _plot_sweeps(plt, out_dir, sweeps)


def _plot_runs(plt: Any, out_dir: Path, results: Mapping[str, SimResult]) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, r in results.items():
        tl = r.timeline
        step = max(1, len(tl) // 4000)
        ax.step([t / 3600 for t, _, _ in tl[::step]], [h for _, h, _ in tl[::step]], where="post", label=name)
    ax.set_xlabel("time (h)")
    ax.set_ylabel("GPUs held")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "gpus_over_time.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        xs = sorted(
            (row["finish"] - row["deadline"]) / max(1e-9, row["deadline"] - row["arrival"])
            for row in r.jobs
            if row["finish"] is not None and row["phase"] == "succeeded"
        )
        if xs:
            ax.plot(xs, [(i + 1) / len(r.jobs) for i in range(len(xs))], label=name)
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("(finish - deadline) / (deadline - arrival)")
    ax.set_ylabel("fraction of all jobs")
    ax.set_xlim(-1.0, 1.0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "finish_vs_deadline_cdf.png", dpi=110)
    plt.close(fig)


def _plot_sweeps(plt: Any, out_dir: Path, sweeps: Mapping[str, list[dict[str, Any]]]) -> None:
    for field, rows in sweeps.items():
        if not rows:
            continue
        names = [k for k in rows[0] if k != field]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for name in names:
            xs = [row[field] for row in rows]
            axes[0].plot(xs, [row[name]["slo_violation_rate"] for row in rows], marker="o", label=name)
            axes[1].plot(xs, [row[name]["cost"] for row in rows], marker="o", label=name)
        axes[0].set_ylabel("SLO violation rate")
        axes[1].set_ylabel("cost ($)")
        for a in axes:
            a.set_xlabel(field)
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(out_dir / f"sweep_{field}.png", dpi=110)
        plt.close(fig)
