"""INFless on hand-built snapshots: histogram keep-alive and pre-warm from instance idle times, the
pre-warmed instance per function, and the half-SLO configuration variant (no simulator)."""

from __future__ import annotations

import pytest

from prompttuner.core.types import (
    SLO,
    ArrivalStats,
    ClusterSnapshot,
    JobPhase,
    JobSpec,
    JobView,
    WorkerState,
    WorkerView,
)
from prompttuner.scheduler import make_policy
from prompttuner.scheduler.infless import percentile
from prompttuner.sim.catalog import load_catalog

CAT = load_catalog()
MODEL = "llama-3.1-8b"
CS = CAT.models[MODEL].cold_start_s["a100"]


def snap(jobs=(), workers=(), now=0.0, new=(), capacity=16, arrivals=None) -> ClusterSnapshot:
    return ClusterSnapshot(
        now=now,
        jobs=tuple(jobs),
        workers=tuple(workers),
        models=CAT.models,
        gpu_types=CAT.gpu_types,
        capacity={"a100": capacity},
        arrivals=arrivals or {},
        new_job_ids=tuple(new),
    )


def stats(arrivals=(), idle_gaps=()) -> dict[str, ArrivalStats]:
    return {MODEL: ArrivalStats(MODEL, tuple(arrivals), tuple(idle_gaps))}


def idle(wid, since):
    return WorkerView(wid, "a100", WorkerState.IDLE, MODEL, idle_since=since)


def busy(wid, jid):
    return WorkerView(wid, "a100", WorkerState.BUSY, MODEL, job_id=jid)


def job(jid, steps, deadline, arrival=0.0, workers=()):
    spec = JobSpec(jid, MODEL, arrival, SLO(deadline), steps)
    phase = JobPhase.RUNNING if workers else JobPhase.QUEUED
    return JobView(spec, phase, workers=tuple(workers), admitted=bool(workers))


def replicas(d, jid) -> int:
    return len(d.allocations.get(jid, ())) + sum(p.count for p in d.provision if p.job_id == jid)


# arrivals every 1000 s: a keep-alive from arrival gaps would be ~1000 s
ARRIVALS = [1000.0 * i for i in range(30)]
GAPS = [10.0 * i for i in range(1, 21)]  # instance idle times 10..200 s
NOW = ARRIVALS[-1] + 1.0


def test_keep_alive_is_the_high_percentile_of_instance_idle_times_not_of_arrival_gaps() -> None:
    pol = make_policy("infless", window_margin=0.0, short_term=0)
    keep = percentile(GAPS, 99.0)
    assert keep == pytest.approx(198.1)
    young = idle("young", since=NOW - 10.0)  # the function's pre-warmed instance: never released
    mid = idle("mid", since=NOW - 50.0)
    old = idle("old", since=NOW - 300.0)  # idle longer than the idle-time percentile, far below 1000 s
    d = pol.decide(snap(workers=[old, mid, young], now=NOW, arrivals=stats(ARRIVALS, GAPS)))
    assert d.release == ("old",)
    assert d.wake_at == pytest.approx(mid.idle_since + keep)
    # the Azure margin stretches the keep-alive by 10 % and shrinks the pre-warm window by 10 %
    pre, keep_m = make_policy("infless", short_term=0).windows(stats(ARRIVALS, GAPS)[MODEL])
    assert pre == pytest.approx(0.9 * percentile(GAPS, 5.0)) and keep_m == pytest.approx(1.1 * keep)


def test_short_term_histogram_keeps_instances_longer_after_a_shift_to_longer_idle_times() -> None:
    gaps = [10.0] * 60 + [400.0] * 4  # the last 4 of 64 idle times are long
    st = stats(ARRIVALS, gaps)[MODEL]
    kw = {"window_margin": 0.0, "keepalive_percentile": 90.0}
    _, keep_long = make_policy("infless", short_term=0, **kw).windows(st)
    _, keep_both = make_policy("infless", short_term=16, **kw).windows(st)
    assert keep_long == pytest.approx(10.0)  # 4 of 64 is below the long-term 90th percentile
    assert keep_both == pytest.approx(400.0)  # 4 of the last 16 is above the short-term one


