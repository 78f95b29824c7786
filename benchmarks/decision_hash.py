"""Hashes of a policy's decisions on a simulator workload: the identity check of a speed-up that must not
change a single decision.

Every decision (the snapshot's time and the policy's ``Decisions``, by ``repr``, floats exact) feeds a
running SHA-256; every ``--every`` decisions, and at the last, its digest is written out with the CPU time
so far (the last line's count is less than ``--decisions`` when the run ended first).  Two revisions agree
on the first N decisions when their lines up to N agree.

    PYTHONPATH=src python benchmarks/decision_hash.py --policy elasticflow --decisions 15000 \\
        [--jobs 100000 --gpus a100:5000,h100:5000 --load 0.6 --tightness 1.0] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

from prompttuner.core.types import ClusterSnapshot, Decisions, JobSpec
from prompttuner.sim.catalog import Catalog, load_catalog
from prompttuner.sim.engine import SimResult, Simulator
from prompttuner.sim.runner import simulate
from prompttuner.sim.workload import WorkloadConfig, generate


class Enough(Exception):
    """Raised by the hashing simulator once it has seen the decisions asked for."""


def hashes(
    policy: str, jobs: list[JobSpec], cfg: WorkloadConfig, cat: Catalog, decisions: int, every: int
) -> list[tuple[int, str, float]]:
    """(decisions so far, digest, CPU-s) every ``every`` decisions and at the end (at most
    ``decisions``) of ``policy`` driven as ``runner.simulate`` drives it."""
    h = hashlib.sha256()
    rows: list[tuple[int, str, float]] = []
    t0 = time.process_time()

    def note() -> None:
        rows.append((n, h.hexdigest()[:16], time.process_time() - t0))

    class Hashing(Simulator):
        def run(self) -> SimResult:
            decide = self.policy.decide

            def hashed(snap: ClusterSnapshot) -> Decisions:
                nonlocal n
                d = decide(snap)
                h.update(repr((snap.now, d)).encode())
                n += 1
                if n % every == 0:
                    note()
                if n >= decisions:
                    raise Enough
                return d

            self.policy.decide = hashed  # type: ignore[method-assign]
            return super().run()

    n = 0
    try:
        simulate(policy, jobs, cfg, cat, simulator=Hashing)
    except Enough:
        pass
    if not rows or rows[-1][0] != n:
        note()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="elasticflow")
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--gpus", default="a100:5000,h100:5000")
    ap.add_argument("--load", type=float, default=0.6)
    ap.add_argument("--tightness", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--decisions", type=int, default=15_000, help="stop after this many decisions")
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--out", default="-")
    args = ap.parse_args()
    cap = {k: int(v) for k, v in (p.split(":") for p in args.gpus.split(","))}
    cfg = WorkloadConfig(
        n_jobs=args.jobs,
        load=args.load,
        slo_tightness=args.tightness,
        capacity=cap,
        prediction="measured",
        seed=args.seed,
    )
    cat = load_catalog()
    rows = hashes(args.policy, generate(cfg, cat), cfg, cat, args.decisions, args.every)
    out = sys.stdout if args.out == "-" else open(args.out, "w")  # noqa: SIM115
    for n, digest, cpu in rows:
        print(n, digest, f"{cpu:.1f}", file=out, flush=True)


if __name__ == "__main__":
    main()
