"""Speed-up of bank init on unseen tasks (leave one task out), at a scale this machine can afford.

Config: the engine's convergence-profile settings (``benchmarks/convergence_profiles.py`` on branch
``engine``: smollm2-135m, 8 virtual tokens, batch 4, max length 48, 24 validation rows, evaluation every
10 steps, at most 30 steps, per-task target = majority + 0.25 x (1 - majority) on the validation rows,
engine default learning rates: 0.03 cold, 0.003 warm).  The engine's own profile runs were not ready in
time, so this script runs its baselines itself, with the same code and config:

1. *source runs*: every task of ``--tasks`` and ``--source-tasks`` is tuned from text init (first seed);
   its prompt goes to ``--prompts-dir`` and the run is also that task's text-init baseline;
2. for each task T of ``--tasks`` and each seed: a bank is built from the source prompts of every *other*
   task (T never sees its own), the bank chooses with probes on a sample of T's own training rows and T's
   own label words, and T is tuned from the choice; T is also tuned from random init (and from text
   init for the other seeds);
3. *hindsight* (``--hindsight`` tasks, first seed): T is tuned from every entry of its bank; the best is
   the upper bound of any selection from that bank.

Runs append one JSON line each to ``<out>.runs.jsonl`` (``--workers`` processes, 1 torch thread each),
so an interrupted benchmark keeps what it finished.  ``--summarize`` turns them into ``<out>.json``
(falling back to the engine's ``--baselines`` file for a missing baseline); ``--write-data`` writes the
speed-up factors to ``src/prompttuner/data/bank_speedup.json``.

    nice -n 10 python benchmarks/bank_speedup.py --tasks sst2,mr,cr --source-tasks subj --seeds 0,1 \
        --hindsight mr,cr,sst2 --workers 2
    python benchmarks/bank_speedup.py --summarize --write-data
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_OUT = RESULTS / "bank_speedup"


def target_for(trainer: Any, fraction: float) -> float:
    """The engine's rule: majority-class accuracy on the validation rows + ``fraction`` of the rest."""
    from collections import Counter

    top = Counter(e.label for e in trainer.train).most_common(1)[0][0]
    maj = sum(e.label == top for e in trainer.val) / max(1, len(trainer.val))
    return round(maj + fraction * (1 - maj), 4)


def config_for(args: argparse.Namespace, init: Any, seed: int, target: float | None) -> Any:
    from prompttuner.tuning import TuningConfig

    return TuningConfig(
        num_virtual_tokens=args.tokens,
        batch_size=args.batch_size,
        seed=seed,
        max_length=args.max_length,
        eval_every=args.eval_every,
        eval_size=args.eval_size,
        target_accuracy=target,
        max_steps=args.max_steps,
        init=init,
    )


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """All runs, in the order they should be done: sources first, then seed-major."""
    tasks = args.tasks.split(",")
    sources = tasks + [t for t in args.source_tasks.split(",") if t and t not in tasks]
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs: list[dict[str, Any]] = [{"task": t, "init": "text", "seed": seeds[0]} for t in sources]
    for s in seeds:
        for t in tasks:
            jobs.append({"task": t, "init": "bank", "seed": s})
            jobs.append({"task": t, "init": "random", "seed": s})
            if s != seeds[0]:
                jobs.append({"task": t, "init": "text", "seed": s})
    for t in [x for x in args.hindsight.split(",") if x]:
        jobs.append({"task": t, "init": "hindsight", "seed": seeds[0]})
    return jobs


def source_tasks(args: argparse.Namespace) -> list[str]:
    tasks = args.tasks.split(",")
    return tasks + [t for t in args.source_tasks.split(",") if t and t not in tasks]


def prompt_path(args: argparse.Namespace, task: str) -> Path:
    return Path(args.prompts_dir) / task / "text-seed0" / "prompt.safetensors"


def done_keys(path: Path) -> set[str]:
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if "error" not in r:
                out.add(f"{r['task']}|{r['init']}|{r['seed']}")
    return out


