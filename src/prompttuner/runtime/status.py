"""The controller's status view (``GET /v1/cluster``, ``prompttuner status``): workers, warm models,
GPU-seconds held and busy, and the step and cold-start times the policy plans with."""

from __future__ import annotations

from typing import Any

from prompttuner.runtime.jobstate import ControllerBase
from prompttuner.runtime.records import worker_state


class StatusView(ControllerBase):
    loop_error: str | None
    policy_error: str | None

    def cluster(self) -> dict[str, Any]:
        with self.lock:
            now = self.clock()
            workers = []
            held = self.released_gpu_s
            busy = 0.0
            for w in self.workers.values():
                held += now - w.requested_at
                extra = now - w.op_started if w.op not in (None, "switch") else 0.0  # loading is not busy
                busy += w.busy_s + extra
                workers.append(
                    {
                        "id": w.worker_id,
                        "model": w.model,
                        "switching_from": w.switch_from,  # the model it unloads while loading this one
                        "state": worker_state(w).value,
                        "job": w.job_id,
                        "op": w.op,
                        "pid": w.pid,
                        "requested_at": w.requested_at,
                        "ready_at": w.ready_at,
                        "busy_seconds": round(w.busy_s + extra, 3),
                    }
                )
            warm: dict[str, int] = {}
            for w in self.workers.values():
                if w.ready_at is not None:
                    warm[w.model] = warm.get(w.model, 0) + 1
            return {
                "backend": self.backend.name,
                "policy": self.policy.name,
                "gpu_type": self.cfg.gpu_type,
                "capacity": self.cfg.max_workers,
                "workers": workers,
                "warm_models": warm,
                "gpu_seconds_held": round(held, 3),
                "gpu_seconds_busy": round(busy, 3),
                "utilisation": round(busy / held, 4) if held > 0 else 0.0,
                "jobs_active": len(self.jobs),
                "profiles": {
                    m: {
                        "step_s": p.step_time_s[self.cfg.gpu_type],
                        "cold_start_s": p.cold_start_s[self.cfg.gpu_type],
                        "measured": self.profiles.measured(m),
                    }
                    for m in {w.model for w in self.workers.values()} | set(self.cfg.min_warm)
                    for p in [self.profiles.profile(m)]
                },
                "loop_error": self.loop_error,
                "policy_error": self.policy_error,
            }
