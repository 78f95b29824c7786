"""``benchmarks/bank_fallback_replay.py``: the fallback to random init replayed from a stream's records."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bank_fallback_replay import measure, replay_job  # noqa: E402
from bank_stream import race_steps  # noqa: E402

# 64 validation rows, target 0.5: 2 rows below is 30 / 64 = 0.469
RANDOM = {"val_rows": 64, "curve": [[0, 0.3, 0], [5, 0.4, 1], [10, 0.45, 2], [15, 0.52, 3], [20, 0.6, 4]]}


def bank(curve: list[list[float]], steps: int, reached: bool, kind: str = "warm", extra: int = 2) -> dict:
    return {
        "steps": steps,
        "reached": reached,
        "race_extra_steps": extra,
        "curve": curve,
        "start": {"kind": kind},
    }


def test_a_lagging_start_pays_its_steps_then_random_inits_own() -> None:
    r = bank([[2, 0.3, 0], [5, 0.4, 1], [10, 0.45, 2]], 50, False)  # 0.40 at step 5: more than 2 rows below
    # the race's 2 losing steps + the check at step 5 + random init's 15 steps to 0.5
    assert replay_job(r, RANDOM, 0.5, 50, 5, 2) == (22, True)
    assert replay_job(r, RANDOM, 0.5, 20, 5, 2) == (None, True)  # 22 > a budget of 20: a miss


def test_a_start_near_the_target_or_past_it_or_from_random_init_keeps_its_own_steps() -> None:
    near = bank([[2, 0.3, 0], [5, 0.47, 1], [10, 0.5, 2]], 12, True)  # 30 / 64 rows: not more than 2 below
    assert replay_job(near, RANDOM, 0.5, 50, 5, 2) == (12, False)
    early = bank([[2, 0.3, 0], [5, 0.5, 1]], 7, True)  # at the target at the check itself
    assert replay_job(early, RANDOM, 0.5, 50, 5, 2) == (7, False)
    cold = bank([[2, 0.1, 0], [5, 0.1, 1]], 50, False, kind="random")
    assert replay_job(cold, RANDOM, 0.5, 50, 5, 2) == (None, False)
    later = bank([[2, 0.1, 0], [5, 0.1, 1], [10, 0.1, 2]], 50, False)
    assert replay_job(later, RANDOM, 0.5, 50, 10, 2) == (2 + 10 + 15, True)  # checked at step 10 instead


def test_measure_counts_misses_as_the_budget_and_compares_job_by_job() -> None:
    rows = [
        {"bank_steps": 5, "random_steps": 20, "text_steps": 10, "fell_back": False, "race_steps": 4},
        {"bank_steps": None, "random_steps": 10, "text_steps": None, "fell_back": True, "race_steps": 4},
    ]
    m = measure(rows, 50)
    assert m["steps"] == 55 and m["random_steps"] == 30 and m["reached"] == 1 and m["fell_back"] == 1
    assert m["longer_than_random"] == 1 and m["over_2x_random"] == 1  # 50 against 10
    assert m["median_vs_random"] == (4.0 + 0.2) / 2
    # the miss (50 steps) is worse than the better baseline (random's 10) by more than its 4 race steps
    assert m["worse_than_best_by_more_than_race"] == 1
    rows[1]["race_steps"] = 40
    assert measure(rows, 50)["worse_than_best_by_more_than_race"] == 0


def test_race_steps_count_the_losers_and_the_winners_rounds_as_the_stream_summary_does() -> None:
    r = bank([[2, 0.3, 0]], 7, True, extra=2)
    r["start"] |= {"chosen": "blend", "candidates": [{"name": "blend", "race": [{"steps": 2.0}]}]}
    assert race_steps(r, {"race": {"steps": 2}}) == 2 + 2
    assert race_steps(bank([[0, 0.3, 0]], 0, True, extra=0), {"race": {"steps": 2}}) == 0  # no race