def wait_for_sources(args: argparse.Namespace, held_out: str) -> list[tuple[str, str, Path]]:
    """The source prompts of every task but ``held_out``; waits (polling, bounded) for the other workers."""
    want = [(t, "text-seed0", prompt_path(args, t)) for t in source_tasks(args) if t != held_out]
    end = time.time() + args.wait_s
    while not all(f.exists() for _, _, f in want):
        if time.time() > end:
            raise TimeoutError(f"source prompts missing for {held_out}: {[str(f) for *_, f in want]}")
        time.sleep(10)  # written by another worker process of this benchmark
    return want


def build_loo_bank(args: argparse.Namespace, loaded: Any, held_out: str, src: list[Any]) -> Path:
    """A bank of the given source prompts (none of ``held_out``), in a fresh folder."""
    import shutil

    from prompttuner.bank import NewEntry, PromptBank
    from prompttuner.tuning import load_prompt, load_task

    folder = Path(args.work) / "banks" / f"loo-{held_out}-{os.getpid()}"
    if folder.exists():
        shutil.rmtree(folder)
    items = []
    for task_name, run, f in src:
        t, meta = load_prompt(f)
        task = load_task(Path(args.data) / task_name)
        items.append(
            NewEntry(
                tensor=t,
                model=loaded.name,
                task_description=task.description,
                labels=task.labels,
                accuracy=meta.get("accuracy"),
                steps=meta.get("steps"),
                task_name=task_name,
                sample_texts=[e.text for e in task.train[:8]],
                extra={"run": run},
            )
        )
    with PromptBank(folder) as bank:
        bank.add_many(items)
    return folder


def tune(
    args: argparse.Namespace, loaded: Any, task: Any, init: Any, seed: int, keep: bool = False
) -> dict[str, Any]:
    from prompttuner.tuning import PromptTrainer

    probe = PromptTrainer(loaded, task, config_for(args, "random", seed, None))
    target = target_for(probe, args.target_fraction)
    trainer = PromptTrainer(loaded, task, config_for(args, init, seed, target))
    res = trainer.train_to_target()
    return {
        "target": target,
        "reached": res.reached,
        "steps": res.steps,
        "steps_to_target": res.steps if res.reached else None,
        "accuracy": res.accuracy,
        "best_accuracy": res.best_accuracy,
        "step0_accuracy": res.curve[0].val_accuracy,
        "wall_s": round(res.wall_s, 2),
        "curve": [[p.step, round(p.val_accuracy, 4), round(p.wall_s, 2)] for p in res.curve],
        "lr": trainer.lr,
        **({"prompt": trainer.prompt()} if keep else {}),
    }


def run_one(args: argparse.Namespace, job: dict[str, Any], lines: Path) -> dict[str, Any]:
    import torch

    from prompttuner.bank import PromptBank, select_for_task
    from prompttuner.tuning import load_model, load_prompt, load_task, save_prompt

    loaded = load_model(args.model)
    task = load_task(Path(args.data) / job["task"])
    rec: dict[str, Any] = dict(job, model=loaded.name, torch_threads=torch.get_num_threads())
    if job["init"] in ("random", "text"):
        init = "text" if job["init"] == "text" else "random"
        out = tune(args, loaded, task, init, job["seed"], keep=True)
        prompt = out.pop("prompt")
        rec.update(out)
        if job["init"] == "text" and job["seed"] == int(args.seeds.split(",")[0]):
            meta = {k: rec[k] for k in ("target", "reached", "steps", "accuracy")}
            save_prompt(prompt_path(args, job["task"]), prompt, dict(meta, model=loaded.name, task=task.name))
        return rec
    src = wait_for_sources(args, job["task"])
    rec["bank_sources"] = [f"{t}/{r}" for t, r, _ in src]
    if job["init"] == "bank":
        folder = build_loo_bank(args, loaded, job["task"], src)
        with PromptBank(folder, create=False) as bank:
            sel = select_for_task(bank, loaded, task, num_tokens=args.tokens, max_length=args.max_length)
            fsel = select_for_task(bank, loaded, task, num_tokens=args.tokens, probes=False)
        rec["selection"] = {
            "entry": f"{sel.entry.task_name}/{sel.entry.extra.get('run')}",
            "loss": sel.loss,
            "predicted_steps": sel.predicted_steps,
            "timings_s": sel.timings,
            "probes": [
                {"entry": f"{p.task_name}", "loss": p.loss, "layer": p.layer, "error": p.error}
                for p in sel.probes
            ],
            "features_only_choice": f"{fsel.entry.task_name}/{fsel.entry.extra.get('run')}",
        }
        rec.update(tune(args, loaded, task, sel.tensor, job["seed"]))
    elif job["init"] == "hindsight":
        # tune from every entry; the bank's own choice was already tuned by its bank run (same seed)
        chosen = None
        for line in lines.read_text().splitlines() if lines.exists() else []:
            r = json.loads(line)
            if (r["task"], r["init"], r["seed"]) == (job["task"], "bank", job["seed"]) and "error" not in r:
                chosen = r
        rec["entries"] = {}
        for t, r, f in src:
            key = f"{t}/{r}"
            if chosen is not None and chosen["selection"]["entry"] == key:
                rec["entries"][key] = {
                    k: chosen[k] for k in ("steps_to_target", "reached", "steps", "wall_s")
                }
                rec["entries"][key]["from_bank_run"] = True
            else:
                rec["entries"][key] = tune(args, loaded, task, load_prompt(f)[0], job["seed"])
    return rec


