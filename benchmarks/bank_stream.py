"""The Prompt Bank measured the way a service meets its jobs: a stream of related jobs, the bank growing.

Protocol (issue 12, "service stream"); every setting is in ``benchmarks/bank_stream_settings.json``,
committed before any bank run:

- **Jobs**: exactly 2 per shared task (16 tasks, 32 jobs): the task's training rows shuffled once
  (``subset_seed``) and cut in two disjoint halves; job ``task#s`` trains on half ``s`` with its own seed
  (``seed_base + s``), its validation rows (``eval_size``, stratified) held out from that half.
- **Baselines** (do not depend on the order, run once): every job from random init and from text init,
  same settings and seed.  The random-init runs go the whole budget without stopping (their curves fix
  the per-task targets, below); the text-init runs stop at the target.
- **Targets** (``targets`` in the settings, made by ``--phase targets`` from the random-init curves before
  any bank run, by the rule written there): high enough that random init needs >= 20 steps in the median.
- **Stream**: for each order (a random permutation of the 32 jobs), a bank that starts empty; each job in
  turn asks it for a start exactly as the service does (``bank.bank_init``: selection, then the race
  among the best starts, the chosen learning rate), is tuned to its target, and -- if it reached it -- its
  prompt enters the bank.  The race's steps count as the job's steps; selection and race time are in its
  time.
- **Time** is the worker process's CPU seconds (``time.process_time``; one torch thread per worker, so
  they are the compute a job used whatever else ran on the machine); wall seconds are recorded beside.

Runs append one JSON line each to ``benchmarks/results/bank_stream.runs.jsonl``; finished runs are
skipped, so every phase resumes after an interruption, and ``--shard K/N`` runs a part (each phase's
shards fit in 45 minutes on the 2-core machine at ``--workers 2``).

    python benchmarks/bank_stream.py --phase random --workers 2     # baselines: random init, full curves
    python benchmarks/bank_stream.py --phase targets                # targets from them -> settings file
    python benchmarks/bank_stream.py --phase text --workers 2       # baselines: text init, to the target
    python benchmarks/bank_stream.py --phase stream --threads 2 --workers 1 --orders 0   # one stream
    python benchmarks/bank_stream.py --phase novel --workers 2      # the novel-task protocol
    python benchmarks/bank_stream.py --summarize                    # bank_stream.json / .md

A *variant* reruns a phase with other settings on the same inputs, into its own folder: e.g. the novel
phase with the race skipped where the probe separates the starts (``results/bank_stream_sep/``):

    python benchmarks/bank_stream.py --phase novel --workers 2 --summarize \
        --settings benchmarks/results/bank_stream_sep/settings.json \
        --runs benchmarks/results/bank_stream_sep/bank_stream.runs.jsonl \
        --inputs-from benchmarks/results/bank_stream.runs.jsonl

A variant that reruns the streams themselves (another selection: ``"selection"`` in its settings replaces
fields of ``bank.CHEAP``) adds ``--own-stream``: its own stream runs, banks and prompts, the inputs'
baselines only (``results/bank_stream_near/README.md``).

The *novel-task* protocol (``--phase novel``, after both streams) runs in the same harness on the same
jobs, targets and baselines: job ``T#s`` starts from a bank of the other 15 tasks' prompts that the
streams committed (``bank_stream_prompts/``: both jobs of each task in both orders, those that reached
their target: up to 4 prompts per task, from other seeds and data), never with a prompt of ``T`` nor with
one whose start descends from a prompt of ``T`` (``stream_ancestry``).  (The baselines' own prompts were
the first plan; they are not committed, so a fresh machine could not rebuild that bank.)
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import math
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bank_speedup import config_for  # noqa: E402  (the same engine settings as the former protocol)
from bank_speedup import read_runs as read_runs_at  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SETTINGS = ROOT / "benchmarks" / "bank_stream_settings.json"
RUNS = RESULTS / "bank_stream.runs.jsonl"
INPUTS: Path | None = None  # --inputs-from: the baseline and stream runs a variant reuses
OWN_STREAM = False  # --own-stream: a variant that reruns the streams (it reuses only the baselines)
DATA = ROOT.parent / "shared" / "data" / "tasks"


# ---- settings and jobs ------------------------------------------------------------------------------
def settings() -> dict[str, Any]:
    return json.loads(SETTINGS.read_text())


def job_ids(st: dict[str, Any]) -> list[str]:
    return [f"{t}#{s}" for t in st["tasks"] for s in range(st["jobs_per_task"])]


def job_task(st: dict[str, Any], job: str, data: Path = DATA) -> tuple[Any, int]:
    """The job's task (its half of the shared task's training rows) and its seed."""
    from prompttuner.tuning import load_task
    from prompttuner.tuning.data import Task

    name, s = job.split("#")
    full = load_task(data / name)
    rows = list(full.train)
    random.Random(st["subset_seed"]).shuffle(rows)
    k = st["jobs_per_task"]
    part = rows[int(s) :: k]
    task = Task(name=name, labels=list(full.labels), train=part, test=[], meta=dict(full.meta))
    return task, st["seed_base"] + int(s)


def config(st: dict[str, Any], init: Any, seed: int, target: float | None) -> Any:
    """The engine settings of ``st`` (as ``bank_speedup.config_for`` reads them), for ``init``."""
    return config_for(st, init, seed, target)


def target_of(st: dict[str, Any], job: str) -> float:
    t = st.get("targets", {}).get(job.split("#")[0])
    if t is None:
        raise SystemExit("no targets in the settings yet: run --phase random, then --phase targets")
    return float(t)


# ---- runs -------------------------------------------------------------------------------------------
def read_runs() -> list[dict[str, Any]]:
    """This harness's runs, and with ``--inputs-from`` another harness's baseline and stream runs
    (read-only: a variant reruns one phase on the same inputs)."""
    own = read_runs_at(RUNS)
    if INPUTS is None:
        return own
    reused = ("random", "text") if OWN_STREAM else ("random", "text", "bank")
    return [r for r in read_runs_at(INPUTS) if r["init"] in reused] + own


def append(rec: dict[str, Any]) -> None:
    RUNS.parent.mkdir(parents=True, exist_ok=True)
    with open(RUNS, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # workers share the file: one whole line at a time
        f.write(json.dumps(rec) + "\n")


def key(rec: dict[str, Any]) -> tuple[str, str, str]:
    return (rec["job"], rec["init"], rec.get("order", ""))


def curve_of(res: Any) -> list[list[float]]:
    """A ``TrainResult``'s curve (or a list of its ``CurvePoint``) as [step, accuracy, wall s] rows."""
    points = res if isinstance(res, list) else res.curve
    return [[p.step, round(p.val_accuracy, 4), round(p.wall_s, 2)] for p in points]


