"""Where a bank job's evaluations and selection time go, read from committed stream runs (no model runs).

    python benchmarks/bank_stream_evals.py    # -> benchmarks/results/bank_stream_evals.md

The figures the evaluation-schedule change (``results/bank_stream_evalsched/``) and ``trust_probe``
(``results/bank_stream_trustprobe/``) were planned and judged with:

1. Over every committed ``*.runs.jsonl`` under ``benchmarks/results/`` made before the schedule changed
   (all but ``bank_stream_evalsched/`` and ``bank_stream_trustprobe/``), bank jobs: how many raced, how
   many of those met the target at the winner's evaluation at step 2 (the old schedule's), and how many
   unraced starts met it at their evaluation at step 0.
2. In ``bank_stream_race2/`` (both orders): the check's CPU time and the selection's time without it, in
   steps of the same job's time (median, range).
3. In ``bank_stream_evalsched/``: the starts "at the target on the probe" and how many of them the start's
   evaluation at step 0 found below the target (with the steps they then took).
4. ``bank_stream_evalsched/`` against the race of two on the same CPU (order 0 ``bank_stream_race2/
   order0_epyc/``, order 1 ``bank_stream_race2/``): on the jobs with the same steps, start kind and race,
   the CPU time saved, in steps of the job's time (raced and unraced apart).
5. ``bank_stream_evalsched/``'s medians per order (time vs random init in own steps, selection in steps),
   the base ``trust_probe``'s order 1 is compared with; and the labels of sms_spam#1's validation rows.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
AFTER = ("bank_stream_evalsched", "bank_stream_trustprobe")  # run with the new schedule


def runs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open() if line.strip()]


def bank_jobs(path: Path) -> list[dict[str, Any]]:
    return [r for r in runs(path) if r.get("init") == "bank" and r.get("curve") and "start" in r]


def spread(xs: list[float]) -> str:
    return (
        f"median {statistics.median(xs):.2f}, range {min(xs):.2f}-{max(xs):.2f}, n={len(xs)}" if xs else "n=0"
    )


def old_schedule() -> dict[str, int]:
    c = {"raced": 0, "raced_at_target_at_2": 0, "unraced": 0, "unraced_at_target_at_0": 0}
    for f in sorted(RESULTS.glob("**/*.runs.jsonl")):
        if any(part in AFTER for part in f.relative_to(RESULTS).parts):
            continue
        for r in bank_jobs(f):
            step, acc = r["curve"][0][0], r["curve"][0][1]
            at = acc >= r["target"] - 1e-6
            if r["start"].get("raced"):
                c["raced"] += 1
                c["raced_at_target_at_2"] += int(step == 2 and at)
            else:
                c["unraced"] += 1
                c["unraced_at_target_at_0"] += int(r["steps"] == 0 or (step == 0 and at))
    return c


def check_cost() -> tuple[str, str]:
    check, rest = [], []
    for r in bank_jobs(RESULTS / "bank_stream_race2" / "bank_stream.runs.jsonl"):
        fc, step = r["start"].get("first_check") or {}, r.get("step_cpu_s")
        if step and fc.get("cpu_s"):
            check.append(fc["cpu_s"] / step)
            rest.append((r["select_cpu_s"] - fc["cpu_s"]) / step)
    return spread(check), spread(rest)


def probe_skips() -> tuple[int, list[int]]:
    n, refuted = 0, []
    for r in bank_jobs(RESULTS / "bank_stream_evalsched" / "bank_stream.runs.jsonl"):
        if r["start"].get("no_race") == "at the target on the probe":
            n += 1
            if r["start"]["start_eval"]["val_accuracy"] < r["target"] - 1e-6:
                refuted.append(r["steps"] if r["reached"] else 50)
    return n, sorted(refuted)


def saved() -> tuple[int, str, str]:
    base = {
        (r["order"], r["job"]): r
        for f, order in (("bank_stream_race2/order0_epyc", "0"), ("bank_stream_race2", "1"))
        for r in bank_jobs(RESULTS / f / "bank_stream.runs.jsonl")
        if r["order"] == order
    }
    raced, unraced, same = [], [], 0
    for r in bank_jobs(RESULTS / "bank_stream_evalsched" / "bank_stream.runs.jsonl"):
        b = base[(r["order"], r["job"])]
        keys = ("steps", "reached")
        if any(b[k] != r[k] for k in keys) or any(b["start"][k] != r["start"][k] for k in ("raced", "kind")):
            continue
        same += 1
        step = r["step_cpu_s"] or b["step_cpu_s"]
        if step:
            (raced if r["start"]["raced"] else unraced).append((b["cpu_s"] - r["cpu_s"]) / step)
    return same, spread(raced), spread(unraced)


def per_order() -> str:
    rows = json.loads((RESULTS / "bank_stream_evalsched" / "bank_stream.json").read_text())["rows"]
    out = []
    for order in ("0", "1"):
        rs = [r for r in rows if r["order"] == order]

        def med(k: str, rs: list[dict[str, Any]] = rs) -> float:
            return statistics.median(r[k] for r in rs if r.get(k) is not None)

        out.append(
            f"order {order}: time vs random {med('time_ratio_vs_random'):.3f}x, selection "
            f"{med('select_in_steps'):.2f} steps (n={len(rs)})"
        )
    return "; ".join(out)


def sms_spam_rows() -> str:
    import collections
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bank_stream import job_task
    from prompttuner.tuning.split import training_split

    st = json.loads((RESULTS / "bank_stream_evalsched" / "settings.json").read_text())
    task, _ = job_task(st, "sms_spam#1")
    _, val = training_split(task, st["eval_size"])
    return ", ".join(f"{k} {v}" for k, v in sorted(collections.Counter(e.label for e in val).items()))


def main() -> None:
    c = old_schedule()
    chk, rest = check_cost()
    n, refuted = probe_skips()
    same, raced, unraced = saved()
    out = f"""# Where a bank job's evaluations and selection time go (committed stream runs)

Written by `python benchmarks/bank_stream_evals.py` (reads committed runs only; see its docstring).

- Old schedule, every committed run before `bank_stream_evalsched/`: {c["raced"]} raced bank jobs, of which
  {c["raced_at_target_at_2"]} met the target at the winner's evaluation at step 2; {c["unraced"]} unraced,
  of which {c["unraced_at_target_at_0"]} met it at step 0.
- `bank_stream_race2/` (both orders): the check at step 0 costs {chk} steps of the job's time; the
  selection without it {rest}.
- `bank_stream_evalsched/`: {n} starts at the target on the probe; {len(refuted)} of them below it on the
  validation rows at step 0, which then took {", ".join(map(str, refuted))} steps (a miss as 50).
- `bank_stream_evalsched/` medians per order: {per_order()}.
- sms_spam#1's validation rows: {sms_spam_rows()} (the probe's 10 rows: balanced over the labels).
- `bank_stream_evalsched/` against the race of two on one CPU: {same} jobs with the same steps, start kind
  and race; CPU time saved, in steps of the job's time: raced {raced}; unraced {unraced}.
"""
    (RESULTS / "bank_stream_evals.md").write_text(out)
    print(out)


if __name__ == "__main__":
    main()
