"""Which probe signal finds the bank entry a job should start from?  (leave one task out of 16)

For each of the 16 shared tasks T, the 15 other tasks' source prompts (those of ``bank_speedup.py``) and
T's own text init are run, with no training, on

- ``current``: the probe sample selection used so far (``Budget()``: 4 rows of T's data, cut to 16 words);
- ``train``: 32 rows of T's *training split* (the trainer's validation rows excluded), round-robin over
  labels, at the engine's ``max_length`` (no word cut);
- ``val``: T's validation rows (the ones the trainer measures its target on).

The label-word logits of every (prompt, row) are written to ``bank_signals.json``, so any signal (loss or
accuracy on the first N rows of ``train``, any mix) can be scored offline against the ground truth: the
step-0 validation accuracy of each entry (does it meet T's target with no tuning at all?) and the tuned
steps of ``bank_speedup.py``'s hindsight runs where they exist.

    python benchmarks/bank_signals.py --workers 2       # logits (resumable, one line per task)
    python benchmarks/bank_signals.py --summarize       # bank_signals.md: signal vs ground truth
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import bank_speedup as bs  # type: ignore[import-not-found]  # noqa: E402

OUT = bs.RESULTS / "bank_signals"
MARK = "<!-- table written by --summarize -->"
TRAIN_ROWS = 32


def task_record(args: argparse.Namespace, loaded: Any, name: str, tasks: list[str]) -> dict[str, Any]:
    from prompttuner.bank import Budget
    from prompttuner.bank.probe import LLMProbe, probe_sample
    from prompttuner.tuning import PromptTrainer, TextInit, load_prompt, load_task, resolve_init

    prof = bs.profiles(args)
    st, info = prof["settings"], prof["tasks"][name]["info"]
    task = load_task(Path(args.data) / name)
    trainer = PromptTrainer(loaded, task, bs.config_for(st, "random", 0, info["target"]))
    names, prompts = [], []
    for other in tasks:
        if other != name:
            key, f, _ = bs.source_of(args, other)
            names.append(f"{other}/{key}")
            prompts.append(load_prompt(f)[0])
    names.append("text-init")
    prompts.append(resolve_init(TextInit(), loaded, task, num_virtual_tokens=st["num_virtual_tokens"]))
    samples = {
        "current": probe_sample(task.train, Budget()),
        "train": probe_sample(trainer.train, Budget(sample_rows=TRAIN_ROWS, max_words=10_000)),
        "val": list(trainer.val),
    }
    out: dict[str, Any] = {"task": name, "target": info["target"], "prompts": names, "samples": {}}
    for key, rows in samples.items():
        t0 = time.process_time()
        probe = LLMProbe(loaded, rows, task.labels, max_length=st["max_length"])
        lg = probe.logits(prompts)
        out["samples"][key] = {
            "targets": probe.targets.tolist(),
            "logits": [[[round(v, 3) for v in row] for row in p.tolist()] for p in lg],
            "cpu_s": round(time.process_time() - t0, 2),
        }
    return out


def worker(args: argparse.Namespace, shard: int, lines: Path) -> None:
    import torch

    from prompttuner.tuning import load_model

    torch.set_num_threads(args.threads)
    tasks = args.tasks.split(",")
    loaded = load_model(args.model)
    for i, name in enumerate(tasks):
        if i % args.workers != shard or name in {r["task"] for r in bs.read_runs(lines)}:
            continue
        rec = task_record(args, loaded, name, tasks)
        with open(lines, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(json.dumps(rec) + "\n")
        print(f"[{shard}] {name}: {[(k, v['cpu_s']) for k, v in rec['samples'].items()]}", flush=True)


# ---- offline scoring ------------------------------------------------------------------------------


def scores(sample: dict[str, Any], rows: int | None = None) -> list[tuple[float, float]]:
    """(loss, accuracy) per prompt on the first ``rows`` rows of a sample."""
    import torch
    import torch.nn.functional as F

    t = torch.tensor(sample["targets"])[:rows]
    out = []
    for p in sample["logits"]:
        x = torch.tensor(p)[:rows]
        out.append((float(F.cross_entropy(x, t)), float((x.argmax(-1) == t).float().mean())))
    return out


def lookup_probe(rec: dict[str, Any], sample: str, rows: int | None, tensors: list[Any]) -> Any:
    """A probe answering from the recorded logits: prompt tensor -> its (loss, accuracy) on the sample."""
    from prompttuner.bank import ProbeScore

    table = {t.float().numpy().tobytes(): i for i, t in enumerate(tensors)}
    sc = scores(rec["samples"][sample], rows)

    def probe(prompts: Any) -> list[Any]:
        return [ProbeScore(*sc[table[p.float().numpy().tobytes()]]) for p in prompts]

    return probe


_BANKS: dict[str, tuple[Path, list[str]]] = {}


def choose(args: argparse.Namespace, rec: dict[str, Any], budget: Any, sample: str, rows: int | None) -> int:
    """The index of the prompt ``select_init`` would start from (the last index: the job's text init),
    through the real index and selection path, with probes answered from the recorded logits."""
    import types

    import torch

    from prompttuner.bank import COLD_INIT, PromptBank, cold_init_wins, job_query, select
    from prompttuner.tuning import load_prompt, load_task

    name = rec["task"]
    tasks = [p.split("/")[0] for p in rec["prompts"][:-1]] + [name]
    if name not in _BANKS:  # one bank per held-out task, shared by every budget scored
        _BANKS[name] = bs.build_loo_bank(args, types.SimpleNamespace(name=args.model), name, tasks)
    folder, names = _BANKS[name]
    assert names == rec["prompts"][:-1], (names, rec["prompts"])
    tensors = [load_prompt(bs.source_of(args, n.split("/")[0])[1])[0] for n in names]
    sentinel = torch.full_like(tensors[0], 1234.5)  # stands for the job's text init
    probe = lookup_probe(rec, sample, rows, [*tensors, sentinel])
    task = load_task(Path(args.data) / name)
    with PromptBank(folder, create=False) as bank:
        q = job_query(task, args.model, budget=budget, num_tokens=tensors[0].shape[0])
        sel = select(bank, q, probe, budget=budget, baselines={COLD_INIT: sentinel})
    if cold_init_wins(sel) is not None:
        return len(names)
    return names.index(f"{sel.entry.task_name}/{sel.entry.extra['run']}")


def summarize(args: argparse.Namespace) -> str:
    from prompttuner.bank import Budget, ProbeScore, rank_key

    recs = bs.read_runs(Path(str(args.out) + ".jsonl"))
    n = len(recs)
    reach = sum(1 for r in recs if max(x[1] for x in scores(r["samples"]["val"])[:-1]) >= r["target"])
    lines = [
        f"{n} tasks; {reach} have an entry that meets the target at step 0 (on the validation rows).",
        "",
        "| selection | rank by | sample | rows | prompts probed | choice meets target at step 0 | "
        "choice = best entry at step 0 | median val acc: choice - best entry | choice - text init |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    plans = [("all 15 entries", None)] + [
        (f"index: {r} reps + {m} members of {e} cluster{'s' * (e > 1)}", (r, m, e))
        for r, m, e in ((3, 2, 1), (4, 4, 1), (4, 4, 2))
    ]
    for plan, shape in plans:
        for by in ("loss", "accuracy"):
            for sample, rows in [("current", 4), *[("train", k) for k in (4, 8, 16, 32)]]:
                if shape is None and sample == "current" and by == "accuracy":
                    continue
                hit = best = 0
                gaps, vs_text = [], []
                for r in recs:
                    val = [v[1] for v in scores(r["samples"]["val"])]
                    if shape is None:
                        sc = scores(r["samples"][sample], rows)
                        pick = min(range(len(sc)), key=lambda i: rank_key(ProbeScore(*sc[i]), by))
                    else:
                        b = Budget(
                            rep_probes=shape[0],
                            member_probes=shape[1],
                            expand_clusters=shape[2],
                            sample_rows=rows,
                            rank_by=by,
                        )
                        pick = choose(args, r, b, sample, rows)
                    top = max(val[:-1])
                    hit += val[pick] >= r["target"]
                    best += val[pick] >= top - 1e-9
                    gaps.append(val[pick] - top)
                    vs_text.append(val[pick] - val[-1])
                probed = 16 if shape is None else shape[0] + shape[1] + 1
                lines.append(
                    f"| {plan} | {by} | {sample} | {rows} | {probed} | {hit}/{n} | {best}/{n} | "
                    f"{statistics.median(gaps):+.3f} | {statistics.median(vs_text):+.3f} |"
                )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=None)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default=None)
    ap.add_argument("--profiles", default=str(bs.PROFILES))
    ap.add_argument("--prompts-dir", default="/work/artifacts/prompts")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/prompttuner-bank-signals")
    ap.add_argument("--summarize", action="store_true")
    args = bs.with_defaults(ap.parse_args())
    if args.summarize:
        text = summarize(args)
        md = Path(str(args.out) + ".md")
        head = md.read_text().split(MARK)[0] if md.exists() else "# bank_signals\n\n"
        md.write_text(head + MARK + "\n\n" + text + "\n")
        print(text)
        return
    bs.run_workers(worker, args, Path(str(args.out) + ".jsonl"))


if __name__ == "__main__":
    main()
