"""What a policy may know of a job's work: a predicted number of steps, never the true one.

A real service does not know how many steps a job needs to reach its target, nor exactly how long a
step takes on the worker it gets.  The simulator keeps both true values to itself; every policy,
PromptTuner's included, sees the same estimate:

- **at admission**, steps predicted before tuning, with the error measured on the engine's own
  convergence profiles leaving each task out (``benchmarks/work_prediction.py`` ->
  ``data/work_prediction.json``; two predictors are measured there, :class:`StepsPredictor` over the
  task's features and the population median of the init, and the one with the smaller error is used).
  The simulated jobs are catalog LLMs of 0.5B-70B while the measured
  runs are short CPU runs of a 135M model, so only the *relative* error is carried over: a simulated
  job's estimate is its true work divided by a ratio ``actual / predicted`` drawn from the measured
  distribution (``measured``), from a log-normal of a chosen width (``lognormal:SIGMA``), or 1
  (``oracle``, an ablation only);
- **while it runs**, the estimate is refreshed from its own progress: the admission estimate's error
  distribution conditioned on the job not having reached its target after the steps it has run
  (:meth:`ErrorModel.refresh`), at every tenth of the admission estimate;
- **step times** carry their measured noise: a job's true step time is the profile's times a factor
  drawn from the measured per-run spread (the policies plan with the profile).

Draws are seeded by the workload seed and the job id, so every policy meets the same estimates.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from prompttuner.config import REPO_DATA
from prompttuner.core.types import JobSpec

PREDICTION_FILE = REPO_DATA / "work_prediction.json"
MODES = ("measured", "oracle", "lognormal:SIGMA")


@dataclass(frozen=True)
class TaskFeatures:
    """What is known of a task before tuning: its labels, the majority share, the step-0 accuracy of the
    job's init on a few rows (the Prompt Bank's probes measure it) and the target."""

    labels: int
    majority: float
    step0_accuracy: float
    target: float

    def vector(self) -> tuple[float, float, float]:
        gap = (self.target - self.step0_accuracy) / max(1e-6, 1.0 - self.step0_accuracy)
        return (math.log(self.labels), self.majority, gap)


class StepsPredictor:
    """Steps to target of a task: the geometric mean over the ``k`` nearest measured runs of the same
    init (distance on standardised features).  Runs that did not reach their target within their budget
    count as the budget (a lower bound)."""

    def __init__(self, runs: Sequence[tuple[str, str, TaskFeatures, float]], k: int = 5) -> None:
        self.runs = list(runs)  # (task, init, features, steps)
        self.k = k
        cols = list(zip(*(r[2].vector() for r in self.runs), strict=True)) if self.runs else []
        self.mean = [statistics.fmean(c) for c in cols]
        self.std = [statistics.pstdev(c) or 1.0 for c in cols]

    def _z(self, f: TaskFeatures) -> list[float]:
        return [(x - m) / s for x, m, s in zip(f.vector(), self.mean, self.std, strict=True)]

    def predict(self, features: TaskFeatures, init: str, exclude_task: str | None = None) -> float:
        z = self._z(features)
        pool = [r for r in self.runs if r[1] == init and r[0] != exclude_task]
        if not pool:
            pool = [r for r in self.runs if r[0] != exclude_task]
        pool.sort(key=lambda r: (math.dist(z, self._z(r[2])), r[0]))
        near = pool[: self.k]
        return math.exp(statistics.fmean(math.log(max(1.0, r[3])) for r in near))


@dataclass(frozen=True)
class ErrorModel:
    """The relative error of the work estimate, ``ratio = actual / predicted``, and step-time noise."""

    name: str
    ratios: tuple[float, ...]  # sorted; empty for the oracle
    step_time_sigma: float  # log-normal width of a job's true step time around the profile's

    @classmethod
    def parse(cls, mode: str, path: Path | None = None) -> ErrorModel:
        """``measured`` (from ``data/work_prediction.json``), ``oracle``, or ``lognormal:SIGMA``."""
        if mode == "oracle":
            return cls("oracle", (), 0.0)
        data = json.loads(Path(path or PREDICTION_FILE).read_text())
        noise = float(data["step_time"]["sigma_log"])
        if mode == "measured":
            return cls("measured", tuple(sorted(float(x) for x in data["loto"]["ratios"])), noise)
        if mode.startswith("lognormal:"):
            try:
                sigma = float(mode.split(":", 1)[1])
            except ValueError:
                sigma = -1.0
            if not sigma >= 0:
                raise ValueError(f"--prediction lognormal:SIGMA needs a width >= 0, got {mode!r}")
            rng = random.Random(12345)  # a fixed sample of the distribution, so refreshes are exact
            rs = sorted(math.exp(sigma * rng.gauss(0.0, 1.0)) for _ in range(512))
            return cls(mode, tuple(rs), noise)
        raise ValueError(f"unknown prediction mode {mode!r}; use one of {', '.join(MODES)}")

    @property
    def oracle(self) -> bool:
        return not self.ratios

    def draw(self, seed: int, job_id: str) -> tuple[float, float]:
        """(ratio actual/predicted, step-time factor) of one job: the same for every policy."""
        if self.oracle:
            return 1.0, 1.0
        h = hashlib.blake2b(f"{seed}:{job_id}".encode(), digest_size=8).digest()
        rng = random.Random(int.from_bytes(h, "big"))
        ratio = self.ratios[rng.randrange(len(self.ratios))]
        return ratio, math.exp(self.step_time_sigma * rng.gauss(0.0, 1.0))

    def refresh(self, estimate0: float, steps_done: float) -> float:
        """The estimate after ``steps_done`` steps without reaching the target: the median of the
        admission estimate's predictive distribution (``estimate0 x ratio``) above ``steps_done``."""
        if self.oracle:
            return estimate0
        lo = steps_done / max(estimate0, 1e-9)
        k = bisect.bisect_right(self.ratios, lo)
        above = self.ratios[k:]
        if not above:  # past every outcome seen: a little more than what it has run
            return max(estimate0, steps_done * 1.1 + 1.0)
        return max(estimate0 * above[len(above) // 2], steps_done + 1.0)


def predict_jobs(
    jobs: Sequence[JobSpec], model: ErrorModel, seed: int
) -> tuple[list[JobSpec], dict[str, float], dict[str, float]]:
    """Jobs whose ``work_steps`` is the estimate; their true work and true step-time factors by id."""
    out: list[JobSpec] = []
    true: dict[str, float] = {}
    speed: dict[str, float] = {}
    for j in jobs:
        ratio, slow = model.draw(seed, j.job_id)
        true[j.job_id] = j.work_steps
        speed[j.job_id] = slow
        out.append(replace(j, work_steps=max(1.0, j.work_steps / ratio)) if ratio != 1.0 else j)
    return out, true, speed


def summary(ratios: Sequence[float]) -> Mapping[str, float]:
    """Median, geometric spread and quantiles of ``actual / predicted``."""
    logs = sorted(math.log(r) for r in ratios)
    q = lambda p: math.exp(logs[min(len(logs) - 1, int(p * (len(logs) - 1) + 0.5))])  # noqa: E731
    return {
        "n": float(len(logs)),
        "median": q(0.5),
        "sigma_log": statistics.pstdev(logs) if len(logs) > 1 else 0.0,
        "p10": q(0.1),
        "p90": q(0.9),
        "within_2x": sum(abs(x) <= math.log(2) for x in logs) / len(logs),
    }
