"""Replay every run of ``elasticflow-reference.json`` with the ElasticFlow compatibility mode.

Writes ``benchmarks/results/elasticflow_compat.json`` and ``.md``: our deadline satisfactory ratio next to
the authors' (pkusys/ElasticFlow simulator), the difference, the counts and the wall time of each replay.
With ``--variants`` it also replays the ElasticFlow runs under the alternative reading of the released
code (deadline checked on the plan's unrounded end, ``deadline_check="real_end"``) for comparison.

    PYTHONPATH=src nice -n 10 python benchmarks/elasticflow_compat.py --variants
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from prompttuner import config
from prompttuner.sim.ef_trace import load_profiles, resolve_trace
from prompttuner.sim.elasticflow_compat import run_trace

TOLERANCE = 0.03
RESULTS = Path(__file__).resolve().parent / "results"


def replay(run: dict[str, Any], deadline_check: str, profiles: Any) -> dict[str, Any]:
    path, max_jobs = resolve_trace(run["trace"])
    policy = "edf" if run["schedule"] == "edf" else "elasticflow"
    t0 = time.perf_counter()
    out = run_trace(path, cluster=run["cluster_spec"], slot=240, policy=policy, max_jobs=max_jobs,
                    profiles=profiles, deadline_check=deadline_check)
    wall = time.perf_counter() - t0
    ours = out["ddl_satis_ratio"]
    return {
        "trace": run["trace"],
        "cluster": run["cluster_spec"],
        "schedule": run["schedule"],
        "deadline_check": out["deadline_check"],
        "reference": run["ddl_satis_ratio"],
        "ours": round(ours, 4),
        "delta": round(ours - run["ddl_satis_ratio"], 4),
        "within_tolerance": abs(ours - run["ddl_satis_ratio"]) <= TOLERANCE,
        "jobs": out["jobs"],
        "met": out["met"],
        "missed": out["missed"],
        "declined": out["declined"],
        "events_handled": out["events_handled"],
        "wall_s": round(wall, 2),
    }


def write_md(rows: list[dict[str, Any]], extra: list[dict[str, Any]], command: str, total: float) -> str:
    lines = [
        "# ElasticFlow compatibility mode vs the authors' simulator",
        "",
        f"Command: `{command}`  ",
        f"Machine: 2-core shared CPU ({platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}), other helpers running; wall times are single runs, "
        "indicative only.  ",
        "Reference: `shared/data/elasticflow-reference.json` (pkusys/ElasticFlow scheduler.py, "
        f"commit 04a0109); slot 240 s; tolerance +-{TOLERANCE}.",
        "",
        "| trace | cluster | schedule | reference | ours | delta | ok | met / missed / declined | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['trace']} | {r['cluster']} | {r['schedule']} | {r['reference']} | {r['ours']} | "
            f"{r['delta']:+.4f} | {'yes' if r['within_tolerance'] else 'NO'} | "
            f"{r['met']} / {r['missed']} / {r['declined']} | {r['wall_s']} |"
        )
    ok = sum(r["within_tolerance"] for r in rows)
    lines += ["", f"{ok} of {len(rows)} runs within +-{TOLERANCE}; total replay time {total:.1f} s.", ""]
    if extra:
        lines += [
            "Alternative reading (deadline checked on the last plan's unrounded end, `real_end`, which is",
            "what the scheduler.py we could read does in `ef_sim_jobs_access_control`):",
            "",
            "| trace | cluster | reference | ours (real_end) | delta |",
            "|---|---|---|---|---|",
        ]
        for r in extra:
            lines.append(
                f"| {r['trace']} | {r['cluster']} | {r['reference']} | {r['ours']} | {r['delta']:+.4f} |"
            )
        lines.append("")
    lines += NOTES
    return "\n".join(lines) + "\n"


NOTES = [
    "## How the mode follows the released code (interpretations)",
    "",
    "- Iterations: a job advances `(dt - overhead) * T(model, batch, n)` per interval, counted only up to",
    "  its planned end; the plan is rebuilt from the iterations left at every handled event.",
    "- Overhead: 2 s per job holding GPUs per handled event; plus `2 * (log2 n + 1)` s when its exact GPU",
    "  set (after node placement) was not used since the last restart; plus 27 s on restart events (every",
    "  240th handled event: the simulator reuses the slot length as the restart period). Overhead also",
    "  delays the job's end event.",
    "- Slots: events within one slot of now are merged at `now + slot`; plans run on the `now + k * slot`",
    "  grid; plan ends are rounded up to it.",
    "- MSS: smallest power-of-two share q (within the per-model cap) such that min(q, free) from the",
    "  deadline backwards covers the work; previous size before the switch point. No q: planned late.",
    "- Admission: all admitted jobs plus the merged event's arrivals re-planned in deadline order; if ANY",
    "  plan misses its deadline (a running job's included, as in the released code) every arrival of the",
    "  event is declined.",
    "- Leftover GPUs: priced as extra GPU-seconds per extra GPU of one step up; 0-GPU jobs first; sorted",
    "  DESCENDING (released code), first job that fits is bumped, repeat. Cross-checked against a literal",
    "  scratch port of `allocate_free_gpus`/`get_marginal`/`ef_sim_allocation` on random cases: identical.",
    "- Deadline check (ElasticFlow): a job meets its deadline iff it completes (its end event, or the exact",
    "  finish when it finishes before that event) by the deadline. The scheduler.py we could read (0d29ad9)",
    "  checks the last plan's unrounded end instead; with that, cluster01 lands +0.05/+0.06 above the",
    "  reference, with the completion time within 0.01, so the latter is the default",
    "  (`deadline_check=\"real_end\"` selects the other).",
    "- EDF: zero overhead, no admission control, `min(cap, free)` per period, cap `min(64, batch)`.",
    "- Ratio: met / all jobs (declined and late both count as misses).",
    "",
    "## Known gap",
    "",
    "cluster10 with ElasticFlow lands +0.12/+0.13 above the reference under every reading we tried",
    "(deadline on completion or on plan end, no overhead cache, restart at every event, ascending handout,",
    "slot 60). A literal port of the code we could read gives the same numbers as this mode, so the gap is",
    "in code we could not read (the reference commit 04a0109 is not in the searchable index). Without the",
    "leftover handout the mode gives 0.815 on both cluster sizes, i.e. the reference behaves as if much less",
    "leftover capacity reached the jobs. The two runs are `xfail(strict=True)` in the tests.",
    "",
    "Leads we measured but did not adopt (no code we could read supports them): limiting the handout to",
    "one bump per handled event (with the `real_end` check) gives +0.011 / +0.027 on cluster10 n16g8 / n8g8",
    "and -0.006 / -0.046 on cluster01 n16g8 / n8g8, consistent with a `while` loop that stops after its",
    "first pass in the reference version; checking admission on the slot-rounded end instead of the exact",
    "one gives -0.10 to -0.15 everywhere.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="substring filter on 'trace/cluster/schedule'")
    ap.add_argument("--deadline-check", default="end", choices=["end", "real_end"])
    ap.add_argument("--variants", action="store_true", help="also replay EF runs with the other check")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    ref = json.loads((config.shared_data() / "elasticflow-reference.json").read_text())
    runs = [r for r in ref["runs"] if args.only in f"{r['trace']}/{r['cluster_spec']}/{r['schedule']}"]
    profiles = load_profiles()
    t0 = time.perf_counter()
    rows = []
    for run in runs:
        rows.append(replay(run, args.deadline_check, profiles))
        print(json.dumps(rows[-1]), flush=True)
    total = time.perf_counter() - t0
    other = "real_end" if args.deadline_check == "end" else "end"
    extra = []
    if args.variants:
        for run in runs:
            if run["schedule"] != "edf":
                extra.append(replay(run, other, profiles))
                print(json.dumps(extra[-1]), flush=True)
    command = "PYTHONPATH=src nice -n 10 python benchmarks/elasticflow_compat.py" + (
        " --variants" if args.variants else ""
    ) + (f" --only {args.only}" if args.only else "")
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": command,
        "machine": "2-core shared CPU",
        "tolerance": TOLERANCE,
        "total_wall_s": round(total, 1),
        "runs": rows,
        "variant_runs": extra,
    }
    (args.out / "elasticflow_compat.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out / "elasticflow_compat.md").write_text(write_md(rows, extra, command, total))
    print(f"wrote {args.out / 'elasticflow_compat.json'} and .md", flush=True)


if __name__ == "__main__":
    main()
