"""ElasticFlow compatibility mode: mechanisms on small cases, and every run of the authors' reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from prompttuner import config
from prompttuner.efsim import run_trace
from prompttuner.efsim.elasticflow import ElasticFlowReplay
from prompttuner.efsim.inputs import Job, Profiles, load_jobs, load_profiles, parse_cluster, resolve_trace
from prompttuner.efsim.place import place
from prompttuner.efsim.plan import Planner, align, last_level, merge, next_level

HEADER = "job_id,submission_time,num_iteration,model_name,deadline,batch_size,num_gpu,duration\n"


@pytest.fixture(scope="module")
def profiles() -> Profiles:
    try:
        return load_profiles()  # the ElasticFlow A100 tables in the shared data folder
    except FileNotFoundError as err:  # the message names the missing folder
        pytest.skip(f"ElasticFlow throughput profiles not available: {err}")


def _job(
    profiles: Profiles,
    model: str = "vgg16",
    batch: int = 64,
    iters: int = 10_000,
    ddl: int = 5_000,
    cap: int = 32,
) -> Job:
    return Job(
        idx=0,
        job_id="j",
        submit=0,
        ddl=ddl,
        iterations=iters,
        model=model,
        batch=batch,
        max_gpu=cap,
        iter_left=float(iters),
    )


# ---------------------------------------------------------------- small pieces
def test_cluster_spec_parsing() -> None:
    spec = parse_cluster("n16g8")
    assert (spec.nodes, spec.gpus_per_node, spec.gpus, spec.name) == (16, 8, 128, "n16g8")
    with pytest.raises(ValueError, match="n<nodes>g<gpus_per_node>"):
        parse_cluster("16x8")


def test_slot_alignment_and_timeline_merge() -> None:
    assert align(100, 100, 240) == 100
    assert align(100, 101, 240) == 340
    assert align(100, 580, 240) == 580
    assert align(0, -10, 240) == 0  # floor semantics of the released helper
    assert merge({0: 8, 10: 8, 20: 4, 30: 4, 40: 8}) == {0: 8, 20: 4, 40: 8}


def test_power_of_two_levels_respect_the_cap(profiles: Profiles) -> None:
    job = _job(profiles, cap=8)
    assert [next_level(job, n) for n in (0, 1, 2, 4, 8)] == [1, 2, 4, 8, 8]
    assert [last_level(job, n) for n in (1, 2, 3, 5, 9, 100)] == [0, 1, 2, 4, 8, 8]


def test_mss_picks_the_smallest_share_that_meets_the_deadline(profiles: Profiles) -> None:
    planner = Planner(profiles, total=64, slot=240)
    t = profiles.tput["vgg16"][64]
    iters = 10_000
    ddl = math.ceil(iters / t[4]) + 100  # 4 GPUs suffice, 2 do not
    assert iters / t[2] > ddl
    job = _job(profiles, iters=iters, ddl=ddl)
    plan = planner.plan_mss(job, 0, {0: 64})
    assert plan.ok
    assert plan.alloc[0] == 4
    assert plan.real_end == math.ceil(iters / t[4])
    assert plan.end == align(0, plan.real_end, 240)
    assert merge(plan.timeline) == {0: 60, plan.end: 64}


def test_mss_plans_an_infeasible_job_past_its_deadline(profiles: Profiles) -> None:
    planner = Planner(profiles, total=64, slot=240)
    job = _job(profiles, iters=100_000, ddl=600)  # far too much work even at the cap
    plan = planner.plan_mss(job, 0, {0: 64})
    assert not plan.ok
    assert plan.real_end > job.ddl
    assert max(plan.alloc.values()) == job.max_gpu


def test_mss_waits_for_gpus_held_by_earlier_deadlines(profiles: Profiles) -> None:
    planner = Planner(profiles, total=8, slot=240)
    job = _job(profiles, iters=2_000, ddl=2_400, cap=8)
    plan = planner.plan_mss(job, 0, {0: 0, 480: 8})  # nothing free for the first two slots
    assert plan.ok and plan.alloc[0] == 0
    assert plan.real_end <= job.ddl and min(t for t, g in plan.alloc.items() if g > 0) >= 480


def test_edf_takes_min_of_cap_and_free(profiles: Profiles) -> None:
    planner = Planner(profiles, total=64, slot=240)
    job = _job(profiles, cap=64, iters=50_000, ddl=10**6)
    assert planner.plan_edf(job, 0, {0: 64}).alloc[0] == 64
    assert planner.plan_edf(job, 0, {0: 12, 1_000: 64}).alloc[0] == 8  # largest legal size <= free


def test_placement_packs_small_jobs_into_nodes(profiles: Profiles) -> None:
    jobs = []
    for i, n in enumerate([16, 4, 4, 2, 1, 1]):
        j = _job(profiles)
        j.idx, j.num_gpu = i, n
        jobs.append(j)
    ranks = place(jobs, nodes=4, per_node=8)
    assert ranks[jobs[0]] == (0, 16)  # two whole nodes
    assert ranks[jobs[1]] == (16, 4) and ranks[jobs[2]] == (20, 4)  # fill node 2
    spans = sorted(ranks[j] for j in jobs)
    for (a, n), (b, _) in zip(spans, spans[1:], strict=False):
        assert a + n <= b  # no GPU used twice


# ---------------------------------------------------------------- whole replays on tiny traces
def _trace(tmp_path: Path, rows: list[str]) -> Path:
    p = tmp_path / "trace.csv"
    p.write_text(HEADER + "".join(r + "\n" for r in rows))
    return p


def test_admission_declines_every_arrival_of_a_merged_event(tmp_path: Path, profiles: Profiles) -> None:
    first = "c,0,2000,vgg16,20000,64,1,400"
    ok = "a,100,20000,vgg16,20000,64,1,4000"
    tight = "b,150,900000,vgg16,2000,64,1,90000"  # same scheduling slot as a, cannot make it
    alone = run_trace(_trace(tmp_path, [first, ok]), cluster="n1g8", policy="elasticflow")
    assert (alone["met"], alone["declined"], alone["ddl_satis_ratio"]) == (2, 0, 1.0)
    both = run_trace(_trace(tmp_path, [first, ok, tight]), cluster="n1g8", policy="elasticflow")
    assert (both["met"], both["declined"], both["jobs"]) == (1, 2, 3)
    assert both["ddl_satis_ratio"] == pytest.approx(1 / 3)
    edf = run_trace(_trace(tmp_path, [first, ok, tight]), cluster="n1g8", policy="edf")
    assert edf["declined"] == 0 and edf["missed"] >= 1 and edf["jobs"] == 3


@pytest.mark.parametrize("refresh", [True, False])
def test_a_bump_refreshes_the_plans_real_end(refresh: bool, tmp_path: Path, profiles: Profiles) -> None:
    # One job alone on 8 GPUs: MSS plans it on 1 GPU (enough for its deadline), the leftover handout then
    # bumps it to 8.  The released code from a8c66e6 on also takes the bumped plan's unrounded end
    # (refresh=True); 0d29ad9 kept the 1-GPU plan's end (refresh=False).
    t = profiles.tput["vgg16"][64]
    iters = 20_000
    ddl = math.ceil(iters / t[1]) + 1_000
    path = _trace(tmp_path, [f"a,0,{iters},vgg16,{ddl},64,1,100"])
    jobs = load_jobs(path, profiles, "elasticflow")
    sim = ElasticFlowReplay(jobs, parse_cluster("n1g8"), profiles, 240, refresh_real_end=refresh)
    sim.run()
    assert sim.result()["met"] == 1
    expected = math.ceil(iters / t[8]) if refresh else math.ceil(iters / t[1])
    assert jobs[0].real_end_time == expected


def test_bad_arguments_are_rejected(tmp_path: Path, profiles: Profiles) -> None:
    path = _trace(tmp_path, ["a,0,100,vgg16,1000,64,1,100"])
    with pytest.raises(ValueError, match="unknown policy"):
        run_trace(path, policy="fifo")
    with pytest.raises(ValueError, match="slot"):
        run_trace(path, slot=0)
    with pytest.raises(ValueError, match="deadline_check"):
        run_trace(path, deadline_check="soon")
    bad = tmp_path / "bad.csv"
    bad.write_text("job_id,submission_time\nx,0\n")
    with pytest.raises(ValueError, match="missing columns"):
        run_trace(bad)


# ---------------------------------------------------------------- the authors' numbers
def _reference_file() -> tuple[Path | None, str]:
    """``(path of elasticflow-reference.json, "")``, or ``(None, why not)`` naming the missing path."""
    try:
        data = config.shared_data()
    except FileNotFoundError as err:
        return None, str(err)
    ref = data / "elasticflow-reference.json"
    return (ref, "") if ref.is_file() else (None, f"ElasticFlow reference not found at {ref}")


# cluster01_head500 on n16g8 under ElasticFlow takes ~13 s of the ~22 s of all eight replays: it runs
# with -m slow (and in benchmarks/elasticflow_compat.py, checked by benchmarks/check_reproduction.py).
SLOW_RUNS = {"cluster01_head500-n16g8-ef-accessctrl"}


def _reference_params() -> list:
    ref, why = _reference_file()
    if ref is None:
        return [pytest.param(None, id="no-reference-data", marks=pytest.mark.skip(reason=why))]
    params = []
    for run in json.loads(ref.read_text())["runs"]:
        rid = f"{run['trace']}-{run['cluster_spec']}-{run['schedule']}"
        params.append(pytest.param(run, id=rid, marks=[pytest.mark.slow] if rid in SLOW_RUNS else []))
    return params


_RUNS = _reference_params()


def test_every_reference_run_is_collected() -> None:
    # Guards the parametrisation below: with the data present it must hold every run of the file, so a
    # change to the file layout or to the loader cannot silently turn the replays into no tests at all.
    ref, why = _reference_file()
    if ref is None:
        pytest.skip(why)
    runs = json.loads(ref.read_text())["runs"]
    assert runs, f"{ref} lists no runs"
    assert [p.values[0] for p in _RUNS] == runs
    assert len({p.id for p in _RUNS}) == len(runs)
    assert SLOW_RUNS <= {p.id for p in _RUNS}


@pytest.mark.parametrize("run", _RUNS)
def test_matches_the_authors_reference(run: dict, profiles: Profiles) -> None:
    path, max_jobs = resolve_trace(run["trace"])
    policy = "edf" if run["schedule"] == "edf" else "elasticflow"
    out = run_trace(
        path, cluster=run["cluster_spec"], slot=240, policy=policy, max_jobs=max_jobs, profiles=profiles
    )
    assert out["unfinished"] == 0
    # The design asks for +-0.03; the mode reproduces every run to the digits the reference reports, so the
    # test holds it to that (a change of one job in the 260 of cluster10 moves the ratio by 0.0038).
    assert out["ddl_satis_ratio"] == pytest.approx(run["ddl_satis_ratio"], abs=5e-4)
