"""What a smaller race would have given, replayed from the records of a run of ``bank_stream.py``.

A diagnostic, not a measurement: it reads a runs file (``--runs``), and for every bank job that raced it asks
which start a race of two (``RaceSettings.candidates = 2``: the best bank start, or the blend, against the
text init; text against random where the bank offered none) would have kept after its one round.  Every
entrant of a race trains on the same batches (one seed) and training is deterministic, so every entrant's
probe after round 1 is in the record (``start.candidates[*].race[0]``), and:

- the race of two keeps the run's own winner: its steps are the winner's (``winner_steps``) plus the
  loser's 2 steps;
- it keeps a cold init that lost the race of three: its steps are that init's baseline run's steps to the
  target (``--baselines``: the same job, data and seed from that init, which trains exactly as the entrant
  did) plus 2;
- it keeps a bank start that lost: unknown (its curve past the race is not recorded); listed apart.

Jobs that did not race keep their steps.  Each job's group is ``first`` (the first job of its task in its
order), ``repeat`` or ``novel``.  Printed per group: steps in all on the jobs it can replay, and the
median steps ratio against text and random init (a miss counts as the step budget, as in
``bank_stream.py``).  The bank content of later jobs is taken as it was; a different winner would have
added another prompt, so stream figures past such a job are an approximation.

    python benchmarks/bank_race_replay.py --runs benchmarks/results/bank_stream_check/bank_stream.runs.jsonl
    python benchmarks/bank_race_replay.py --runs benchmarks/results/bank_stream.runs.jsonl --init novel
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bank_stream import cost_steps, steps_to  # noqa: E402  (the stream's own reading of a curve)

ROUND = 2  # the steps of the race's one round (RaceSettings.steps)


def cost(steps: float | None, budget: int) -> float:
    """``bank_stream.cost_steps``, capped at the budget (a replayed start plus its race can pass it)."""
    return cost_steps(None if steps is None else min(budget, int(steps)), budget)


Run = dict[str, Any]


def replay_job(r: Run, base: dict[tuple[str, str], float], budget: int) -> tuple[float | None, str]:
    """The job's steps under a race of two, and how they were found."""
    s = r["start"]
    own = cost(r["steps"] if r["reached"] else None, budget)
    if not s.get("raced"):
        return own, "no race"
    ents = [c for c in s["candidates"] if c.get("race")]
    warm = next((c for c in ents if c["kind"] == "warm"), None)
    text = next(c for c in ents if c["kind"] == "text")
    two = [warm if warm is not None else next(c for c in ents if c["kind"] == "random"), text]
    keep = min(two, key=lambda c: (-c["race"][0]["accuracy"], c["race"][0]["loss"]))
    if keep["name"] == s["chosen"]:
        return (cost(r["winner_steps"] + ROUND, budget) if r["reached"] else float(budget)), "the same winner"
    if keep["kind"] in ("text", "random"):
        return cost(base[(r["job"], keep["kind"])] + ROUND, budget), f"{keep['kind']} init (its baseline)"
    return None, "a bank start that lost (unknown)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, required=True, help="a bank_stream.py runs file")
    ap.add_argument("--init", default="bank", choices=["bank", "novel"], help="the stream or the novel phase")
    ap.add_argument("--baselines", type=Path, default=HERE / "results" / "bank_stream.runs.jsonl")
    ap.add_argument("--settings", type=Path, default=HERE / "bank_stream_settings.json")
    args = ap.parse_args()
    st = json.loads(args.settings.read_text())
    targets, budget = st["targets"], int(st["max_steps"])
    base: dict[tuple[str, str], float] = {}
    for line in args.baselines.read_text().splitlines():
        b = json.loads(line)
        if b["init"] in ("random", "text"):
            base[(b["job"], b["init"])] = cost(steps_to(b["curve"], targets[b["job"].split("#")[0]]), budget)
    rows = [json.loads(x) for x in args.runs.read_text().splitlines()]
    rows = [r for r in rows if r["init"] == args.init]
    rows.sort(key=lambda r: (r.get("order", ""), r.get("position", 0)))
    seen: set[tuple[str, str]] = set()
    groups: dict[str, list[tuple[str, float, float | None, str]]] = {}
    for r in rows:
        task = r["job"].split("#")[0]
        g = "novel" if args.init == "novel" else ("repeat" if (r.get("order", ""), task) in seen else "first")
        seen.add((r.get("order", ""), task))
        alt, how = replay_job(r, base, budget)
        own = cost(r["steps"] if r["reached"] else None, budget)
        groups.setdefault(g, []).append((r["job"], own, alt, how))
    for g, v in groups.items():
        known = [x for x in v if x[2] is not None]
        hows = {h: sum(1 for x in v if x[3] == h) for h in sorted({x[3] for x in v})}
        print(f"{g}: {len(v)} jobs, {len(known)} replayed; {hows}")
        ran_all, two_all = sum(x[1] for x in known), sum(x[2] or 0 for x in known)
        print(f"  steps in all (replayed jobs): {ran_all:.0f} as run -> {two_all:.0f}")
        for init in ("text", "random"):
            ran = statistics.median(base[(j, init)] / a for j, a, _, _ in known)
            two = statistics.median(base[(j, init)] / (b or 1) for j, _, b, _ in known)
            print(f"  median steps ratio vs {init} init (replayed jobs): {ran:.2f}x as run -> {two:.2f}x")
        left = [f"{j} ({a:.0f} steps as run)" for j, a, b, _ in v if b is None]
        if left:
            print("  not replayed: " + ", ".join(left))


if __name__ == "__main__":
    main()
