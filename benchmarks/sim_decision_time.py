"""Decision time of each policy on one snapshot of 1,000 jobs x 1,000 GPUs (and 10,000 x 10,000).

Times are CPU time of this process (the 2-core machine is shared, wall time is noisy).
The snapshot is synthetic but realistic: 1,000 active jobs of the default model mix (about 70% running
on one to four replicas, the rest queued, 20 just arrived), 1,000 GPUs of A100 held by workers (busy,
idle warm, some provisioning), arrival histories for every model.  Each policy decides on it
``--repeat`` times; we report the median and the spread.  Goals for prompttuner: <= 20 ms at 1,000 x
1,000 and <= 200 ms at 10,000 x 10,000 (the same snapshot recipe, ten times larger).

    python benchmarks/sim_decision_time.py [--repeat 7] [--sizes 1000,10000]
    python benchmarks/sim_decision_time.py --check-live [--sizes 1000]   # checks only, writes nothing

``--check-live`` decides on each snapshot twice, planned from the snapshot alone and from a driver's live
index of it (``core/live.py``, what the simulator keeps in place at scale), and exits 1 unless every
policy's decisions are identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import statistics
import time
from pathlib import Path

from prompttuner.core.live import LiveIndex
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
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.workload import DEFAULT_MIX

OUT = Path(__file__).parent / "results"


def build_snapshot(
    n_jobs: int = 1000, n_gpus: int = 1000, seed: int = 0, stress: bool = False
) -> ClusterSnapshot:
    """Running jobs are on track (steady state) unless ``stress``: then deadlines are random and most
    running jobs are behind, so one decision re-plans nearly every job (a worst case)."""
    cat = load_catalog()
    rng = random.Random(seed)
    now = 12_000.0  # a slot boundary (60 s and 240 s), so slotted policies do their full work
    models = sorted(DEFAULT_MIX)
    weights = [DEFAULT_MIX[m] for m in models]
    jobs: list[JobView] = []
    workers: list[WorkerView] = []
    gpus_used = 0
    wid = 0
    new_ids: list[str] = []
    for i in range(n_jobs):
        m = rng.choices(models, weights)[0]
        prof = cat.models[m]
        steps = rng.uniform(100, 1500)
        arrival = now - rng.uniform(0, 2000)
        alone = steps * prof.step_time("a100", 1)
        spec = JobSpec(f"j{i}", m, arrival, SLO(arrival + rng.uniform(0.8, 3.0) * alone), steps)
        jid = spec.job_id
        if i >= n_jobs - 20:
            jobs.append(JobView(spec, JobPhase.QUEUED))
            new_ids.append(jid)
            continue
        n = rng.choice([1, 1, 2, 4])
        need = n * prof.gpus_per_replica
        if rng.random() < 0.7 and gpus_used + need <= int(n_gpus * 0.85):
            ws = []
            for _ in range(n):
                wid += 1
                w = WorkerView(
                    f"w{wid}", "a100", WorkerState.BUSY, m, requested_at=arrival, ready_at=arrival, job_id=jid
                )
                workers.append(w)
                ws.append(w.worker_id)
            gpus_used += need
            jobs.append(
                JobView(
                    spec,
                    JobPhase.RUNNING,
                    steps_done=steps * rng.uniform(0, 0.8),
                    workers=tuple(ws),
                    admitted=True,
                )
            )
        else:
            jobs.append(JobView(spec, JobPhase.QUEUED, admitted=True))
    while gpus_used < n_gpus:
        m = rng.choices(models, weights)[0]
        g = cat.models[m].gpus_per_replica
        if gpus_used + g > n_gpus:
            m, g = "qwen2.5-0.5b", 1
        wid += 1
        if rng.random() < 0.8:
            workers.append(
                WorkerView(
                    f"w{wid}",
                    "a100",
                    WorkerState.IDLE,
                    m,
                    requested_at=now - 500,
                    ready_at=now - 450,
                    idle_since=now - rng.uniform(0, 300),
                )
            )
        else:
            workers.append(
                WorkerView(
                    f"w{wid}", "a100", WorkerState.PROVISIONING, m, requested_at=now - 10, ready_at=now + 30
                )
            )
        gpus_used += g
    arrivals = {}
    for m in models:
        arr = tuple(sorted(now - rng.uniform(0, 1800) for _ in range(64)))
        arrivals[m] = ArrivalStats(
            m, arr, recent_deadlines=tuple(a + 600 for a in arr), recent_work=(500.0,) * 64
        )
    return ClusterSnapshot(
        now=now,
        jobs=tuple(jobs),
        workers=tuple(workers),
        models=cat.models,
        gpu_types=cat.gpu_types,
        capacity={"a100": n_gpus},
        arrivals=arrivals,
        new_job_ids=tuple(new_ids),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--policies", default="prompttuner,infless,elasticflow,edf,reserved")
    ap.add_argument("--sizes", default="1000,10000", help="jobs = GPUs of each snapshot")
    ap.add_argument("--out", type=Path, default=OUT / "sim_decision_time.json")
    ap.add_argument("--check-live", action="store_true", help="only check live-index decisions are identical")
    args = ap.parse_args()
    if args.check_live:
        raise SystemExit(check_live(args))
    out: dict[str, object] = {}
    for size in (int(x) for x in args.sizes.split(",")):
        res, quote_ms = measure(args, size)
        key = "" if size == 1000 else f"_{size // 1000}k"
        out[f"snapshot{key}"] = {"jobs": size, "gpus": size}
        out[f"policies{key}"] = res
        out[f"prompttuner_quote_median_ms{key}"] = quote_ms
    out.update(
        {
            "cases": {
                "steady": "running jobs on track (deadline 1.2-2.5x their remaining time at the current "
                "size), about 30% queued, 20 new arrivals",
                "stress": "random deadlines: most running jobs are behind, one decision re-plans almost all",
            },
            "repeat": args.repeat,
            "goal_ms_prompttuner": 20.0,
            "goal_ms_prompttuner_10k": 200.0,
            "machine": f"{platform.machine()} {platform.processor() or ''} shared 2-core CPU".strip(),
            "python": platform.python_version(),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))


def check_live(args: argparse.Namespace) -> int:
    bad = 0
    for size in (int(x) for x in args.sizes.split(",")):
        for case in ("steady", "stress"):
            snap = build_snapshot(size, size, stress=case == "stress")
            live = dataclasses.replace(snap, live=LiveIndex.of(snap.models, snap.workers, snap.jobs))
            for name in args.policies.split(","):
                same = make_policy(name).decide(snap) == make_policy(name).decide(live)
                bad += not same
                print(f"{size} {case:6s} {name:12s} live-index decisions {'identical' if same else 'DIFFER'}")
    return 1 if bad else 0


def measure(
    args: argparse.Namespace, size: int
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, float]]:
    res: dict[str, dict[str, dict[str, float]]] = {}
    quote_ms: dict[str, float] = {}
    for case in ("steady", "stress"):
        snap = build_snapshot(size, size, stress=case == "stress")
        res[case] = {}
        for name in args.policies.split(","):
            pol = make_policy(name)
            pol.decide(snap)  # warm caches (memoised rate tables) as in a long-running driver
            times = []
            for _ in range(args.repeat):
                t0 = time.process_time()  # CPU time: the machine is shared, wall time is noisy
                pol.decide(snap)
                times.append((time.process_time() - t0) * 1000)
            med = statistics.median(times)
            res[case][name] = {"median_ms": med, "min_ms": min(times), "max_ms": max(times)}
            print(f"{size} {case:6s} {name:12s} median {med:8.1f} ms ({min(times):.1f}-{max(times):.1f})")
        pol = make_policy("prompttuner")
        qt = []
        for _ in range(args.repeat):
            q0 = time.process_time()
            pol.quote(snap, snap.jobs[-1].spec)
            qt.append((time.process_time() - q0) * 1000)
        quote_ms[case] = statistics.median(qt)
        print(f"{size} {case:6s} prompttuner quote: median {quote_ms[case]:.1f} ms")
    return res, quote_ms


if __name__ == "__main__":
    main()
