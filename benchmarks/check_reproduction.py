"""Check that a fresh run of the simulator benchmarks reproduces the committed ``benchmarks/results/``.

The simulators are deterministic, so a behaviour-preserving change must reproduce their results: per-job
records exactly and every summary number up to float summation noise.  Rerun the benchmarks into an empty
folder (the commands the committed results were made with; the flags are those of the committed files:
``--work distribution`` for the headline, its seeds and the ablation, the default ``--work profiles`` for
``sim_headline_profiles``; the seeds run includes the sweeps, as the committed file does), then compare::

    FRESH=/tmp/repro
    PYTHONPATH=src nice -n 10 python benchmarks/sim_headline.py --work distribution --out $FRESH
    PYTHONPATH=src nice -n 10 python benchmarks/sim_headline.py --no-sweeps --name sim_headline_profiles \\
        --out $FRESH
    PYTHONPATH=src nice -n 10 python benchmarks/sim_headline.py --work distribution --seeds 1,2 \\
        --name sim_headline_seeds --out $FRESH
    PYTHONPATH=src nice -n 10 python benchmarks/sim_ablation.py --work distribution \\
        --out $FRESH/sim_ablation.json
    PYTHONPATH=src nice -n 10 python benchmarks/elasticflow_compat.py --variants --out $FRESH
    python benchmarks/check_reproduction.py --fresh $FRESH        # all five; or --names sim_ablation,...

(Wall times on the shared 2-core CPU: about 8, 28, 13, 6 and 1 minutes; run them one at a time.  Only
``sim_headline`` writes the per-workload folder ``sim_headline/<workload>/``; the seeds run redraws the
sweep plots ``sim_headline/*.png``, which are not compared.)

What is compared, for each name (the list of files comes from the committed tree):

- ``sim_headline``: ``sim_headline.json``, ``sim_headline/<workload>/summary.json`` and the per-job records
  ``sim_headline/<workload>/jobs_<policy>.jsonl.gz``;
- ``sim_headline_profiles``, ``sim_headline_seeds``, ``sim_ablation``, ``elasticflow_compat``:
  ``<name>.json``.

Per-job records must be identical: the same number of rows, and row for row the same keys with equal values
(no tolerance; NaN equals NaN).  The first differing rows are printed.  JSON files are walked recursively:
numbers must agree within ``--rel-tol`` (default 1e-9, relative; infinities and NaN must match exactly),
booleans, strings and nulls exactly, lists must have the same length; a key of the committed file that the
fresh one lacks is a difference, a key only the fresh file has is reported as a note and does not fail
(e.g. a config field added after the committed run).  Keys named in :data:`SKIPPED_KEYS` (timings and run
metadata) are not compared anywhere in the tree.  The ``.md`` write-ups and the plots are not compared
(they hold wall times and rendering details).

Prints PASS or FAIL per file and exits 1 if any file differs or is missing, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ("sim_headline", "sim_headline_profiles", "sim_headline_seeds", "sim_ablation", "elasticflow_compat")

SKIPPED_KEYS: frozenset[str] = frozenset(
    {
        # in the compared files today
        "elapsed_s",  # sim_headline*.json, sim_ablation.json: wall time of the whole run
        "machine",  # sim_headline*.json, elasticflow_compat.json: a description of the host
        "total_wall_s",  # elasticflow_compat.json: wall time of all replays
        "wall_s",  # elasticflow_compat.json runs[*] / variant_runs[*]: wall time of one replay
        "command",  # elasticflow_compat.json: the command line (its flags show in the numbers anyway)
        # not written by these benchmarks today; skipped should they appear (timestamps, decision times)
        "timestamp",
        "started_at",
        "finished_at",
        "date",
        "cpu_s",
        "cpu_ms_per_decision",
        "decision_time_ms",
        "median_ms",
        "min_ms",
        "max_ms",
    }
)
"""Keys never compared: timings, host descriptions and timestamps (they vary run to run)."""


@dataclass
class Check:
    """The outcome for one file: failures (which fail the check) and notes (which do not)."""

    path: str
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures


# ---------------------------------------------------------------------------------------- comparisons
def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _numbers_agree(a: float, b: float, rel_tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=0.0)


def compare_json(committed: Any, fresh: Any, rel_tol: float, check: Check, path: str = "") -> int:
    """Walk both trees; record differences in ``check``; return the number of leaves compared."""
    where = path or "(top level)"
    if isinstance(committed, dict):
        if not isinstance(fresh, dict):
            check.failures.append(f"{where}: committed is an object, fresh is {type(fresh).__name__}")
            return 0
        n = 0
        for key, value in committed.items():
            if key in SKIPPED_KEYS:
                continue
            sub = f"{path}/{key}" if path else str(key)
            if key not in fresh:
                check.failures.append(f"{sub}: missing in the fresh file (committed {_short(value)})")
                continue
            n += compare_json(value, fresh[key], rel_tol, check, sub)
        for key in fresh:
            if key not in committed and key not in SKIPPED_KEYS:
                sub = f"{path}/{key}" if path else str(key)
                check.notes.append(f"{sub}: only in the fresh file ({_short(fresh[key])})")
        return n
    if isinstance(committed, list):
        if not isinstance(fresh, list):
            check.failures.append(f"{where}: committed is a list, fresh is {type(fresh).__name__}")
            return 0
        if len(committed) != len(fresh):
            check.failures.append(f"{where}: {len(committed)} items committed, {len(fresh)} fresh")
            return 0
        return sum(
            compare_json(a, b, rel_tol, check, f"{path}[{i}]")
            for i, (a, b) in enumerate(zip(committed, fresh, strict=True))
        )
    if _is_number(committed) and _is_number(fresh):
        if not _numbers_agree(float(committed), float(fresh), rel_tol):
            finite = math.isfinite(committed) and math.isfinite(fresh)
            rel = abs(committed - fresh) / max(abs(committed), abs(fresh)) if finite else math.inf
            check.failures.append(f"{where}: committed {committed!r}, fresh {fresh!r} (relative {rel:.3g})")
        return 1
    if type(committed) is not type(fresh) or committed != fresh:
        check.failures.append(f"{where}: committed {committed!r}, fresh {fresh!r}")
    return 1


def _same_value(a: Any, b: Any) -> bool:
    """Exact equality, except that NaN equals NaN (a float NaN is never == itself)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def compare_records(
    committed: list[dict[str, Any]], fresh: list[dict[str, Any]], check: Check, show: int
) -> None:
    """Row for row, every key: record the first ``show`` differing rows in ``check``."""
    if len(committed) != len(fresh):
        check.failures.append(f"{len(committed)} rows committed, {len(fresh)} fresh")
    shown = 0
    differing = 0
    for i, (a, b) in enumerate(zip(committed, fresh, strict=False)):  # lengths checked above
        keys = list(a) + [k for k in b if k not in a]
        diff = [k for k in keys if k not in a or k not in b or not _same_value(a[k], b[k])]
        if not diff:
            continue
        differing += 1
        if shown < show:
            shown += 1
            parts = [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in diff]
            check.failures.append(f"row {i} (job_id {a.get('job_id', '?')}): " + "; ".join(parts))
    if differing > shown:
        check.failures.append(f"... {differing - shown} more differing rows ({differing} in all)")


