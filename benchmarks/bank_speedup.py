"""Speed-up of bank init on unseen tasks: leave one of the 16 shared tasks out, bank the other 15.

Everything uses the engine settings and per-task targets of the convergence profiles
(``src/prompttuner/data/convergence_profiles.json``, made by ``benchmarks/convergence_profiles.py``), whose
random-init and text-init runs (two seeds each) are the baselines, and whose tuned prompts are the bank's
raw material:

1. *Sources*: per task, the better (final validation accuracy) of its two seed-0 profile prompts
   (random and text init): one bank entry per task, 16 in all.
2. *Bank runs*: for each task T and seed s, a fresh bank of the 15 other tasks' entries (T never sees its
   own); T's job asks it exactly as ``prompttuner tune --init bank:DIR`` does (``bank.select_init``:
   default probe budget on T's own training rows and label words, T's text init probed beside the
   candidates as the fallback) and is tuned from the answer to T's target.
3. *Hindsight* (first seed): every entry of T's bank scored at step 0 on T's validation rows; then T is
   tuned from the ``--hindsight-top`` entries with the best step-0 accuracy (the bank's own choice is
   already tuned), each run capped at the fewest steps seen so far (it could not be the best beyond them).
   The best of these is the upper bound of selection from that bank (exact when an entry scores the
   target at step 0; otherwise over the top entries by step-0 accuracy).

Runs append one JSON line each to ``<out>.runs.jsonl``; ``--workers`` processes (1 torch thread each)
take the tasks round-robin; finished runs are skipped, so the benchmark resumes after an interruption.

    nice -n 10 python benchmarks/bank_speedup.py --workers 2            # runs (resumable)
    python benchmarks/bank_speedup.py --summarize --write-data          # tables + data/bank_speedup.json
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_OUT = RESULTS / "bank_speedup"
PROFILES = ROOT / "src" / "prompttuner" / "data" / "convergence_profiles.json"


def profiles(args: argparse.Namespace) -> dict[str, Any]:
    return json.loads(Path(args.profiles).read_text())


def config_for(
    st: dict[str, Any], init: Any, seed: int, target: float | None, max_steps: int | None = None
) -> Any:
    """The profiles' engine settings; ``lr`` stays the engine's default (cold 0.03, warm 0.003).

    ``init``: an init value, a tensor (a warm start) or a string form (``tuning.parse_init``)."""
    import torch

    from prompttuner.tuning import TensorInit, TuningConfig, parse_init

    if isinstance(init, str):
        init = parse_init(init)
    elif isinstance(init, torch.Tensor):
        init = TensorInit(init)
    return TuningConfig(
        num_virtual_tokens=st["num_virtual_tokens"],
        batch_size=st["batch_size"],
        seed=seed,
        max_length=st["max_length"],
        eval_every=st["eval_every"],
        eval_size=st["eval_size"],
        target_accuracy=target,
        max_steps=st["max_steps"] if max_steps is None else max_steps,
        init=init,
    )


def source_of(args: argparse.Namespace, task: str) -> tuple[str, Path, dict[str, Any]]:
    """The better seed-0 profile prompt of ``task``: ``(run key, file, metadata)``."""
    from prompttuner.tuning import load_prompt

    best: tuple[float, str, Path, dict[str, Any]] | None = None
    for init in ("random", "text"):
        f = Path(args.prompts_dir) / task / f"{init}-seed0" / "prompt.safetensors"
        if not f.exists():
            continue
        meta = load_prompt(f)[1]
        score = float(meta.get("accuracy") or 0.0)
        if best is None or score > best[0]:
            best = (score, f"{init}-seed0", f, meta)
    if best is None:
        raise FileNotFoundError(f"no seed-0 profile prompt of {task} under {args.prompts_dir}")
    return best[1], best[2], best[3]


def wait_for_sources(args: argparse.Namespace, tasks: list[str]) -> None:
    """Both seed-0 profile prompts of every task (the profiles script may still be writing them)."""
    want = [
        Path(args.prompts_dir) / t / f"{i}-seed0" / "prompt.safetensors"
        for t in tasks
        for i in ("random", "text")
    ]
    end = time.time() + args.wait_s
    while not all(f.exists() for f in want):
        if time.time() > end:
            raise TimeoutError(f"profile prompts missing: {[str(f) for f in want if not f.exists()]}")
        time.sleep(15)  # written by benchmarks/convergence_profiles.py, running beside this


def build_loo_bank(
    args: argparse.Namespace, loaded: Any, held_out: str, tasks: list[str]
) -> tuple[Path, list[str]]:
    """A fresh bank of the other tasks' source prompts; returns its folder and entry names."""
    import shutil

    from prompttuner.bank import NewEntry, PromptBank
    from prompttuner.tuning import load_prompt, load_task

    folder = Path(args.work) / "banks" / f"loo-{held_out}-{os.getpid()}"
    if folder.exists():
        shutil.rmtree(folder)
    items, names = [], []
    for name in tasks:
        if name == held_out:
            continue
        key, f, meta = source_of(args, name)
        task = load_task(Path(args.data) / name)
        items.append(
            NewEntry(
                tensor=load_prompt(f)[0],
                model=loaded.name,
                task_description=task.description,
                labels=task.labels,
                accuracy=meta.get("accuracy"),
                steps=meta.get("steps"),
                task_name=name,
                sample_texts=[e.text for e in task.train[:8]],
                extra={"run": key},
            )
        )
        names.append(f"{name}/{key}")
    with PromptBank(folder) as bank:
        bank.add_many(items)
    return folder, names


