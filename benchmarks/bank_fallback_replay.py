"""What the fallback (``RaceSettings.fallback_at``) would have given, replayed from a stream run's records.

A job whose start lags at its first evaluation at or after ``S`` of its steps (more than ``k`` validation
rows below the target) starts again from random init (``bank.train_from_start``).  Training is
deterministic and random init after a fallback trains as the job's own random-init run does (the same seed,
batches and learning rate), so from the records of a stream run (``--runs``: every bank job's curve, one
evaluation every 5 steps) and of the random-init runs (``--baselines``: the whole budget, no target):

- a job that reached its target before or at the check, or whose start was random init: its own steps;
- a start at or above the threshold at the check: its own steps (it trains on as it did);
- a start below it: the race's losers' steps + the step of the check + random init's steps to the target,
  a miss (the budget) where that passes the budget.

The bank content of later jobs is taken as it was: after a fallback the job adds random init's prompt, not
the one its start reached, so stream figures past such a job approximate; a live run
(``bank_stream.py`` with the fallback in its settings) measures them.  Baselines recorded on another CPU
than the stream run replay approximately too (``bank_cross_cpu.py``: the CPU alone moves steps).

Printed and written (``--out``, a JSON file; ``--summary``: the chosen ``--at``/``--rows`` as a stream
summary, the ``bank_stream.json`` row format that ``sim_bank_starts.py`` reads): for a grid of ``S`` and
``k``, steps in all, the median and geometric-mean steps ratio against random and text init, jobs longer
than random init and more than 2x longer; and the same grid chosen on one order and read on the other::

    python benchmarks/bank_fallback_replay.py \\
        --runs benchmarks/results/bank_stream_race2/bank_stream.runs.jsonl \\
        --settings benchmarks/results/bank_stream_race2/settings.json \\
        --out benchmarks/results/bank_stream_fallback/replay.json --at 5 --rows 2 \\
        --summary benchmarks/results/bank_stream_fallback/replay_summary.json \\
        --live benchmarks/results/bank_stream_fallback/bank_stream.runs.jsonl   # -> replay.md (stdout)

The novel-task phase (``--init novel``; one order, so no cross-order reading)::

    python benchmarks/bank_fallback_replay.py --init novel \
        --runs benchmarks/results/bank_stream_race2/novel/bank_stream.runs.jsonl \
        --settings benchmarks/results/bank_stream_race2/novel/settings.json \
        --out benchmarks/results/bank_stream_fallback/novel/replay.json \
        --live benchmarks/results/bank_stream_fallback/novel/bank_stream.runs.jsonl   # -> novel/replay.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bank_stream import cost_steps, gmean, race_steps, stats, steps_to  # noqa: E402  (the stream's own readings)

AT = (5, 10, 15, 20)
ROWS = (0, 1, 2, 3, 4, 6, 8)
Run = dict[str, Any]


def replay_job(r: Run, rnd: Run, target: float, budget: int, at: int, rows: int) -> tuple[int | None, bool]:
    """The job's steps to ``target`` (None: a miss) with the fallback at ``at`` below ``rows`` rows, and
    whether it fell back.  ``r`` is its bank record, ``rnd`` its random-init record."""
    own = int(r["steps"]) if r["reached"] else None
    extra = int(r.get("race_extra_steps") or 0)
    if r.get("start", {}).get("kind") == "random":
        return own, False
    check = next(((int(s), float(a)) for s, a, *_ in r["curve"] if s >= at), None)
    if check is None:  # it ended (at its target, or the budget) before the check
        return own, False
    step, acc = check
    if own is not None and own - extra <= step:  # at the target at the check: it stops there
        return own, False
    if acc >= target - rows / max(1, int(rnd["val_rows"])) - 1e-6:
        return own, False
    left = budget - extra - step
    r_steps = steps_to(rnd["curve"], target)
    if r_steps is None or r_steps > left:
        return None, True
    return extra + step + r_steps, True


def load(runs: Path, baselines: Path, init: str = "bank") -> tuple[list[Run], dict[tuple[str, str], Run]]:
    """The bank jobs of ``runs`` (``init``: ``bank`` for a stream, ``novel`` for the novel-task phase) and
    the random- and text-init baselines of ``baselines`` by (job, init)."""
    bank = [json.loads(x) for x in runs.read_text().splitlines() if x.strip()]
    bank = [r for r in bank if r["init"] == init and "error" not in r]
    base: dict[tuple[str, str], Run] = {}
    for line in baselines.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if r["init"] in ("random", "text") and "error" not in r:
                base[(r["job"], r["init"])] = r
    return bank, base


def rows_for(
    bank: list[Run], base: dict[tuple[str, str], Run], st: dict[str, Any], at: int | None, rows: int
) -> list[dict[str, Any]]:
    """One row per bank job in the stream summary's format (``bank_steps`` None for a miss)."""
    budget = int(st["max_steps"])
    seen: dict[str, set[str]] = {}
    out = []
    for r in sorted(bank, key=lambda r: (str(r["order"]), int(r.get("position") or 0))):
        task = r["job"].split("#")[0]
        target = float(st["targets"][task])
        rnd, txt = base[(r["job"], "random")], base[(r["job"], "text")]
        if at is None:
            steps, fell = (int(r["steps"]) if r["reached"] else None), False
        else:
            steps, fell = replay_job(r, rnd, target, budget, at, rows)
        order = str(r["order"])
        first = task not in seen.setdefault(order, set())
        seen[order].add(task)
        out.append(
            {
                "order": order,
                "position": int(r.get("position") or 0),
                "job": r["job"],
                "first_of_task": first,
                "chosen": r.get("start", {}).get("chosen"),
                "fell_back": fell,
                "race_steps": race_steps(r, st),
                "bank_steps": steps,
                "random_steps": steps_to(rnd["curve"], target),
                "text_steps": txt["steps"] if txt["reached"] else None,
            }
        )
    return out


