"""The live controller: the scheduler policy on the real clock, applied to a pool of warm workers.

One thread runs the loop (:meth:`Controller.step`, also callable directly with an injected clock, as the
conformance test does): collect worker replies, build a :class:`ClusterSnapshot` with the shared builder
(:mod:`prompttuner.scheduler.snapshot`), ask the policy for :class:`Decisions`, apply them with the one
applier (:mod:`prompttuner.scheduler.applier`, the same rules as the simulator), and hand every allocated
job its next unit of work (``dispatch.py``); a quote's work and Prompt Bank selection are
``quoting.py``'s.  What is the controller's own is the clock and how a change reaches a worker: a real
process that loads a model, runs steps and returns the job's state.

An invalid ``Decisions`` changes nothing: it is recorded as a ``policy_error`` event (and shown by
``cluster()``), and the controller keeps serving.  Every change of a job becomes a stored
:class:`~prompttuner.core.types.Event`.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy.orm import Session

from prompttuner.core.live import LiveIndex
from prompttuner.core.types import (
    Admission,
    ClusterSnapshot,
    Event,
    GPUType,
    JobPhase,
    JobSpec,
    JobView,
    Provision,
    Quote,
    WorkerView,
)
from prompttuner.runtime.backend import Backend
from prompttuner.runtime.engine import JobPayload
from prompttuner.runtime.profiles import ProfileBook
from prompttuner.runtime.quoting import Quoting
from prompttuner.runtime.records import ControllerConfig, JobRT, LoadHealth, WorkerRec, worker_state
from prompttuner.runtime.recovery import Recovery, default_payload
from prompttuner.runtime.status import StatusView
from prompttuner.runtime.work import WorkPredictor
from prompttuner.scheduler.applier import PolicyError, apply
from prompttuner.scheduler.base import Policy
from prompttuner.scheduler.snapshot import ArrivalBook, build_snapshot
from prompttuner.state.models import Job
from prompttuner.state.serial import quote_json
from prompttuner.state.store import Store

__all__ = ["Controller", "ControllerConfig", "JobRT", "WorkerRec", "default_payload"]

log = logging.getLogger("prompttuner.controller")


class Controller(Quoting, Recovery, StatusView):
    def __init__(
        self,
        store: Store,
        backend: Backend,
        policy: Policy,
        config: ControllerConfig | None = None,
        payload_for: Callable[[Job, Session], JobPayload] | None = None,
        on_finish: Callable[[JobRT, str], None] | None = None,
        clock: Callable[[], float] = time.time,
        profiles: ProfileBook | None = None,
        work: WorkPredictor | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.policy = policy
        self.cfg = config or ControllerConfig()
        self.payload_for = payload_for or (lambda row, s: default_payload(row, s, self.cfg.bank_dir))
        self.on_finish = on_finish
        self.clock = clock
        self.profiles = profiles or ProfileBook(
            store.home / "profiles.json", self.cfg.gpu_type, self.cfg.max_replicas or self.cfg.max_workers
        )
        self.work = work or WorkPredictor()
        self.selections: dict[str, dict[str, Any]] = {}  # selections run for quotes, by request key
        self.lock = threading.RLock()
        self.jobs: dict[str, JobRT] = {}
        self.workers: dict[str, WorkerRec] = {}
        self.new_ids: list[str] = []
        self.cancelled_unsubmitted: set[str] = set()  # cancelled between their row and submit()
        self.requests: deque[tuple[str, dict[str, Any], Future[Any]]] = deque()
        self.book = ArrivalBook()
        self.released_gpu_s = 0.0
        self.load_health: dict[str, LoadHealth] = {}
        self._wid = itertools.count(1)
        self._next_round = itertools.count(1)
        self._prefix = self.cfg.worker_prefix or f"w{secrets.token_hex(2)}-"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._need_decide = True
        self._next_decide = 0.0
        self._wake_at: float | None = None
        self._thread: threading.Thread | None = None
        self._now = 0.0  # the time of the decision being applied
        self.started_at = clock()
        self.loop_error: str | None = None
        self.policy_error: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Take over the jobs a previous run left (no thread: :meth:`step` drives it)."""
        with self.lock:
            self._recover()

    def start(self) -> None:
        self.open()
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
            now = self.clock()
            for rec in self.workers.values():
                self.released_gpu_s += now - rec.requested_at
            self.workers.clear()
        self.backend.shutdown()
        self.profiles.save()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step(timeout=self.cfg.tick_s)
            except Exception as e:  # keep serving: one bad round must not stop every job
                log.exception("controller loop error")
                self.loop_error = f"{type(e).__name__}: {e}"
                self._stop.wait(self.cfg.tick_s)

    def step(self, timeout: float = 0.0, decide: bool = False) -> None:
        """One round of the loop: replies, then (when due, or ``decide``) a decision, then dispatch."""
        replies = self.backend.poll(timeout)
        with self.lock:
            now = self.clock()
            for r in replies:
                self._on_reply(r, now)
            self._start_deferred(now)
            self._expire_unloadable(now)
            self._note_late(now)
            due = now >= self._next_decide or (self._wake_at is not None and now >= self._wake_at)
            if decide or self._need_decide or due:
                self._decide(now)
            self._dispatch(now)

    # ------------------------------------------------------------------ API entry points

    def submit(
        self, job_id: str, selection: dict[str, Any] | None = None, work_info: dict[str, Any] | None = None
    ) -> None:
        """A job row was just committed (queued, not admitted): take it over.  ``selection``: the Prompt
        Bank's choice already made for it at a quote (its state and the time it took, charged to the job);
        ``work_info``: how its work was predicted (kept in its quote)."""
        with self.store.session() as s:
            row = s.get(Job, job_id)
            if row is None:
                raise KeyError(job_id)
            rt = self._rt_from_row(row, s)
        rt.work_info = dict(work_info or {})
        with self.lock:
            if job_id in self.cancelled_unsubmitted:  # cancelled since its row was committed: it is over
                self.cancelled_unsubmitted.discard(job_id)
                return
            if selection is not None:
                self._take_selection(rt, selection)
            self.jobs[job_id] = rt
            self.new_ids.append(job_id)
            self.book.note_arrival(self._spec(rt))
            self._emit(Event(rt.arrival, "arrive", job_id, data={"model": rt.payload.model}))
            self._need_decide = True
        self._wake.set()

    def quote(self, spec: JobSpec) -> Quote:
        with self.lock:
            snap = self._snapshot(self.clock(), extra=spec)
        return self.policy.quote(snap, spec)

    def broken_model(self, model: str) -> str | None:
        """Why ``model`` cannot take new jobs now (its last cold starts failed, none of its workers is
        warm), or None."""
        with self.lock:
            h = self.load_health.get(model)
            warm = any(w.model == model and w.ready_at is not None for w in self.workers.values())
            if h is None or warm or h.failures < self.cfg.max_load_failures:
                return None
            return f"{h.failures} cold starts failed in a row (last: {h.error}); next try in " + (
                f"{max(0.0, h.retry_at - self.clock()):.0f}s"
            )

    def readiness(self) -> dict[str, Any]:
        """Per served model: warm workers and the state of its cold starts; ready when every model of the
        warm minimum has a warm worker or is still starting without failures."""
        with self.lock:
            now = self.clock()
            models: dict[str, Any] = {}
            names = set(self.cfg.min_warm) | {w.model for w in self.workers.values()} | set(self.load_health)
            for m in sorted(names):
                h = self.load_health.get(m, LoadHealth())
                warm = sum(1 for w in self.workers.values() if w.model == m and w.ready_at is not None)
                failing = h.failures >= self.cfg.max_load_failures and warm == 0
                models[m] = {
                    "ready": not failing,
                    "warm_workers": warm,
                    "failed_loads_in_a_row": h.failures,
                    "error": h.error or None,
                    "retry_in_s": round(max(0.0, h.retry_at - now), 3) if h.failures else None,
                }
            return {"ready": all(v["ready"] for v in models.values()), "models": models}

    def cancel(self, job_id: str) -> bool:
        """Cancel a job that is not finished; False when it already ended.

        A job whose row is committed but that is not handed over yet (between the row and :meth:`submit`)
        is cancelled in its row, and :meth:`submit` then leaves it alone."""
        with self.lock:
            rt = self.jobs.get(job_id)
            now = self.clock()
            if rt is None:
                return self._cancel_unsubmitted(job_id, now)
            self._detach_all(rt, now)
            self._close(rt, JobPhase.CANCELLED, now, kind="cancel")
            self._need_decide = True
            return True

    def _cancel_unsubmitted(self, job_id: str, now: float) -> bool:
        """Cancel the row of a job the controller does not have: one not yet submitted (False when the
        row has ended, or is not there)."""
        with self.store.session() as s:
            row = s.get(Job, job_id)
            if row is None or JobPhase(row.phase).terminal:
                return False
        self.cancelled_unsubmitted.add(job_id)
        self._emit(Event(now, "cancel", job_id, data={"before_submit": True}))  # stored before the row ends
        with self.store.session() as s:
            row = s.get(Job, job_id)
            if row is not None:
                row.phase, row.finished_at, row.deadline_met = JobPhase.CANCELLED.value, now, False
                row.updated_at = now
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

    # ------------------------------------------------------------------ snapshot and decisions

    def _snapshot(self, now: float, extra: JobSpec | None = None) -> ClusterSnapshot:
        """What the policy sees; workers being released (their last request still running) are gone from
        its view, and the capacity they still hold is taken off."""
        jobs = [
            JobView(
                spec=self._spec(rt),
                phase=rt.phase,
                steps_done=float(rt.steps_done),
                workers=tuple(rt.workers),
                admitted=rt.admitted,
                step_time_factor=rt.step_factor if rt.steps_done > 0 else 1.0,
            )
            for rt in self.jobs.values()
        ]
        if extra is not None:
            jobs.append(JobView(spec=extra, phase=JobPhase.QUEUED))
        models = {rt.payload.model for rt in self.jobs.values()} | set(self.cfg.min_warm)
        if extra is not None:
            models.add(extra.model)
        gpu = self.cfg.gpu_type
        workers = []
        draining = 0
        for w in self.workers.values():
            if w.releasing:
                draining += 1
                continue
            models.add(w.model)
            prof = self.profiles.profile(w.model)
            if w.switch_from is not None and w.load_from is not None:  # switching: ready after its load
                loads_until = w.load_from + prof.switch_time(gpu)
            else:
                loads_until = (w.start_at or w.requested_at) + prof.cold_start_s[gpu]
            workers.append(
                WorkerView(
                    worker_id=w.worker_id,
                    gpu_type=gpu,
                    state=worker_state(w),
                    model=w.model,
                    requested_at=w.requested_at,
                    ready_at=w.ready_at if w.ready_at is not None else loads_until,
                    idle_since=w.idle_since if w.job_id is None else None,
                    job_id=w.job_id,
                )
            )
        new = [j for j in self.new_ids if j in self.jobs] + ([extra.job_id] if extra is not None else [])
        profiles = {m: self.profiles.planning_profile(m) for m in sorted(models)}
        return build_snapshot(
            now,
            jobs,
            workers,
            profiles,
            {gpu: GPUType(gpu, self.cfg.price_per_hour)},
            {gpu: max(0, self.cfg.max_workers - draining)},
            self.book,
            new,
            self.cfg.min_warm,
            LiveIndex.of(profiles, workers, jobs),  # the index the simulator keeps in place, built anew
        )

    def _decide(self, now: float) -> None:
        self._need_decide = False
        self._next_decide = now + self.cfg.decide_every_s
        snap = self._snapshot(now)
        decisions = self.policy.decide(snap)
        self._now = now
        try:
            changes = apply(snap, decisions, self, self.book)
        except PolicyError as e:
            if str(e) != self.policy_error:  # one event per distinct error, not one per round
                self._emit(Event(now, "policy_error", data={"policy": self.policy.name, "error": str(e)}))
            self.policy_error = str(e)
            log.error("policy %s: %s", self.policy.name, e)
            return
        self.policy_error = None
        self.new_ids = list(changes.pending)
        self._wake_at = decisions.wake_at

    # ------------------------------------------------------------------ the applier's driver interface

    def admit(self, a: Admission) -> None:
        rt = self.jobs[a.job_id]
        rt.admitted = True
        quote = {**quote_json(a.quote), **rt.work_info} if a.quote is not None else None
        self._save(rt, self._now, admitted=True, **({"quote": quote} if quote else {}))
        self._emit_quote(rt.job_id, quote or self._stored_quote(rt))
        self._emit(Event(self._now, "admit", rt.job_id, data={"reason": a.reason}))

    def decline(self, a: Admission) -> None:
        rt = self.jobs[a.job_id]
        quote = {**quote_json(a.quote), **rt.work_info} if a.quote is not None else None
        self._emit_quote(rt.job_id, quote or self._stored_quote(rt))
        self._close(rt, JobPhase.DECLINED, self._now, kind="decline", data={"reason": a.reason})

    def _emit_quote(self, job_id: str, quote: dict[str, Any] | None) -> None:
        """The quote the job was admitted (or declined) with, as its own event just before the admit or
        decline: the policy's at its decision, else the one it was given at submission; the promised
        finish, GPUs and cost, and the work it was planned with (predicted steps, their source, the bank's
        selection still to run)."""
        if quote is not None:
            self._emit(Event(self._now, "quote", job_id, data=quote))

    def detach(self, job_id: str, worker_id: str) -> None:
        w = self.workers[worker_id]
        if w.job_id == job_id:
            w.job_id, w.idle_since = None, self._now

    def allocate(self, job_id: str, worker_ids: tuple[str, ...]) -> None:
        rt = self.jobs[job_id]
        before = list(rt.workers)
        rt.workers = list(worker_ids)
        for wid in worker_ids:
            w = self.workers[wid]
            if w.job_id != job_id:
                w.job_id, w.idle_since = job_id, None
        if set(before) == set(worker_ids):
            return
        now = self._now
        if not worker_ids:
            self._emit(Event(now, "preempt", job_id, data={"workers": [], "previous": before}))
        else:
            kind = "move" if before and not set(before) & set(worker_ids) else "allocate"
            self._emit(Event(now, kind, job_id, data={"workers": list(worker_ids), "previous": before}))

    def release(self, worker_id: str) -> None:
        w = self.workers[worker_id]
        if w.op is not None:
            w.releasing = True  # goes when its request in flight returns
        else:
            self._release_worker(w, self._now)

    def provision(self, p: Provision) -> tuple[str, ...]:
        """New workers; while the model's load backoff runs, their cold start begins when it ends."""
        now = self._now
        h = self.load_health.get(p.model)
        start_at = h.retry_at if h is not None and h.retry_at > now else None
        made = []
        rt = self.jobs.get(p.job_id) if p.job_id is not None else None
        before = list(rt.workers) if rt is not None else []
        for _ in range(p.count):
            wid = f"{self._prefix}{next(self._wid)}"
            why = "policy" if p.job_id is None else f"for {p.job_id}"
            rec = self._start_worker(wid, p.model, why, now, start_at)
            if rt is not None:
                rec.job_id = rt.job_id
                rt.workers.append(wid)
            made.append(wid)
        if rt is not None and made:  # the new workers join the job's allocation as they are asked for
            data = {"workers": list(rt.workers), "previous": before, "provisioned": made}
            self._emit(Event(now, "allocate", rt.job_id, data=data))
        return tuple(made)

    def touched(self, job_ids: tuple[str, ...]) -> None:
        """A job with a ready replica runs; one left without waits in the queue (as in the simulator)."""
        for jid in job_ids:
            rt = self.jobs.get(jid)
            if rt is None:
                continue
            if any(self.workers[w].ready_at is not None for w in rt.workers):
                self._mark_running(rt, self._now)
            elif rt.phase in (JobPhase.RUNNING, JobPhase.SELECTING):
                self._set_phase(rt, JobPhase.QUEUED, self._now)