def tune(
    loaded: Any,
    task: Any,
    st: dict[str, Any],
    init: Any,
    seed: int,
    target: float,
    max_steps: int | None = None,
) -> dict[str, Any]:
    from prompttuner.tuning import PromptTrainer

    return train(PromptTrainer(loaded, task, config_for(st, init, seed, target, max_steps)))


def train(trainer: Any) -> dict[str, Any]:
    res = trainer.train_to_target()
    return {
        "reached": res.reached,
        "steps": res.steps,
        "steps_to_target": res.steps if res.reached else None,
        "accuracy": res.accuracy,
        "best_accuracy": res.best_accuracy,
        "step0_accuracy": res.curve[0].val_accuracy,
        "wall_s": round(res.wall_s, 2),
        "curve": [[p.step, round(p.val_accuracy, 4), round(p.wall_s, 2)] for p in res.curve],
        "lr": trainer.lr,
    }


def read_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def bank_run(args: argparse.Namespace, loaded: Any, name: str, seed: int, tasks: list[str]) -> dict[str, Any]:
    """T's job with ``--init bank:DIR``, exactly as ``prompttuner tune --init bank:DIR`` runs it: the bank
    resolves the start (``bank.bank_init``: probes on the trainer's training split, the lr from the answer),
    then the trainer is built from it."""
    from dataclasses import replace

    from prompttuner.bank import bank_init
    from prompttuner.tuning import PromptTrainer, load_task

    prof = profiles(args)
    st, info = prof["settings"], prof["tasks"][name]["info"]
    task = load_task(Path(args.data) / name)
    folder, names = build_loo_bank(args, loaded, name, tasks)
    t0 = time.perf_counter()
    cfg = config_for(st, "random", seed, info["target"])
    init = bank_init(str(folder), loaded, task, cfg)
    trainer = PromptTrainer(loaded, task, replace(cfg, init=init))
    select_s = time.perf_counter() - t0
    sel = init.info
    entry = sel["entry"]
    rec: dict[str, Any] = {
        "bank_entries": names,
        "selection": {
            "entry": f"{entry['task_name']}/{entry['extra'].get('run')}",
            "fallback": sel.get("fallback"),
            "loss": sel["loss"],
            "accuracy": sel.get("accuracy"),
            "rank_by": sel.get("rank_by"),
            "text_init": sel.get("baseline_scores", {}).get("text"),
            "predicted_steps": sel["predicted_steps"],
            "timings_s": sel["timings_s"],
            "wall_s": round(select_s, 3),
            "probes": [
                {
                    "task": p["task_name"],
                    "layer": p["layer"],
                    "loss": p["loss"],
                    "accuracy": p.get("accuracy"),
                }
                for p in sel["probes"]
            ],
        },
        "target": info["target"],
    }
    if sel.get("fallback"):
        # the fallback is the job's text init at the cold lr: exactly the profile's text-init run of this
        # seed (same code, settings and seed), so that run is reused instead of tuned again
        base = prof["tasks"][name]["runs"][f"{sel['fallback']}-seed{seed}"]
        keys = ("reached", "steps", "steps_to_target", "best_accuracy", "step0_accuracy", "wall_s")
        rec.update({k: base[k] for k in keys}, accuracy=base["final_accuracy"], reused_profile_run=True)
        rec["lr"] = trainer.lr
        return rec
    rec.update(train(trainer))
    return rec


