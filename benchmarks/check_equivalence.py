"""Does a change keep every simulated decision?  A fast check against another commit.

Runs a small grid (8 policies and ablations x Poisson, ITP and Azure arrivals x SLO tightness 1.0 and
2.0, ``--jobs`` jobs each, ``--work distribution``, ``--prediction oracle``) in this tree and in a git
worktree of ``--against`` (a commit), and compares per-job records exactly and metrics within 1e-9
relative.  Minutes, not the hour the full benchmarks take; the full check is
``benchmarks/check_reproduction.py``.

    python benchmarks/check_equivalence.py --against 2fd6e42 [--jobs 300] [--policies a,b]

Exits 1 when anything differs.  Needs the shared data (``../shared/data``) for the trace arrivals.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICIES = [
    "prompttuner",
    "infless",
    "elasticflow",
    "edf",
    "reserved",
    "prompttuner-no-warm-pool",
    "prompttuner-no-elastic",
    "prompttuner-with-boost",
]

RUN = """
import dataclasses, json, sys
from prompttuner.sim.catalog import load_catalog
from prompttuner.sim.runner import run_workload
from prompttuner.sim.workload import WorkloadConfig
cfg_fields = {f.name for f in dataclasses.fields(WorkloadConfig)}
out = {}
cat = load_catalog()
for wl in ["poisson", "itp", "azure"]:
    for tight in [1.0, 2.0]:
        kw = dict(n_jobs=int(sys.argv[2]), load=0.6, slo_tightness=tight, work="distribution", arrivals=wl)
        if "prediction" in cfg_fields:
            kw["prediction"] = "oracle"
        jobs, res = run_workload(WorkloadConfig(**kw), cat, sys.argv[3].split(","))
        for p, r in res.items():
            out[f"{wl}/{tight}/{p}"] = {"jobs": r.jobs, "metrics": r.metrics}
json.dump(out, open(sys.argv[1], "w"), sort_keys=True, default=str)
"""


def run_tree(tree: Path, out: Path, jobs: int, policies: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    env.setdefault("PROMPTTUNER_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    subprocess.run([sys.executable, "-c", RUN, str(out), str(jobs), policies], cwd=tree, env=env, check=True)


def compare(a: dict[str, dict[str, object]], b: dict[str, dict[str, object]]) -> list[str]:
    bad: list[str] = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            bad.append(f"{key}: only in one run")
            continue
        if a[key]["jobs"] != b[key]["jobs"]:
            bad.append(f"{key}: per-job records differ")
        ma, mb = a[key]["metrics"], b[key]["metrics"]
        assert isinstance(ma, dict) and isinstance(mb, dict)
        for m, v in ma.items():
            w = mb.get(m)
            if v != w and not (
                isinstance(v, float) and isinstance(w, float) and abs(v - w) <= 1e-9 * max(abs(v), abs(w))
            ):
                bad.append(f"{key}: {m} {v} vs {w}")
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", required=True, help="the commit to compare with")
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--policies", default=",".join(POLICIES))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        old = Path(d) / "old"
        add = ["git", "worktree", "add", "-q", "--detach", str(old), a.against]
        subprocess.run(add, cwd=ROOT, check=True)
        try:
            run_tree(old, Path(d) / "old.json", a.jobs, a.policies)
            run_tree(ROOT, Path(d) / "new.json", a.jobs, a.policies)
            before = json.loads((Path(d) / "old.json").read_text())
            after = json.loads((Path(d) / "new.json").read_text())
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
    bad = compare(before, after)
    for line in bad:
        print("DIFF", line)
    print(f"{len(before) - len({b.split(':')[0] for b in bad})} of {len(before)} runs identical")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