def worker(args: argparse.Namespace, shard: int, lines: Path) -> None:
    import torch

    torch.set_num_threads(args.threads)
    jobs = plan(args)
    for i, job in enumerate(jobs):
        if i % args.workers != shard:
            continue
        key = f"{job['task']}|{job['init']}|{job['seed']}"
        if key in done_keys(lines):
            continue
        t0 = time.time()
        try:
            rec = run_one(args, job, lines)
        except Exception as e:  # keep going: one failed run must not lose the others
            rec = dict(job, error=f"{type(e).__name__}: {e}")
        rec["worker"] = shard
        rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rec["job_wall_s"] = time.time() - t0
        with open(lines, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # workers share the file: one whole line at a time
            f.write(json.dumps(rec) + "\n")
        print(
            f"[worker {shard}] {key}: steps={rec.get('steps')} reached={rec.get('reached')} "
            f"{rec['job_wall_s']:.0f}s",
            flush=True,
        )


def ratio(base: dict[str, Any] | None, bank: dict[str, Any], cap: int) -> float | None:
    """Steps of a baseline over steps of bank init; a missed target counts as the whole budget (``cap``,
    so the baseline's true cost is underestimated and the ratio is a lower bound), and 0 steps (the warm
    start already met the target) counts as 1 step."""
    if base is None:
        return None
    b = base["steps_to_target"] if base.get("steps_to_target") is not None else cap
    w = bank["steps_to_target"] if bank.get("steps_to_target") is not None else cap
    return max(b, 1) / max(w, 1)


def summarize(args: argparse.Namespace) -> dict[str, Any]:
    lines = Path(str(args.out) + ".runs.jsonl")
    runs = [json.loads(x) for x in lines.read_text().splitlines() if x.strip()]
    ok = [r for r in runs if "error" not in r]
    profiles = json.loads(Path(args.baselines).read_text()) if Path(args.baselines).is_file() else {}
    st = profiles.get("settings", {})
    same = all(
        st.get(k) == v
        for k, v in {
            "num_virtual_tokens": args.tokens,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "eval_size": args.eval_size,
            "eval_every": args.eval_every,
            "max_steps": args.max_steps,
        }.items()
    )
    # the engine's runs count as baselines only when they used this exact config
    base_runs = {t: e.get("runs", {}) for t, e in profiles.get("tasks", {}).items()} if same else {}
    cap = args.max_steps
    rows = []
    hind = {r["task"]: r for r in ok if r["init"] == "hindsight"}
    own = {(r["task"], r["init"], r["seed"]): r for r in ok if r["init"] in ("random", "text")}
    for r in sorted((r for r in ok if r["init"] == "bank"), key=lambda r: (r["task"], r["seed"])):
        t, s = r["task"], r["seed"]
        row: dict[str, Any] = {
            "task": t,
            "seed": s,
            "target": r["target"],
            "bank_entries": len(r["bank_sources"]),
            "bank_choice": r["selection"]["entry"],
            "features_only_choice": r["selection"]["features_only_choice"],
            "selection_s": round(r["selection"]["timings_s"]["total_s"], 2),
            "probe_evaluations": len([p for p in r["selection"]["probes"] if p["loss"] is not None]),
            "predicted_steps": round(r["selection"]["predicted_steps"], 1),
            "bank_steps": r["steps_to_target"],
            "bank_step0_acc": r["step0_accuracy"],
            "bank_wall_s": r["wall_s"],
        }
        for init in ("random", "text"):
            b = own.get((t, init, s)) or base_runs.get(t, {}).get(f"{init}-seed{s}")
            if b is not None:
                row[f"{init}_steps"] = b.get("steps_to_target")
                row[f"{init}_wall_s"] = b.get("wall_s")
                row[f"speedup_vs_{init}"] = ratio(b, r, cap)
        h = hind.get(t)
        if h is not None and s == h["seed"]:
            per = {k: v["steps_to_target"] for k, v in h["entries"].items()}
            best_k = min(per, key=lambda k: cap + 1 if per[k] is None else per[k])
            row["hindsight_steps"] = per
            row["hindsight_best"] = best_k
            row["hindsight_best_steps"] = per[best_k]
            row["bank_choice_rank"] = 1 + sorted(cap + 1 if v is None else v for v in per.values()).index(
                cap + 1 if r["steps_to_target"] is None else r["steps_to_target"]
            )
        rows.append(row)

    def med(key: str) -> float | None:
        v = [x[key] for x in rows if x.get(key) is not None]
        return round(statistics.median(v), 3) if v else None

    def gmean(key: str) -> float | None:
        v = [x[key] for x in rows if x.get(key)]
        return round(math.exp(statistics.fmean(math.log(x) for x in v)), 3) if v else None

    def span(key: str) -> list[float] | None:
        v = sorted(x[key] for x in rows if x.get(key) is not None)
        return [round(v[0], 3), round(v[-1], 3)] if v else None

    summary: dict[str, Any] = {
        "median_speedup_vs_random": med("speedup_vs_random"),
        "median_speedup_vs_text": med("speedup_vs_text"),
        "range_speedup_vs_random": span("speedup_vs_random"),
        "range_speedup_vs_text": span("speedup_vs_text"),
        "geomean_speedup_vs_random": gmean("speedup_vs_random"),
        "geomean_speedup_vs_text": gmean("speedup_vs_text"),
        "pairs_vs_random": sum(1 for x in rows if x.get("speedup_vs_random") is not None),
        "pairs_vs_text": sum(1 for x in rows if x.get("speedup_vs_text") is not None),
        "bank_reached": sum(1 for x in rows if x["bank_steps"] is not None),
        "bank_at_step0": sum(1 for x in rows if x["bank_steps"] == 0),
        "median_selection_s": med("selection_s"),
        "rows": rows,
        "failed_runs": [{k: v for k, v in r.items() if k != "curve"} for r in runs if "error" in r],
        "baselines": str(args.baselines),
        "baseline_settings": profiles.get("settings"),
        "machine": profiles.get("machine"),
    }
    pts = [
        (r["selection"]["loss"], max(1.0, float(r["steps_to_target"])))
        for r in ok
        if r["init"] == "bank" and r["reached"]
    ]
    summary["baselines_used"] = "engine file (same config)" if same and base_runs else "this benchmark's runs"
    if len(pts) >= 3 and len({p[0] for p in pts}) > 1:  # fitted on warm starts that reached the target
        xs, ys = [p[0] for p in pts], [math.log(p[1]) for p in pts]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
        summary["steps_model"] = {
            "kind": "loglinear",
            "a": round(my - b * mx, 4),
            "b": round(b, 4),
            "n": len(pts),
        }
    return summary


def write_table(s: dict[str, Any], path: Path) -> None:
    """The per-pair table of ``<out>.json`` as markdown (included by hand in ``<out>.md``)."""

    def f(v: Any) -> str:
        if v is None:
            return "miss"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    cols = [
        ("task", "task"), ("seed", "seed"), ("target", "target"), ("bank choice", "bank_choice"),
        ("features-only choice", "features_only_choice"), ("bank steps", "bank_steps"),
        ("bank acc@0", "bank_step0_acc"), ("random steps", "random_steps"), ("text steps", "text_steps"),
        ("x vs random", "speedup_vs_random"), ("x vs text", "speedup_vs_text"),
        ("bank wall s", "bank_wall_s"), ("random wall s", "random_wall_s"), ("text wall s", "text_wall_s"),
        ("selection s", "selection_s"), ("hindsight best (steps)", "hindsight"),
        ("choice rank", "bank_choice_rank"),
    ]  # fmt: skip
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in s["rows"]:
        r = dict(r)
        if "hindsight_best" in r:
            r["hindsight"] = f"{r['hindsight_best']} ({f(r['hindsight_best_steps'])})"
        lines.append("| " + " | ".join(f(r.get(k)) if k in r else "-" for _, k in cols) + " |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="sst2,mr,cr,subj,agnews")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--hindsight", default="", help="tasks to tune from every bank entry (comma list)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default=None, help="tasks folder (default: the shared data's tasks/)")
    ap.add_argument("--work", default="/tmp/prompttuner-bank-bench")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    # the engine's convergence-profile config (benchmarks/convergence_profiles.py defaults)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--eval-size", type=int, default=24)
    ap.add_argument("--max-steps", type=int, default=30)
    ap.add_argument("--target-fraction", type=float, default=0.25)
    ap.add_argument("--source-tasks", default="subj", help="tasks that only contribute bank entries")
    ap.add_argument("--prompts-dir", default="/tmp/prompttuner-bank-bench/prompts")
    ap.add_argument("--baselines", default="/work/wt/engine/src/prompttuner/data/convergence_profiles.json")
    ap.add_argument("--wait-s", type=float, default=3 * 3600)
    ap.add_argument("--summarize", action="store_true")
    ap.add_argument("--write-data", action="store_true", help="write src/prompttuner/data/bank_speedup.json")
    args = ap.parse_args()
    if args.data is None:
        from prompttuner.config import shared_data

        args.data = str(shared_data() / "tasks")
    if args.summarize:
        s = summarize(args)
        Path(str(args.out) + ".json").write_text(json.dumps(s, indent=2) + "\n")
        write_table(s, Path(str(args.out) + ".table.md"))
        print(json.dumps({k: v for k, v in s.items() if k != "rows"}, indent=2))
        if args.write_data:
            data = {
                "median_speedup_vs_random": s["median_speedup_vs_random"],
                "median_speedup_vs_text": s["median_speedup_vs_text"],
                "pairs_vs_random": s["pairs_vs_random"],
                "pairs_vs_text": s["pairs_vs_text"],
                "geomean_speedup_vs_random": s["geomean_speedup_vs_random"],
                "geomean_speedup_vs_text": s["geomean_speedup_vs_text"],
                "tasks": sorted({r["task"] for r in s["rows"]}),
                "censored_note": "a run that missed its target within the step budget counts the whole "
                "budget; "
                "most pairs where both sides missed give 1.0",
                "source": "benchmarks/results/bank_speedup.json (leave-one-task-out, smollm2-135m, CPU)",
            }
            # the simulator's workload loader reads this name (bank steps = text-init steps / factor)
            data["bank_speedup_over_text"] = s["median_speedup_vs_text"]
            data["bank_speedup_over_random"] = s["median_speedup_vs_random"]
            if "steps_model" in s:
                data["steps_model"] = s["steps_model"]
            out = ROOT / "src" / "prompttuner" / "data" / "bank_speedup.json"
            out.write_text(json.dumps(data, indent=2) + "\n")
            print(f"wrote {out}")
        return
    lines = Path(str(args.out) + ".runs.jsonl")
    lines.parent.mkdir(parents=True, exist_ok=True)
    meta = Path(str(args.out) + ".config.json")
    meta.write_text(json.dumps({"argv": sys.argv, **{k: v for k, v in vars(args).items()}}, indent=2) + "\n")
    procs = [
        mp.get_context("spawn").Process(target=worker, args=(args, i, lines)) for i in range(args.workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


if __name__ == "__main__":
    main()