def hindsight_run(
    args: argparse.Namespace, loaded: Any, name: str, seed: int, tasks: list[str], lines: Path
) -> dict[str, Any]:
    from prompttuner.tuning import PromptTrainer, load_prompt, load_task

    prof = profiles(args)
    st, info = prof["settings"], prof["tasks"][name]["info"]
    task = load_task(Path(args.data) / name)
    bank = [
        r
        for r in read_runs(lines)
        if (r["task"], r["init"], r["seed"]) == (name, "bank", seed) and "error" not in r
    ]
    chosen = bank[-1] if bank else None
    entries: dict[str, Any] = {}
    for other in tasks:
        if other == name:
            continue
        key, f, _ = source_of(args, other)
        tensor = load_prompt(f)[0]
        tr = PromptTrainer(loaded, task, config_for(st, tensor, seed, info["target"]))
        acc = tr.evaluate()
        entries[f"{other}/{key}"] = {"step0_accuracy": acc, "file": str(f)}
    best = None  # fewest steps to target seen so far
    if chosen is not None and chosen["selection"]["fallback"] is None:
        ch = entries.get(chosen["selection"]["entry"])
        if ch is not None:
            ch.update(
                {k: chosen[k] for k in ("steps_to_target", "reached", "steps", "wall_s")}, from_bank_run=True
            )
            best = chosen["steps_to_target"]
    for e in entries.values():
        if e["step0_accuracy"] >= info["target"]:
            e.update(steps_to_target=0, reached=True, steps=0)
            best = 0
    ranked = sorted(
        (k for k, e in entries.items() if "steps_to_target" not in e),
        key=lambda k: -entries[k]["step0_accuracy"],
    )
    for k in ranked[: args.hindsight_top]:
        cap = st["max_steps"] if best is None else best
        if cap <= 0:
            break
        out = tune(loaded, task, st, load_prompt(entries[k]["file"])[0], seed, info["target"], max_steps=cap)
        entries[k].update(out, cap=cap)
        if out["reached"] and (best is None or out["steps"] < best):
            best = out["steps"]
    return {"entries": entries, "best_steps": best, "target": info["target"], "top": args.hindsight_top}


