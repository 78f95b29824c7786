"""Measured step and cold-start times of the base LLMs on this service's workers.

The policies plan with :class:`~prompttuner.core.types.ModelProfile`; on the live service the numbers
come from what the workers report (moving averages of seconds per step and per model load), kept in
``$PROMPTTUNER_HOME/profiles.json`` so a restarted service plans with what it learned before.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from prompttuner.core.types import ModelProfile

DEFAULT_STEP_S = 1.0
DEFAULT_COLD_START_S = 30.0


@dataclass
class _Measured:
    step_s: float = DEFAULT_STEP_S
    cold_start_s: float = DEFAULT_COLD_START_S
    step_samples: int = 0
    load_samples: int = 0
    weak_samples: int = 0


class ProfileBook:
    def __init__(self, path: Path | None, gpu_type: str, max_replicas: int, alpha: float = 0.3) -> None:
        self.path = path
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

    def observe_step(self, model: str, seconds_per_step: float, weak: bool = False) -> None:
        """A measured step time; ``weak`` ones (derived, not direct) only count until a direct one exists."""
        with self._lock:
            m = self._get(model)
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

    def profile(self, model: str) -> ModelProfile:
        with self._lock:
            m = self._get(model)
            return ModelProfile(
                name=model,
                params_b=0.0,
                gpus_per_replica=1,
                cold_start_s={self.gpu_type: m.cold_start_s},
                step_time_s={self.gpu_type: m.step_s},
                max_replicas=self.max_replicas,
                sync_overhead_s=0.05 * m.step_s,
            )

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            data = {k: vars(v) for k, v in self._m.items()}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)
