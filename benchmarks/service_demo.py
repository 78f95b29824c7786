"""The live demo as a measurement: ``prompttuner demo --json`` on real tuning, recorded with what it printed.

Runs the command (the service with local workers on the bundled LLM; earlier jobs fill the Prompt Bank, a
later job, the same task on other rows, is quoted with and without it and runs from the bank beside its
random-init twin, best effort), keeps what it
printed (stderr) and its JSON line (stdout), the machine's load (``uptime``) before and after, and writes
``benchmarks/results/service_demo.json`` and ``.md``.

    .venv/bin/python benchmarks/service_demo.py [--workers 2] [--jobs 4]
    PROMPTTUNER_CACHE=$(mktemp -d) .venv/bin/python benchmarks/service_demo.py   # a cold model cache
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--out", default=str(RESULTS / "service_demo.json"))
    a = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pt-demo-"))
    env = dict(os.environ, COLUMNS="118", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "prompttuner", "demo", "--home", str(home), "--workers", str(a.workers)]
    cmd += ["--jobs", str(a.jobs), "--json"]
    sys.path.insert(0, str(ROOT / "src"))
    from prompttuner.config import cache_dir

    cache = "warm" if (cache_dir() / "models" / "smollm2-135m").exists() else "cold"
    before = _uptime()
    t0 = time.time()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.time() - t0
    after = _uptime()
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-5000:])
        raise SystemExit(f"the demo failed ({out.returncode})")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    shown = f"prompttuner demo --workers {a.workers} --jobs {a.jobs} --json"
    result.update(
        wall_s_measured=round(wall, 1),
        command=f".venv/bin/python benchmarks/service_demo.py  (runs: {shown}; model cache {cache})",
        model_cache=cache,
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, "
        f"Python {platform.python_version()}",
        uptime_before=before,
        uptime_after=after,
        printed=out.stderr,
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    cmp = result["bank_vs_random"]
    lines = [
        "# service_demo: the live service on real tuning",
        "",
        f"`{result['command']}` on {result['machine']}; {a.workers} workers; whole run {wall:.0f}s "
        f"(goal: <= 240s).",
        "",
        f"- load before: `{before}`",
        f"- load after: `{after}`",
        "",
        "| task | start | steps | accuracy/target | quoted | took | selection and race at the quote "
        "| deadline "
        "| target reached | deadline met | SLO met | GPU-s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    yes = {True: "yes", False: "no", None: "-"}
    for j in result["jobs"]:
        acc = "-" if j["accuracy"] is None else f"{j['accuracy']:.2f}"
        lines.append(
            f"| {j['task']}{' (from its quote)' if j.get('counts_from') == 'quote' else ''} | "
            f"{j['start']}{' (best effort)' if j['best_effort'] else ''} | {j['steps']}"
            f"{' +' + str(j['race_steps']) + ' race' if j.get('race_steps') else ''} | "
            f"{acc}/{j['target']:.3f} | {j['quoted_s']}s | {j['actual_s']}s | "
            f"{'-' if j.get('selection_at_quote_s') is None else str(j['selection_at_quote_s']) + 's'} | "
            f"{j['deadline_s']}s | "
            f"{yes[j['target_reached']]} | {yes[j['deadline_met']]} | {yes[j['slo_met']]} | "
            f"{j['gpu_seconds']:.1f} |"
        )
    qb, qr = cmp["quote_with_bank"], cmp["quote_random"]
    bank_s = next(j["actual_s"] for j in result["jobs"] if j["id"] == cmp["bank_job"])
    lines += [
        "",
        f"The {cmp['task']} pair at a {cmp['deadline_s']:.0f}s deadline: the quote with the bank "
        f"{qb['quoted_s']:.0f}s ({qb['predicted_steps']:.0f} steps, {qb['prediction']}; selection "
        f"{qb['selection_s'] or 0:.1f}s at the quote), from random init {qr['quoted_s']:.0f}s "
        f"({qr['predicted_steps']:.0f} steps, {qr['prediction']}). Measured: from the bank SLO "
        f"{yes[cmp['bank_slo_met']]} (its time from its quote, the selection included: "
        f"{bank_s}s), the random-init twin (ran: "
        f"{yes[cmp['twin_ran']]}) SLO {yes[cmp['twin_slo_met']]}; only the bank's start met it: "
        f"{yes[cmp['only_bank_met']]}.",
        "",
        f"SLO met {result['slo_met']}/{len(result['jobs'])}, deadlines met {result['deadlines_met']}, "
        f"targets "
        f"reached {result['targets_reached']}; GPU-seconds charged to jobs {result['gpu_seconds_jobs']:.1f}, "
        f"held by the warm pool {result['gpu_seconds_held']:.1f}; planned step time at the end "
        f"{result['step_s']:.2f}s (average of the last direct measurements). Quoted, took and deadline run "
        "from the job's submission, except for the pair's bank job, whose run from its quote (its selection "
        "there included); a bank job's selection and race at its quote ran before it was submitted (in its "
        "GPU-s).",
        "",
        *[f"- {n}" for n in result["notes"]],
        "",
        "## What it printed (stderr; the JSON line on stdout is in `service_demo.json`)",
        "",
        "```",
        out.stderr.rstrip(),
        "```",
    ]
    Path(a.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out} and .md; whole run {wall:.0f}s")


if __name__ == "__main__":
    main()