def worker(args: argparse.Namespace, shard: int, lines: Path) -> None:
    import torch

    from prompttuner.tuning import load_model

    torch.set_num_threads(args.threads)
    tasks = args.tasks.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    wait_for_sources(args, tasks)
    loaded = load_model(args.model)
    run = args.only.split(",") if args.only else tasks  # the bank always holds every other task
    mine = [name for i, name in enumerate(run) if i % args.workers == shard]
    # every bank run first (seed-major), the hindsight runs (the costliest, an upper bound) last
    jobs = [(name, "bank", s) for s in seeds for name in mine]
    jobs += [(name, "hindsight", seeds[0]) for name in mine]
    for name, kind, seed in jobs:
        done = {(r["task"], r["init"], r["seed"]) for r in read_runs(lines) if "error" not in r}
        if (name, kind, seed) in done:
            continue
        t0 = time.time()
        try:
            if kind == "bank":
                rec = bank_run(args, loaded, name, seed, tasks)
            else:
                rec = hindsight_run(args, loaded, name, seed, tasks, lines)
        except Exception as e:  # keep going: one failed run must not lose the others
            rec = {"error": f"{type(e).__name__}: {e}"}
        rec = {"task": name, "init": kind, "seed": seed, **rec}
        rec["job_wall_s"] = round(time.time() - t0, 1)
        rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with open(lines, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # workers share the file: one whole line at a time
            f.write(json.dumps(rec) + "\n")
        sel = rec.get("selection", {})
        print(
            f"[{shard}] {name} {kind} seed {seed}: steps={rec.get('steps', rec.get('best_steps'))} "
            f"reached={rec.get('reached')} choice={sel.get('entry')} fallback={sel.get('fallback')} "
            f"{rec['job_wall_s']:.0f}s {rec.get('error', '')}",
            flush=True,
        )


def cost(run: dict[str, Any] | None, cap: int) -> float | None:
    """Steps to target; a miss counts as the whole budget (so ratios against it are lower bounds) and a
    start that already scores the target (0 steps) as 1 step."""
    if run is None:
        return None
    s = run.get("steps_to_target")
    return float(max(1, cap if s is None else s))


def step0_scan(path: Path) -> dict[str, tuple[str, float]]:
    """Per task, the entry with the best step-0 validation accuracy and that accuracy (no tuning), from the
    logits ``benchmarks/bank_signals.py`` recorded (the exact hindsight answer when it meets the target)."""
    out = {}
    for r in read_runs(path):
        val = r["samples"]["val"]
        accs = [
            statistics.fmean(
                float(max(range(len(x)), key=x.__getitem__) == t)
                for x, t in zip(p, val["targets"], strict=True)
            )
            for p in val["logits"][:-1]  # the last prompt is the job's own text init
        ]
        i = max(range(len(accs)), key=accs.__getitem__)
        out[r["task"]] = (r["prompts"][i], round(accs[i], 4))
    return out


def summarize(args: argparse.Namespace) -> dict[str, Any]:
    prof = profiles(args)
    st = prof["settings"]
    cap = int(st["max_steps"])
    runs = read_runs(Path(str(args.out) + ".runs.jsonl"))
    ok = [r for r in runs if "error" not in r]
    hind = {(r["task"], r["seed"]): r for r in ok if r["init"] == "hindsight"}
    for extra in args.hindsight_from or []:  # an earlier run's tuned hindsight, for tasks this run lacks
        for r in read_runs(Path(extra)):
            key = (r.get("task"), r.get("seed"))
            if r.get("init") == "hindsight" and "error" not in r and key not in hind:
                hind[key] = {**r, "source": Path(extra).name}
    step0 = step0_scan(Path(str(RESULTS / "bank_signals") + ".jsonl"))
    rows = []
    for r in sorted((r for r in ok if r["init"] == "bank"), key=lambda r: (r["task"], r["seed"])):
        t, s = r["task"], r["seed"]
        base = prof["tasks"][t]["runs"]
        sel = r["selection"]
        row: dict[str, Any] = {
            "task": t,
            "seed": s,
            "target": r["target"],
            "bank_choice": "text init (fallback)" if sel["fallback"] else sel["entry"],
            "best_entry_probed": sel["entry"],
            "selection_s": sel["wall_s"],
            "bank_steps": r["steps_to_target"],
            "bank_step0_acc": r["step0_accuracy"],
            "bank_wall_s": round(r["wall_s"] + sel["wall_s"], 2),
            "predicted_steps": round(sel["predicted_steps"], 1),
        }
        for init in ("random", "text"):
            b = base.get(f"{init}-seed{s}")
            if b is not None:
                row[f"{init}_steps"] = b["steps_to_target"]
                row[f"{init}_wall_s"] = b["wall_s"]
                row[f"speedup_vs_{init}"] = round(cost(b, cap) / cost(r, cap), 3)  # type: ignore[operator]
                row[f"wall_speedup_vs_{init}"] = round(b["wall_s"] / max(row["bank_wall_s"], 1e-6), 3)
        # what-if: random init (exactly the profile's random run of this seed) whenever the chosen entry's
        # probe accuracy is below the target, instead of tuning from the entry at the cold lr
        below = sel.get("accuracy") is not None and sel["accuracy"] < r["target"] and not sel["fallback"]
        alt = base.get(f"random-seed{s}") if below else r
        if alt is not None:
            for init in ("random", "text"):
                b = base.get(f"{init}-seed{s}")
                if b is not None:
                    row[f"whatif_vs_{init}"] = round(cost(b, cap) / cost(alt, cap), 3)  # type: ignore[operator]
        z = step0.get(t)
        if z is not None:  # every entry at step 0 on T's validation rows (benchmarks/bank_signals.py)
            row["step0_best_entry"], row["step0_best_acc"] = z
            row["step0_entry_meets_target"] = z[1] >= r["target"]
        h = hind.get((t, s))
        if h is not None:
            row["hindsight_best_steps"] = h["best_steps"]
            row["hindsight_source"] = h.get("source", "this run")
            done = {k: e["steps_to_target"] for k, e in h["entries"].items() if "steps" in e}
            if done:
                row["hindsight_best"] = min(done, key=lambda k: cap + 1 if done[k] is None else done[k])
            row["bank_over_hindsight"] = round(
                cost(r, cap) / max(1.0, cap if h["best_steps"] is None else h["best_steps"]), 3
            )  # type: ignore[operator]
        rows.append(row)

    def vals(key: str) -> list[float]:
        return [x[key] for x in rows if x.get(key) is not None]

    def med(key: str) -> float | None:
        v = vals(key)
        return round(statistics.median(v), 3) if v else None

    def gmean(key: str) -> float | None:
        v = [x for x in vals(key) if x > 0]
        return round(math.exp(statistics.fmean(math.log(x) for x in v)), 3) if v else None

    def span(key: str) -> list[float] | None:
        v = sorted(vals(key))
        return [v[0], v[-1]] if v else None

    summary: dict[str, Any] = {
        "pairs": len(rows),
        "tasks": len({x["task"] for x in rows}),
        "median_speedup_vs_random": med("speedup_vs_random"),
        "median_speedup_vs_text": med("speedup_vs_text"),
        "geomean_speedup_vs_random": gmean("speedup_vs_random"),
        "geomean_speedup_vs_text": gmean("speedup_vs_text"),
        "range_speedup_vs_random": span("speedup_vs_random"),
        "range_speedup_vs_text": span("speedup_vs_text"),
        "whatif_random_when_probe_below_target": {
            "median_vs_random": med("whatif_vs_random"),
            "median_vs_text": med("whatif_vs_text"),
            "geomean_vs_random": gmean("whatif_vs_random"),
            "geomean_vs_text": gmean("whatif_vs_text"),
        },
        "median_wall_speedup_vs_random": med("wall_speedup_vs_random"),
        "median_wall_speedup_vs_text": med("wall_speedup_vs_text"),
        "bank_reached": sum(1 for x in rows if x["bank_steps"] is not None),
        "bank_at_step0": sum(1 for x in rows if x["bank_steps"] == 0),
        "random_reached": sum(1 for x in rows if x.get("random_steps") is not None),
        "text_reached": sum(1 for x in rows if x.get("text_steps") is not None),
        "fallbacks": sum(1 for x in rows if x["bank_choice"].startswith("text init")),
        "median_bank_over_hindsight": med("bank_over_hindsight"),
        "step0_scan_tasks": len(step0),
        "tasks_with_entry_at_target_step0": sorted(
            t for t, z in step0.items() if z[1] >= prof["tasks"][t]["info"]["target"]
        ),
        "bank_pairs_at_target_step0_where_possible": sum(
            1 for x in rows if x.get("step0_entry_meets_target") and x["bank_steps"] == 0
        ),
        "pairs_where_possible": sum(1 for x in rows if x.get("step0_entry_meets_target")),
        "bank_equals_hindsight": sum(1 for x in rows if x.get("bank_over_hindsight") == 1.0),
        "hindsight_pairs": len(vals("bank_over_hindsight")),
        "median_selection_s": med("selection_s"),
        "budget_steps": cap,
        "settings": st,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared), 1 torch thread per worker",
        "failed_runs": [r for r in runs if "error" in r],
        "rows": rows,
    }
    pts = [
        (r["selection"]["loss"], math.log(max(1.0, float(r["steps_to_target"]))))
        for r in ok
        if r["init"] == "bank" and r["reached"] and not r["selection"]["fallback"]
    ]
    if len(pts) >= 3 and len({p[0] for p in pts}) > 1:  # steps ~ exp(a + b * probe loss) on warm starts
        mx, my = statistics.fmean(p[0] for p in pts), statistics.fmean(p[1] for p in pts)
        b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
        summary["steps_model"] = {
            "kind": "loglinear",
            "a": round(my - b * mx, 4),
            "b": round(b, 4),
            "n": len(pts),
        }
    return summary


