"""``benchmarks/bank_race_replay.py``: a race of two replayed from a race of three's records."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bank_race_replay import replay_job  # noqa: E402


def cand(name: str, kind: str, acc: float, loss: float) -> dict[str, object]:
    return {"name": name, "kind": kind, "race": [{"steps": 2.0, "accuracy": acc, "loss": loss}]}


def run(chosen: str, cands: list[dict[str, object]], winner_steps: int = 12, reached: bool = True) -> dict:
    return {
        "job": "t#0",
        "steps": winner_steps + 6,
        "winner_steps": winner_steps,
        "reached": reached,
        "start": {"raced": True, "chosen": chosen, "candidates": cands},
    }


BASE = {("t#0", "text"): 20.0, ("t#0", "random"): 30.0}


def test_the_same_winner_keeps_its_steps_and_pays_one_loser_round() -> None:
    r = run(
        "entry:a",
        [
            cand("entry:a", "warm", 0.8, 1.0),
            cand("text", "text", 0.5, 1.0),
            cand("random", "random", 0.9, 0.1),
        ],
    )
    # random would have led round 1 of the race of three, but a race of two holds the warm start and text only
    assert replay_job(r, BASE, 50) == (14.0, "the same winner")


def test_a_cold_winner_of_the_race_of_two_takes_its_baseline_steps() -> None:
    r = run(
        "random",
        [
            cand("entry:a", "warm", 0.4, 1.0),
            cand("text", "text", 0.6, 1.0),
            cand("random", "random", 0.7, 1.0),
        ],
    )
    assert replay_job(r, BASE, 50) == (22.0, "text init (its baseline)")


def test_a_bank_start_that_lost_the_race_of_three_cannot_be_replayed() -> None:
    r = run(
        "text",
        [
            cand("entry:a", "warm", 0.9, 1.0),
            cand("text", "text", 0.6, 1.0),
            cand("random", "random", 0.7, 1.0),
        ],
    )
    assert replay_job(r, BASE, 50) == (None, "a bank start that lost (unknown)")


def test_without_a_bank_start_text_races_random_and_a_miss_stays_the_budget() -> None:
    r = run("text", [cand("text", "text", 0.6, 1.0), cand("random", "random", 0.5, 1.0)], reached=False)
    assert replay_job(r, BASE, 50) == (50.0, "the same winner")
    no_race = {"job": "t#0", "steps": 0, "reached": True, "start": {"raced": False}}
    assert replay_job(no_race, BASE, 50) == (1.0, "no race")
