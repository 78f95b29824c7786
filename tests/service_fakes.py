"""Test doubles for the service tests: a tiny fake tuning engine and a simple policy.

The fake engine is deterministic arithmetic instead of an LLM, so the scheduling, failure and restart
tests are fast and can check exact results: a job's final "prompt" after N steps is the same number
whether it ran on one worker, moved between workers, was split data-parallel or recovered from a
checkpoint.  Workers import it by name (``service_fakes:FakeEngine``) in their own processes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from prompttuner.core.slo import eval_due
from prompttuner.core.types import (
    Admission,
    ClusterSnapshot,
    Decisions,
    JobSpec,
    Provision,
    Quote,
    Switch,
    WorkerState,
)
from prompttuner.runtime.engine import JobPayload, WarmStartUnavailable
from prompttuner.scheduler.base import Policy, register
from prompttuner.scheduler.common import keep_warm_floor

FAKE_ENGINE = "service_fakes:FakeEngine"
HOLD_ENV = "FAKE_HOLD_DIR"  # a folder: the workers hold the jobs of the tenants named in it (Hold)
HOLD_MAX_S = 120.0  # a hold never outlasts this (a test that fails while holding cannot hang a worker)


def _rows(path: str) -> int:
    with open(path) as f:
        return sum(1 for line in f if line.strip())


class FakeSession:
    def __init__(self, job: JobPayload, state: bytes | None) -> None:
        self.job = job
        self.n = _rows(job.train_path)
        st = json.loads(state) if state else {"step": 0, "w": 0.0, "pos": 0}
        self.step_no, self.w, self.pos = int(st["step"]), float(st["w"]), int(st["pos"])
        self.bank = bool(st.get("bank", False))  # started from the fake bank (FAKE_BANK_BONUS)
        self.step_s = float(os.environ.get("FAKE_STEP_S", "0.02"))
        hold_dir = os.environ.get(HOLD_ENV)
        self.hold = Hold.at(Path(hold_dir), job.tenant) if hold_dir else None

    @property
    def steps_done(self) -> int:
        return self.step_no

    def _batch(self) -> list[int]:
        return [(self.pos + i) % self.n for i in range(self.job.batch_size)]

    def _advance(self, g_sum: float, n: int) -> float:
        if self.hold is not None and self.step_no >= 1 and self.hold.holds(self.bank):
            self.hold.wait()  # a held job: its first step done, the next waits for the release
        # order-sensitive, so a skipped, repeated or misapplied step shows in the result
        self.w = self.w * 0.9 + (self.job.lr or 0.3) * g_sum / n
        self.pos = (self.pos + self.job.batch_size) % self.n
        self.step_no += 1
        return 1.0 / (1 + self.step_no)

    def step(self) -> float:
        time.sleep(self.step_s)  # stands in for compute time
        b = self._batch()
        return self._advance(float(sum(i + 1 for i in b)), len(b))

    def shard_gradient(self, index: int, count: int) -> bytes:
        time.sleep(self.step_s / count)
        shard = self._batch()[index::count]
        return json.dumps({"sum": float(sum(i + 1 for i in shard)), "n": len(shard)}).encode()

    def apply_gradients(self, shards: list[bytes]) -> float:
        parts = [json.loads(s) for s in shards]
        return self._advance(sum(p["sum"] for p in parts), sum(p["n"] for p in parts))

    def evaluate(self) -> float:
        per = float(os.environ.get("FAKE_ACC_PER_STEP", "0.02"))
        bonus = float(os.environ.get("FAKE_BANK_BONUS", "0")) if self.bank else 0.0
        return min(1.0, 0.3 + per * self.step_no + bonus)

    def state(self) -> bytes:
        st: dict[str, Any] = {"step": self.step_no, "w": self.w, "pos": self.pos}
        if self.bank:
            st["bank"] = True
        return json.dumps(st).encode()

    def export_prompt(self, path: str) -> None:
        from safetensors.numpy import save_file

        save_file({"prompt": np.full((self.job.num_virtual_tokens, 4), self.w, dtype=np.float64)}, path)


class Hold:
    """Holds the jobs of one tenant after their first step until released, so a test can act on a job that
    is certainly still running (it cannot end by itself, however fast the fake steps).

    The workers see it through ``$FAKE_HOLD_DIR`` (set before they start): while the file named after the
    tenant is there, a job of that tenant that has run one step (single-worker or data-parallel) waits
    before its next, and says so with ``<tenant>.held``.  In a test: ``with Hold.of(tenant_id) as hold:``
    submit, ``wait_for(hold.holding)``, act; the hold is released when the block ends (or ``release()``).
    ``cold_only``: only sessions that did not start from the (fake) bank are held, e.g. a job's random init
    after a fallback.
    """

    def __init__(self, gate: Path, marker: Path, cold_only: bool = False) -> None:
        self.gate, self.marker, self.cold_only = gate, marker, cold_only

    @classmethod
    def at(cls, folder: Path, tenant: str, cold_only: bool = False) -> Hold:
        return cls(folder / tenant, folder / f"{tenant}.held", cold_only)

    @classmethod
    def of(cls, tenant: str, cold_only: bool = False) -> Hold:
        """The hold of ``tenant`` in this process's ``$FAKE_HOLD_DIR`` (the workers' folder)."""
        return cls.at(Path(os.environ[HOLD_ENV]), tenant, cold_only)

    def __enter__(self) -> Hold:
        self.gate.write_text("cold" if self.cold_only else "all")
        return self

    def holds(self, bank: bool) -> bool:
        """In a worker: does the hold (if on) apply to a session that started from the bank or not?"""
        try:
            mode = self.gate.read_text()
        except FileNotFoundError:
            return False
        return not (bank and mode == "cold")

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        self.gate.unlink(missing_ok=True)

    def holding(self) -> bool:
        """A job of the tenant has run its first step and waits (or waited) for the release."""
        return self.marker.exists()

    def wait(self) -> None:
        """In a worker: wait while the hold is on."""
        if not self.gate.exists():
            return
        self.marker.touch()
        end = time.monotonic() + HOLD_MAX_S
        while self.gate.exists() and time.monotonic() < end:
            time.sleep(0.005)  # polls the release (a file: the test is another process)


class FakeEngine:
    def load_model(self, name: str) -> Any:
        if name == "broken-model":
            raise RuntimeError("cannot load broken-model")
        if name.startswith("flaky-"):  # fails its first N loads (counted in FAKE_FLAKY_DIR), then loads
            tries = Path(os.environ["FAKE_FLAKY_DIR"])
            tries.mkdir(parents=True, exist_ok=True)
            n = len(list(tries.iterdir()))
            (tries / f"try-{n}-{os.getpid()}").touch()
            if n < int(name.split("-", 1)[1]):
                raise RuntimeError(f"{name}: load {n + 1} fails")
        time.sleep(float(os.environ.get("FAKE_LOAD_S", "0")))
        return {"name": name}

    def open(self, loaded: Any, job: JobPayload, state: bytes | None) -> FakeSession:
        return FakeSession(job, state)

    def warm_start(self, loaded: Any, job: JobPayload) -> dict[str, Any]:
        if job.bank_dir is None:
            raise WarmStartUnavailable("no Prompt Bank configured")
        state = json.dumps({"step": 0, "w": 1.0, "pos": 0, "bank": True}).encode()
        return {"state": state, "init": "bank:fake", "predicted_steps": 3, **start_eval(job, state)}

    def predict(self, loaded: Any, prompt_path: str, texts: list[str], labels: list[str]) -> list[str]:
        return [labels[len(t) % len(labels)] for t in texts]


class RaceFakeEngine(FakeEngine):
    """A warm start as ``bank.warm_start`` replies (``real_engine.start_result``): three starts raced, the
    bank's entry won after 2 race steps (in its state), the two losers ran 3 steps between them."""

    def warm_start(self, loaded: Any, job: JobPayload) -> dict[str, Any]:
        if job.bank_dir is None:
            raise WarmStartUnavailable("no Prompt Bank configured")
        entry = {"name": "entry:mr/e1", "kind": "warm", "entry_id": "e1", "accuracy": 0.5}
        common = {
            "init": "bank:e1",
            "chosen": "entry:mr/e1",
            "kind": "warm",
            "entry_task": "mr",
            "probe_accuracy": 0.5,
            "predicted_steps": 6,
            "lr": 0.01,
            "select_s": 0.01,
        }
        if not job.bank_race:  # the probe's best start as it is: no race, no steps yet
            state = json.dumps({"step": 0, "w": 1.0, "pos": 0, "bank": True}).encode()
            return {
                **common,
                "state": state,
                **start_eval(job, state),
                **{"raced": False, "no_race": "not asked", "steps_done": 0, "race_steps": 0},
                "candidates": [entry],
            }
        race = [{"steps": 2.0, "accuracy": 0.6, "loss": 0.7}]
        state = json.dumps({"step": 2, "w": 1.0, "pos": 8, "bank": True}).encode()
        return {
            **common,
            "state": state,
            **start_eval(job, state),
            **{"raced": True, "steps_done": 2, "race_steps": 3},
            "candidates": [
                {**entry, "race": race},
                {"name": "text", "kind": "text", "race": race},
                {"name": "random", "kind": "random", "race": race[:1]},
            ],
        }