def write_table(s: dict[str, Any], path: Path) -> None:
    def f(v: Any) -> str:
        if v is None:
            return "miss"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    cols = [
        ("task", "task"), ("seed", "seed"), ("target", "target"), ("bank choice", "bank_choice"),
        ("bank steps", "bank_steps"), ("bank acc@0", "bank_step0_acc"), ("random steps", "random_steps"),
        ("text steps", "text_steps"), ("x vs random", "speedup_vs_random"), ("x vs text", "speedup_vs_text"),
        ("bank wall s (incl. selection)", "bank_wall_s"), ("random wall s", "random_wall_s"),
        ("text wall s", "text_wall_s"), ("selection s", "selection_s"),
        ("hindsight best", "hindsight_best"), ("hindsight steps", "hindsight_best_steps"),
    ]  # fmt: skip
    out = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in s["rows"]:
        out.append("| " + " | ".join(f(r.get(k)) if k in r else "-" for _, k in cols) + " |")
    path.write_text("\n".join(out) + "\n")


def write_data(s: dict[str, Any]) -> Path:
    """The factors the simulator's workload reads (bank steps = text-init steps / bank_speedup_over_text)."""
    data = {
        "bank_speedup_over_text": s["median_speedup_vs_text"],
        "bank_speedup_over_random": s["median_speedup_vs_random"],
        "median_speedup_vs_random": s["median_speedup_vs_random"],  # read by bank.predict.StepsPredictor
        "median_speedup_vs_text": s["median_speedup_vs_text"],
        "geomean_speedup_vs_text": s["geomean_speedup_vs_text"],
        "geomean_speedup_vs_random": s["geomean_speedup_vs_random"],
        "pairs": s["pairs"],
        "tasks": s["tasks"],
        "per_task_bank_steps": {
            r["task"]: [x["bank_steps"] for x in s["rows"] if x["task"] == r["task"]] for r in s["rows"]
        },
        "censored_note": f"a run that missed its target within {s['budget_steps']} steps counts the "
        "whole budget",
        "source": "benchmarks/results/bank_speedup.json (leave-one-task-out over the 16 shared tasks, "
        "smollm2-135m, CPU)",
    }
    if "steps_model" in s:
        data["steps_model"] = s["steps_model"]
    out = ROOT / "src" / "prompttuner" / "data" / "bank_speedup.json"
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out