# ---------------------------------------------------------------------------------------- files
def _read_records(path: Path) -> list[dict[str, Any]]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def _short(x: Any) -> str:
    s = json.dumps(x, default=str)
    return s if len(s) <= 60 else s[:57] + "..."


def files_of(name: str, committed: Path) -> list[str]:
    """Relative paths (under the results folder) that make up benchmark ``name``."""
    files = [f"{name}.json"]
    if name == "sim_headline" and (committed / "sim_headline").is_dir():
        for folder in sorted(p for p in (committed / "sim_headline").iterdir() if p.is_dir()):
            rel = folder.relative_to(committed)
            if (folder / "summary.json").is_file():
                files.append(str(rel / "summary.json"))
            files += [str(rel / p.name) for p in sorted(folder.glob("jobs_*.jsonl.gz"))]
    return files


def check_file(rel: str, committed: Path, fresh: Path, rel_tol: float, show: int) -> Check:
    check = Check(rel)
    a, b = committed / rel, fresh / rel
    if not a.is_file():
        check.failures.append(f"not in the committed results ({a})")
        return check
    if not b.is_file() and rel.endswith(".jsonl.gz") and b.with_suffix("").is_file():
        b = b.with_suffix("")  # an uncompressed fresh copy will do
    if not b.is_file():
        check.failures.append(f"missing in the fresh results ({b})")
        return check
    try:
        if ".jsonl" in rel:
            ra, rb = _read_records(a), _read_records(b)
            compare_records(ra, rb, check, show)
            check.detail = f"{len(ra)} rows" if len(ra) == len(rb) else ""
        else:
            n = compare_json(json.loads(a.read_text()), json.loads(b.read_text()), rel_tol, check)
            check.detail = f"{n} values"
    except (OSError, ValueError) as err:  # unreadable, not gzip, not JSON
        check.failures.append(f"cannot read: {err}")
    return check