def test_too_few_idle_times_use_the_default_keep_alive() -> None:
    pol = make_policy("infless", min_samples=10, default_keepalive_s=600.0)
    few = stats(ARRIVALS, [5.0] * 9)  # nine short idle times, below the minimum: not trusted
    young = idle("young", since=NOW - 10.0)
    kept = idle("kept", since=NOW - 500.0)
    d = pol.decide(snap(workers=[kept, young], now=NOW, arrivals=few))
    assert d.release == ()
    assert d.wake_at == pytest.approx(kept.idle_since + 600.0)
    gone = idle("gone", since=NOW - 601.0)
    d2 = pol.decide(snap(workers=[gone, young], now=NOW, arrivals=few))
    assert d2.release == ("gone",)
    # one more sample and the histogram rules: 5 s x 1.1, both old instances go (the youngest stays)
    d3 = pol.decide(snap(workers=[kept, young], now=NOW, arrivals=stats(ARRIVALS, [5.0] * 10)))
    assert d3.release == ("kept",)


def test_half_slo_variant_picks_more_replicas_when_the_deadline_lies_between() -> None:
    # 400 steps: one warm replica finishes in ~470 s; the deadline 600 s is met, half the SLO (300 s) not
    j = job("j", 400, 600.0)
    s = snap(jobs=[j], workers=[idle("w0", since=-10.0)], new=["j"], arrivals=stats([0.0]))
    plain = make_policy("infless").decide(s)
    half = make_policy("infless", half_slo=True).decide(s)
    assert replicas(plain, "j") == 1 and plain.allocations["j"] == ("w0",)
    assert replicas(half, "j") > 1 and half.allocations["j"] == ("w0",)
    # a deadline that a single replica misses: both need more than one, the half-SLO variant no fewer
    tight = job("t", 400, 300.0)
    st = snap(jobs=[tight], workers=[idle("w0", since=-10.0)], new=["t"], arrivals=stats([0.0]))
    assert (
        replicas(make_policy("infless", half_slo=True).decide(st), "t")
        >= replicas(make_policy("infless").decide(st), "t")
        > 1
    )


def test_one_instance_per_function_is_always_kept() -> None:
    pol = make_policy("infless", fixed_keepalive_s=100.0)
    a, b = idle("a", since=NOW - 500.0), idle("b", since=NOW - 400.0)  # both past the keep-alive
    d = pol.decide(snap(workers=[a, b], now=NOW, arrivals=stats(ARRIVALS)))
    assert d.release == ("a",) and not d.provision  # the youngest stays, however long idle
    # another instance of the function (busy, or being provisioned) is the one kept: both idle ones go
    r = job("r", 10_000, 1e9, arrival=ARRIVALS[-1], workers=("w0",))
    d2 = pol.decide(snap(jobs=[r], workers=[a, b, busy("w0", "r")], now=NOW, arrivals=stats(ARRIVALS)))
    assert set(d2.release) == {"a", "b"} and not d2.provision
    spare = WorkerView("p", "a100", WorkerState.PROVISIONING, MODEL, requested_at=NOW, ready_at=NOW + CS)
    d3 = pol.decide(snap(workers=[a, b, spare], now=NOW, arrivals=stats(ARRIVALS)))
    assert set(d3.release) == {"a", "b"} and not d3.provision


def test_a_function_left_with_no_instance_gets_one_pre_warmed() -> None:
    pol = make_policy("infless")
    d = pol.decide(snap(now=NOW, arrivals=stats(ARRIVALS)))
    assert [(p.model, p.count, p.job_id) for p in d.provision] == [(MODEL, 1, None)]
    # not while a job waits for GPUs: spare capacity goes to queued jobs first.  Two GPUs are free but a
    # 70B replica needs four, so the 70B job waits, and the two GPUs are not given to a pre-warm
    big = "llama-3.1-70b"
    assert CAT.models[big].gpus_per_replica == 4
    q = JobView(JobSpec("q", big, NOW, SLO(1e9), 10_000), JobPhase.QUEUED, admitted=True)
    hog = WorkerView("h", "a100", WorkerState.BUSY, "llama-3.2-1b", job_id="r")
    r = JobView(JobSpec("r", "llama-3.2-1b", 0.0, SLO(1e9), 10_000), JobPhase.RUNNING, ("h",), True)
    waiting = snap(jobs=[r, q], workers=[hog], now=NOW, capacity=3, arrivals=stats(ARRIVALS))
    d2 = pol.decide(waiting)
    assert "q" not in d2.allocations and not d2.provision
    # the same without the waiting job: the pre-warm takes one of the two free GPUs
    d3 = pol.decide(snap(jobs=[r], workers=[hog], now=NOW, capacity=3, arrivals=stats(ARRIVALS)))
    assert [(p.model, p.count) for p in d3.provision] == [(MODEL, 1)]


