"""Predicted steps to target for a warm start: the number the scheduler plans the job's work with.

Two sources, best first:
1. a fitted log-linear model ``log(steps) = a + b * probe_loss`` (``steps_model`` in
   ``prompttuner/data/bank_speedup.json``), fitted by ``benchmarks/bank_speedup.py`` on warm starts it ran:
   the lower the loss of the job's own sample under the chosen prompt, the fewer steps are left;
2. otherwise the median steps the probed entries took on their own tasks (from their own, cold, starts)
   divided by the measured median speed-up of bank init over random init (2.0 until one is measured).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prompttuner.config import REPO_DATA

SPEEDUP_FILE = REPO_DATA / "bank_speedup.json"
DEFAULT_SPEEDUP = 2.0
DEFAULT_STEPS = 100.0


def load_speedup(path: Path | None = None) -> dict[str, Any]:
    p = path or SPEEDUP_FILE
    try:
        data = json.loads(p.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class StepsPredictor:
    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = load_speedup() if data is None else data

    @property
    def speedup_vs_random(self) -> float:
        v = self.data.get("median_speedup_vs_random")
        return float(v) if isinstance(v, int | float) and v > 0 else DEFAULT_SPEEDUP

    def predict(
        self, loss: float, source_steps: Sequence[int | None] = (), max_steps: float | None = None
    ) -> float:
        m = self.data.get("steps_model")
        if isinstance(m, dict) and m.get("kind") == "loglinear" and math.isfinite(loss):
            est = math.exp(float(m["a"]) + float(m["b"]) * loss)
        else:
            known = [float(s) for s in source_steps if s]
            base = statistics.median(known) if known else DEFAULT_STEPS
            est = base / self.speedup_vs_random
        est = max(1.0, est)
        return min(est, max_steps) if max_steps else est
