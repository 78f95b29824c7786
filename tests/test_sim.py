"""The simulator, workloads and baselines on small workloads (seconds, not minutes)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from prompttuner.config import REPO_DATA
from prompttuner.core.types import SLO, JobSpec
from prompttuner.scheduler import make_policy
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.engine import Simulator
from prompttuner.sim.runner import clairvoyant, run_workload
from prompttuner.sim.workload import WorkloadConfig, generate, load_work_model

CAT = load_catalog()
SMALL = WorkloadConfig(n_jobs=120, load=0.6, slo_tightness=1.5, capacity={"a100": 48}, seed=3)
ALL = ["prompttuner", "infless", "elasticflow", "edf", "reserved"]


def test_catalog_derivation_is_monotone_and_large_models_span_gpus() -> None:
    small, big = CAT.model("qwen2.5-0.5b"), CAT.model("llama-3.1-70b")
    assert small.step_time_s["a100"] < CAT.model("llama-3.1-8b").step_time_s["a100"] < big.step_time_s["a100"]
    assert small.cold_start_s["a100"] < big.cold_start_s["a100"]
    assert small.gpus_per_replica == 1 and big.gpus_per_replica >= 2
    assert all(m.step_time_s["h100"] < m.step_time_s["a100"] for m in CAT.models.values())
    with pytest.raises(KeyError, match="unknown base LLM"):
        CAT.model("nope")


def test_workload_is_deterministic_and_deadlines_follow_tightness() -> None:
    a, b = generate(SMALL, CAT), generate(SMALL, CAT)
    assert a == b
    assert generate(replace(SMALL, seed=4), CAT) != a
    for j in a:
        alone = j.work_steps * CAT.models[j.model].step_time("a100", 1)
        assert j.deadline - j.arrival == pytest.approx(1.5 * alone, abs=2e-3)
    hi = generate(replace(SMALL, load=1.2), CAT)
    assert hi[-1].arrival < a[-1].arrival * 0.7  # twice the load: arrivals about twice as dense


def test_trace_arrivals_keep_their_shape_and_hit_the_rate() -> None:
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not shared.is_dir():
        pytest.skip("shared data not present")
    for kind in ("itp", "azure"):
        cfg = replace(SMALL, arrivals=kind, n_jobs=200)
        jobs = generate(cfg, CAT)
        poisson = generate(replace(cfg, arrivals="poisson"), CAT)
        span, pspan = jobs[-1].arrival - jobs[0].arrival, poisson[-1].arrival - poisson[0].arrival
        assert 0.6 < span / pspan < 1.6  # same mean rate, up to the Poisson draw's noise
        gaps = [y.arrival - x.arrival for x, y in zip(jobs, jobs[1:], strict=False)]
        assert max(gaps) > 5 * (sum(gaps) / len(gaps))  # real traces are bursty


def test_measured_profiles_are_preferred(tmp_path: Path) -> None:
    prof = tmp_path / "convergence_profiles.json"
    prof.write_text(
        json.dumps(
            {
                "settings": {"model": "smollm2-135m"},
                "tasks": {
                    "sst2": {
                        "random": {"steps_to_target": 120},
                        "text": 60,
                        "target": 0.7,
                        "eval_rows": 24,
                        "runs": {"random-seed0": {"steps_to_target": 100}},
                    },
                    "cb": {"random": None, "text": None, "majority_accuracy": 0.5},
                },
            }
        )
    )
    wm = load_work_model(profiles_file=prof, bank_pairs_file=tmp_path / "no-pairs.json")  # the profiles' rule
    import random

    rng = random.Random(0)
    # relative sizes from the profiles, scaled so the median random-init task has the documented median
    median = json.loads((REPO_DATA / "job_work.json").read_text())["steps_random_init"]["median"]
    assert wm.profile_scale == pytest.approx(median / 120)
    assert wm.sample(rng, "random") == pytest.approx(median)
    assert wm.sample(rng, "text") == pytest.approx(median / 2)
    assert wm.sample(rng, "bank") == pytest.approx(median / 2 / wm.bank_over_text)
    fallback = load_work_model(profiles_file=tmp_path / "missing.json")
    assert not fallback.per_task and fallback.sample(rng, "random") >= fallback.lo


def test_one_job_costs_its_cold_start_run_and_keep_alive() -> None:
    m = CAT.model("llama-3.1-8b")
    job = JobSpec("j", m.name, 0.0, SLO(10_000.0), 200)
    sim = Simulator(make_policy("infless"), [job], CAT.models, CAT.gpu_types, {"a100": 8})
    res = sim.run()
    row = res.jobs[0]
    pause = 1.0 + 0.5 * m.step_time_s["a100"]
    expect = m.cold_start_s["a100"] + pause + 200 * m.step_time("a100", 1)
    assert row["met_slo"] and row["finish"] == pytest.approx(expect, rel=1e-6)
    # one GPU from t=0 until the simulation ends at the job's finish
    assert res.metrics["cost_gpu_hours"] == pytest.approx(expect / 3600, rel=1e-6)
    assert res.metrics["cost"] == pytest.approx(
        expect / 3600 * CAT.gpu_types["a100"].price_per_hour, rel=1e-6
    )
    assert res.metrics["cold_starts"] == 1


@pytest.fixture(scope="module")
def small_results():
    return run_workload(SMALL, CAT, ALL)


def test_every_policy_finishes_the_workload_consistently(small_results) -> None:
    jobs, results = small_results
    bound = clairvoyant(jobs, CAT.models, CAT.gpu_types, SMALL.capacity)
    for name, r in results.items():
        m = r.metrics
        assert m["jobs"] == len(jobs)
        assert m["unfinished"] == 0, name
        assert 0.0 <= m["slo_violation_rate"] <= 1.0
        assert m["busy_gpu_hours"] <= m["cost_gpu_hours"] + 1e-9
        assert all(row["phase"] in ("succeeded", "declined") for row in r.jobs)
        if m["declined"] == 0:
            assert m["cost"] >= bound["cost"] * (1 - 1e-9), name  # nothing beats the clairvoyant bound
    # only the ElasticFlow-style admission control (and PromptTuner's, with a quote) may decline
    assert results["infless"].metrics["declined"] == 0 and results["edf"].metrics["declined"] == 0


def test_prompttuner_beats_the_serverless_baselines_on_this_workload(small_results) -> None:
    _, results = small_results
    pt = results["prompttuner"].metrics
    for name in ("elasticflow", "edf"):
        assert pt["slo_violation_rate"] <= results[name].metrics["slo_violation_rate"]
    assert pt["cold_starts"] < results["elasticflow"].metrics["cold_starts"]
    declined = [r for r in results["prompttuner"].jobs if r["phase"] == "declined"]
    assert all(r["tightest_deadline"] is None or r["tightest_deadline"] > r["deadline"] for r in declined)


def test_ablation_switches_change_behaviour(small_results) -> None:
    jobs, results = small_results
    _, abl = run_workload(SMALL, CAT, ["prompttuner-no-warm-pool"], jobs=jobs)
    assert (
        abl["prompttuner-no-warm-pool"].metrics["cold_starts"] > results["prompttuner"].metrics["cold_starts"]
    )
    assert not math.isnan(abl["prompttuner-no-warm-pool"].metrics["cost"])


def test_budget_truncated_profiles_are_not_job_sizes(tmp_path: Path) -> None:
    # a profile whose step budget is below the distribution's minimum measured the budget, not the job
    prof = {
        "tasks": {
            "short": {"random": {"steps_to_target": 20, "budget": 20}},
            "real": {"random": {"steps_to_target": 300, "budget": 2000}, "text": 120},
        }
    }
    pf = tmp_path / "profiles.json"
    pf.write_text(json.dumps(prof))
    wm = load_work_model(profiles_file=pf)
    assert wm.per_task == {"real": {"random": 300.0, "text": 120.0}}
    assert wm.source == str(pf)


def test_missed_targets_count_as_their_budget_and_the_bank_factor_is_measured(tmp_path: Path) -> None:
    prof = {
        "tasks": {
            "easy": {"random": {"steps_to_target": 20, "budget": 60}, "text": {"steps_to_target": 10}},
            "hard": {"random": {"steps_to_target": None, "budget": 60}, "text": 40},
        }
    }
    pf, bf = tmp_path / "profiles.json", tmp_path / "bank.json"
    pf.write_text(json.dumps(prof))
    bf.write_text(json.dumps({"bank_speedup_over_text": 2.5}))
    wm = load_work_model(profiles_file=pf, bank_file=bf)
    assert wm.per_task["hard"]["random"] == 60.0  # a lower bound: at least the whole budget
    assert wm.bank_over_text == 2.5
    assert wm.profile_scale == pytest.approx(wm.median / 40)  # median of the random-init steps (20, 60)
    # without a measured factor the documented placeholder stands
    assert load_work_model(profiles_file=pf, bank_file=tmp_path / "none.json").bank_over_text == 1.5


def test_bank_jobs_draw_their_work_from_the_measured_pairs(tmp_path: Path) -> None:
    """With measured (random, bank) pairs a bank job is a random-init job's work times one pair's ratio:
    the same draw of the base, so a pair of 10 -> 5 halves it and 10 -> 20 doubles it."""
    import random

    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps({"pairs": [[10, 5], [10, 20]]}))
    none = tmp_path / "none.json"
    wm = load_work_model(profiles_file=none, bank_pairs_file=pairs)
    assert wm.bank_pairs == ((10.0, 5.0), (10.0, 20.0))
    assert wm.init_factor["bank"] == pytest.approx((0.5 + 2.0) / 2)  # calibrates the arrival rate
    got = {
        round(wm.sample(random.Random(s), "bank") / wm.sample(random.Random(s), "random"), 3)
        for s in range(40)
    }
    assert got == {0.5, 2.0}
    assert load_work_model(profiles_file=none, bank_pairs_file=none).bank_pairs == ()  # no file: none
    jobs = generate(WorkloadConfig(n_jobs=30, work="distribution", init_mix={"bank": 1.0}, seed=2), CAT, wm)
    assert {j.init for j in jobs} == {"bank"} and all(j.work_steps >= 1 for j in jobs)


def test_bank_pairs_are_drawn_at_the_jobs_random_init_rank(tmp_path: Path) -> None:
    """Rank pairing scales an easy job (below the median of random-init work) by the easy pair's ratio
    and a hard one by the hard pair's; the arrival rate's factor is the mean work that pairing gives, and
    it differs from the mean of the ratios that independent draws give."""
    import random
    import statistics

    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps({"pairs": [[5, 25], [50, 25]]}))  # easy task: 5x the steps; hard: half
    none = tmp_path / "none.json"
    rank = load_work_model(profiles_file=none, bank_pairs_file=pairs)
    indep = load_work_model(profiles_file=none, bank_pairs_file=pairs, bank_pairing="independent")
    median = rank.median
    seen: dict[bool, set[float]] = {True: set(), False: set()}
    for s in range(400):
        base = rank.sample(random.Random(s), "random")
        seen[base < median].add(round(rank.sample(random.Random(s), "bank") / base, 3))
    assert seen == {True: {5.0}, False: {0.5}}
    mixed = {
        round(indep.sample(random.Random(s), "bank") / indep.sample(random.Random(s), "random"), 3)
        for s in range(400)
    }
    assert mixed == {5.0, 0.5}
    assert indep.init_factor["bank"] == pytest.approx(2.75)
    draws = random.Random(7)
    bank = [rank.sample(draws, "bank") for _ in range(40000)]
    assert statistics.fmean(bank) / rank.mean() == pytest.approx(rank.init_factor["bank"], rel=0.03)
    assert rank.init_factor["bank"] < 2.75  # the easy half carries less of the work
    with pytest.raises(ValueError, match="bank pairing"):
        load_work_model(profiles_file=none, bank_pairs_file=pairs, bank_pairing="guess")
    cfg = WorkloadConfig(n_jobs=40, work="distribution", seed=1)
    assert [j.work_steps for j in generate(cfg, CAT)] == [
        j.work_steps for j in generate(replace(cfg, bank_pairing="independent"), CAT)
    ]  # random-init jobs do not depend on it


def test_bank_workload_is_the_random_one_with_only_the_bank_jobs_work_changed(tmp_path: Path) -> None:
    """By default a bank job's deadline comes from its random-init work (its user cannot know what the
    bank saves): the bank workload has the random-init workload's arrivals, models and deadlines, and its
    work is the random-init work times a measured ratio.  ``bank_deadline="own"`` sets deadlines from the
    bank's work instead, and calibrates the arrivals with the bank's mean work."""
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps({"pairs": [[10, 5], [10, 40]]}))
    wm = load_work_model(profiles_file=tmp_path / "none.json", bank_pairs_file=pairs)
    cfg = WorkloadConfig(n_jobs=60, work="distribution", seed=4, slo_tightness=1.5)
    rand = generate(cfg, CAT, wm)
    bank = generate(replace(cfg, init_mix={"bank": 1.0}), CAT, wm)
    assert [(j.arrival, j.model, j.deadline) for j in bank] == [
        (j.arrival, j.model, j.deadline) for j in rand
    ]
    ratios = {round(b.work_steps / r.work_steps, 3) for b, r in zip(bank, rand, strict=True)}
    assert ratios == {0.5, 4.0}
    half = generate(replace(cfg, init_mix={"random": 0.5, "bank": 0.5}), CAT, wm)
    assert [j.deadline for j in half] == [j.deadline for j in rand]
    assert {j.work_steps == r.work_steps for j, r in zip(half, rand, strict=True) if j.init == "random"} == {
        True
    }
    own = generate(replace(cfg, init_mix={"bank": 1.0}, bank_deadline="own"), CAT, wm)
    per_step = {
        round((j.deadline - j.arrival) / j.work_steps / CAT.models[j.model].step_time("a100", 1), 2)
        for j in own
    }
    assert per_step <= {1.5, 1.49, 1.51}  # the deadline follows the job's own work
    assert own[-1].arrival > rand[-1].arrival  # mean work 2.25x: fewer arrivals per second for the load
    with pytest.raises(ValueError, match="bank deadline"):
        generate(replace(cfg, bank_deadline="guess"), CAT, wm)
    with pytest.raises(ValueError, match="draws its pairs"):
        generate(replace(cfg, bank_pairing="independent"), CAT, wm)


def test_text_jobs_draw_their_work_from_the_measured_text_pairs(tmp_path: Path) -> None:
    """With the same jobs' text-init steps in the pairs file, a text job is a random-init job's work
    times a text / random ratio, with the random-init job's deadline; without them, the placeholder
    factor (and its own deadline) as before."""
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps({"pairs": [[10, 5]], "text_pairs": [[10, 20], [10, 30]]}))
    wm = load_work_model(profiles_file=tmp_path / "none.json", bank_pairs_file=pairs)
    assert wm.text_pairs == ((10.0, 20.0), (10.0, 30.0)) and wm.init_factor["text"] == pytest.approx(2.5)
    cfg = WorkloadConfig(n_jobs=40, work="distribution", seed=5)
    rand = generate(cfg, CAT, wm)
    text = generate(replace(cfg, init_mix={"text": 1.0}), CAT, wm)
    assert [j.deadline for j in text] == [j.deadline for j in rand]
    assert {round(t.work_steps / r.work_steps, 3) for t, r in zip(text, rand, strict=True)} == {2.0, 3.0}
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"pairs": [[10, 5]]}))
    placeholder = load_work_model(profiles_file=tmp_path / "none.json", bank_pairs_file=old)
    assert placeholder.text_pairs == () and placeholder.init_factor["text"] == 0.75


def test_rank_factor_on_profiles_is_the_mean_work_sampled(tmp_path: Path) -> None:
    """On the per-task profiles the arrival rate's factor equals the mean work the rank draw gives."""
    import random
    import statistics

    prof = tmp_path / "profiles.json"
    prof.write_text(json.dumps({"tasks": {"a": {"random": 10}, "b": {"random": 20}, "c": {"random": 60}}}))
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps({"pairs": [[5, 30], [10, 10], [20, 8], [50, 5], [50, 40]]}))
    wm = load_work_model(profiles_file=prof, bank_pairs_file=pairs)
    rng = random.Random(3)
    bank = [wm.sample(rng, "bank") for _ in range(60000)]
    assert statistics.fmean(bank) / wm.mean() == pytest.approx(wm.init_factor["bank"], rel=0.02)
    indep = load_work_model(profiles_file=prof, bank_pairs_file=pairs, bank_pairing="independent")
    assert indep.init_factor["bank"] == pytest.approx(statistics.mean([6, 1, 0.4, 0.1, 0.8]))
    assert wm.init_factor["bank"] < indep.init_factor["bank"]