def measure(rows: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    b = [cost_steps(x["bank_steps"], budget) for x in rows]
    r = [cost_steps(x["random_steps"], budget) for x in rows]
    t = [cost_steps(x["text_steps"], budget) for x in rows]
    vs_r = [ri / bi for ri, bi in zip(r, b, strict=True)]
    vs_t = [ti / bi for ti, bi in zip(t, b, strict=True)]
    return {
        "jobs": len(rows),
        "fell_back": sum(x["fell_back"] for x in rows),
        "steps": sum(b),
        "random_steps": sum(r),
        "median_vs_random": round(statistics.median(vs_r), 3),
        "median_vs_text": round(statistics.median(vs_t), 3),
        "gmean_vs_random": round(gmean(vs_r), 3),
        "gmean_vs_text": round(gmean(vs_t), 3),
        "longer_than_random": sum(bi > ri for ri, bi in zip(r, b, strict=True)),
        "over_2x_random": sum(bi > 2 * ri for ri, bi in zip(r, b, strict=True)),
        # the novel-task goal's reading: worse than the better of random and text init by more than the
        # race's steps (a fallback's dropped steps are not the race's: they count as worse)
        "worse_than_best_by_more_than_race": sum(
            bi > min(ri, ti) + x["race_steps"] for x, ri, ti, bi in zip(rows, r, t, b, strict=True)
        ),
        "reached": sum(x["bank_steps"] is not None for x in rows),
    }


def grid(bank: list[Run], base: dict[tuple[str, str], Run], st: dict[str, Any], orders: set[str]) -> dict:
    sub = [r for r in bank if str(r["order"]) in orders]
    budget = int(st["max_steps"])
    out = {"none": measure(rows_for(sub, base, st, None, 0), budget)}
    for at in AT:
        for k in ROWS:
            out[f"{at}/{k}"] = measure(rows_for(sub, base, st, at, k), budget)
    return out


def live_check(
    bank: list[Run],
    base: dict[tuple[str, str], Run],
    st: dict[str, Any],
    live: Path,
    at: int,
    k: int,
    init: str = "bank",
) -> dict[str, Any]:
    """A live run with the fallback against the replay of the same orders' records (steps per job)."""
    budget = int(st["max_steps"])
    runs = [json.loads(x) for x in live.read_text().splitlines() if x.strip()]
    runs = [r for r in runs if r["init"] == init and "error" not in r]
    orders = {str(r["order"]) for r in runs}
    sub = [r for r in bank if str(r["order"]) in orders]
    rep = {(x["order"], x["job"]): x for x in rows_for(sub, base, st, at, k)}
    own = {(x["order"], x["job"]): x for x in rows_for(sub, base, st, None, 0)}
    lv = {(str(r["order"]), r["job"]): r for r in runs}
    keys = sorted(set(lv) & set(rep))

    def c(s: int | None) -> float:
        return cost_steps(s, budget)

    live_steps = [c(int(lv[q]["steps"]) if lv[q]["reached"] else None) for q in keys]
    return {
        "runs": os.path.relpath(live),
        "orders": sorted(orders),
        "at": at,
        "rows": k,
        "jobs": len(keys),
        "live_steps": sum(live_steps),
        "replay_steps": sum(c(rep[q]["bank_steps"]) for q in keys),
        "no_fallback_steps": sum(c(own[q]["bank_steps"]) for q in keys),
        "same": sum(x == c(rep[q]["bank_steps"]) for x, q in zip(live_steps, keys, strict=True)),
        "live_fell_back": sum(bool((lv[q].get("fallback") or {}).get("taken")) for q in keys),
        "replay_fell_back": sum(rep[q]["fell_back"] for q in keys),
    }


def summary(rows: list[dict[str, Any]], st: dict[str, Any], at: int, k: int, src: str) -> dict[str, Any]:
    """The replayed rows as a stream summary (what ``sim_bank_starts.py`` reads)."""
    budget = int(st["max_steps"])
    out: dict[str, Any] = {
        "settings": {**st, "race": {**st.get("race", {}), "fallback_at": at, "fallback_rows": k}},
        "replay": f"bank_fallback_replay.py --at {at} --rows {k} over {src}",
    }
    for name, sel in (
        ("all", rows),
        ("first_of_task", [x for x in rows if x["first_of_task"]]),
        ("repeat", [x for x in rows if not x["first_of_task"]]),
    ):
        b = [cost_steps(x["bank_steps"], budget) for x in sel]
        out[name] = {
            "ratio_vs_random": stats(
                [cost_steps(x["random_steps"], budget) / bi for x, bi in zip(sel, b, strict=True)]
            ),
            "ratio_vs_text": stats(
                [cost_steps(x["text_steps"], budget) / bi for x, bi in zip(sel, b, strict=True)]
            ),
        }
    out["median_steps_ratio_vs_random"] = out["all"]["ratio_vs_random"]["median"]
    out["median_steps_ratio_vs_text"] = out["all"]["ratio_vs_text"]["median"]
    out["rows"] = rows
    return out


def _orders(orders: list[str]) -> str:
    named = [o for o in orders if o]
    return f"order(s) {', '.join(named)}" if named else "the novel-task phase"


def report(res: dict[str, Any]) -> str:
    lines = [
        f"Replay of {res['runs']} (baselines {res['baselines']}); a miss counts as the "
        f"{res['budget']}-step budget.",
        "",
        "| S / k | fell back | steps | median vs random | vs text | gmean vs random | vs text "
        "| longer than random | > 2x | worse than the better baseline + race | reached |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, m in res["grid"]["all"].items():
        lines.append(
            f"| {key} | {m['fell_back']} | {m['steps']:.0f} | {m['median_vs_random']:.2f}x | "
            f"{m['median_vs_text']:.2f}x | {m['gmean_vs_random']:.2f}x | {m['gmean_vs_text']:.2f}x | "
            f"{m['longer_than_random']} | {m['over_2x_random']} | "
            f"{m['worse_than_best_by_more_than_race']} | {m['reached']} |"
        )
    lv = res.get("live")
    if lv:
        lines += [
            "",
            f"Live run {lv['runs']} ({_orders(lv['orders'])}, {lv['jobs']} jobs) against this "
            f"replay at {lv['at']} / {lv['rows']}: steps in all {lv['live_steps']:.0f} live, "
            f"{lv['replay_steps']:.0f} "
            f"replayed, {lv['no_fallback_steps']:.0f} without the fallback; the same steps on {lv['same']} "
            "jobs; "
            f"fell back {lv['live_fell_back']} live, {lv['replay_fell_back']} replayed",
        ]
    if res["cross"]:
        lines += ["", "Chosen on one order (fewest steps in all), read on the other:", ""]
    for cv in res["cross"]:
        lines.append(
            f"- chosen on order {cv['train']}: S / k = {cv['chosen']}; on order {cv['test']}: steps "
            f"{cv['test_none']['steps']:.0f} -> {cv['test_rule']['steps']:.0f}, median vs random "
            f"{cv['test_none']['median_vs_random']:.2f}x -> {cv['test_rule']['median_vs_random']:.2f}x, "
            f"> 2x random {cv['test_none']['over_2x_random']} -> {cv['test_rule']['over_2x_random']}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="the stream run's runs file (its bank jobs)")
    ap.add_argument("--baselines", default=str(HERE / "results" / "bank_stream.runs.jsonl"))
    ap.add_argument(
        "--init", default="bank", choices=("bank", "novel"), help="the stream's jobs, or the novel phase's"
    )
    ap.add_argument("--settings", required=True, help="the stream run's settings (targets, budget)")
    ap.add_argument("--out", default=None, help="write the grid and the cross-order check (JSON)")
    ap.add_argument("--at", type=int, default=5)
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--summary", default=None, help="write --at/--rows as a stream summary (JSON)")
    ap.add_argument(
        "--live", default=None, help="a live run's runs file with the fallback: read against the replay"
    )
    a = ap.parse_args()
    st = json.loads(Path(a.settings).read_text())
    bank, base = load(Path(a.runs), Path(a.baselines), a.init)
    orders = sorted({str(r["order"]) for r in bank})
    res: dict[str, Any] = {
        "runs": os.path.relpath(a.runs),
        "baselines": os.path.relpath(a.baselines),
        "budget": int(st["max_steps"]),
        "grid": {"all": grid(bank, base, st, set(orders))},
        "cross": [],
    }
    for o in orders:
        res["grid"][f"order {o}"] = grid(bank, base, st, {o})
    for train in orders:
        g = res["grid"][f"order {train}"]
        chosen = min((k for k in g if k != "none"), key=lambda k: (g[k]["steps"], k))
        for test in (o for o in orders if o != train):
            t = res["grid"][f"order {test}"]
            res["cross"].append(
                {"train": train, "test": test, "chosen": chosen}
                | {"test_none": t["none"], "test_rule": t[chosen]}
            )
    if a.live:
        res["live"] = live_check(bank, base, st, Path(a.live), a.at, a.rows, a.init)
    print(report(res))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    if a.summary:
        rows = rows_for(bank, base, st, a.at, a.rows)
        Path(a.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(a.summary).write_text(json.dumps(summary(rows, st, a.at, a.rows, a.runs), indent=1) + "\n")


if __name__ == "__main__":
    main()
