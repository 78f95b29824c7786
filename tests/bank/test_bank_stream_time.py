"""``benchmarks/bank_stream.py``: time in each run's own steps, so runs made at different loads compare."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bank_stream import cpu_to, own_time, step_cpus  # noqa: E402


def run(init: str, job: str, cpu: float, step: float | None, order: str | None = None) -> dict[str, object]:
    curve = [[0, 0.5, 0.0], [10, 0.6, 10.0], [20, 0.7, 20.0]]
    return {"init": init, "job": job, "cpu_s": cpu, "step_cpu_s": step, "order": order, "curve": curve}


def test_own_time_is_the_same_at_any_load() -> None:
    alone = run("bank", "a#0", cpu=40.0, step=2.0)
    loaded = run("bank", "a#0", cpu=70.0, step=3.5)  # the same work beside another job
    assert own_time(alone, 20, 2.0) == pytest.approx(own_time(loaded, 20, 3.5)) == pytest.approx(20.0)
    assert own_time(alone, 20, None) is None


def test_random_init_time_counts_only_up_to_its_target() -> None:
    rnd = run("random", "a#0", cpu=60.0, step=2.0)  # ran the whole budget; the target at step 10
    assert cpu_to(rnd, 10) == pytest.approx(30.0)
    assert own_time(rnd, 10, 2.0) == pytest.approx(15.0)


def test_a_run_without_a_step_borrows_its_baselines_scaled_by_its_groups_load() -> None:
    runs = [
        run("text", "a#0", 50.0, 2.0),
        run("text", "b#0", 50.0, 1.0),  # a cheaper task (shorter texts)
        run("random", "a#0", 50.0, 2.2),
        run("random", "b#0", 50.0, None),  # recorded before the field existed
        run("bank", "a#0", 40.0, 3.0, order="0"),  # 1.5x its baseline's step: the load then
        run("bank", "b#0", 5.0, None, order="0"),  # its race ended at the target: no step after it
        run("bank", "b#0", 5.0, None, order="1"),  # no run of its group has a step: unknown
    ]
    got = step_cpus(runs)
    assert got[id(runs[0])] == 2.0 and got[id(runs[4])] == 3.0  # recorded ones stay
    assert got[id(runs[3])] == pytest.approx(1.1)  # b's text-init step x the random runs' factor
    assert got[id(runs[5])] == pytest.approx(1.5)  # b's baseline step x order 0's bank factor
    assert id(runs[6]) not in got


def test_sim_pairs_count_a_miss_as_the_budget_and_pair_text_only_where_measured() -> None:
    """The simulator's pairs from a summary's rows: a miss (None) costs the budget, a start already at the
    target 1 step; text pairs only for rows with a text-init baseline; rows without a baseline are left."""
    from bank_stream import sim_pairs

    rows = [
        {"random_steps": 20, "bank_steps": None, "text_steps": 10},
        {"random_steps": None, "bank_steps": 0},
        {"random_steps": 5, "bank_steps": 7},
        {"bank_steps": 3},
    ]
    assert sim_pairs(rows, 50) == {
        "pairs": [[20.0, 50.0], [50.0, 1.0], [5.0, 7.0]],
        "text_pairs": [[20.0, 10.0]],
    }