class StepClock:
    """The CPU seconds of every plain training step (the trainer's progress callback; a step followed by
    an evaluation is not counted), for the selection's cost in steps of the same job."""

    def __init__(self) -> None:
        self.last = time.process_time()
        self.steps: list[float] = []

    def __call__(self, step: Any, point: Any) -> None:
        now = time.process_time()
        if step is not None and point is None:
            self.steps.append(now - self.last)
        self.last = now

    def median(self) -> float | None:
        return round(statistics.median(self.steps), 3) if self.steps else None


def baseline_run(st: dict[str, Any], loaded: Any, job: str, init: str, work: Path) -> dict[str, Any]:
    """``job`` from ``init`` (random: the whole budget, no target; text: to the target)."""
    from prompttuner.tuning import PromptTrainer, save_prompt

    task, seed = job_task(st, job)
    target = None if init == "random" else target_of(st, job)
    c0, w0 = time.process_time(), time.perf_counter()
    tr = PromptTrainer(loaded, task, config(st, init, seed, target))
    clock = StepClock()
    res = tr.train_to_target(clock)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    save_prompt(
        work / "prompts" / job.replace("#", "-") / init, tr.prompt(), tr.metadata(accuracy=res.accuracy)
    )
    return {
        "target": target,
        "reached": res.reached,
        "steps": res.steps,
        "accuracy": res.accuracy,
        "curve": curve_of(res),
        "lr": tr.lr,
        "train_rows": len(tr.train),
        "val_rows": len(tr.val),
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "step_cpu_s": clock.median(),
    }


def prompt_file(order: str, job: str) -> Path:
    name = f"{job.replace('#', '-')}.safetensors"
    return (RUNS if OWN_STREAM else INPUTS or RUNS).parent / "bank_stream_prompts" / f"order-{order}" / name


def stream_bank(st: dict[str, Any], loaded: Any, order: str, work: Path) -> Path:
    """The stream's bank folder, rebuilt from the committed prompts of its reached jobs when it is missing
    (a resumed stream on a fresh machine continues with the bank its earlier jobs filled)."""
    from prompttuner.bank import PromptBank
    from prompttuner.tuning import load_prompt

    folder = work / "banks" / f"order-{order}"
    done = sorted(
        (r for r in read_runs() if r["init"] == "bank" and r["order"] == order and "error" not in r),
        key=lambda r: r["position"],
    )
    if folder.exists() or not any(r["reached"] for r in done):
        return folder
    for r in done:
        if r["reached"]:
            task, _ = job_task(st, r["job"])
            add_to_bank(folder, loaded, task, load_prompt(prompt_file(order, r["job"]))[0], r, order)
    with PromptBank(folder) as bank:
        assert bank.count(loaded.name) == sum(r["reached"] for r in done)
    return folder


def entry_of(loaded: Any, task: Any, tensor: Any, accuracy: float, steps: int, **kw: Any) -> Any:
    """A bank entry for a prompt tuned on ``task`` (what the service adds for a finished job)."""
    from prompttuner.bank import NewEntry

    return NewEntry(
        tensor=tensor,
        model=loaded.name,
        task_description=task.description,
        labels=task.labels,
        accuracy=accuracy,
        steps=steps,
        task_name=task.name,
        sample_texts=[e.text for e in task.train[:8]],
        **kw,
    )


def add_to_bank(folder: Path, loaded: Any, task: Any, tensor: Any, rec: dict[str, Any], order: str) -> None:
    """A finished job that reached its target adds its prompt, as the service does."""
    from prompttuner.bank import PromptBank

    extra = {"order": order, "position": rec["position"]}
    with PromptBank(folder) as bank:
        bank.add_many(
            [
                entry_of(
                    loaded, task, tensor, rec["accuracy"], rec["steps"], source_job=rec["job"], extra=extra
                )
            ]
        )


def bank_job(st: dict[str, Any], loaded: Any, job: str, folder: Path) -> tuple[dict[str, Any], Any, Any]:
    """``job`` started from the bank at ``folder`` exactly as the service starts it (``bank.warm_start``:
    selection, blend, race, lr; an empty or missing bank: the race of the job's text and random inits),
    then tuned to its target: ``(record, trainer, task)``."""
    from prompttuner.bank import CHEAP, PromptBank, train_from_start, warm_start

    task, seed = job_task(st, job)
    target = target_of(st, job)
    c0, w0 = time.process_time(), time.perf_counter()
    cfg = config(st, "random", seed, target)
    n_entries = 0
    if folder.exists():
        with PromptBank(folder, create=False) as bank:
            n_entries = bank.count(loaded.name)
    budget = dataclasses.replace(CHEAP, **st.get("selection", {}))  # a variant's own selection budget
    # settings written before check_first or the fallback existed (and became defaults) ran without them
    race = {"check_first": False, "fallback_at": None, **st["race"]}
    start = warm_start(folder if n_entries else None, loaded, task, cfg, race=race, budget=budget)
    trainer = start.trainer
    start_step = trainer.step_count  # the winner's race steps (0: no race)
    # the race's losers trained too: their steps are the job's, out of the same budget
    trainer.config.max_steps = max(trainer.step_count, st["max_steps"] - start.extra_steps)
    clock = StepClock()
    done = train_from_start(start, race, clock)  # with race.fallback_at: back to random init if it lags
    trainer, res = done.trainer, done.result
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    steps = res.steps + start.extra_steps
    rec: dict[str, Any] = {
        "bank_entries": n_entries,
        "target": target,
        "reached": res.reached,
        "steps": steps,
        "winner_steps": res.steps,
        "race_extra_steps": start.extra_steps,
        "start_step": start_step,
        "accuracy": res.accuracy,
        "curve": curve_of(res),
        "lr": trainer.lr,
        "start": start.summary(),
        "probes": [
            {k: p.get(k) for k in ("task_name", "layer", "rows", "accuracy", "loss")}
            for p in start.info.get("selection", {}).get("probes", [])
        ],
        **(
            {"fallback": done.fallback, "fallback_steps": done.fallback_steps}
            if done.fallback is not None
            else {}
        ),
        **(
            {"after_fallback": curve_of(res.extra["after_fallback"])}
            if res.extra.get("after_fallback")
            else {}
        ),
        "select_cpu_s": round(start.info["select_cpu_s"], 3),
        "race_cpu_s": round(start.info.get("race_cpu_s", 0.0), 3),
        "step_cpu_s": clock.median(),
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
    }
    return rec, trainer, task


