"""``benchmarks/bank_stream_compare.py``: the paired comparison of two stream runs, job by job."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bank_stream_compare import compare, paired, sign_test  # noqa: E402


def test_sign_test() -> None:
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 32)  # two-sided: 2 * 0.5**5
    assert sign_test(3, 3) == 1.0
    assert sign_test(9, 1) == sign_test(1, 9) == pytest.approx(2 * 11 / 1024)


def row(job: str, steps: int | None, order: str = "0", first: bool = True) -> dict[str, object]:
    return {"order": order, "job": job, "bank_steps": steps, "first_of_task": first}


def test_paired_counts_a_miss_as_the_budget_and_a_start_at_target_as_one_step() -> None:
    base = [row("a#0", None), row("b#0", 10), row("c#0", 0), row("d#0", 5)]
    var = [row("a#0", 25), row("b#0", 20), row("c#0", 0), row("e#0", 1)]
    p = paired(base, var, 50, lambda r: (r["order"], r["job"]))
    assert p["n"] == 3  # d and e have no partner
    assert (p["won"], p["tied"], p["lost"]) == (1, 1, 1)  # a: 50 -> 25; c: 1 -> 1; b: 10 -> 20
    assert p["steps_base"] == 50 + 10 + 1 and p["steps_variant"] == 25 + 20 + 1
    assert p["median_ratio"] == 1.0


def test_compare_pairs_only_the_same_order_and_job() -> None:
    def run(rows: list[dict[str, object]]) -> dict[str, object]:
        d = {"n": 1, "median": 1.0, "gmean": 1.0}
        group = {k: d for k in ("ratio_vs_random", "ratio_vs_text", "wall_ratio_vs_random")}
        return {
            "settings": {"max_steps": 50},
            "rows": rows,
            "all": group,
            "first_of_task": group,
            "repeat": group,
        }

    base = run([row("a#0", 10, "0"), row("a#0", 40, "1", first=False)])
    var = run([row("a#0", 5, "0"), row("a#0", 40, "1", first=False)])
    out, md = compare(base, var, "base", "variant")
    assert (out["groups"]["all"]["won"], out["groups"]["all"]["tied"]) == (1, 1)
    assert out["groups"]["repeat"]["n"] == 1 and out["groups"]["repeat"]["tied"] == 1
    assert "| first of task | base |" in md and "1 / 0 / 0 (n=1)" in md
    # each order on its own too: the win is order 0's, order 1 ties
    assert (out["groups"]["order 0"]["won"], out["groups"]["order 0"]["n"]) == (1, 1)
    assert (out["groups"]["order 1"]["tied"], out["groups"]["order 1"]["n"]) == (1, 1)
