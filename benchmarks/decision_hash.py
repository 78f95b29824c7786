"""Hashes of a policy's decisions on a simulator workload: the identity check of a speed-up that must not
change a single decision.

Every decision (the snapshot's time and the policy's ``Decisions``, by ``repr``, floats exact) feeds a
running SHA-256; every ``--every`` decisions its digest is written out with the CPU time so far.  Two
revisions agree on the first N decisions when their lines up to N agree.

    PYTHONPATH=src python benchmarks/decision_hash.py --policy elasticflow --decisions 15000 \\
        [--jobs 100000 --gpus a100:5000,h100:5000 --load 0.6 --tightness 1.0] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

from prompttuner.core.types import ClusterSnapshot, Decisions
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.runner import simulate
from prompttuner.sim.workload import WorkloadConfig, generate


class Enough(Exception):
    pass


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
    jobs = generate(cfg, cat)
    out = sys.stdout if args.out == "-" else open(args.out, "w")  # noqa: SIM115
    h = hashlib.sha256()
    seen = {"n": 0}
    t0 = time.process_time()
    from prompttuner.sim import engine

    real = engine.Simulator.run

    def run(self: engine.Simulator) -> object:
        decide = self.policy.decide

        def hashed(snap: ClusterSnapshot) -> Decisions:
            d = decide(snap)
            h.update(repr((snap.now, d)).encode())
            seen["n"] += 1
            if seen["n"] % args.every == 0:
                print(seen["n"], h.hexdigest()[:16], f"{time.process_time() - t0:.1f}", file=out, flush=True)
            if seen["n"] >= args.decisions:
                raise Enough
            return d

        self.policy.decide = hashed  # type: ignore[method-assign]
        return real(self)

    engine.Simulator.run = run  # type: ignore[method-assign]
    try:
        simulate(args.policy, jobs, cfg, cat)
    except Enough:
        pass
    print("end", seen["n"], h.hexdigest()[:16], f"{time.process_time() - t0:.1f}", file=out, flush=True)


if __name__ == "__main__":
    main()