def start_eval(job: JobPayload, state: bytes) -> dict[str, Any]:
    """The start's evaluation a warm start replies with (``real_engine.start_result``): the fake session's
    accuracy at that state, when the job has a target and the state is at an evaluation step (a race's
    winner at step 2 is not, as ``PromptTrainer.eval_due`` says)."""
    sess = FakeSession(job, state)
    if job.target_accuracy is None or not eval_due(sess.steps_done, job.eval_every, job.max_steps):
        return {"start_accuracy": None}
    return {"start_accuracy": sess.evaluate()}


def expected_w(job: JobPayload, steps: int) -> float:
    """The fake prompt after ``steps`` uninterrupted steps, for exactness checks."""
    s = FakeSession(job, None)
    s.step_s = 0
    for _ in range(steps):
        s.step()
    return s.w


@register("test-greedy")
class GreedyPolicy(Policy):
    """Test policy: admit all; each job (earliest deadline first) gets up to ``per_job`` warm workers."""

    def __init__(self, per_job: int = 1) -> None:
        self.per_job = per_job

    def decide(self, snap: ClusterSnapshot) -> Decisions:
        adm = tuple(Admission(j, True) for j in snap.new_job_ids)
        allocs: dict[str, tuple[str, ...]] = {}
        used: set[str] = set()
        jobs = sorted((j for j in snap.jobs if not j.phase.terminal), key=lambda j: j.spec.deadline)
        for j in jobs:
            keep = [w for w in j.workers if w not in used]
            free = [
                w.worker_id
                for w in snap.workers
                if w.model == j.spec.model
                and w.worker_id not in used
                and w.state != WorkerState.PROVISIONING
                and (w.job_id is None or w.job_id == j.job_id)
            ]
            mine = (keep + [w for w in free if w not in keep])[: self.per_job]
            used.update(mine)
            allocs[j.job_id] = tuple(mine)
        prov = []
        models = {j.spec.model for j in jobs}
        for m in models:
            if not snap.workers_of(m) and snap.gpus_held() < sum(snap.capacity.values()):
                prov.append(Provision(m, next(iter(snap.gpu_types)), 1))
        return keep_warm_floor(snap, Decisions(allocations=allocs, provision=tuple(prov), admissions=adm))

    def quote(self, snap: ClusterSnapshot, job: JobSpec) -> Quote:
        gpu = next(iter(snap.gpu_types))
        finish = snap.now + job.work_steps * snap.models[job.model].step_time(gpu, 1)
        ok = finish <= job.deadline
        return Quote(finish, 0.0, 1, ok, None if ok else finish)


