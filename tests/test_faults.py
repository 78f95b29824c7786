"""Faults during a batch: random workers and once the service are killed; every job still ends with the
prompt of an uninterrupted run of its steps.  A small, bounded version of ``benchmarks/service_faults.py``
(whose committed results are the larger run)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import service_faults  # type: ignore[import-not-found]  # noqa: E402


def test_killed_workers_and_a_killed_service_lose_no_job_and_no_step(tmp_path: Path) -> None:
    r = service_faults.run(tmp_path / "home", jobs=4, kills=4, kill_every_s=0.7, seed=1)
    assert r["service_kills"] == 1 and r["worker_kills"] >= 1
    assert r["succeeded"] == r["jobs"] == r["exact_steps"]
    assert r["max_prompt_abs_error"] <= 1e-6
