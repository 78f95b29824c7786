"""``prompttuner simulate``: compare scheduling policies on a workload, or replay an ElasticFlow trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from prompttuner.cli.common import JSON_OPTION, console, emit_json, fail
from prompttuner.core.types import json_safe

COLUMNS = [
    ("slo_violation_rate", "SLO viol.", "{:.3f}"),
    ("declined", "declined", "{:.0f}"),
    ("missed", "missed", "{:.0f}"),
    ("cost", "cost $", "{:.1f}"),
    ("cost_gpu_hours", "GPU-h", "{:.1f}"),
    ("cost_per_met_job", "$ / met job", "{:.2f}"),
    ("utilisation", "util.", "{:.2f}"),
    ("queueing_delay_mean_s", "queue s", "{:.1f}"),
    ("cold_starts", "cold starts", "{:.0f}"),
]


def _floats(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"expected a comma-separated list of numbers, got {text!r}")
        raise


def _capacity(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in text.split(","):
        name, _, count = part.partition(":")
        if not count.isdigit():
            fail(f"--gpus expects TYPE:COUNT[,TYPE:COUNT], got {text!r}")
        out[name.strip()] = int(count)
    return out


def _table(summ: dict[str, Any], policies: list[str]) -> None:
    from rich.table import Table

    t = Table(title="policies on the same workload")
    t.add_column("policy")
    for _, head, _ in COLUMNS:
        t.add_column(head, justify="right")
    t.add_column("viol. vs PT", justify="right")
    t.add_column("cost / PT", justify="right")
    rat = summ.get("_versus_prompttuner", {})
    for name in policies:
        m = summ[name]
        r = rat.get(name)
        cells = [fmt.format(m[k]) for k, _, fmt in COLUMNS]
        if r:
            cost = f"{r['cost_ratio']:.2f}x" if r["cost_ratio"] is not None else "n/a"
            cells += [f"{r['violation_pp']:+.1f} pp, {r['violation_ratio_text']}", cost]
        else:
            cells += ["", ""]
        t.add_row(name, *cells)
    cb = summ.get("_clairvoyant_bound")
    if cb:
        cells = ["", "", "", f"{cb['cost']:.1f}", f"{cb['cost_gpu_hours']:.1f}"]
        t.add_row("clairvoyant bound", *cells, *[""] * (len(COLUMNS) + 2 - len(cells)))
    from rich.console import Console

    Console(stderr=True, width=max(console.width, 150)).print(t)


def register(app: typer.Typer) -> None:
    @app.command()
    def simulate(
        workload: str = typer.Option(
            "poisson", "--workload", help="poisson | itp | azure (arrival process), or a workload JSON file"
        ),
        trace: Path | None = typer.Option(
            None,
            "--trace",
            help="arrival trace file; its format (Microsoft ITP raw or Azure LLM) is read from its header",
        ),
        prediction: str = typer.Option(
            "measured",
            "--prediction",
            help="what policies know of each job's work: measured (the predictor's measured error), "
            "oracle (the truth, an ablation) or lognormal:SIGMA",
        ),
        load: float = typer.Option(0.5, "--load", help="offered GPU load as a fraction of the cluster"),
        slo_tightness: float = typer.Option(
            2.0, "--slo-tightness", help="deadline = arrival + K x runtime alone at the reference size"
        ),
        policies: str = typer.Option("prompttuner,infless,elasticflow,edf,reserved", "--policies"),
        jobs: int = typer.Option(1000, "--jobs", help="number of jobs to generate"),
        seed: int = typer.Option(0, "--seed"),
        gpus: str = typer.Option("a100:128", "--gpus", help="cluster: TYPE:COUNT[,TYPE:COUNT]"),
        init: str = typer.Option("random", "--init", help="init method of the jobs: random | text | bank"),
        bank_pairing: str = typer.Option(
            "rank",
            "--bank-pairing",
            help="--init bank|text: which measured (random, bank|text) pair scales a job's work, the one of "
            "its random-init difficulty rank (rank) or any (independent)",
        ),
        bank_deadline: str = typer.Option(
            "random",
            "--bank-deadline",
            help="--init bank|text, with measured pairs: a job's deadline from its random-init work "
            "(random: what its user can expect) or from its own work (own)",
        ),
        models: str | None = typer.Option(
            None, "--models", help="model mix MODEL:WEIGHT[,MODEL:WEIGHT] (default: the 0.5B-70B mix)"
        ),
        sweep_load: str | None = typer.Option(
            None, "--sweep-load", help="also sweep these loads, e.g. 0.3,0.6"
        ),
        sweep_slo: str | None = typer.Option(None, "--sweep-slo", help="also sweep these SLO tightnesses"),
        out: Path | None = typer.Option(None, "--out", help="folder for summary.json, job records, plots"),
        elasticflow_trace: Path | None = typer.Option(
            None, "--elasticflow-trace", help="replay an ElasticFlow-format trace (compatibility mode)"
        ),
        cluster: str = typer.Option("n8g8", "--cluster", help="compatibility mode: nXgY nodes x GPUs"),
        slot: int = typer.Option(240, "--slot", help="compatibility mode: scheduling slot in seconds"),
        policy: str = typer.Option("elasticflow", "--policy", help="compatibility mode: elasticflow | edf"),
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Compare scheduling policies on one workload (SLO violations, cost, utilisation, cold starts)."""
        if elasticflow_trace is not None:
            if not elasticflow_trace.is_file():
                fail(f"trace file not found: {elasticflow_trace}")
            if policy not in ("elasticflow", "edf"):
                fail(f"--policy must be elasticflow or edf in compatibility mode, not {policy!r}")
            from prompttuner.efsim import run_trace

            res = run_trace(str(elasticflow_trace), cluster=cluster, slot=slot, policy=policy)
            if json_out:
                emit_json(res)
            else:
                for k, v in res.items():
                    console.print(f"{k}: {v}")
            return

        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from prompttuner.scheduler import policy_names
        from prompttuner.sim.catalog import load_catalog
        from prompttuner.sim.prediction import ErrorModel
        from prompttuner.sim.runner import run_workload, sweep, write_outputs
        from prompttuner.sim.workload import (
            BANK_DEADLINES,
            BANK_PAIRINGS,
            WorkloadConfig,
            load_jobs,
            trace_kind,
        )

        names = [p.strip() for p in policies.split(",") if p.strip()]
        known = set(policy_names())
        for n in names:
            if n not in known and not n.startswith(("prompttuner-no-", "prompttuner-with-")):
                fail(f"unknown policy {n!r}; known: {', '.join(sorted(known))}")
        if init not in ("random", "text", "bank"):
            fail(f"--init must be random, text or bank, not {init!r}")
        if bank_pairing not in BANK_PAIRINGS:
            fail(f"--bank-pairing must be {' or '.join(BANK_PAIRINGS)}, not {bank_pairing!r}")
        if bank_deadline not in BANK_DEADLINES:
            fail(f"--bank-deadline must be {' or '.join(BANK_DEADLINES)}, not {bank_deadline!r}")
        if load <= 0 or slo_tightness <= 0 or jobs < 1:
            fail("--load and --slo-tightness must be positive and --jobs at least 1")
        cat = load_catalog()
        cap = _capacity(gpus)
        for g in cap:
            if g not in cat.gpu_types:
                fail(f"unknown GPU type {g!r}; known: {', '.join(sorted(cat.gpu_types))}")
        mix = None
        if models:
            mix = {}
            for part in models.split(","):
                name, _, w = part.partition(":")
                try:
                    mix[name.strip()] = float(w) if w else 1.0
                except ValueError:
                    fail(f"--models expects MODEL:WEIGHT[,MODEL:WEIGHT], got {models!r}")
                if name.strip() not in cat.models:
                    fail(f"unknown base LLM {name.strip()!r}; known: {', '.join(sorted(cat.models))}")
        fixed_jobs = None
        kind = workload
        if workload not in ("poisson", "itp", "azure"):
            path = Path(workload)
            if not path.is_file():
                fail(f"--workload must be poisson, itp, azure or a workload JSON file; {workload!r} is none")
            fixed_jobs = load_jobs(path)
            kind = "poisson"
        if trace is not None:
            if not trace.is_file():
                fail(f"trace file not found: {trace}")
            try:
                found = trace_kind(trace)
            except ValueError as e:
                fail(str(e))
                raise
            if fixed_jobs is not None:
                fail("--trace gives arrivals; a workload JSON file already has them: give one of the two")
            if workload == "poisson":
                kind = found  # the file decides (the default --workload is poisson)
            elif workload != found:
                fail(f"--workload {workload} but {trace} is a {found} trace")
        try:
            ErrorModel.parse(prediction)
        except ValueError as e:
            fail(str(e))
        cfg = WorkloadConfig(
            arrivals=kind,
            n_jobs=jobs,
            load=load,
            slo_tightness=slo_tightness,
            capacity=cap,
            init_mix={init: 1.0},
            ref_gpu=next(iter(cap)),
            seed=seed,
            trace=str(trace) if trace else None,
            prediction=prediction,
            bank_pairing=bank_pairing,
            bank_deadline=bank_deadline,
        )
        if mix:
            cfg.model_mix = mix
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} arrivals"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=jobs < 2000,
        ) as bar:
            tasks: dict[str, Any] = {}

            def progress(name: str, i: int, n: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=n)
                bar.update(tasks[name], completed=i)

            try:
                jl, results = run_workload(cfg, cat, names, jobs=fixed_jobs, progress=progress)
                sweeps: dict[str, list[dict[str, Any]]] = {}
                if sweep_load:
                    sweeps["load"] = sweep(cfg, cat, names, "load", _floats(sweep_load), progress)
                if sweep_slo:
                    sweeps["slo_tightness"] = sweep(
                        cfg, cat, names, "slo_tightness", _floats(sweep_slo), progress
                    )
            except (FileNotFoundError, ValueError, KeyError) as e:
                fail(str(e))
                return
        if out is not None:
            from prompttuner.sim.runner import summary as _s

            summ = write_outputs(out, cfg, cat, jl, results, sweeps)
        else:
            from prompttuner.sim.runner import summary as _s

            summ = _s(cfg, cat, jl, results)
            if sweeps:
                summ["_sweeps"] = sweeps
        if json_out:
            emit_json(json_safe(summ))
        else:
            _table(summ, names)
            if out is not None:
                console.print(f"wrote {out}/summary.json, per-job records and plots")
