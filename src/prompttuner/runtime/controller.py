"""The live controller: the scheduler policy on the real clock, applied to a pool of warm workers.

One thread runs the loop: collect worker replies, build a :class:`ClusterSnapshot` at wall-clock ``now``,
ask the policy for :class:`Decisions`, apply them (admit or decline, provision, release, allocate), and
hand every allocated job its next unit of work.

Work goes out in units that end at a step boundary, so that is where jobs move:
- a job on one worker gets a *chunk*: steps until ``chunk_s`` seconds pass or the target is reached;
- a job on ``n > 1`` workers runs data-parallel *rounds*: each worker computes the gradient of its shard
  of the same batch from the same state, then the lead applies them all (one optimiser step).
Every unit returns the job's whole trainable state (kilobytes), which is checkpointed at once; moving a
job, or recovering it after a worker dies or the service restarts, is just sending that state to another
worker.  Every change of a job becomes a stored :class:`~prompttuner.core.types.Event`.
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from prompttuner.state.models import DataFile, Job
from prompttuner.state.store import Store
from prompttuner.core.types import (
    SLO,
    ArrivalStats,
    ClusterSnapshot,
    Decisions,
    Event,
    GPUType,
    JobPhase,
    JobSpec,
    JobView,
    Quote,
    WorkerState,
    WorkerView,
)
from prompttuner.runtime.backend import Backend, Reply
from prompttuner.runtime.checkpoint import read_checkpoint, write_checkpoint
from prompttuner.runtime.engine import JobPayload
from prompttuner.runtime.profiles import ProfileBook
from prompttuner.scheduler.base import Policy

log = logging.getLogger("prompttuner.controller")

TERMINAL = {p.value for p in JobPhase if p.terminal}


@dataclass
class WorkerRec:
    worker_id: str
    model: str
    requested_at: float
    ready_at: float | None = None  # None while the model loads
    job_id: str | None = None  # allocated job
    op: str | None = None  # request in flight
    op_job: str | None = None  # the job that request belongs to
    op_started: float = 0.0
    op_future: Future[Any] | None = None  # for predict requests
    idle_since: float | None = None
    busy_s: float = 0.0
    releasing: bool = False
    pid: int | None = None


@dataclass
class Round:
    """One data-parallel step in progress."""

    rid: int
    version: int
    workers: list[str]
    grads: dict[int, bytes] = field(default_factory=dict)
    grad_s: float = 0.0  # the slowest shard's compute time
    started: float = 0.0


@dataclass
class JobRT:
    job_id: str
    tenant: str
    payload: JobPayload
    arrival: float
    deadline: float
    best_effort: bool
    work_steps: float
    phase: JobPhase
    admitted: bool
    steps_done: int = 0
    version: int = 0
    state: bytes | None = None
    selected: bool = False  # warm start done (or not wanted)
    init: str = "random"
    workers: list[str] = field(default_factory=list)
    inflight: set[str] = field(default_factory=set)
    round: Round | None = None
    accuracy: float | None = None
    loss: float | None = None
    target_reached: bool = False
    gpu_seconds: float = 0.0
    started_at: float | None = None
    late_noted: bool = False
    last_progress_event: float = 0.0

    @property
    def done(self) -> bool:
        return self.target_reached or self.steps_done >= self.payload.max_steps


@dataclass
class ControllerConfig:
    gpu_type: str = "cpu"
    price_per_hour: float = 1.0  # per worker-hour; cost units of quotes
    max_workers: int = 2
    min_warm: dict[str, int] = field(default_factory=dict)  # models pre-warmed and kept warm
    tick_s: float = 0.2
    decide_every_s: float = 2.0
    chunk_s: float = 4.0
    progress_event_every_s: float = 2.0
    predict_timeout_s: float = 120.0
    bank_dir: str | None = None
    max_load_failures: int = 3  # the Prompt Bank used for warm starts (None: warm starts unavailable)


class Controller:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        policy: Policy,
        config: ControllerConfig | None = None,
        payload_for: Callable[[Job, Session], JobPayload] | None = None,
        on_finish: Callable[[JobRT, str], None] | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.policy = policy
        self.cfg = config or ControllerConfig()
        self.payload_for = payload_for or (lambda row, s: default_payload(row, s, self.cfg.bank_dir))
        self.on_finish = on_finish
        self.profiles = ProfileBook(store.home / "profiles.json", self.cfg.gpu_type, self.cfg.max_workers)
        self.lock = threading.RLock()
        self.jobs: dict[str, JobRT] = {}
        self.workers: dict[str, WorkerRec] = {}
        self.new_ids: list[str] = []
        self.requests: deque[tuple[str, dict[str, Any], Future[Any]]] = deque()
        # per model: (arrival, deadline, estimated work in steps) of recent jobs, for pool sizing
        self.arrivals: dict[str, deque[tuple[float, float, float]]] = {}
        self.idle_gaps: dict[str, deque[float]] = {}
        self.released_gpu_s = 0.0
        self.load_failures: dict[str, int] = {}
        self.load_errors: dict[str, str] = {}
        self._wid = itertools.count(1)
        self._rid = itertools.count(1)
        self._prefix = secrets.token_hex(2)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._need_decide = True
        self._next_decide = 0.0
        self._wake_at: float | None = None
        self._thread: threading.Thread | None = None
        self.started_at = time.time()
        self.loop_error: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        with self.lock:
            self._recover()
            for model, n in self.cfg.min_warm.items():
                for _ in range(n):
                    if len(self.workers) < self.cfg.max_workers:
                        self._provision(model, reason="pre-warm")
        self._thread = threading.Thread(target=self._run, name="prompttuner-controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self.lock:
            for rec in self.workers.values():
                if rec.op_future is not None and not rec.op_future.done():
                    rec.op_future.set_exception(RuntimeError("service is shutting down"))
            for _model, _args, fut in self.requests:
                fut.set_exception(RuntimeError("service is shutting down"))
            self.requests.clear()
            now = time.time()
            for rec in self.workers.values():
                self.released_gpu_s += now - rec.requested_at
            self.workers.clear()
        self.backend.shutdown()
        self.profiles.save()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                replies = self.backend.poll(self.cfg.tick_s)
                with self.lock:
                    now = time.time()
                    for r in replies:
                        self._on_reply(r, now)
                    self._note_late(now)
                    due = now >= self._next_decide or (self._wake_at is not None and now >= self._wake_at)
                    if self._need_decide or due:
                        self._decide(now)
                    self._dispatch(now)
            except Exception as e:  # keep serving: one bad decision must not stop every job
                log.exception("controller loop error")
                self.loop_error = f"{type(e).__name__}: {e}"
                self._stop.wait(self.cfg.tick_s)

    # ------------------------------------------------------------------ API entry points

    def submit(self, job_id: str) -> None:
        """A job row was just committed (queued, not admitted): take it over."""
        with self.store.session() as s:
            row = s.get(Job, job_id)
            if row is None:
                raise KeyError(job_id)
            rt = self._rt_from_row(row, s)
        with self.lock:
            self.jobs[job_id] = rt
            self.new_ids.append(job_id)
            self._note_arrival(rt)
            self._emit(Event(rt.arrival, "arrive", job_id, data={"model": rt.payload.model}))
            self._need_decide = True
        self._wake.set()

    def _note_arrival(self, rt: Any) -> None:
        self.arrivals.setdefault(rt.payload.model, deque(maxlen=200)).append(
            (rt.arrival, rt.deadline, rt.work_steps)
        )

    def _arrival_stats(self, model: str) -> ArrivalStats:
        """Recent arrivals of ``model`` with their deadlines and work: the policy sizes warm pools by how
        many of them could not afford a cold start (as the simulator gives it)."""
        recent = list(self.arrivals.get(model, ()))
        return ArrivalStats(
            model,
            tuple(a for a, _, _ in recent),
            tuple(self.idle_gaps.get(model, ())),
            recent_deadlines=tuple(d for _, d, _ in recent),
            recent_work=tuple(w for _, _, w in recent),
        )

    def quote(self, spec: JobSpec) -> Quote:
        with self.lock:
            snap = self._snapshot(time.time(), extra=spec)
        try:
            return self.policy.quote(snap, spec)
        except NotImplementedError:
            return fallback_quote(snap, spec)

    def broken_model(self, model: str) -> str | None:
        """Why ``model`` is not served (its cold starts keep failing), or None."""
        with self.lock:
            if self.load_failures.get(model, 0) >= self.cfg.max_load_failures:
                return self.load_errors.get(model, "it does not load")
            return None

    def cancel(self, job_id: str) -> bool:
        """Cancel a job that is not finished; False when it already ended."""
        with self.lock:
            rt = self.jobs.get(job_id)
            if rt is None:
                return False
            now = time.time()
            self._detach_all(rt, now)
            self._close(rt, JobPhase.CANCELLED, now, kind="cancel")
            self._need_decide = True
            return True

    def predict(self, model: str, prompt_path: str, texts: list[str], labels: list[str]) -> list[str]:
        with self.lock:
            if not any(w.model == model for w in self.workers.values()):
                raise LookupError(f"no worker holds model {model!r}; start the service with it warm")
            fut: Future[Any] = Future()
            self.requests.append((model, {"prompt_path": prompt_path, "texts": texts, "labels": labels}, fut))
        self._wake.set()
        out = fut.result(timeout=self.cfg.predict_timeout_s)
        return list(out["predictions"])

    def kill_worker(self, worker_id: str) -> None:
        """Fault injection (tests, demo): kill a worker abruptly."""
        self.backend.kill_worker(worker_id)

    def cluster(self) -> dict[str, Any]:
        with self.lock:
            now = time.time()
            workers = []
            held = self.released_gpu_s
            busy = 0.0
            for w in self.workers.values():
                held += now - w.requested_at
                extra = now - w.op_started if w.op is not None else 0.0
                busy += w.busy_s + extra
                workers.append(
                    {
                        "id": w.worker_id,
                        "model": w.model,
                        "state": self._wstate(w).value,
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
            }

    # ------------------------------------------------------------------ recovery

    def _rt_from_row(self, row: Job, session: Session) -> JobRT:
        payload = self.payload_for(row, session)
        return JobRT(
            job_id=row.id,
            tenant=row.tenant_id,
            payload=payload,
            arrival=row.created_at,
            deadline=row.deadline,
            best_effort=row.best_effort,
            work_steps=row.work_steps,
            phase=JobPhase(row.phase),
            admitted=row.admitted,
            steps_done=row.steps_done,
            accuracy=row.accuracy,
            loss=row.loss,
            target_reached=bool(row.target_reached),
            gpu_seconds=row.gpu_seconds,
            started_at=row.started_at,
            init=row.init,
            selected=not payload.warm_start,
        )

    def _recover(self) -> None:
        """Take over every unfinished job; running ones continue from their last checkpoint."""
        now = time.time()
        with self.store.session() as s:
            rows = s.scalars(select(Job).where(Job.phase.not_in(TERMINAL)).order_by(Job.created_at)).all()
            for row in rows:
                rt = self._rt_from_row(row, s)
                from_step = 0
                if row.checkpoint_path and Path(row.checkpoint_path).exists():
                    state, header = read_checkpoint(Path(row.checkpoint_path))
                    rt.state = state
                    rt.steps_done = from_step = int(header.get("steps_done", 0))
                    rt.selected = bool(header.get("selected", rt.selected))
                    rt.init = str(header.get("init", rt.init))
                    rt.target_reached = bool(header.get("target_reached", False))
                    rt.accuracy = header.get("accuracy", rt.accuracy)
                else:
                    rt.steps_done = 0
                was = rt.phase
                if was in (JobPhase.RUNNING, JobPhase.SELECTING):
                    rt.phase = JobPhase.QUEUED
                    row.phase = rt.phase.value
                    row.steps_done = rt.steps_done
                    row.updated_at = now
                self.jobs[rt.job_id] = rt
                if not rt.admitted:
                    self.new_ids.append(rt.job_id)
                self._note_arrival(rt)
                self.store.add_events(
                    [Event(now, "recover", rt.job_id, data={"from_step": from_step, "was": was.value})], s
                )

    # ------------------------------------------------------------------ snapshot and decisions

    def _wstate(self, w: WorkerRec) -> WorkerState:
        if w.ready_at is None:
            return WorkerState.PROVISIONING
        return WorkerState.BUSY if w.job_id is not None else WorkerState.IDLE

    def _spec(self, rt: JobRT) -> JobSpec:
        return JobSpec(
            job_id=rt.job_id,
            model=rt.payload.model,
            arrival=rt.arrival,
            slo=SLO(rt.deadline, rt.payload.target_accuracy, rt.best_effort),
            work_steps=max(rt.work_steps, rt.steps_done + 1.0),
            max_steps=rt.payload.max_steps,
            tenant=rt.tenant,
            init="bank" if rt.payload.warm_start else "random",
        )

    def _snapshot(self, now: float, extra: JobSpec | None = None) -> ClusterSnapshot:
        jobs = tuple(
            JobView(
                spec=self._spec(rt),
                phase=rt.phase,
                steps_done=float(rt.steps_done),
                workers=tuple(rt.workers),
                admitted=rt.admitted,
            )
            for rt in self.jobs.values()
        )
        if extra is not None:
            jobs = jobs + (JobView(spec=extra, phase=JobPhase.QUEUED),)
        workers = []
        models = {rt.payload.model for rt in self.jobs.values()} | set(self.cfg.min_warm)
        if extra is not None:
            models.add(extra.model)
        for w in self.workers.values():
            models.add(w.model)
            prof = self.profiles.profile(w.model)
            ready = (
                w.ready_at
                if w.ready_at is not None
                else w.requested_at + prof.cold_start_s[self.cfg.gpu_type]
            )
            workers.append(
                WorkerView(
                    worker_id=w.worker_id,
                    gpu_type=self.cfg.gpu_type,
                    state=self._wstate(w),
                    model=w.model,
                    requested_at=w.requested_at,
                    ready_at=ready,
                    idle_since=w.idle_since if w.job_id is None else None,
                    job_id=w.job_id,
                )
            )
        return ClusterSnapshot(
            now=now,
            jobs=jobs,
            workers=tuple(workers),
            models={m: self.profiles.profile(m) for m in models},
            gpu_types={self.cfg.gpu_type: GPUType(self.cfg.gpu_type, self.cfg.price_per_hour)},
            capacity={self.cfg.gpu_type: self.cfg.max_workers},
            arrivals={m: self._arrival_stats(m) for m in models},
            new_job_ids=tuple(j for j in self.new_ids if j in self.jobs)
            + ((extra.job_id,) if extra is not None else ()),
        )

    def _decide(self, now: float) -> None:
        self._need_decide = False
        self._next_decide = now + self.cfg.decide_every_s
        snap = self._snapshot(now)
        decisions = self.policy.decide(snap)
        self._wake_at = decisions.wake_at
        self._apply(decisions, now)

    def _apply(self, d: Decisions, now: float) -> None:
        answered = set()
        for adm in d.admissions:
            rt = self.jobs.get(adm.job_id)
            if rt is None or adm.job_id not in self.new_ids:
                continue
            answered.add(adm.job_id)
            quote = _quote_json(adm.quote) if adm.quote is not None else None
            if adm.admitted:
                rt.admitted = True
                self._save(rt, now, admitted=True, **({"quote": quote} if quote else {}))
                self._emit(Event(now, "admit", rt.job_id, data={"reason": adm.reason, "quote": quote}))
            else:
                self._close(rt, JobPhase.DECLINED, now, kind="decline", data={"reason": adm.reason})
        for jid in list(self.new_ids):
            rt = self.jobs.get(jid)
            if rt is not None and jid not in answered:  # a policy without admission control admits all
                rt.admitted = True
                self._save(rt, now, admitted=True)
                self._emit(Event(now, "admit", jid, data={"reason": "no admission control"}))
        self.new_ids.clear()

        for p in d.provision:
            if self.load_failures.get(p.model, 0) >= self.cfg.max_load_failures:
                continue  # a model that does not load is not retried by this run
            for _ in range(p.count):
                if len(self.workers) >= self.cfg.max_workers:
                    break
                self._provision(p.model, reason="policy")

        # allocations: detach first, then attach, so a worker can pass from one job to another
        wanted: dict[str, list[str]] = {}
        claimed: set[str] = set()
        for jid, wids in d.allocations.items():
            rt = self.jobs.get(jid)
            if rt is None or not rt.admitted:
                continue
            ok = []
            for wid in wids:
                w = self.workers.get(wid)
                if w is None or w.model != rt.payload.model or wid in claimed or w.releasing:
                    continue
                claimed.add(wid)
                ok.append(wid)
            wanted[jid] = ok
        prev = {jid: list(self.jobs[jid].workers) for jid in wanted}
        for jid, ok in wanted.items():
            rt = self.jobs[jid]
            for wid in [w for w in rt.workers if w not in ok]:
                self._detach(rt, wid, now)
        for jid, ok in wanted.items():
            rt = self.jobs[jid]
            ok = [w for w in ok if self.workers[w].job_id in (None, jid)]
            before = prev[jid]
            if set(ok) == set(before):
                continue
            lead = [w for w in before if w in ok]
            rt.workers = lead + [w for w in ok if w not in lead]
            for wid in rt.workers:
                w = self.workers[wid]
                if w.job_id is None:
                    if w.idle_since is not None:
                        self.idle_gaps.setdefault(w.model, deque(maxlen=200)).append(now - w.idle_since)
                    w.job_id, w.idle_since = jid, None
            if not rt.workers:
                if rt.phase in (JobPhase.RUNNING, JobPhase.SELECTING):
                    self._set_phase(rt, JobPhase.QUEUED, now)
                self._emit(Event(now, "preempt", jid, data={"workers": [], "previous": before}))
            else:
                kind = "move" if before and not set(before) & set(rt.workers) else "allocate"
                self._emit(Event(now, kind, jid, data={"workers": rt.workers, "previous": before}))

        floor: dict[str, int] = {}
        for wid in d.release:
            w = self.workers.get(wid)
            if w is None or w.job_id is not None:
                continue
            keep = self.cfg.min_warm.get(w.model, 0)
            warm = floor.setdefault(w.model, sum(1 for x in self.workers.values() if x.model == w.model))
            if warm <= keep:
                continue
            floor[w.model] = warm - 1
            if w.op is not None:
                w.releasing = True
            else:
                self._release(w, now)

    # ------------------------------------------------------------------ workers

    def _load_failure(self, model: str, error: str, now: float) -> None:
        """After ``max_load_failures`` cold starts of a model fail in a row, its jobs fail with the reason
        instead of the pool retrying forever."""
        n = self.load_failures.get(model, 0) + 1
        self.load_failures[model] = n
        self.load_errors[model] = error
        if n < self.cfg.max_load_failures:
            return
        for rt in [j for j in self.jobs.values() if j.payload.model == model]:
            self._detach_all(rt, now)
            msg = f"model {model!r} could not be loaded ({n} workers failed in a row): {error}"
            self._close(rt, JobPhase.FAILED, now, kind="fail", data={"error": msg}, error=msg)

    def _provision(self, model: str, reason: str) -> WorkerRec:
        now = time.time()
        wid = f"w{self._prefix}-{next(self._wid)}"
        rec = WorkerRec(wid, model, requested_at=now)
        self.workers[wid] = rec
        self.backend.start_worker(wid, model)
        self._emit(Event(now, "provision", worker_id=wid, data={"model": model, "reason": reason}))
        return rec

    def _release(self, w: WorkerRec, now: float) -> None:
        self.workers.pop(w.worker_id, None)
        self.released_gpu_s += now - w.requested_at
        self.backend.stop_worker(w.worker_id)
        self._emit(Event(now, "release", worker_id=w.worker_id, data={"model": w.model}))

    def _detach(self, rt: JobRT, wid: str, now: float) -> None:
        if wid in rt.workers:
            rt.workers.remove(wid)
        w = self.workers.get(wid)
        if w is not None and w.job_id == rt.job_id:
            w.job_id, w.idle_since = None, now

    def _detach_all(self, rt: JobRT, now: float) -> None:
        for wid in list(rt.workers):
            self._detach(rt, wid, now)
        rt.round = None

    # ------------------------------------------------------------------ replies

    def _on_reply(self, r: Reply, now: float) -> None:
        w = self.workers.get(r.worker_id)
        if w is None:
            return
        if r.failed:
            self._on_worker_failed(w, r, now)
            return
        if r.op == "load":
            self.load_failures.pop(w.model, None)
            w.ready_at, w.idle_since = now, now
            w.pid = r.result.get("pid")
            self.profiles.observe_load(w.model, float(r.result.get("load_s", now - w.requested_at)))
            self._emit(
                Event(
                    now,
                    "worker_ready",
                    worker_id=w.worker_id,
                    data={"model": w.model, "load_s": r.result.get("load_s")},
                )
            )
            self._need_decide = True
            return
        elapsed = float(r.result.get("elapsed", now - w.op_started)) if r.ok else now - w.op_started
        w.busy_s += elapsed
        job_id, fut = w.op_job, w.op_future
        w.op, w.op_job, w.op_future = None, None, None
        if w.releasing and w.job_id is None:
            self._release(w, now)
        if fut is not None:
            if r.ok:
                fut.set_result(r.result)
            else:
                fut.set_exception(RuntimeError(r.error))
            return
        rt = self.jobs.get(job_id) if job_id else None
        if rt is None:
            return  # the job ended (cancelled) while this request ran
        rt.inflight.discard(w.worker_id)
        rt.gpu_seconds += elapsed
        if not r.ok:
            self._detach_all(rt, now)
            self._close(
                rt,
                JobPhase.FAILED,
                now,
                kind="fail",
                data={"error": r.error, "op": r.op},
                error=f"{r.op} failed on {w.worker_id}: {r.error}",
            )
            self._need_decide = True
            return
        res = r.result
        if r.op in ("train", "apply"):
            if r.op == "train" and res["steps_run"]:
                self.profiles.observe_step(rt.payload.model, elapsed / res["steps_run"])
            if r.op == "apply" and rt.round is not None:
                # a data-parallel round of n replicas: the single-replica step time it implies (n shards of
                # the slowest shard's time, plus applying); an estimate, used until chunks measure directly
                n = len(rt.round.workers)
                self.profiles.observe_step(rt.payload.model, rt.round.grad_s * n + elapsed, weak=True)
                rt.round = None
            self._accept(rt, res, now, worker=w.worker_id)
        elif r.op == "grad":
            rnd = rt.round
            if rnd is None or res.get("version") != rnd.version or w.worker_id not in rnd.workers:
                return  # a round abandoned after a failure: its shards are useless
            rnd.grads[rnd.workers.index(w.worker_id)] = res["grad"]
            rnd.grad_s = max(rnd.grad_s, elapsed)
            if len(rnd.grads) == len(rnd.workers):
                lead = self.workers.get(rnd.workers[0])
                if lead is None or lead.op is not None:
                    rt.round = None
                    return
                grads = [rnd.grads[i] for i in range(len(rnd.workers))]
                self._send(
                    lead,
                    rt,
                    "apply",
                    {"job": rt.payload, "state": rt.state, "version": rt.version, "grads": grads},
                    now,
                )
        elif r.op == "select":
            if res.get("state") is not None:
                rt.state = res["state"]
                rt.version += 1
            rt.init = str(res.get("init", "random"))
            rt.selected = True
            self._checkpoint(rt)
            data = {k: v for k, v in res.items() if k not in ("state", "elapsed")}
            self._emit(Event(now, "warm_start", rt.job_id, w.worker_id, data=data))
            predicted = res.get("predicted_steps")
            extra: dict[str, Any] = {"init": rt.init}
            if isinstance(predicted, int | float) and predicted > 0:
                rt.work_steps = float(min(predicted, rt.payload.max_steps))
                extra["work_steps"] = rt.work_steps
                self._need_decide = True
            self._save(rt, now, **extra)
        elif r.op == "export":
            self._finish(rt, str(res["path"]), now)

    def _on_worker_failed(self, w: WorkerRec, r: Reply, now: float) -> None:
        self.workers.pop(w.worker_id, None)
        self.released_gpu_s += now - w.requested_at
        if w.op_future is not None and not w.op_future.done():
            w.op_future.set_exception(RuntimeError(f"worker {w.worker_id} failed: {r.error}"))
        affected = {j for j in (w.job_id, w.op_job) if j}
        if w.ready_at is None:  # it never got warm: the model may not load at all
            self._load_failure(w.model, r.error, now)
        self._emit(
            Event(
                now,
                "worker_fail",
                worker_id=w.worker_id,
                data={"error": r.error, "op": r.op, "jobs": sorted(affected)},
            )
        )
        for jid in affected:
            rt = self.jobs.get(jid)
            if rt is None:
                continue
            rt.inflight.discard(w.worker_id)
            if w.op_job == jid and w.op is not None:
                rt.gpu_seconds += now - w.op_started  # the lost work still cost GPU time
            if rt.round is not None and w.worker_id in rt.round.workers:
                rt.round = None
            if w.worker_id in rt.workers:
                rt.workers.remove(w.worker_id)
            self._emit(
                Event(
                    now,
                    "fail",
                    jid,
                    w.worker_id,
                    data={"error": r.error, "recovered_from_step": rt.steps_done, "worker_lost": True},
                )
            )
            if not rt.workers and rt.phase in (JobPhase.RUNNING, JobPhase.SELECTING):
                self._set_phase(rt, JobPhase.QUEUED, now)
        self._need_decide = True

    def _accept(self, rt: JobRT, res: dict[str, Any], now: float, worker: str) -> None:
        rt.state = res["state"]
        rt.version = int(res["version"])
        rt.steps_done = int(res["steps_done"])
        if res.get("loss") is not None:
            rt.loss = float(res["loss"])
        evaluated = res.get("accuracy") is not None
        if evaluated:
            rt.accuracy = float(res["accuracy"])
            target = rt.payload.target_accuracy
            rt.target_reached = target is not None and rt.accuracy >= target
        self._checkpoint(rt)
        self._save(
            rt,
            now,
            steps_done=rt.steps_done,
            accuracy=rt.accuracy,
            loss=rt.loss,
            gpu_seconds=rt.gpu_seconds,
            checkpoint_step=rt.steps_done,
            checkpoint_path=str(self._ckpt_path(rt)),
        )
        if evaluated or rt.done or now - rt.last_progress_event >= self.cfg.progress_event_every_s:
            rt.last_progress_event = now
            self._emit(
                Event(
                    now,
                    "progress",
                    rt.job_id,
                    worker,
                    data={
                        "steps_done": rt.steps_done,
                        "loss": rt.loss,
                        "accuracy": rt.accuracy if evaluated else None,
                        "replicas": max(1, len(rt.workers)),
                    },
                )
            )

    # ------------------------------------------------------------------ dispatch

    def _send(self, w: WorkerRec, rt: JobRT | None, op: str, args: dict[str, Any], now: float) -> None:
        w.op, w.op_job, w.op_started = op, (rt.job_id if rt else None), now
        if rt is not None:
            rt.inflight.add(w.worker_id)
        self.backend.send(w.worker_id, op, args)

    def _dispatch(self, now: float) -> None:
        # predictions first: they are short and a user is waiting
        pending: deque[tuple[str, dict[str, Any], Future[Any]]] = deque()
        while self.requests:
            model, args, fut = self.requests.popleft()
            if fut.done():
                continue
            free = [
                w
                for w in self.workers.values()
                if w.model == model and w.ready_at is not None and w.op is None and not w.releasing
            ]
            free.sort(key=lambda w: w.job_id is not None)
            if not free:
                if not any(w.model == model for w in self.workers.values()):
                    fut.set_exception(LookupError(f"no worker holds model {model!r}"))
                else:
                    pending.append((model, args, fut))
                continue
            w = free[0]
            w.op_future = fut
            self._send(w, None, "predict", args, now)
        self.requests = pending

        for rt in list(self.jobs.values()):
            if not rt.admitted or rt.inflight or not rt.workers:
                continue
            ready = [
                self.workers[wid]
                for wid in rt.workers
                if self.workers[wid].ready_at is not None and self.workers[wid].op is None
            ]
            if not ready:
                continue
            if rt.started_at is None:
                rt.started_at = now
                self._save(rt, now, started_at=now)
                self._emit(Event(now, "start", rt.job_id, data={"workers": rt.workers}))
            base = {"job": rt.payload, "state": rt.state, "version": rt.version}
            if rt.done:
                path = self.store.home / "prompts" / f"{rt.job_id}.safetensors"
                self._send(ready[0], rt, "export", {**base, "path": str(path)}, now)
                continue
            if not rt.selected:
                self._set_phase(rt, JobPhase.SELECTING, now)
                self._send(ready[0], rt, "select", {"job": rt.payload}, now)
                continue
            self._set_phase(rt, JobPhase.RUNNING, now)
            if len(ready) == 1 or rt.payload.batch_size < 2:
                steps = rt.payload.max_steps - rt.steps_done
                self._send(ready[0], rt, "train", {**base, "steps": steps, "budget_s": self.cfg.chunk_s}, now)
            else:
                n = min(len(ready), rt.payload.batch_size)
                rnd = Round(next(self._rid), rt.version, [w.worker_id for w in ready[:n]], started=now)
                rt.round = rnd
                for i, w in enumerate(ready[:n]):
                    self._send(w, rt, "grad", {**base, "index": i, "count": n}, now)

    # ------------------------------------------------------------------ job state

    def _note_late(self, now: float) -> None:
        for rt in self.jobs.values():
            if not rt.late_noted and rt.admitted and now > rt.deadline:
                rt.late_noted = True
                self._emit(
                    Event(now, "late", rt.job_id, data={"deadline": rt.deadline, "steps_done": rt.steps_done})
                )

    def _ckpt_path(self, rt: JobRT) -> Path:
        return self.store.home / "jobs" / rt.job_id / "checkpoint.bin"

    def _checkpoint(self, rt: JobRT) -> None:
        write_checkpoint(
            self._ckpt_path(rt),
            rt.state,
            {
                "job_id": rt.job_id,
                "steps_done": rt.steps_done,
                "selected": rt.selected,
                "init": rt.init,
                "target_reached": rt.target_reached,
                "accuracy": rt.accuracy,
                "time": time.time(),
            },
        )

    def _set_phase(self, rt: JobRT, phase: JobPhase, now: float) -> None:
        if rt.phase == phase:
            return
        before = rt.phase
        rt.phase = phase
        self._save(rt, now, phase=phase.value)
        self._emit(Event(now, "phase", rt.job_id, data={"from": before.value, "to": phase.value}))

    def _finish(self, rt: JobRT, prompt_path: str, now: float) -> None:
        self._detach_all(rt, now)
        met = now <= rt.deadline
        target = rt.payload.target_accuracy
        reached = rt.target_reached if target is not None else None
        self._close(
            rt,
            JobPhase.SUCCEEDED,
            now,
            kind="finish",
            prompt_path=prompt_path,
            deadline_met=met,
            target_reached=reached,
            data={
                "steps_done": rt.steps_done,
                "accuracy": rt.accuracy,
                "target_reached": reached,
                "deadline_met": met,
                "gpu_seconds": round(rt.gpu_seconds, 3),
            },
        )
        if not met:
            self._emit(Event(now, "miss", rt.job_id, data={"late_by_s": round(now - rt.deadline, 3)}))
        if self.on_finish is not None:
            try:
                self.on_finish(rt, prompt_path)
            except Exception as e:  # the bank is optional: note it, never fail a finished job
                self._emit(Event(now, "bank", rt.job_id, data={"added": False, "error": str(e)}))
        self._need_decide = True

    def _close(
        self,
        rt: JobRT,
        phase: JobPhase,
        now: float,
        kind: str,
        data: dict[str, Any] | None = None,
        error: str | None = None,
        **cols: Any,
    ) -> None:
        rt.phase = phase
        self.jobs.pop(rt.job_id, None)
        if rt.job_id in self.new_ids:
            self.new_ids.remove(rt.job_id)
        if phase != JobPhase.SUCCEEDED:
            cols.setdefault("deadline_met", False)
        self._save(
            rt, now, phase=phase.value, finished_at=now, error=error, gpu_seconds=rt.gpu_seconds, **cols
        )
        self._emit(Event(now, kind, rt.job_id, data=data or {}))

    def _save(self, rt: JobRT, now: float, **cols: Any) -> None:
        with self.store.session() as s:
            row = s.get(Job, rt.job_id)
            if row is None:
                return
            for k, v in cols.items():
                setattr(row, k, v)
            row.updated_at = now

    def _emit(self, ev: Event) -> None:
        self.store.add_events([ev])


def _fin(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _quote_json(q: Quote) -> dict[str, Any]:
    return {
        "finish_time": _fin(q.finish_time),
        "cost": _fin(q.cost),
        "gpus": q.gpus,
        "feasible": q.feasible,
        "tightest_deadline": _fin(q.tightest_deadline),
    }


def fallback_quote(snap: ClusterSnapshot, spec: JobSpec) -> Quote:
    """For a policy that cannot quote: one worker, a cold start unless one is idle, measured step time."""
    prof = snap.models[spec.model]
    gpu = next(iter(snap.gpu_types))
    idle = snap.workers_of(spec.model, WorkerState.IDLE)
    start = snap.now if idle else snap.now + prof.cold_start_s[gpu]
    run_s = spec.work_steps * prof.step_time(gpu, 1)
    finish = start + run_s
    cost = run_s / 3600.0 * snap.gpu_types[gpu].price_per_hour
    feasible = finish <= spec.deadline
    return Quote(finish, cost, 1, feasible, None if feasible else finish)


def default_payload(row: Job, session: Session, bank_dir: str | None = None) -> JobPayload:
    """Build the worker payload from a job row and the file rows it points to."""
    train = session.get(DataFile, row.training_file)
    test = session.get(DataFile, row.validation_file) if row.validation_file else None
    if train is None:
        raise LookupError(f"job {row.id}: training file {row.training_file} is gone")
    hp = row.hyperparameters
    return JobPayload(
        job_id=row.id,
        model=row.model,
        train_path=train.path,
        test_path=test.path if test is not None else None,
        labels=tuple(row.labels),
        max_steps=row.max_steps,
        target_accuracy=row.target_accuracy,
        warm_start=row.bank_warm_start,
        bank_dir=bank_dir,
        tenant=row.tenant_id,
        **{k: v for k, v in hp.items() if k in _HP_FIELDS},
    )


_HP_FIELDS = {"num_virtual_tokens", "lr", "batch_size", "seed", "eval_every", "max_length", "max_eval"}
