"""Speed-up of bank init on unseen tasks (leave one task out), at a scale this machine can afford.

For every task T of ``--tasks``:
1. *source run*: tune T from text init (seed 0) to its target; the prompt goes to ``<work>/prompts`` (the
   engine's layout) and the run is also T's text-init baseline for seed 0;
2. build a bank from the source prompts of every *other* task (T never sees its own prompt);
3. select with the bank (probes on T's own training sample) and tune T from the choice;
4. tune T from random init and from text init with the same config (all seeds of ``--seeds``);
5. *hindsight* (``--hindsight`` tasks only): tune T from every entry of its bank: the best is the upper
   bound on what any selection could achieve with this bank.

Runs are independent jobs; ``--workers`` processes (1 torch thread each, niced) take them in order of
priority and append one JSON line per finished run to ``<out>.runs.jsonl``, so a run that is cut off
keeps every result it finished.  ``--summarize`` turns the lines into ``<out>.json`` and, with
``--write-data``, the speed-up factors into ``src/prompttuner/data/bank_speedup.json``.

Example (the command behind the committed results is in ``results/bank_speedup.md``)::

    nice -n 10 python benchmarks/bank_speedup.py --tasks sst2,mr,cr,subj,agnews --seeds 0,1 --workers 2
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


def targets_for(labels: list[str]) -> float:
    """A priori target: 0.70 for two labels, 0.55 for three or four, 0.45 beyond (before any run)."""
    k = len(labels)
    return 0.70 if k <= 2 else (0.55 if k <= 4 else 0.45)


def config_for(args: argparse.Namespace, init: Any, seed: int, target: float) -> Any:
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
    """All runs, in the order they should be done (what later runs need comes first)."""
    tasks = args.tasks.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs: list[dict[str, Any]] = [{"task": t, "init": "text", "seed": seeds[0]} for t in tasks]
    for s in seeds:
        for t in tasks:
            jobs.append({"task": t, "init": "bank", "seed": s})
            jobs.append({"task": t, "init": "random", "seed": s})
            if s != seeds[0]:
                jobs.append({"task": t, "init": "text", "seed": s})
    for t in [x for x in args.hindsight.split(",") if x]:
        for src in tasks:
            if src != t:
                jobs.append({"task": t, "init": f"entry:{src}", "seed": seeds[0]})
    return jobs


def prompt_path(args: argparse.Namespace, task: str, seed: int) -> Path:
    return Path(args.work) / "prompts" / task / f"text-seed{seed}" / "prompt.safetensors"


def done_keys(path: Path) -> set[str]:
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out.add(f"{r['task']}|{r['init']}|{r['seed']}")
    return out


def wait_for(paths: list[Path], timeout_s: float) -> None:
    end = time.time() + timeout_s
    while not all(p.exists() for p in paths):
        if time.time() > end:
            raise TimeoutError(f"source prompts not ready: {[str(p) for p in paths if not p.exists()]}")
        time.sleep(5)  # polling files written by the other worker processes


def build_loo_bank(args: argparse.Namespace, loaded: Any, held_out: str) -> Path:
    """A bank of the source prompts of every task but ``held_out`` (rebuilt if a source changed)."""
    from prompttuner.bank import PromptBank
    from prompttuner.tuning import load_prompt, load_task

    folder = Path(args.work) / "banks" / f"loo-{held_out}-{os.getpid()}"
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    bank = PromptBank(folder)
    for src in args.tasks.split(","):
        if src == held_out:
            continue
        t, meta = load_prompt(prompt_path(args, src, 0))
        task = load_task(Path(args.data) / src)
        bank.add(
            t,
            model=loaded.name,
            task_description=task.description,
            labels=task.labels,
            accuracy=meta.get("accuracy"),
            steps=meta.get("steps"),
            task_name=src,
            sample_texts=[e.text for e in task.train[:8]],
            extra={"init": "text", "seed": 0},
        )
    bank.close()
    return folder


def run_one(args: argparse.Namespace, job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from prompttuner.bank import PromptBank, select_for_task
    from prompttuner.tuning import PromptTrainer, load_model, load_prompt, load_task, save_prompt

    loaded = load_model(args.model)
    task = load_task(Path(args.data) / job["task"])
    target = targets_for(task.labels)
    rec: dict[str, Any] = dict(job, target=target, model=loaded.name)
    init: Any = job["init"]
    if job["init"] == "bank":
        others = [prompt_path(args, s, 0) for s in args.tasks.split(",") if s != job["task"]]
        wait_for(others, args.wait_s)
        folder = build_loo_bank(args, loaded, job["task"])
        with PromptBank(folder, create=False) as bank:
            sel = select_for_task(bank, loaded, task, num_tokens=args.tokens, max_length=args.max_length)
            # the features-only choice, for comparison (no probes)
            fsel = select_for_task(bank, loaded, task, num_tokens=args.tokens, probes=False)
        rec["selection"] = {
            "entry_task": sel.entry.task_name,
            "loss": sel.loss,
            "predicted_steps": sel.predicted_steps,
            "timings_s": sel.timings,
            "probes": [{"task": p.task_name, "loss": p.loss, "layer": p.layer} for p in sel.probes],
            "features_only_choice": fsel.entry.task_name,
        }
        init = sel.tensor
    elif job["init"].startswith("entry:"):
        src = job["init"].split(":", 1)[1]
        wait_for([prompt_path(args, src, 0)], args.wait_s)
        init = load_prompt(prompt_path(args, src, 0))[0]
    cfg = config_for(args, init, job["seed"], target)
    trainer = PromptTrainer(loaded, task, cfg)
    res = trainer.train_to_target()
    rec.update(
        reached=res.reached,
        steps=res.steps,
        accuracy=res.accuracy,
        start_accuracy=res.curve[0].val_accuracy,
        wall_s=res.wall_s,
        curve=[[p.step, p.val_accuracy, round(p.wall_s, 2)] for p in res.curve],
        lr=trainer.lr,
        torch_threads=torch.get_num_threads(),
    )
    if job["init"] == "text" and job["seed"] == 0:
        save_prompt(
            prompt_path(args, job["task"], 0),
            trainer.prompt(),
            trainer.metadata(accuracy=res.accuracy, reached=res.reached, target=target),
        )
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
            if job["init"] == "text" and job["seed"] == 0 and not prompt_path(args, job["task"], 0).exists():
                pass  # the prompt went missing: run again
            else:
                continue
        t0 = time.time()
        try:
            rec = run_one(args, job)
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


def summarize(args: argparse.Namespace) -> dict[str, Any]:
    lines = Path(str(args.out) + ".runs.jsonl")
    runs = [json.loads(x) for x in lines.read_text().splitlines() if x.strip()]
    ok = [r for r in runs if "error" not in r]
    by: dict[tuple[str, str, int], dict[str, Any]] = {(r["task"], r["init"], r["seed"]): r for r in ok}
    tasks = sorted({r["task"] for r in ok})
    seeds = sorted({r["seed"] for r in ok})

    def steps(r: dict[str, Any]) -> float:
        return float(r["steps"])  # a run that missed its target counts its whole budget (censored)

    rows = []
    for t in tasks:
        for s in seeds:
            b, rnd, txt = by.get((t, "bank", s)), by.get((t, "random", s)), by.get((t, "text", s))
            if not b:
                continue
            row: dict[str, Any] = {
                "task": t,
                "seed": s,
                "bank_steps": b["steps"],
                "bank_reached": b["reached"],
                "bank_wall_s": round(b["wall_s"], 1),
                "bank_choice": b["selection"]["entry_task"],
                "bank_start_acc": b["start_accuracy"],
                "selection_s": round(b["selection"]["timings_s"]["total_s"], 2),
                "predicted_steps": round(b["selection"]["predicted_steps"], 1),
            }
            for name, r in (("random", rnd), ("text", txt)):
                if r:
                    row[f"{name}_steps"] = r["steps"]
                    row[f"{name}_reached"] = r["reached"]
                    row[f"{name}_wall_s"] = round(r["wall_s"], 1)
                    row[f"speedup_vs_{name}"] = steps(r) / max(steps(b), 1.0)
            hind = [by[(t, k, s)] for (tt, k, ss) in by if tt == t and ss == s and k.startswith("entry:")]
            if hind:
                best = min(hind, key=lambda r: (steps(r), -r["accuracy"]))
                row["hindsight_best_entry"] = best["init"].split(":", 1)[1]
                row["hindsight_best_steps"] = best["steps"]
                row["hindsight_entries"] = {r["init"].split(":", 1)[1]: r["steps"] for r in hind}
            rows.append(row)

    def med(key: str) -> float | None:
        v = [r[key] for r in rows if key in r and math.isfinite(r[key])]
        return statistics.median(v) if v else None

    def spread(key: str) -> list[float] | None:
        v = sorted(r[key] for r in rows if key in r)
        return [v[0], v[-1]] if v else None

    summary = {
        "rows": rows,
        "median_speedup_vs_random": med("speedup_vs_random"),
        "median_speedup_vs_text": med("speedup_vs_text"),
        "range_speedup_vs_random": spread("speedup_vs_random"),
        "range_speedup_vs_text": spread("speedup_vs_text"),
        "pairs": len(rows),
        "runs": len(runs),
        "failed_runs": [r for r in runs if "error" in r],
        "config": runs[0].get("config") if runs else None,
    }
    # steps model for the predictor: log(steps) ~ a + b * probe loss of the chosen prompt
    pts = [
        (by[(t, "bank", s)]["selection"]["loss"], max(1.0, steps(by[(t, "bank", s)])))
        for t in tasks
        for s in seeds
        if (t, "bank", s) in by
    ]
    if len(pts) >= 3 and len({p[0] for p in pts}) > 1:
        xs, ys = [p[0] for p in pts], [math.log(p[1]) for p in pts]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
        summary["steps_model"] = {"kind": "loglinear", "a": my - b * mx, "b": b, "n": len(pts)}
    return summary


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
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--eval-size", type=int, default=32)
    ap.add_argument("--max-steps", type=int, default=30)
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
        print(json.dumps({k: v for k, v in s.items() if k != "rows"}, indent=2))
        if args.write_data:
            data = {
                "median_speedup_vs_random": s["median_speedup_vs_random"],
                "median_speedup_vs_text": s["median_speedup_vs_text"],
                "pairs": s["pairs"],
                "source": "benchmarks/results/bank_speedup.json (leave-one-task-out, smollm2-135m, CPU)",
            }
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