def test_rank_pairing_on_profiles_shares_a_tasks_quantiles(tmp_path: Path) -> None:
    """On the profiles each task covers its share of the quantiles: the easiest of two tasks draws only
    among the lower half of the pairs, the harder only among the upper half."""
    import random

    prof = tmp_path / "profiles.json"
    prof.write_text(json.dumps({"tasks": {"a": {"random": 10}, "b": {"random": 40}}}))
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps({"pairs": [[5, 10], [6, 12], [30, 3], [40, 8]]}))
    wm = load_work_model(profiles_file=prof, bank_pairs_file=pairs)
    assert wm.quantile(10 * wm.profile_scale) == (0.0, 0.5)
    got: dict[float, set[float]] = {}
    for s in range(200):
        base = wm.sample(random.Random(s), "random")
        got.setdefault(base, set()).add(round(wm.sample(random.Random(s), "bank") / base, 3))
    assert got == {10 * wm.profile_scale: {2.0}, 40 * wm.profile_scale: {0.1, 0.2}}


def test_workload_can_ignore_the_profiles(tmp_path: Path) -> None:
    cfg = WorkloadConfig(n_jobs=50, work="distribution", seed=3)
    jobs = generate(cfg, CAT)
    wm = load_work_model(profiles_file=tmp_path / "none.json")
    assert [j.work_steps for j in jobs] == [j.work_steps for j in generate(cfg, CAT, wm)]
    with pytest.raises(ValueError, match="work model"):
        generate(WorkloadConfig(n_jobs=5, work="guess"), CAT)
