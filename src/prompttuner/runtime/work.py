"""How many steps a live job is planned with: its predicted steps to target, ``max_steps`` only as a cap.

Admission and quotes plan a job with a *prediction*, best first:

1. the Prompt Bank's own prediction for this job (``bank.predict``: from the probe of the chosen entry on
   the job's rows), once its selection has run (at a quote, ``POST /v1/quotes``, or as its first unit);
2. otherwise a population predictor: steps to target of the same init, the geometric mean over the runs
   of this service that ended (two or more of the model and init), else over the measured runs the
   simulator's predictor uses (``data/work_prediction.json``: random/text init, the convergence profiles;
   ``data/bank_speedup.json``: bank init, leave one task out), runs that missed their target counting as
   their budget.

A job can only stop at an evaluation, so a prediction is rounded up to a multiple of its ``eval_every``,
and capped at its ``max_steps``.  While a job runs past its estimate without reaching the target, the
estimate is refreshed as the simulator does (:meth:`WorkPredictor.refresh`: the measured error
distribution ``actual / predicted`` conditioned on the steps already run).
"""

from __future__ import annotations

import bisect
import json
import math
import statistics
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prompttuner.config import REPO_DATA

PREDICTION_FILE = REPO_DATA / "work_prediction.json"
BANK_FILE = REPO_DATA / "bank_speedup.json"
FALLBACK_STEPS = {"random": 25.0, "text": 34.0, "bank": 13.0}  # the bundled files' values, if unreadable
OWN_MIN_RUNS = 2  # the service's own runs of a (model, init) needed before they replace the prior
OWN_KEEP = 32  # of them, the most recent kept


def _geomean(xs: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(max(1.0, x)) for x in xs))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def population_priors(
    prediction_file: Path | None = None, bank_file: Path | None = None
) -> tuple[dict[str, float], tuple[float, ...]]:
    """Steps to target by init (``random``, ``text``, ``bank``) and the sorted error ratios, from the data
    the simulator's predictor was measured on."""
    pred = _read(prediction_file or PREDICTION_FILE)
    budget = float(pred.get("budget", 50.0))
    by_init: dict[str, list[float]] = defaultdict(list)
    for r in pred.get("rows", []):
        if isinstance(r, dict) and isinstance(r.get("actual"), int | float):
            by_init[str(r.get("init"))].append(float(r["actual"]))
    bank = _read(bank_file or BANK_FILE).get("per_task_bank_steps", {})
    for steps in bank.values() if isinstance(bank, dict) else ():
        by_init["bank"].extend(budget if s is None else float(s) for s in steps)
    priors = dict(FALLBACK_STEPS)
    priors.update({k: _geomean(v) for k, v in by_init.items() if v})
    ratios = tuple(sorted(float(x) for x in pred.get("loto", {}).get("ratios", []) if x and x > 0))
    return priors, ratios


@dataclass(frozen=True)
class Prediction:
    steps: float  # predicted steps to target, rounded up to an evaluation, capped at max_steps
    source: str  # where it comes from, for the quote and the events
    raw: float  # before rounding and the cap


class WorkPredictor:
    """Predicted steps to target of live jobs (thread-safe; the service's own runs refine the prior)."""

    def __init__(
        self, priors: dict[str, float] | None = None, ratios: tuple[float, ...] | None = None
    ) -> None:
        if priors is None or ratios is None:
            p, r = population_priors()
            priors = p if priors is None else priors
            ratios = r if ratios is None else ratios
        self.priors = dict(priors)
        self.ratios = tuple(sorted(ratios))
        self._own: dict[tuple[str, str], deque[float]] = defaultdict(lambda: deque(maxlen=OWN_KEEP))
        self._lock = threading.Lock()

    @staticmethod
    def kind(warm_start: bool) -> str:
        return "bank" if warm_start else "random"

    def observe(self, model: str, init: str, steps: float, reached: bool, max_steps: float) -> None:
        """A job of this service ended after ``steps`` (a miss counts as its whole budget)."""
        with self._lock:
            self._own[(model, init)].append(float(steps if reached else max(steps, max_steps)))

    @staticmethod
    def fit(raw: float, max_steps: float, eval_every: int) -> float:
        """``raw`` rounded up to the job's next evaluation and capped at its ``max_steps``."""
        e = max(1, int(eval_every))
        return float(min(float(max_steps), max(e, e * math.ceil(max(1.0, raw) / e - 1e-9))))

    def predict(self, model: str, init: str, max_steps: float, eval_every: int) -> Prediction:
        with self._lock:
            own = list(self._own.get((model, init), ()))
        if len(own) >= OWN_MIN_RUNS:
            raw, source = _geomean(own), f"median of this service's {len(own)} {init}-init runs"
        else:
            raw = self.priors.get(init, self.priors.get("random", FALLBACK_STEPS["random"]))
            source = f"population median of {init} init (measured runs)"
        return Prediction(self.fit(raw, max_steps, eval_every), source, raw)

    def refresh(self, estimate: float, steps_done: float, max_steps: float, eval_every: int) -> float:
        """The estimate of a job that ran ``steps_done`` steps without reaching its target: the median of the
        estimate's predictive distribution above what it has run (at least its next evaluation)."""
        e = max(1, int(eval_every))
        lo = steps_done / max(estimate, 1e-9)
        above = self.ratios[bisect.bisect_right(self.ratios, lo) :]
        raw = estimate * above[len(above) // 2] if above else steps_done * 1.1 + 1.0
        return self.fit(max(raw, steps_done + e), max_steps, e)