def test_pre_warm_waits_for_the_low_percentile_of_idle_times() -> None:
    # every instance idle time is 300 s: the next use is expected 270 s (5th percentile - 10 %) after the
    # last arrival, so the re-warm starts a cold start before that, not at once
    pol = make_policy("infless")
    last = ARRIVALS[-1]
    s = stats(ARRIVALS, [300.0] * 20)
    d = pol.decide(snap(now=last + 1.0, arrivals=s))
    assert not d.provision and d.wake_at == pytest.approx(last + 270.0 - CS)
    d2 = pol.decide(snap(now=last + 270.0 - CS, arrivals=s))
    assert [(p.count, p.job_id) for p in d2.provision] == [(1, None)]


def test_fixed_keep_alive_ignores_the_histogram_and_bad_settings_are_refused() -> None:
    pol = make_policy("infless", fixed_keepalive_s=30.0)
    assert pol.windows(stats(ARRIVALS, GAPS)[MODEL]) == (0.0, 30.0)
    with pytest.raises(ValueError):
        make_policy("infless", prewarm_percentile=50.0, keepalive_percentile=40.0)
    with pytest.raises(ValueError):
        make_policy("infless", min_samples=0)


# ---------------------------------------------------------------- censored idle times (Kaplan-Meier)


def test_kaplan_meier_percentile_counts_releases_as_at_least_that_long() -> None:
    from prompttuner.scheduler.infless import km_percentile

    # without releases it is the plain histogram
    assert km_percentile(GAPS, [], 50.0) == pytest.approx(percentile(GAPS, 50.0))
    # 4 ended at 10, 20, 30, 40 s; 4 released at 15 s: S drops 1/8 at 10, then 3 at risk: 1/3 each
    ended, released = [10.0, 20.0, 30.0, 40.0], [15.0] * 4
    assert km_percentile(ended, released, 12.5) == 10.0
    assert km_percentile(ended, released, 40.0) == 20.0  # 1 - 7/8 * 2/3 = 0.417
    assert km_percentile(ended, released, 99.0) == 40.0  # the last sample ended: S = 0
    # a release longer than every ended idle time: the tail is unknown
    assert km_percentile([10.0, 20.0], [500.0], 99.0) is None
    # ignoring the releases would say 20 s covers 99 % of idle periods
    assert percentile([10.0, 20.0], 99.0) < 20.0 + 1e-9


def test_releases_stop_the_keep_alive_ratcheting_down() -> None:
    # instances taken after 10-200 s, and as many released after a 600 s keep-alive with no taker
    st = ArrivalStats(MODEL, tuple(ARRIVALS), tuple(GAPS), released_idle=(660.0,) * 20)
    censored = make_policy("infless", short_term=0)
    plain = make_policy("infless", short_term=0, censored=False)
    _, keep_plain = plain.windows(st)
    _, keep_cens = censored.windows(st)
    assert keep_plain == pytest.approx(1.1 * percentile(GAPS, 99.0))  # ~218 s: below every release
    assert keep_cens == pytest.approx(660.0)  # the estimate never reaches 99 %: the longest sample
    # with few, short releases the estimate is reached among the ended times
    st2 = ArrivalStats(MODEL, tuple(ARRIVALS), tuple(GAPS), released_idle=(5.0, 5.0))
    _, keep2 = censored.windows(st2)
    assert keep2 == pytest.approx(1.1 * 200.0)


def test_the_simulator_records_idle_instances_it_releases_as_censored_samples() -> None:
    from prompttuner.sim.engine import Simulator
    from prompttuner.sim.workload import WorkloadConfig, generate

    cfg = WorkloadConfig(n_jobs=150, load=0.3, seed=3)
    jobs = generate(cfg, CAT)
    pol = make_policy("infless", fixed_keepalive_s=30.0)  # short: idle instances get released
    sim = Simulator(pol, jobs, CAT.models, CAT.gpu_types, cfg.capacity)
    sim.run()
    stats = sim.book.stats()
    released = [x for st in stats.values() for x in st.released_idle]
    assert released, "no idle instance was released"
    # each release came after the fixed keep-alive (decisions happen at events, so at or after it)
    assert min(released) >= 30.0 - 1e-6