def stream_run(
    st: dict[str, Any], loaded: Any, job: str, order: str, position: int, work: Path
) -> dict[str, Any]:
    """``job`` at ``position`` of stream ``order``: start from the stream's bank (as the service does),
    tune to the target, add the prompt to the bank if it reached it."""
    from prompttuner.tuning import save_prompt

    folder = stream_bank(st, loaded, order, work)
    rec, trainer, task = bank_job(st, loaded, job, folder)
    rec["position"] = position
    save_prompt(prompt_file(order, job), trainer.prompt(), trainer.metadata(accuracy=rec["accuracy"]))
    if rec["reached"]:
        add_to_bank(folder, loaded, task, trainer.prompt(), {"job": job, **rec}, order)
    return rec


def stream_ancestry(runs: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """Per stream job ``(order, job)``: the tasks whose prompts its start may descend from (a superset:
    the chosen entry's task, or every entry candidate's task for a blend, with, transitively, what the
    earlier prompts of those tasks in the same order descend from)."""
    anc: dict[tuple[str, str], set[str]] = {}
    done = [r for r in runs if r["init"] == "bank" and "error" not in r]
    for r in sorted(done, key=lambda r: (r["order"], r["position"])):
        start = r.get("start", {})
        chosen = start.get("chosen", "")
        names = [chosen] if chosen.startswith("entry:") else []
        if chosen == "blend":
            names = [c["name"] for c in start.get("candidates", []) if c["name"].startswith("entry:")]
        tasks: set[str] = set()
        for n in names:
            src = n.split(":", 1)[1].split("/")[0]
            tasks.add(src)
            for (o, j), a in anc.items():
                if o == r["order"] and j.split("#")[0] == src:
                    tasks |= a
        anc[(r["order"], r["job"])] = tasks
    return anc


def novel_bank(st: dict[str, Any], loaded: Any, held_out: str, work: Path) -> tuple[Path, list[str]]:
    """The novel-task protocol's bank for ``held_out``: the other tasks' stream prompts that reached their
    targets and do not descend from a prompt of ``held_out`` (module docstring)."""
    from prompttuner.bank import PromptBank
    from prompttuner.tuning import load_prompt

    folder = work / "banks" / f"novel-{held_out}"
    runs = read_runs()
    anc = stream_ancestry(runs)
    names: list[str] = []
    items = []
    for r in sorted(runs, key=lambda r: (r["order"], r["job"])):
        t = r["job"].split("#")[0]
        if r["init"] != "bank" or "error" in r or t == held_out or not r["reached"]:
            continue
        if held_out in anc[(r["order"], r["job"])]:
            continue
        task, _ = job_task(st, r["job"])
        src = f"{r['job']}/order-{r['order']}"
        tensor = load_prompt(prompt_file(r["order"], r["job"]))[0]
        items.append(entry_of(loaded, task, tensor, r["accuracy"], r["steps"], source_job=src))
        names.append(src)
    if not items:
        raise RuntimeError(f"no stream prompts for the novel bank of {held_out}: run both streams first")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:  # two workers, one task's two jobs
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not folder.exists():
            with PromptBank(folder) as bank:
                bank.add_many(items)
    return folder, names


def novel_run(st: dict[str, Any], loaded: Any, job: str, work: Path) -> dict[str, Any]:
    folder, names = novel_bank(st, loaded, job.split("#")[0], work)
    rec, _, _ = bank_job(st, loaded, job, folder)
    rec["bank_sources"] = names
    return rec


def worker(args: argparse.Namespace, shard: int) -> None:
    import torch

    from prompttuner.tuning import load_model

    torch.set_num_threads(args.threads)
    st = settings()
    work = Path(args.work)
    loaded = load_model(st["model"])
    jobs = job_ids(st)
    todo: list[tuple[str, str, str, int]] = []  # (job, init, order, position)
    if args.phase == "random":
        todo = [(j, "random", "", 0) for i, j in enumerate(jobs) if i % args.workers == shard]
    elif args.phase == "text":
        # the jobs the streams meet first come first (a stream cut short still has its baselines)
        first = {j: min(o.index(j) for o in st["orders"]) for j in jobs}
        by_arrival = sorted(jobs, key=lambda j: (first[j], jobs.index(j)))
        todo = [(j, "text", "", 0) for i, j in enumerate(by_arrival) if i % args.workers == shard]
    elif args.phase == "stream":
        # worker k runs the k-th of the chosen orders (its jobs in order: each needs the bank its
        # predecessors filled)
        orders = [int(x) for x in args.orders.split(",")] if args.orders else range(len(st["orders"]))
        for n, k in enumerate(orders):
            if n % args.workers == shard:
                todo += [(j, "bank", str(k), p) for p, j in enumerate(st["orders"][k])]
    elif args.phase == "novel":
        todo = [(j, "novel", "", 0) for i, j in enumerate(jobs) if i % args.workers == shard]
    if args.only:
        keep = set(args.only.split(","))
        todo = [t for t in todo if t[0].split("#")[0] in keep or t[0] in keep]
    if args.shard:
        k, n = (int(x) for x in args.shard.split("/"))
        todo = todo[len(todo) * k // n : len(todo) * (k + 1) // n]
    for job, init, order, pos in todo:
        done = {key(r) for r in read_runs() if "error" not in r}
        if (job, init, order) in done:
            continue
        try:
            if init == "bank":
                rec = stream_run(st, loaded, job, order, pos, work)
            elif init == "novel":
                rec = novel_run(st, loaded, job, work)
            else:
                rec = baseline_run(st, loaded, job, init, work)
        except Exception as e:  # keep going: one failed run must not lose the others
            import traceback

            rec = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
            if init == "bank":  # a stream is sequential: a failed job would change every later bank
                append({"job": job, "init": init, "order": order, **rec})
                raise
        rec = {"job": job, "init": init, "order": order, **rec}
        rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        append(rec)
        print(
            f"[{shard}] {job} {init}{order} steps={rec.get('steps')} reached={rec.get('reached')} "
            f"acc={rec.get('accuracy')} cpu={rec.get('cpu_s')} {rec.get('error', '')}",
            flush=True,
        )


# ---- targets ----------------------------------------------------------------------------------------
def steps_to(curve: list[list[float]], target: float) -> int | None:
    for step, acc, *_ in curve:
        if acc >= target - 1e-9:
            return int(step)
    return None


def make_targets(st: dict[str, Any]) -> dict[str, float]:
    """Per task, from its 2 random-init curves (validation rows of each job): the rule in ``target_rule``.

    ``A`` = the mean over the two jobs of the best accuracy random init reaches within the budget, ``m``
    = the mean accuracy at step 0; target = ``m + frac * (A - m)``, rounded *down* to the resolution of
    the validation set (so it is a reachable accuracy), and at least one validation row above ``m``.
    """
    runs = {r["job"]: r for r in read_runs() if r["init"] == "random" and "error" not in r}
    out: dict[str, float] = {}
    for t in st["tasks"]:
        rs = [runs.get(f"{t}#{s}") for s in range(st["jobs_per_task"])]
        if any(r is None for r in rs):
            raise SystemExit(f"random-init runs of {t} missing: run --phase random first")
        best = statistics.mean(max(c[1] for c in r["curve"]) for r in rs)  # type: ignore[index]
        m = statistics.mean(r["curve"][0][1] for r in rs)  # type: ignore[index]
        n = min(r["val_rows"] for r in rs)  # type: ignore[index]
        raw = m + st["target_frac"] * (best - m)
        tgt = max(math.floor(raw * n + 1e-9) / n, (math.floor(m * n + 1e-9) + 1) / n)
        out[t] = round(tgt, 4)
    return out


# ---- summary ----------------------------------------------------------------------------------------
def cost_steps(steps: int | None, budget: int) -> float:
    """Steps to target; a miss counts as the whole budget (a ratio against a missed baseline is a lower
    bound), a start already at the target as 1 step."""
    return float(max(1, budget if steps is None else steps))


def race_steps(r: dict[str, Any], st: dict[str, Any]) -> int:
    """A bank run's race steps: its losers' (``race_extra_steps``) and its winner's race rounds."""
    start = r.get("start", {})
    chosen = next((c for c in start.get("candidates", []) if c["name"] == start.get("chosen")), {})
    return int(r.get("race_extra_steps") or 0) + len(chosen.get("race", [])) * int(st["race"]["steps"])


def sim_pairs(rows: list[dict[str, Any]], budget: int) -> dict[str, list[list[float]]]:
    """The simulator's measured pairs from a summary's rows: (random-init steps, bank-init steps) and the
    same jobs' (random-init steps, text-init steps), each as ``cost_steps`` counts them."""
    return {
        "pairs": [
            [cost_steps(x["random_steps"], budget), cost_steps(x["bank_steps"], budget)]
            for x in rows
            if "random_steps" in x
        ],
        # the same jobs from text init (the simulator's --init text)
        "text_pairs": [
            [cost_steps(x["random_steps"], budget), cost_steps(x["text_steps"], budget)]
            for x in rows
            if "random_steps" in x and "text_steps" in x
        ],
    }


def cpu_to(run: dict[str, Any], steps: int | None) -> float:
    """CPU seconds until the target: a run that stopped there, its CPU; a random-init run (which went the
    whole budget) its CPU up to that evaluation, in proportion of its wall clock; a miss, all of it."""
    if steps is None or run["init"] != "random":
        return float(run["cpu_s"])
    wall = {int(c[0]): c[2] for c in run["curve"]}
    return float(run["cpu_s"]) * wall[steps] / max(1e-9, run["curve"][-1][2])


def own_time(run: dict[str, Any], steps: int | None, step_cpu: float | None) -> float | None:
    """CPU seconds to the target (``cpu_to``) in units of the run's own CPU seconds per step: a time that
    does not depend on what else ran on the machine, so runs made at different loads compare (CPU seconds
    do not: the same step took 1.8 CPU-s alone and 3.1 beside another job here)."""
    return cpu_to(run, steps) / step_cpu if step_cpu else None


def step_cpus(runs: list[dict[str, Any]]) -> dict[int, float]:
    """Each run's median CPU seconds per training step (by ``id``). Where a run recorded none -- a baseline
    from before the field existed, a bank job whose race ended at its target, so no step after it --
    the same job's baseline's, times the median ratio of the two among the runs of its group (init,
    order) that have both: the step's cost follows the task's text lengths, the factor the load."""
    base: dict[str, float] = {}  # the job's text-init run's step, else its random-init run's
    for init in ("random", "text"):
        base.update(
            {r["job"]: float(r["step_cpu_s"]) for r in runs if r["init"] == init and r.get("step_cpu_s")}
        )
    out = {id(r): float(r["step_cpu_s"]) for r in runs if r.get("step_cpu_s")}
    factors: dict[tuple[str, Any], list[float]] = {}
    for r in runs:
        if r.get("step_cpu_s") and r["job"] in base:
            factors.setdefault((r["init"], r.get("order")), []).append(
                float(r["step_cpu_s"]) / base[r["job"]]
            )
    for r in runs:
        f = factors.get((r["init"], r.get("order")))
        if id(r) not in out and r["job"] in base and f:
            out[id(r)] = base[r["job"]] * statistics.median(f)
    return out


def gmean(xs: list[float]) -> float:
    return math.exp(statistics.mean(math.log(max(x, 1e-3)) for x in xs)) if xs else float("nan")


def stats(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "median": round(statistics.median(xs), 3),
        "gmean": round(gmean(xs), 3),
        "min": round(min(xs), 3),
        "max": round(max(xs), 3),
        "won": sum(x > 1 for x in xs),
        "tied": sum(x == 1 for x in xs),
        "lost": sum(x < 1 for x in xs),
    }


def summarize(args: argparse.Namespace) -> dict[str, Any]:
    st = settings()
    budget = st["max_steps"]
    runs = [r for r in read_runs() if "error" not in r]
    rnd = {r["job"]: r for r in runs if r["init"] == "random"}
    txt = {r["job"]: r for r in runs if r["init"] == "text"}
    bank = [r for r in runs if r["init"] == "bank"]
    step_cpu = step_cpus(runs)

    def row_of(r: dict[str, Any]) -> dict[str, Any]:
        job = r["job"]
        tgt = r["target"]
        row: dict[str, Any] = {
            "job": job,
            "bank_entries": r["bank_entries"],
            "chosen": r["start"]["chosen"],
            "raced": r["start"]["raced"],
            "bank_steps": r["steps"] if r["reached"] else None,
            "race_extra_steps": r["race_extra_steps"],
            "bank_cpu_s": r["cpu_s"],
            "select_cpu_s": r["select_cpu_s"],
            # in the job's own steps (estimated where it ran none after its race: ``step_cpus``)
            "select_in_steps": round(r["select_cpu_s"] / step_cpu[id(r)], 2) if id(r) in step_cpu else None,
        }
        b = cost_steps(row["bank_steps"], budget)
        if job in rnd:
            rs = steps_to(rnd[job]["curve"], tgt)
            row["random_steps"] = rs
            row["ratio_vs_random"] = round(cost_steps(rs, budget) / b, 3)
            row["wall_ratio_vs_random"] = round(cpu_to(rnd[job], rs) / r["cpu_s"], 3)
            b_time = own_time(r, row["bank_steps"], step_cpu.get(id(r)))
            r_time = own_time(rnd[job], rs, step_cpu.get(id(rnd[job])))
            if b_time and r_time:
                row["time_ratio_vs_random"] = round(r_time / b_time, 3)
        if job in txt:
            ts = txt[job]["steps"] if txt[job]["reached"] else None
            row["text_steps"] = ts
            row["ratio_vs_text"] = round(cost_steps(ts, budget) / b, 3)
            row["wall_ratio_vs_text"] = round(cpu_to(txt[job], ts) / r["cpu_s"], 3)
        row["race_steps"] = race_steps(r, st)
        return row

    rows: list[dict[str, Any]] = []
    for r in sorted(bank, key=lambda r: (r["order"], r["position"])):
        order = st["orders"][int(r["order"])]
        first = next(j for j in order if j.split("#")[0] == r["job"].split("#")[0]) == r["job"]
        earlier = {
            x["job"].split("#")[0]
            for x in bank
            if x["order"] == r["order"] and x["position"] < r["position"] and x["reached"]
        }
        rows.append(
            {
                "order": r["order"],
                "position": r["position"],
                "first_of_task": first,
                "same_task_in_bank": r["job"].split("#")[0] in earlier,
                "same_task_probed": any(x.get("task_name") == r["job"].split("#")[0] for x in r["probes"]),
                # the chosen start (after its race steps) already met the target where it was first
                # evaluated: at its start (a race's winner was evaluated at its start, step 2, until
                # 2026-12-08; since, at its next evaluation step: ``start_step`` says where it started)
                "winner_at_start": bool(
                    r["reached"]
                    and r["curve"][0][0] == r.get("start_step", r["curve"][0][0])
                    and r["curve"][0][1] >= r["target"]
                ),
                **row_of(r),
            }
        )
    novel = [row_of(r) for r in runs if r["init"] == "novel"]

    def pick(sel: list[dict[str, Any]], k: str) -> list[float]:
        return [x[k] for x in sel if x.get(k) is not None]

    groups = {"all": rows, "first_of_task": [x for x in rows if x["first_of_task"]]}
    groups["repeat"] = [x for x in rows if not x["first_of_task"]]
    out: dict[str, Any] = {
        "settings": {k: st[k] for k in st if k not in ("orders",)},
        "jobs": len(job_ids(st)),
        "orders_run": sorted({x["order"] for x in rows}),
        "bank_runs": len(rows),
        "random_runs": len(rnd),
        "text_runs": len(txt),
        "random_median_steps_to_target": statistics.median(
            cost_steps(steps_to(r["curve"], target_of(st, j)), budget) for j, r in rnd.items()
        )
        if rnd and st.get("targets")
        else None,
        "reached": {
            "bank": sum(x["bank_steps"] is not None for x in rows),
            "random": sum(x.get("random_steps") is not None for x in rows if "random_steps" in x),
            "text": sum(x.get("text_steps") is not None for x in rows if "text_steps" in x),
            "of": len(rows),
        },
    }
    for g, sel in groups.items():
        out[g] = {
            k: stats(pick(sel, k))
            for k in (
                "ratio_vs_random",
                "ratio_vs_text",
                "wall_ratio_vs_random",
                "wall_ratio_vs_text",
                "time_ratio_vs_random",
            )
        }
        out[g]["select_in_steps"] = stats(pick(sel, "select_in_steps"))
    a = out["all"]
    out["median_steps_ratio_vs_random"] = a["ratio_vs_random"].get("median")
    out["median_steps_ratio_vs_text"] = a["ratio_vs_text"].get("median")
    out["median_wall_ratio_vs_random"] = a["wall_ratio_vs_random"].get("median")
    # the same in units of each run's own step (load-independent; see own_time)
    out["median_time_ratio_vs_random"] = a["time_ratio_vs_random"].get("median")
    out["median_selection_in_steps"] = a["select_in_steps"].get("median")
    out["per_position"] = [
        {
            "position": p,
            **{
                k: stats(pick([x for x in rows if x["position"] == p], k))
                for k in ("ratio_vs_random", "ratio_vs_text")
            },
        }
        for p in sorted({x["position"] for x in rows})
    ]
    if novel:
        worse = []
        for x in novel:
            if "random_steps" not in x or "text_steps" not in x:
                continue
            better = min(cost_steps(x["random_steps"], budget), cost_steps(x["text_steps"], budget))
            if cost_steps(x["bank_steps"], budget) > better + x["race_steps"]:
                worse.append(x["job"])
        out["novel_task"] = {
            **{
                k: stats(pick(novel, k))
                for k in ("ratio_vs_random", "ratio_vs_text", "wall_ratio_vs_random", "time_ratio_vs_random")
            },
            "select_in_steps": stats(pick(novel, "select_in_steps")),
            "reached": sum(x["bank_steps"] is not None for x in novel),
            "worse_than_better_baseline_by_more_than_the_race": worse,
        }
        seps = [r for r in runs if r["init"] == "novel" and (r["start"].get("separation") is not None)]
        if seps:  # a variant with race.separate_z: where the probe's separation was tested, and skipped it
            out["novel_task"]["separation"] = {
                "tested": [r["job"] for r in seps],
                "skipped_race": [r["job"] for r in seps if not r["start"]["raced"]],
            }
        out["novel_rows"] = novel

    def chain(sel: list[dict[str, Any]]) -> dict[str, int]:
        def task_of(name: str) -> str:
            return name.split(":", 1)[1].split("/")[0] if name.startswith("entry:") else ""

        return {
            "jobs": len(sel),
            "same_task_in_bank": sum(x["same_task_in_bank"] for x in sel),
            "same_task_probed": sum(x["same_task_probed"] for x in sel),
            "same_task_chosen": sum(task_of(x["chosen"]) == x["job"].split("#")[0] for x in sel),
            "other_entry": sum(task_of(x["chosen"]) not in ("", x["job"].split("#")[0]) for x in sel),
            "blend": sum(x["chosen"] == "blend" for x in sel),
            "text": sum(x["chosen"] == "text" for x in sel),
            "random": sum(x["chosen"] == "random" for x in sel),
            "raced": sum(bool(x["raced"]) for x in sel),
            "at_target_at_start": sum(x["winner_at_start"] for x in sel),
        }

    out["chain"] = {g: chain(groups[g]) for g in ("first_of_task", "repeat")}

    def race_free(rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The ratios were the race's losers' steps free (a diagnostic: they are the job's)."""
        free_r, free_t = [], []
        for x in rows:
            b = cost_steps(
                x["bank_steps"] - x["race_extra_steps"] if x["bank_steps"] is not None else None, budget
            )
            if "random_steps" in x:
                free_r.append(cost_steps(x["random_steps"], budget) / b)
            if "text_steps" in x:
                free_t.append(cost_steps(x["text_steps"], budget) / b)
        return {
            "extra_steps_median": statistics.median([x["race_extra_steps"] for x in rows]) if rows else None,
            "vs_random": stats(free_r),
            "vs_text": stats(free_t),
        }

    out["race_free"] = race_free(rows)
    if novel:
        out["novel_task"]["race_free"] = race_free(novel)
        out["novel_task"]["chosen"] = {
            "other_entry": sum(x["chosen"].startswith("entry:") for x in novel),
            "blend": sum(x["chosen"] == "blend" for x in novel),
            "text": sum(x["chosen"] == "text" for x in novel),
            "random": sum(x["chosen"] == "random" for x in novel),
            "raced": sum(bool(x["raced"]) for x in novel),
        }
    out["rows"] = rows
    if args.write_data:  # the simulator's bank-init work (sim/workload.py: load_bank_pairs)
        data = {
            "about": "Per-job (random-init steps, bank-init steps) of the service stream "
            "(benchmarks/bank_stream.py --summarize --write-data); a miss counts as the step budget, a start "
            "already at the target as 1 step. The simulator scales a bank job's random-init work by the "
            "ratio of one pair (sim.workload.WorkModel: by default one of the job's own random-init rank).",
            "budget": budget,
            "runs": _rel(str(RUNS)),
            "settings": _rel(str(SETTINGS)),
            "orders": out["orders_run"],
            **sim_pairs(rows, budget),
        }
        (ROOT / "src" / "prompttuner" / "data" / "bank_stream_pairs.json").write_text(json.dumps(data) + "\n")
    dest = Path(args.out) if args.out else RUNS.parent / "bank_stream.json"
    if dest.suffix != ".json":
        raise SystemExit(f"--out {dest}: a .json path (the report goes beside it as .md)")
    dest.write_text(json.dumps(out, indent=1) + "\n")
    dest.with_suffix(".md").write_text(report(out, st))
    brief = {k: v for k, v in out.items() if k not in ("rows", "novel_rows", "per_position", "settings")}
    print(json.dumps(brief, indent=1))
    return out


def _rel(arg: str) -> str:
    """A path argument relative to the repository (as a reader reruns it); other arguments as they are."""
    try:
        return str(Path(arg).resolve().relative_to(ROOT)) if "/" in arg else arg
    except ValueError:
        return arg


def _fmt(d: dict[str, Any]) -> str:
    if not d or not d.get("n"):
        return "n/a"
    return (
        f"**{d['median']:.2f}x** (gmean {d['gmean']:.2f}x, {d['min']:.2f}-{d['max']:.2f}x, "
        f"won/tied/lost {d['won']}/{d['tied']}/{d['lost']}, n={d['n']})"
    )


def _steps(v: Any) -> str:
    return "miss" if v is None else str(v)


def report(out: dict[str, Any], st: dict[str, Any]) -> str:
    """``bank_stream.md``: what was run, the results per group and position, the goals, every job."""
    budget = st["max_steps"]
    done = [r for r in read_runs() if "error" not in r]
    cpu_h = sum(r["cpu_s"] for r in done) / 3600
    race = st["race"]
    few = sorted(
        {
            (r["job"].split("#")[0], r["val_rows"])
            for r in done
            if r.get("val_rows", st["eval_size"]) < st["eval_size"]
        }
    )
    small = ", ".join(f"{t}: {n}, its half is small" for t, n in few)
    lines = [
        "# Prompt Bank: the service stream (and the novel-task protocol)",
        "",
        f"Written by `python benchmarks/bank_stream.py {' '.join(_rel(a) for a in sys.argv[1:])}` from "
        f"`{_rel(str(RUNS))}` (one line per run, resumable); settings, targets and orders are in "
        f"`{_rel(str(SETTINGS))}`, committed before any bank run. Machine: the shared 2-core "
        "x86_64 CPU, torch 2.13.0 CPU, smollm2-135m in fp32, the workers and torch threads that the run's "
        f"README states. CPU so far: {cpu_h:.2f} CPU-hours over {len(done)} runs.",
        "",
        "## Protocol",
        "",
        f"- {len(st['tasks'])} shared tasks x {st['jobs_per_task']} jobs on disjoint halves of each task's "
        f"training rows (seed {st['seed_base']} + half); "
        f"{st['eval_size']} stratified validation rows held out "
        f"of the job's half ({small or 'every job'}), evaluated every {st['eval_every']} steps; "
        f"{st['num_virtual_tokens']} virtual tokens, batch "
        f"{st['batch_size']}, texts cut to {st['max_length']} "
        f"tokens, a {budget}-step budget.",
        f"- Targets: {st['target_rule']} (target_frac = {st['target_frac']}).",
        "- Baselines, the same data and seed, independent of the order: random init (run the whole budget; "
        "steps to target read from its curve) and text init (to the target).",
        "- Stream: the bank starts empty; each job starts through `bank.warm_start`: the cheap selection "
        "(`bank.CHEAP`: 3 representatives, 3 members and the text init on 4 rows, the 3 best on 6 more"
        + (f"; with {st['selection']} in place of its fields" if st.get("selection") else "")
        + "), the blend of the two best entries, "
        + ("a check of the best start on the validation rows at step 0, " if race.get("check_first") else "")
        + "and -- unless the best start meets the target -- a "
        f"race of {race['candidates']} starts (of the best bank start, text init, random init, in that "
        f"order), {race['steps']} steps per round, halving; the learning rate from the start's fit. The "
        "race's steps are the job's, out of its budget. A job that reaches its target adds its prompt "
        "to the bank.",
        "- Ratios: baseline steps / bank steps (a miss counts as the budget, so a ratio against a missed "
        "baseline is a lower bound; a start already at the target as 1 step). Time ratios: CPU seconds to "
        "the target, the bank's with its selection and race; the same in each run's own steps (its CPU "
        "seconds over its median CPU seconds per step), which compares runs made at different loads.",
        "",
        "## Results",
        "",
        f"Orders run: {', '.join(out['orders_run']) or 'none'} ({out['bank_runs']} stream jobs); baselines: "
        f"{out['random_runs']} random-init and {out['text_runs']} text-init runs. Random init's median steps "
        f"to target: {out['random_median_steps_to_target']}. Targets reached by the stream's jobs: bank "
        f"{out['reached']['bank']}, random {out['reached']['random']}, text {out['reached']['text']} of "
        f"{out['reached']['of']}.",
        "",
        "| jobs | steps vs random | steps vs text | CPU time "
        "vs random (selection incl.) | the same in own steps | selection in steps |",
        "|---|---|---|---|---|---|",
    ]

    def sel_cell(sel: dict[str, Any]) -> str:
        return f"{sel['median']:.2f} ({sel['min']:.2f}-{sel['max']:.2f})" if sel.get("n") else "n/a"

    for g in ("all", "first_of_task", "repeat"):
        d = out[g]
        lines.append(
            f"| {g.replace('_', ' ')} | {_fmt(d['ratio_vs_random'])} | {_fmt(d['ratio_vs_text'])} | "
            f"{_fmt(d['wall_ratio_vs_random'])} | {_fmt(d['time_ratio_vs_random'])} | "
            f"{sel_cell(d['select_in_steps'])} |"
        )
    nov = out.get("novel_task")
    if nov:
        lines.append(
            f"| novel task (bank of the other tasks) | {_fmt(nov['ratio_vs_random'])} | "
            f"{_fmt(nov['ratio_vs_text'])} | {_fmt(nov['wall_ratio_vs_random'])} | "
            f"{_fmt(nov['time_ratio_vs_random'])} | {sel_cell(nov['select_in_steps'])} |"
        )
    lines += ["", "By arrival position (ratios over the orders' jobs at those positions):", ""]
    lines += ["| positions | vs random: median, gmean | vs text: median, gmean | jobs |", "|---|---|---|---|"]
    rows = out["rows"]

    def mg(xs: list[float]) -> str:
        d = stats(xs)
        return f"{d['median']:.2f}x, {d['gmean']:.2f}x" if d.get("n") else "n/a"

    for lo in range(0, len(job_ids(st)), 8):
        part = [x for x in rows if lo <= x["position"] < lo + 8]
        if part:
            lines.append(
                f"| {lo + 1}-{lo + 8} | "
                f"{mg([x['ratio_vs_random'] for x in part if 'ratio_vs_random' in x])} | "
                f"{mg([x['ratio_vs_text'] for x in part if 'ratio_vs_text' in x])} | {len(part)} |"
            )
    lines += ["", "## The chain: content, selection, start", ""]
    for g in ("first_of_task", "repeat"):
        c = out["chain"][g]
        if not c["jobs"]:
            continue
        lines.append(
            f"- {g.replace('_', ' ')} ({c['jobs']} jobs): the bank held an entry of the same task for "
            f"{c['same_task_in_bank']}, probed it for {c['same_task_probed']}; the start chosen was an entry "
            "of the same task for "
            f"{c['same_task_chosen']}, another task's entry for {c['other_entry']}, the blend for "
            f"{c['blend']}, text init for {c['text']}, "
            f"random init for {c['random']}; raced {c['raced']}; at the target from the start (0 steps after "
            f"the race) {c['at_target_at_start']}."
        )
    fr = out["race_free"]
    if fr["vs_random"].get("n"):
        lines.append(
            f"- the race's price: the losers' steps (median {fr['extra_steps_median']}; the chosen "
            "start's own race steps stay counted). Were they free, the median ratios would be "
            f"{fr['vs_random']['median']:.2f}x vs random and "
            f"{fr['vs_text'].get('median', float('nan')):.2f}x "
            "vs text (a diagnostic, not a result: the losers' steps are the job's)."
        )
    a, f = out["all"], out["first_of_task"]
    goals = [
        ("median >= 2x fewer steps than random init", a["ratio_vs_random"].get("median"), 2.0),
        ("median >= 1.5x fewer steps than text init", a["ratio_vs_text"].get("median"), 1.5),
        ("first-of-task jobs >= 1.2x fewer steps than text init", f["ratio_vs_text"].get("median"), 1.2),
        (
            "CPU time with selection >= 1.5x better than random init",
            a["wall_ratio_vs_random"].get("median"),
            1.5,
        ),
        (
            "the same in each run's own steps (load-independent)",
            a["time_ratio_vs_random"].get("median"),
            1.5,
        ),
    ]
    lines += ["", "## Goals (service stream)", ""]
    for name, v, want in goals:
        verdict = "n/a" if v is None else ("**met**" if v >= want else "**not met**")
        lines.append(f"- {name}: {verdict}" + ("" if v is None else f" ({v:.2f}x)"))
    sm = out.get("median_selection_in_steps")
    if sm is not None:
        lines.append(
            f"- selection <= 3 steps of time: {'**met**' if sm <= 3 else '**not met**'} (median {sm:.2f})"
        )
    if nov:
        fr, ch, novel = nov["race_free"], nov["chosen"], out["novel_rows"]
        worse = nov["worse_than_better_baseline_by_more_than_the_race"]
        tv = nov["ratio_vs_text"].get("median")
        lines += [
            "",
            "## Novel task (each task's bank: the other tasks' stream prompts not descended from it)",
            "",
            "- median >= 1.2x fewer steps than text init: "
            + ("n/a" if tv is None else f"{'**met**' if tv >= 1.2 else '**not met**'} ({tv:.2f}x)"),
            f"- the bank's start never worse than the better of random and text init by more than the race's "
            f"steps: {'**met**' if not worse else '**not met**'} ({len(worse)} of {len(novel)} jobs: "
            f"{', '.join(worse) or '-'})",
            f"- reached the target within the budget: {nov['reached']} of {len(novel)}",
            f"- the start chosen: another task's entry {ch['other_entry']}, the blend {ch['blend']}, "
            f"text init {ch['text']}, random init {ch['random']}; raced {ch['raced']}",
            *(
                [
                    f"- the race skipped where the probe separates the best bank start from both cold inits "
                    f"(race.separate_z {st['race'].get('separate_z')}): tested for {len(sp['tested'])} jobs, "
                    f"skipped for {len(sp['skipped_race'])} ({', '.join(sp['skipped_race']) or '-'})"
                ]
                if (sp := nov.get("separation"))
                else []
            ),
            f"- the race's price: the losers' steps (median {fr['extra_steps_median']}). Were they free, the "
            f"median ratios would be {fr['vs_random'].get('median', float('nan')):.2f}x vs random and "
            f"{fr['vs_text'].get('median', float('nan')):.2f}x vs text (a diagnostic, not a result).",
            "",
            "| job | entries | start | raced | race steps | bank | random | text | sel. (steps) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for x in novel:
            lines.append(
                f"| {x['job']} | {x['bank_entries']} | {x['chosen']} | {'y' if x['raced'] else ''} | "
                f"{x['race_steps']} | {_steps(x['bank_steps'])} | {_steps(x.get('random_steps'))} | "
                f"{_steps(x.get('text_steps'))} | "
                f"{x['select_in_steps'] if x['select_in_steps'] is not None else '-'} |"
            )
    lines += [
        "",
        "## Every stream job",
        "",
        "| order | pos | job | first | entries | start | raced "
        "| race steps | bank | random | text | sel. (steps) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in rows:
        lines.append(
            f"| {x['order']} | {x['position'] + 1} | {x['job']} | {'y' if x['first_of_task'] else ''} | "
            f"{x['bank_entries']} | {x['chosen']} | {'y' if x['raced'] else ''} | {x['race_steps']} | "
            f"{_steps(x['bank_steps'])} | {_steps(x.get('random_steps'))} | {_steps(x.get('text_steps'))} | "
            f"{x['select_in_steps'] if x['select_in_steps'] is not None else '-'} |"
        )
    lines += ["", "Targets: " + ", ".join(f"{t} {v}" for t, v in st.get("targets", {}).items()), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    global SETTINGS, RUNS, INPUTS, OWN_STREAM
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=["random", "targets", "text", "stream", "novel"], default=None)
    ap.add_argument("--orders", default=None, help="with --phase stream: which orders (default: all)")
    ap.add_argument("--summarize", action="store_true")
    ap.add_argument("--write-data", action="store_true", help="with --summarize: the simulator's pairs")
    ap.add_argument(
        "--out",
        default=None,
        help="with --summarize: the summary's path (.json; the .md beside it); default: bank_stream.json "
        "beside the runs file",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shard", default=None, help="K/N: run the K-th of N parts of this phase's list")
    ap.add_argument("--only", default=None, help="comma-separated tasks or jobs")
    ap.add_argument("--work", default="/tmp/prompttuner-bank-stream")
    ap.add_argument("--settings", default=str(SETTINGS), help="(a smoke run's own settings)")
    ap.add_argument("--runs", default=str(RUNS), help="(a smoke run's or a variant's own runs file)")
    ap.add_argument(
        "--inputs-from",
        default=None,
        help="a variant: read the baseline and stream runs (and the stream's prompts) of this runs file",
    )
    ap.add_argument(
        "--own-stream",
        action="store_true",
        help="with --inputs-from: the variant reruns the streams (its own stream runs and prompts; the "
        "inputs' baselines only)",
    )
    args = ap.parse_args()
    SETTINGS, RUNS = Path(args.settings), Path(args.runs)
    INPUTS = Path(args.inputs_from) if args.inputs_from else None
    OWN_STREAM = bool(args.own_stream)
    if OWN_STREAM and (INPUTS is None or RUNS.resolve() == INPUTS.resolve()):
        raise SystemExit("--own-stream is for a variant: give its own --runs and the --inputs-from it reuses")
    if args.phase == "targets":
        st = settings()
        if any(r["init"] in ("bank", "novel") for r in read_runs()):
            raise SystemExit("bank runs exist: the targets are fixed before any bank run")
        st["targets"] = make_targets(st)
        SETTINGS.write_text(json.dumps(st, indent=1) + "\n")
        print(json.dumps(st["targets"], indent=1))
        return
    if args.phase:
        if args.workers == 1:
            worker(args, 0)
        else:
            procs = [mp.Process(target=worker, args=(args, k)) for k in range(args.workers)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
    if args.summarize:
        summarize(args)


if __name__ == "__main__":
    main()
