"""``prompttuner demo`` end to end with the fake engine (fast): the phases, the two quotes, the twin, the
final table and the one line of JSON.  The real run is recorded in ``benchmarks/results/service_demo.md``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from service_fakes import FAKE_ENGINE

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def test_demo_shows_the_bank_against_its_twin_and_ends_with_a_table_and_one_json_line(
    tmp_path: Path,
) -> None:
    env = dict(
        os.environ,
        PYTHONPATH=f"{SRC}{os.pathsep}{TESTS}",
        FAKE_STEP_S="0.2",
        FAKE_ACC_PER_STEP="0.05",  # from random init the fake reaches the 0.69 target at step 8
        FAKE_BANK_BONUS="0.3",  # from the fake bank, at step 4 (its first evaluation)
    )
    cmd = [sys.executable, "-m", "prompttuner", "demo", "--home", str(tmp_path / "demo"), "--workers", "2"]
    out = subprocess.run(
        [*cmd, "--engine", FAKE_ENGINE, "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1  # stdout is the one JSON line; people read stderr
    result = json.loads(lines[0])
    jobs = result["jobs"]
    assert [(j["task"], j["bank_warm_start"]) for j in jobs] == [
        ("subj", False),  # fills the bank
        ("subj_b", True),  # the same task on other rows, from the bank
        ("subj_b", False),  # its random-init twin
        ("sms_spam", True),  # a later job from the bank, once the pair's bank job ended
    ]
    assert {j["status"] for j in jobs} == {"succeeded"}  # the twin runs too: it is best effort
    for j in jobs:
        assert {"target_reached", "deadline_met", "slo_met", "gpu_seconds"} <= set(j)
        assert j["slo_met"] == (bool(j["target_reached"]) and bool(j["deadline_met"]))
    bank, twin = jobs[1], jobs[2]
    assert bank["start"] == "bank:fake" and twin["start"] == "random"
    cmp = result["bank_vs_random"]
    assert cmp["bank_job"] == bank["id"] and cmp["twin_job"] == twin["id"]
    qb, qr = cmp["quote_with_bank"], cmp["quote_random"]
    assert qb["prediction"] == "prompt bank" and "median" in qr["prediction"]  # the population predictor
    assert qb["predicted_steps"] < qr["predicted_steps"]
    # the deadline lies between the two quoted finishes, and both jobs of the pair got it
    assert qb["quoted_s"] < cmp["deadline_s"] < qr["quoted_s"]
    # the bank job's deadline counts from its quote (its selection ran there), the twin's from its submission
    assert bank["deadline_s"] == twin["deadline_s"] == cmp["deadline_s"]
    assert bank["counts_from"] == "quote" and twin["counts_from"] == "submission"
    assert twin["best_effort"] and not bank["best_effort"]
    assert any("twin ran best effort" in n for n in result["notes"]) and cmp["twin_ran"]
    assert cmp["only_bank_met"] == (bool(bank["slo_met"]) and not twin["slo_met"])
    assert bank["actual_s"] >= bank["selection_at_quote_s"]  # from its quote: its selection included
    # the selection and race that ran at a bank job's quote are shown beside its time from submission
    assert bank["selection_at_quote_s"] == round(qb["selection_s"], 1)
    assert twin["selection_at_quote_s"] is None
    assert jobs[3]["selection_at_quote_s"] is not None and jobs[0]["selection_at_quote_s"] is None
    assert 0 < result["gpu_seconds_jobs"] <= result["gpu_seconds_held"]
    for text in ("one job (subj_b), two quotes", "with the Prompt Bank", "PromptTuner demo: jobs", "SLO met"):
        assert text in out.stderr
