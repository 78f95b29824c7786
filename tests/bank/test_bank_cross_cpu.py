"""``benchmarks/bank_cross_cpu.py``: the same baselines on two CPUs, a stream order against each."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bank_cross_cpu import compare  # noqa: E402


def run(job: str, init: str, steps: int, reached: bool = True, order: str = "") -> dict[str, object]:
    return {"job": job, "init": init, "steps": steps, "reached": reached, "order": order}


def test_pairs_each_job_with_its_own_baseline_on_each_cpu() -> None:
    base = [run("a#0", "text", 10), run("b#0", "text", 20), run("a#0", "random", 50, False)]
    rerun = [run("a#0", "text", 10), run("b#0", "text", 40, reached=False)]  # b missed here: the budget
    stream = [
        run("a#0", "bank", 5, order="1"),
        run("b#0", "bank", 30, order="1"),
        run("b#0", "bank", 1, order="0"),
    ]
    out = compare(base, rerun, stream, "1", budget=50)
    t = out["text_rerun_vs_committed"]
    assert (t["won"], t["tied"], t["lost"], t["identical_steps"]) == (0, 1, 1, 1)
    assert (t["steps_a"], t["steps_b"]) == (60, 30)  # the rerun's miss counts as 50
    same = out["bank_vs_text_same_cpu"]
    assert (same["won"], same["lost"], same["steps_a"], same["steps_b"]) == (2, 0, 35, 60)
    other = out["bank_vs_text_committed_cpu"]  # order 0's run is not read
    assert (other["won"], other["lost"], other["steps_a"], other["steps_b"]) == (1, 1, 35, 30)