@register("test-switcher")
class SwitcherPolicy(Policy):
    """Test policy: admit all; keep ``prewarm`` workers per model; each job gets one worker of its model
    (earliest deadline first): an idle one, else one still loading, else an idle worker of another model
    switched to it (when the switch beats a cold start), else a cold start."""

    def __init__(self, prewarm: dict[str, int] | None = None) -> None:
        self.prewarm = dict(prewarm or {})

    def decide(self, snap: ClusterSnapshot) -> Decisions:
        adm = tuple(Admission(j, True) for j in snap.new_job_ids)
        gpu = next(iter(snap.gpu_types))
        free = sum(snap.capacity.values()) - snap.gpus_held()
        allocs: dict[str, tuple[str, ...]] = {}
        switch: list[Switch] = []
        prov: list[Provision] = []
        used = {w.worker_id for w in snap.workers if w.job_id is not None}
        jobs = sorted((j for j in snap.jobs if not j.phase.terminal), key=lambda j: (j.deadline, j.job_id))
        for j in jobs:
            if j.workers:
                continue
            model = j.spec.model
            prof = snap.models[model]
            mine = [
                w
                for w in snap.workers
                if w.model == model and w.worker_id not in used and w.state != WorkerState.BUSY
            ]
            mine.sort(key=lambda w: (w.state == WorkerState.PROVISIONING, w.ready_at))
            if mine:
                allocs[j.job_id] = (mine[0].worker_id,)
                used.add(mine[0].worker_id)
                continue
            other = [
                w
                for w in snap.workers
                if w.model != model and w.worker_id not in used and w.state == WorkerState.IDLE
            ]
            if other and prof.switch_time(gpu) < prof.cold_start_s[gpu]:
                switch.append(Switch(other[0].worker_id, model, j.job_id))
                used.add(other[0].worker_id)
            elif free > 0:
                prov.append(Provision(model, gpu, 1, job_id=j.job_id))
                free -= 1
        for model, want in sorted(self.prewarm.items()):
            have = sum(1 for w in snap.workers if w.model == model) + sum(
                p.count for p in prov if p.model == model
            )
            n = min(max(0, want - have), free)
            if n > 0:
                prov.append(Provision(model, gpu, n))
                free -= n
        return Decisions(allocations=allocs, provision=tuple(prov), switch=tuple(switch), admissions=adm)


class CalibratingFakeEngine(FakeEngine):
    """A fake engine that times its calibration steps as 0.5, 0.6 and 0.55 seconds (no sleep)."""

    def calibrate(self, loaded: Any) -> list[float]:
        return [0.5, 0.6, 0.55]
