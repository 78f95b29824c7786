"""Convergence profiles: steps to a per-task target accuracy, random vs text init, on the 16 shared tasks.

These numbers are the work estimates (steps to target) the scheduler simulator uses, and the tuned
prompts are the raw material of the Prompt Bank's leave-one-out bank.

Per-task target: ``majority + TARGET_FRACTION x (1 - majority)`` on the held-out validation rows, where
``majority`` is the accuracy of always answering the most frequent training label.  With the default 0.25
a balanced binary task needs 0.625, a 4-way task with a 26 % majority needs 0.45: clearly learned, and
reachable by a 135M model within a short CPU step budget on most tasks.  A run that does not reach it
within ``--max-steps`` records ``null`` and its best accuracy.

Resumable: results go to the output JSON after every run and finished runs are skipped, so the script can
be stopped and restarted.  Runs are ordered seed-major (every task gets seed 0 before any gets seed 1).

    nice -n 10 python benchmarks/convergence_profiles.py --measure        # a few steps, projected time
    nice -n 10 python benchmarks/convergence_profiles.py                   # the full run (resumable)
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from prompttuner.config import REPO_DATA, shared_data  # noqa: E402
from prompttuner.tuning import (  # noqa: E402
    PromptTrainer,
    TuningConfig,
    load_model,
    load_task,
    parse_init,
    save_prompt,
)

TASKS = [
    "sst2",
    "agnews",
    "subj",
    "trec",
    "cr",
    "sms_spam",
    "mr",
    "tweet_sentiment",
    "tweet_emotion",
    "sst5",
    "snli",
    "tweet_hate",
    "imdb",
    "rte",
    "cb",
    "mrpc",
]
TARGET_FRACTION = 0.25
INIT_TEXT = "text"  # the task's description ("Classify the text as a, b or c.")


def majority_accuracy(trainer: PromptTrainer) -> float:
    """Accuracy of the best constant answer on the validation rows (the majority class's share)."""
    counts = Counter(e.label for e in trainer.val)
    return max(counts.values()) / max(1, len(trainer.val))


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _record(path: Path, header: dict[str, Any], name: str, entry: dict[str, Any], key: str, run: Any) -> None:
    """Add one run under a file lock (read-modify-write), so several processes can share one output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = (
        Path(tempfile.gettempdir())
        / f"convergence-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()}.lock"
    )
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = _read(path)
        for k, v in header.items():
            doc.setdefault(k, v)
        e = doc.setdefault("tasks", {}).setdefault(name, {"runs": {}})
        e.setdefault("info", {}).update(entry)
        e["runs"][key] = run
        e["runs"] = dict(sorted(e["runs"].items()))
        doc["tasks"] = {
            t: doc["tasks"][t] for t in TASKS + sorted(set(doc["tasks"]) - set(TASKS)) if t in doc["tasks"]
        }
        finalize(doc)
        _write_json(path, doc)
        write_report(doc, path.with_suffix(".md"))
        fcntl.flock(lock, fcntl.LOCK_UN)


INFO_KEYS = ("majority_accuracy", "target", "labels", "eval_rows")


def finalize(doc: dict[str, Any]) -> dict[str, Any]:
    """Per task: ``info`` (target, majority, ...), ``runs`` (every seed) and one summary per init.

    The summary ``{init: {"steps_to_target": median over seeds or null, ...}}`` is what the simulator
    reads; a seed that never reached the target counts as infinitely slow, so the median is null when
    half or more of the seeds missed.  Idempotent; also upgrades files written by older versions.
    """
    for row in doc.get("tasks", {}).values():
        info = row.setdefault("info", {})
        for k in INFO_KEYS:
            if k in row:
                info[k] = row.pop(k)
        by_init: dict[str, list[dict[str, Any]]] = {}
        for key, run in row.get("runs", {}).items():
            by_init.setdefault(key.rsplit("-seed", 1)[0], []).append(run)
        for init, runs in by_init.items():
            steps = sorted(r["steps_to_target"] if r["reached"] else float("inf") for r in runs)
            mid = statistics.median(steps)  # a missed seed (inf) makes the median of two null
            row[init] = {
                "steps_to_target": None if mid == float("inf") else mid,
                "reached_runs": sum(r["reached"] for r in runs),
                "runs": len(runs),
                "best_accuracy_mean": round(statistics.mean(r["best_accuracy"] for r in runs), 4),
                "step0_accuracy_mean": round(statistics.mean(r["step0_accuracy"] for r in runs), 4),
                "step_s_median": statistics.median(
                    [r["step_s_median"] for r in runs if r.get("step_s_median")] or [0]
                ),
                "budget": doc.get("settings", {}).get("max_steps"),
            }
    return doc


def config_for(args: argparse.Namespace, init: str, seed: int, target: float | None) -> TuningConfig:
    return TuningConfig(
        num_virtual_tokens=args.virtual_tokens,
        batch_size=args.batch_size,
        seed=seed,
        max_length=args.max_length,
        eval_every=args.eval_every,
        lr=args.lr,
        eval_size=args.eval_size,
        target_accuracy=target,
        max_steps=args.max_steps,
        init=parse_init(init),
    )


def measure(args: argparse.Namespace, loaded: Any) -> None:
    """Time a few steps and one evaluation on a short, a medium and a long task; project the full run."""
    rows = []
    for name in ("sst2", "agnews", "imdb"):
        task = load_task(shared_data() / "tasks" / name)
        tr = PromptTrainer(loaded, task, config_for(args, "random", 0, None))
        times = [tr.step().seconds for _ in range(args.measure_steps)]
        t0 = time.perf_counter()
        tr.evaluate()
        rows.append((name, statistics.median(times), time.perf_counter() - t0))
        print(
            f"{name}: step {statistics.median(times):.2f} s (all {[round(t, 2) for t in times]}), "
            f"eval of {len(tr.val)} rows {rows[-1][2]:.2f} s",
            flush=True,
        )
    step = statistics.mean(r[1] for r in rows)
    ev = statistics.mean(r[2] for r in rows)
    runs = len(args.tasks) * len(args.inits) * len(args.seeds)
    worst = runs * (args.max_steps * step + (args.max_steps / args.eval_every + 1) * ev)
    print(
        f"{runs} runs; worst case (no run reaches its target) {worst / 60:.0f} min; "
        f"if half stop at a third of the budget ~{0.67 * worst / 60:.0f} min"
    )


def write_report(doc: dict[str, Any], path: Path) -> None:
    """A readable companion to the JSON: how it was made and one row per task."""
    st = doc["settings"]
    lines = [
        "# Convergence profiles (how `convergence_profiles.json` was made)",
        "",
        "Made by `benchmarks/convergence_profiles.py` (engine `PromptTrainer`, model "
        f"{st['model']}), on {doc.get('machine', '?')}: two processes of one torch thread each "
        "(`--shard 0/2` and `--shard 1/2`), beside the Prompt Bank benchmark's processes for the second "
        "half, so wall and step seconds are noisy upper bounds; step counts are not affected by load.",
        "",
        "    python benchmarks/convergence_profiles.py --max-steps 50 --eval-every 10 --shard 0/2 &",
        "    python benchmarks/convergence_profiles.py --max-steps 50 --eval-every 10 --shard 1/2",
        "",
        f"Settings: batch {st['batch_size']}, {st['num_virtual_tokens']} virtual tokens, texts cut to "
        f"{st['max_length']} tokens, AdamW lr {st['lr']}, validation = {st['eval_size']} rows held out "
        "from train "
        f"(fixed split, the same for every seed), evaluated every {st['eval_every']} steps and at step 0, "
        f"step budget {st['max_steps']}.",
        f"Target per task: {st['target_rule']} (majority = the most frequent label's share of the "
        "validation rows, which are stratified by label).",
        "Inits: `random` = embeddings of sampled vocabulary tokens; `text` = the task description "
        '("Classify the text as a, b or c.") repeated to length.',
        "`steps_to_target` is the first evaluated step at or above the target (so a multiple of eval_every, "
        "0 when the init already scores it); null = not reached within the budget (then see best_accuracy).",
        "Per task, `random` and `text` summarise the seeds (median steps to target, null if half or more "
        "missed); `runs` has every seed with its curve `[step, mean train loss, val accuracy, wall s]`.",
        "Tuned prompts: `/work/artifacts/prompts/<task>/<init>-seed<k>/prompt.safetensors` "
        "(outside the repo).",
        "",
        "| task | majority | target | run: steps to target (best acc) | median step s |",
        "|---|---|---|---|---|",
    ]
    for name, e in doc.get("tasks", {}).items():
        runs = e.get("runs", {})
        cells = ", ".join(
            f"{k}: {'-' if r['steps_to_target'] is None else r['steps_to_target']} ({r['best_accuracy']:.2f})"
            for k, r in sorted(runs.items())
        )
        steps = [r["step_s_median"] for r in runs.values() if r.get("step_s_median")]
        med = f"{statistics.median(steps):.2f}" if steps else "-"
        lines.append(
            f"| {name} | {e['info'].get('majority_accuracy', 0):.3f} | {e['info'].get('target', 0):.3f} | "
            f"{cells} | {med} |"
        )
    done = sum(len(e.get("runs", {})) for e in doc.get("tasks", {}).values())
    reached = sum(r["reached"] for e in doc.get("tasks", {}).values() for r in e.get("runs", {}).values())
    lines += ["", f"{done} runs recorded, {reached} reached their target.", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--inits", nargs="+", default=["random", INIT_TEXT])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--eval-size", type=int, default=24)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--virtual-tokens", type=int, default=16)
    ap.add_argument("--lr", type=float, default=None, help="default: the engine's (0.03)")
    ap.add_argument("--target-fraction", type=float, default=TARGET_FRACTION)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--shard",
        default="0/1",
        help="I/N: run only every N-th run starting at I, so N processes (1 thread each) share the work",
    )
    ap.add_argument("--out", type=Path, default=REPO_DATA / "convergence_profiles.json")
    ap.add_argument("--prompts-dir", type=Path, default=Path("/work/artifacts/prompts"))
    ap.add_argument("--measure", action="store_true", help="time a few steps and project the full run")
    ap.add_argument("--measure-steps", type=int, default=3)
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="finalize the JSON (summaries) and rewrite the .md, then exit",
    )
    args = ap.parse_args(argv)
    if args.report_only:
        doc = finalize(_read(args.out))
        _write_json(args.out, doc)
        write_report(doc, args.out.with_suffix(".md"))
        return 0
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    loaded = load_model(args.model)
    load_s = time.perf_counter() - t0
    if args.measure:
        measure(args, loaded)
        return 0

    settings = {
        "model": args.model,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "eval_size": args.eval_size,
        "eval_every": args.eval_every,
        "num_virtual_tokens": args.virtual_tokens,
        "lr": args.lr if args.lr is not None else 0.03,
        "target_rule": f"majority + {args.target_fraction} * (1 - majority) on the validation rows",
        "threads": args.threads,
    }
    existing = _read(args.out)
    if existing.get("settings", settings) != settings:
        print("settings differ from the existing results file; use another --out", file=sys.stderr)
        return 2
    header = {
        "settings": settings,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared), torch {torch.__version__}",
        "model_load_s": round(load_s, 2),
    }
    shard, nshards = (int(x) for x in args.shard.split("/"))
    order = [(seed, name, init) for seed in args.seeds for name in args.tasks for init in args.inits]
    for i, (seed, name, init) in enumerate(order):
        if i % nshards != shard:
            continue
        task = load_task(shared_data() / "tasks" / name)
        key = f"{init}-seed{seed}"
        if key in _read(args.out).get("tasks", {}).get(name, {}).get("runs", {}):
            continue  # done (by this or a parallel process)
        probe = PromptTrainer(loaded, task, config_for(args, init, seed, None))
        maj = majority_accuracy(probe)
        target = round(maj + args.target_fraction * (1 - maj), 4)
        entry = {
            "majority_accuracy": round(maj, 4),
            "target": target,
            "labels": task.labels,
            "eval_rows": len(probe.val),
        }
        trainer = PromptTrainer(loaded, task, config_for(args, init, seed, target))
        step_times: list[float] = []

        def progress(step: Any, point: Any, _times: list[float] = step_times) -> None:
            if step is not None:
                _times.append(step.seconds)

        res = trainer.train_to_target(progress)
        run = {
            "steps_to_target": res.steps if res.reached else None,
            "reached": res.reached,
            "steps": res.steps,
            "final_accuracy": res.accuracy,
            "best_accuracy": res.best_accuracy,
            "step0_accuracy": res.curve[0].val_accuracy,
            "wall_s": round(res.wall_s, 2),
            "step_s_median": round(statistics.median(step_times), 3) if step_times else None,
            "curve": [
                [
                    p.step,
                    None if p.train_loss is None else round(p.train_loss, 4),
                    round(p.val_accuracy, 4),
                    round(p.wall_s, 2),
                ]
                for p in res.curve
            ],
        }
        out_dir = args.prompts_dir / name / key
        save_prompt(
            out_dir,
            trainer.prompt(),
            trainer.metadata(
                accuracy=res.accuracy,
                reached=res.reached,
                target_accuracy=target,
                seed=seed,
                model_source=args.model,
            ),
        )
        _record(args.out, header, name, entry, key, run)
        verdict = "reached" if res.reached else "not reached"
        print(
            f"{name:16s} {key:12s} target {target:.3f} maj {maj:.3f} "
            f"step0 {run['step0_accuracy']:.3f} -> {res.accuracy:.3f} "
            f"in {res.steps} steps ({verdict}) {res.wall_s:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