def extra_files(name: str, committed: Path, fresh: Path) -> list[str]:
    """Per-job record files the fresh run wrote that the committed tree does not have."""
    if name != "sim_headline" or not (fresh / "sim_headline").is_dir():
        return []
    got = {str(p.relative_to(fresh)) for p in (fresh / "sim_headline").glob("*/jobs_*.jsonl.gz")}
    have = {str(p.relative_to(committed)) for p in (committed / "sim_headline").glob("*/jobs_*.jsonl.gz")}
    return sorted(got - have)


def run(
    fresh: Path, committed: Path, names: list[str], rel_tol: float, show: int, out: TextIO = sys.stdout
) -> int:
    """Compare and print; return the exit status (0 all reproduced, 1 a difference)."""
    n_ok = n_bad = 0
    for name in names:
        print(f"== {name}", file=out)
        for rel in files_of(name, committed):
            check = check_file(rel, committed, fresh, rel_tol, show)
            status = "PASS" if check.ok else "FAIL"
            print(f"{status}  {rel}" + (f"  ({check.detail})" if check.detail else ""), file=out)
            for line in check.failures[: show + 1]:
                print(f"      {line}", file=out)
            if len(check.failures) > show + 1:
                print(f"      ... {len(check.failures) - show - 1} more differences", file=out)
            for line in check.notes[:show]:
                print(f"      note: {line}", file=out)
            if len(check.notes) > show:
                print(f"      note: ... {len(check.notes) - show} more keys only in the fresh file", file=out)
            n_ok, n_bad = (n_ok + 1, n_bad) if check.ok else (n_ok, n_bad + 1)
        for rel in extra_files(name, committed, fresh):
            print(f"      note: {rel} is in the fresh results only (not compared)", file=out)
    verdict = "REPRODUCED" if n_bad == 0 else "DIFFERENT"
    print(f"{verdict}: {n_ok} files pass, {n_bad} fail (relative tolerance {rel_tol:g})", file=out)
    return 0 if n_bad == 0 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fresh", type=Path, required=True, help="results folder of the fresh run (its --out)")
    ap.add_argument("--committed", type=Path, default=RESULTS, help="reference results (default: committed)")
    ap.add_argument("--names", default=",".join(NAMES), help=f"comma-separated subset of {','.join(NAMES)}")
    ap.add_argument("--rel-tol", type=float, default=1e-9, help="relative tolerance for JSON numbers")
    ap.add_argument("--show", type=int, default=5, help="differences (rows) to print per file")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.names.split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        ap.error(f"unknown benchmark name(s) {unknown}; choose from {', '.join(NAMES)}")
    if not args.fresh.is_dir():
        ap.error(f"fresh results folder not found: {args.fresh}")
    if not args.committed.is_dir():
        ap.error(f"committed results folder not found: {args.committed}")
    return run(args.fresh, args.committed, names, args.rel_tol, args.show)


if __name__ == "__main__":
    sys.exit(main())
