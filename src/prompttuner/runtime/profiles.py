"""Measured step and cold-start times of the base LLMs on this service's workers.

The policies plan with :class:`~prompttuner.core.types.ModelProfile`; on the live service the numbers
come from what the workers report (moving averages of seconds per step and per model load), kept in
``$PROMPTTUNER_HOME/profiles.json`` so a restarted service plans with what it learned before.

What the policies plan and quote with (:meth:`ProfileBook.planning_profile`) is not the plain average: two
workers on a 2-core CPU slow each other, so every direct step time is kept with the number of workers that
were busy while it ran, and plans use the times measured with the most workers busy the service may run
(an unmeasured level is the highest measured one scaled linearly, until measured); a safety margin of
``z`` times the measured spread (sigma of the log of recent samples; the simulator's measured step-time
noise until there are three) is added on top.  The Prompt Bank's selection time is measured the same way
(:meth:`ProfileBook.planning_select_s`; before the first, a number of planned steps that the service
stream measured), so a bank job's quote includes it.  A cold start is timed from the
moment the worker is started until it is warm (process start, imports, weight load); a switch of a warm
worker to another model (:meth:`ProfileBook.switch_time`) from its request to its reply, and planned with
the weight load the cold starts reported until one has been measured.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path

from prompttuner.core.types import ModelProfile

DEFAULT_STEP_S = 1.0
DEFAULT_COLD_START_S = 30.0
# a selection takes this many of the same worker's steps until one has been timed: the largest of the
# default start's 64 measured selections in the service stream (median 5.45, with the check of the best
# start; benchmarks/results/bank_stream_race2/bank_stream.json, select_in_steps)
DEFAULT_SELECT_STEPS = 7.69
DEFAULT_SIGMA = 0.39  # step-time noise measured over the convergence profiles (work_prediction.md)
MARGIN_Z = 1.645  # a one-sided 95 % margin on a log-normal spread
KEEP = 16  # recent samples kept per level


@dataclass
class _Measured:
    step_s: float = DEFAULT_STEP_S
    cold_start_s: float = DEFAULT_COLD_START_S
    step_samples: int = 0
    load_samples: int = 0
    weak_samples: int = 0
    levels: dict[str, list[float]] = field(default_factory=dict)  # busy workers -> recent log step times
    select_logs: list[float] = field(default_factory=list)  # recent log selection times
    weights_s: float | None = None  # the model's weight load alone, as a worker reported it
    switch_s: float | None = None  # a warm worker's switch to this model (unload the other, load this)
    switch_samples: int = 0
    # recent train replies' (evaluation seconds, steps): evaluations are timed apart from steps (a chunk
    # with an evaluation is not a slow step) and planned as their share per step
    evals: list[list[float]] = field(default_factory=list)


def _spread_margin(logs: list[float], z: float) -> float:
    sigma = statistics.pstdev(logs) if len(logs) >= 3 else DEFAULT_SIGMA
    return math.exp(z * sigma)


class ProfileBook:
    def __init__(
        self,
        path: Path | None,
        gpu_type: str,
        max_replicas: int,
        alpha: float = 0.3,
        margin_z: float = MARGIN_Z,
    ) -> None:
        self.path = path
        self.margin_z = margin_z
        self.gpu_type = gpu_type
        self.max_replicas = max_replicas
        self.alpha = alpha
        self._lock = threading.Lock()
        self._m: dict[str, _Measured] = {}
        if path is not None and path.exists():
            try:
                raw = json.loads(path.read_text())
                self._m = {k: _Measured(**v) for k, v in raw.items()}
            except (ValueError, TypeError):
                self._m = {}  # a damaged file only costs us the learned numbers

    def _get(self, model: str) -> _Measured:
        return self._m.setdefault(model, _Measured())

    def observe_step(self, model: str, seconds_per_step: float, weak: bool = False, busy: int = 1) -> None:
        """A measured step time, run while ``busy`` workers were busy; ``weak`` ones (derived, not direct)
        only count until a direct one exists and are not kept for planning."""
        with self._lock:
            m = self._get(model)
            if not weak and seconds_per_step > 0:
                logs = m.levels.setdefault(str(max(1, busy)), [])
                logs.append(math.log(seconds_per_step))
                del logs[:-KEEP]
            if weak and m.step_samples > 0:
                return
            if not weak and m.step_samples == 0:
                m.step_s = seconds_per_step  # the first direct measurement replaces any estimate
            elif m.weak_samples == 0 and m.step_samples == 0:
                m.step_s = seconds_per_step
            else:
                m.step_s = (1 - self.alpha) * m.step_s + self.alpha * seconds_per_step
            if weak:
                m.weak_samples += 1
            else:
                m.step_samples += 1

    def observe_eval(self, model: str, eval_s: float, steps: int) -> None:
        """The seconds a train reply spent evaluating, over the ``steps`` it ran."""
        if steps > 0 and eval_s >= 0:
            with self._lock:
                ev = self._get(model).evals
                ev.append([float(eval_s), float(steps)])
                del ev[:-KEEP]

    def eval_share_s(self, model: str) -> float:
        """Seconds of evaluation per step over the recent train replies (their sums' ratio: a step-weighted
        mean, steady however the evaluations fall into chunks); 0 until a reply reported it."""
        with self._lock:
            ev = self._get(model).evals
            steps = sum(s for _, s in ev)
            return sum(e for e, _ in ev) / steps if steps > 0 else 0.0

    def measured(self, model: str) -> bool:
        """Whether the step time of ``model`` comes from measurements rather than the default."""
        with self._lock:
            m = self._get(model)
            return m.step_samples + m.weak_samples > 0

    def observe_load(self, model: str, seconds: float) -> None:
        with self._lock:
            m = self._get(model)
            m.cold_start_s = (
                seconds if m.load_samples == 0 else ((1 - self.alpha) * m.cold_start_s + self.alpha * seconds)
            )
            m.load_samples += 1

    def observe_weights(self, model: str, seconds: float) -> None:
        """How long a worker took to load the model's weights (inside its cold start): what a switch to
        the model is planned with until a switch has been measured."""
        if seconds > 0:
            with self._lock:
                m = self._get(model)
                m.weights_s = (
                    seconds if m.weights_s is None else (1 - self.alpha) * m.weights_s + self.alpha * seconds
                )

    def observe_switch(self, model: str, seconds: float) -> None:
        """How long a warm worker took to switch to ``model`` (unload its model, load this one)."""
        if seconds > 0:
            with self._lock:
                m = self._get(model)
                m.switch_s = (
                    seconds
                    if m.switch_samples == 0
                    else (1 - self.alpha) * (m.switch_s or seconds) + self.alpha * seconds
                )
                m.switch_samples += 1

    def switch_time(self, model: str) -> float:
        """Seconds a switch to ``model`` is planned with: measured switches, else the weight load its cold
        starts reported, else (never loaded here) its cold start less the instance start the other models'
        cold starts measured (their whole cold start less their weight load), else its cold start (a switch
        then gains nothing)."""
        with self._lock:
            m = self._get(model)
            if m.switch_samples > 0 and m.switch_s is not None:
                return m.switch_s
            if m.weights_s is not None:
                return m.weights_s
            starts = [
                o.cold_start_s - o.weights_s
                for o in self._m.values()
                if o.load_samples > 0 and o.weights_s is not None and o.cold_start_s > o.weights_s
            ]
            if starts:
                return max(0.0, m.cold_start_s - statistics.fmean(starts))
            return m.cold_start_s

    def observe_select(self, model: str, seconds: float) -> None:
        """How long a Prompt Bank selection (its probes on a worker) took."""
        if seconds > 0:
            with self._lock:
                logs = self._get(model).select_logs
                logs.append(math.log(seconds))
                del logs[:-KEEP]

    def planning_step_s(self, model: str, busy: int | None = None) -> float:
        """Seconds per step to plan with when ``busy`` workers run (default: all the service may hold):
        the geometric mean of recent direct samples at that level (or the highest measured level below,
        scaled linearly), times the margin from their spread; the average alone when nothing is kept; plus
        the measured evaluation share per step (:meth:`eval_share_s`)."""
        return self._planning_train_s(model, busy) + self.eval_share_s(model)

    def _planning_train_s(self, model: str, busy: int | None) -> float:
        want = max(1, busy if busy is not None else self.max_replicas)
        with self._lock:
            m = self._get(model)
            levels = {int(k): v for k, v in m.levels.items() if v}
            below = [k for k in levels if k <= want]
            if not below:
                return m.step_s * math.exp(self.margin_z * DEFAULT_SIGMA) if levels else m.step_s
            lvl = max(below)
            logs = levels[lvl]
            mean = math.exp(statistics.fmean(logs)) * want / lvl
            return mean * _spread_margin(logs, self.margin_z)

    def planning_select_s(self, model: str) -> float:
        """Seconds a selection takes, with the margin from the measured spread; until one has been timed,
        ``DEFAULT_SELECT_STEPS`` of the planned step time (which carries the step-time margin)."""
        with self._lock:
            logs = list(self._get(model).select_logs)
        if not logs:
            return DEFAULT_SELECT_STEPS * self.planning_step_s(model)
        return math.exp(statistics.fmean(logs)) * _spread_margin(logs, self.margin_z)

    def profile(self, model: str) -> ModelProfile:
        """The measured averages (no margin): what a job's own step times are compared with."""
        with self._lock:
            m = self._get(model)
            step = m.step_s
        return self._profile(model, step)

    def planning_profile(self, model: str) -> ModelProfile:
        """What the policy plans and quotes with: :meth:`planning_step_s` at full load."""
        return self._profile(model, self.planning_step_s(model))

    def _profile(self, model: str, step: float) -> ModelProfile:
        with self._lock:
            cold = self._get(model).cold_start_s
        switch = self.switch_time(model)
        return ModelProfile(
            name=model,
            params_b=0.0,
            gpus_per_replica=1,
            cold_start_s={self.gpu_type: cold},
            step_time_s={self.gpu_type: step},
            max_replicas=self.max_replicas,
            sync_overhead_s=0.05 * step,
            switch_s={self.gpu_type: switch},
        )

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            data = {k: vars(v) for k, v in self._m.items()}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)