def with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """``--data``: the shared data's tasks/; ``--tasks``: every task of the convergence profiles."""
    if args.data is None:
        from prompttuner.config import shared_data

        args.data = str(shared_data() / "tasks")
    if args.tasks is None:
        from convergence_profiles import TASKS  # type: ignore[import-not-found]

        args.tasks = ",".join(TASKS)
    return args


def run_workers(target: Any, args: argparse.Namespace, lines: Path) -> None:
    """``args.workers`` spawned processes ``target(args, shard, lines)``; returns when all have ended."""
    procs = [
        mp.get_context("spawn").Process(target=target, args=(args, i, lines)) for i in range(args.workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=None, help="comma list (default: every task of the profiles)")
    ap.add_argument(
        "--only", default=None, help="comma list: run only these tasks (banks still hold the others)"
    )
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--hindsight-top", type=int, default=2)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default=None, help="tasks folder (default: the shared data's tasks/)")
    ap.add_argument("--profiles", default=str(PROFILES))
    ap.add_argument("--prompts-dir", default="/work/artifacts/prompts")
    ap.add_argument("--work", default="/tmp/prompttuner-bank-bench")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--wait-s", type=float, default=3 * 3600)
    ap.add_argument("--summarize", action="store_true")
    ap.add_argument(
        "--hindsight-from",
        action="append",
        default=None,
        help="runs file of an earlier run whose hindsight runs fill tasks this run lacks (repeatable)",
    )
    ap.add_argument("--write-data", action="store_true", help="write src/prompttuner/data/bank_speedup.json")
    args = with_defaults(ap.parse_args())
    if args.summarize:
        s = summarize(args)
        Path(str(args.out) + ".json").write_text(json.dumps(s, indent=1) + "\n")
        write_table(s, Path(str(args.out) + ".table.md"))
        print(json.dumps({k: v for k, v in s.items() if k not in ("rows", "settings")}, indent=1))
        if args.write_data:
            print(f"wrote {write_data(s)}")
        return
    lines = Path(str(args.out) + ".runs.jsonl")
    lines.parent.mkdir(parents=True, exist_ok=True)
    run_workers(worker, args, lines)


if __name__ == "__main__":
    main()
