"""Entry point of the replay: read a trace, run one policy on it, report the deadline satisfactory ratio."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prompttuner import config
from prompttuner.efsim.edf import EDFReplay
from prompttuner.efsim.elasticflow import ElasticFlowReplay
from prompttuner.efsim.events import Replay
from prompttuner.efsim.inputs import Profiles, load_jobs, load_profiles, parse_cluster

POLICIES = {"elasticflow": "elasticflow", "ef-accessctrl": "elasticflow", "ef": "elasticflow", "edf": "edf"}


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return config.shared_data() / p


def run_trace(
    path: str | Path,
    cluster: str = "n8g8",
    slot: int = 240,
    policy: str = "elasticflow",
    max_jobs: int | None = None,
    profiles: Profiles | None = None,
    deadline_check: str = "real_end",
    refresh_real_end: bool = True,
) -> dict[str, Any]:
    """Replay an ElasticFlow-format trace CSV and return the deadline satisfactory ratio and counts.

    ``policy``: ``"elasticflow"`` (alias ``"ef-accessctrl"``) or ``"edf"``.  ``max_jobs`` keeps only the
    first jobs of the file (``cluster01_head500`` of the reference is ``max_jobs=500``).  A relative
    ``path`` that does not exist is looked up in the shared data folder.  ``deadline_check`` and
    ``refresh_real_end`` (ElasticFlow only) select readings of the released code (steps 3 and 6 of
    :mod:`prompttuner.efsim.elasticflow`); the defaults reproduce the authors' reference numbers.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {sorted(POLICIES)}")
    if slot <= 0:
        raise ValueError("slot must be a positive number of seconds")
    if deadline_check not in ("end", "real_end"):
        raise ValueError("deadline_check must be 'end' or 'real_end'")
    kind = POLICIES[policy]
    spec = parse_cluster(cluster)
    profiles = profiles if profiles is not None else load_profiles()
    trace = _resolve(path)
    jobs = load_jobs(trace, profiles, kind, max_jobs=max_jobs)
    t0 = time.perf_counter()
    sim: Replay
    if kind == "elasticflow":
        sim = ElasticFlowReplay(jobs, spec, profiles, slot, deadline_check, refresh_real_end)
    else:
        sim = EDFReplay(jobs, spec, profiles, slot)
    if jobs:
        sim.run()
    out = sim.result()
    out.update(
        {
            "policy": kind,
            "cluster": spec.name,
            "gpus": spec.gpus,
            "slot": slot,
            "trace": str(trace),
            "max_jobs": max_jobs,
            "deadline_check": deadline_check if kind == "elasticflow" else "end",
            "refresh_real_end": refresh_real_end if kind == "elasticflow" else None,
            "sim_time_s": (max((j.end_time for j in jobs), default=0) - jobs[0].submit) if jobs else 0,
            "wall_s": time.perf_counter() - t0,
        }
    )
    return out
