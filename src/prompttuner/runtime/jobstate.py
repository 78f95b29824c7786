"""The state every part of the live controller shares, and how a change of a job or worker is recorded.

:class:`ControllerBase` declares the controller's in-memory records and writes every change where it
lasts: the job's database row, its checkpoint (the trainable state, kilobytes) and a stored
:class:`~prompttuner.core.types.Event`.  The loop (``controller.py``), dispatch and replies
(``dispatch.py``) and recovery (``recovery.py``) all build on it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from prompttuner.core.slo import slo_outcome
from prompttuner.core.types import Event, JobPhase
from prompttuner.runtime.backend import Backend
from prompttuner.runtime.checkpoint import write_checkpoint
from prompttuner.runtime.profiles import ProfileBook
from prompttuner.runtime.records import ControllerConfig, JobRT, LoadHealth, WorkerRec
from prompttuner.runtime.work import WorkPredictor
from prompttuner.scheduler.base import Policy
from prompttuner.scheduler.snapshot import ArrivalBook
from prompttuner.state.models import Job
from prompttuner.state.store import Store


class ControllerBase:
    store: Store
    backend: Backend
    policy: Policy
    cfg: ControllerConfig
    profiles: ProfileBook
    work: WorkPredictor  # predicted steps to target (admission, quotes, refreshes)
    clock: Callable[[], float]
    lock: threading.RLock
    jobs: dict[str, JobRT]
    workers: dict[str, WorkerRec]
    new_ids: list[str]  # jobs that await an answer from the policy
    requests: deque[tuple[str, dict[str, Any], Future[Any]]]  # predictions waiting for a worker
    book: ArrivalBook
    released_gpu_s: float
    load_health: dict[str, LoadHealth]
    on_finish: Callable[[JobRT, str], None] | None
    _need_decide: bool
    _now: float  # the time of the decision being applied

    # ------------------------------------------------------------------ records
    def _save(self, rt: JobRT, now: float, **cols: Any) -> None:
        with self.store.session() as s:
            row = s.get(Job, rt.job_id)
            if row is None:
                return
            for k, v in cols.items():
                setattr(row, k, v)
            row.updated_at = now

    def _stored_quote(self, rt: JobRT) -> dict[str, Any] | None:
        """The quote kept in the job's row (given at its submission)."""
        with self.store.session() as s:
            row = s.get(Job, rt.job_id)
            q = row.quote if row is not None else None
            return dict(q) if isinstance(q, dict) else None

    def _emit(self, ev: Event) -> None:
        self.store.add_events([ev])

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
                "max_steps": rt.payload.max_steps,  # after a fallback, the budget it left (kept on recovery)
                "time": self.clock(),
            },
        )

    # ------------------------------------------------------------------ job state
    def _set_phase(self, rt: JobRT, phase: JobPhase, now: float) -> None:
        if rt.phase == phase:
            return
        before = rt.phase
        rt.phase = phase
        self._save(rt, now, phase=phase.value)
        self._emit(Event(now, "phase", rt.job_id, data={"from": before.value, "to": phase.value}))

    def _note_late(self, now: float) -> None:
        for rt in self.jobs.values():
            if not rt.late_noted and rt.admitted and now > rt.deadline:
                rt.late_noted = True
                self._emit(
                    Event(now, "late", rt.job_id, data={"deadline": rt.deadline, "steps_done": rt.steps_done})
                )

    def _finish(self, rt: JobRT, prompt_path: str, now: float) -> None:
        """The job stopped (target reached or step budget spent) and its prompt is exported."""
        self._detach_all(rt, now)
        target = rt.payload.target_accuracy
        reached = rt.target_reached if target is not None else None
        outcome = slo_outcome(rt.deadline, now, reached)
        if target is not None:  # what the next job of this model and init is predicted with
            kind = self.work.kind(rt.payload.warm_start)
            self.work.observe(rt.payload.model, kind, rt.steps_done, bool(reached), rt.payload.max_steps)
        if not outcome.slo_met:  # before the job is stored as ended: whoever sees it ended sees its miss
            late = round(now - rt.deadline, 3) if not outcome.deadline_met else None
            self._emit(Event(now, "miss", rt.job_id, data={"late_by_s": late, "target_reached": reached}))
        self._close(
            rt,
            JobPhase.SUCCEEDED,
            now,
            kind="finish",
            prompt_path=prompt_path,
            deadline_met=outcome.deadline_met,
            target_reached=reached,
            data={
                "steps_done": rt.steps_done,
                "accuracy": rt.accuracy,
                **outcome.as_dict(),
                "gpu_seconds": round(rt.gpu_seconds, 3),
            },
        )
        try:  # what the workers measured survives a crash of the service, not only a clean stop
            self.profiles.save()
        except OSError:
            pass
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
        # the event first: whoever reads the job as ended finds the event that ended it
        self._emit(Event(now, kind, rt.job_id, data=data or {}))
        self._save(
            rt, now, phase=phase.value, finished_at=now, error=error, gpu_seconds=rt.gpu_seconds, **cols
        )

    # ------------------------------------------------------------------ workers
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

    def _start_worker(
        self, wid: str, model: str, reason: str, now: float, start_at: float | None = None
    ) -> WorkerRec:
        """A new worker (held from now); its cold start begins now, or at ``start_at`` (load backoff)."""
        rec = WorkerRec(wid, model, requested_at=now, start_at=start_at)
        self.workers[wid] = rec
        if start_at is None:
            rec.load_from = now
            self.backend.start_worker(wid, model)
        data: dict[str, Any] = {"model": model, "reason": reason}
        if start_at is not None:
            data["cold_start_at"] = start_at
        self._emit(Event(now, "provision", worker_id=wid, data=data))
        return rec

    def _start_deferred(self, now: float) -> None:
        for w in self.workers.values():
            if w.start_at is not None and w.start_at <= now and w.ready_at is None:
                w.start_at, w.load_from = None, now
                self.backend.start_worker(w.worker_id, w.model)

    def _release_worker(self, w: WorkerRec, now: float) -> None:
        self.workers.pop(w.worker_id, None)
        self.released_gpu_s += now - w.requested_at
        self.backend.stop_worker(w.worker_id)
        self._emit(Event(now, "release", worker_id=w.worker_id, data={"model": w.model}))

    def _load_failure(self, model: str, error: str, now: float) -> None:
        """A cold start of ``model`` failed: the next one waits a backoff that doubles with each failure in
        a row.  Its jobs are not failed for it: they wait in the queue (see :meth:`_expire_unloadable`)."""
        h = self.load_health.setdefault(model, LoadHealth())
        h.failures += 1
        h.error = error
        wait = min(self.cfg.load_backoff_max_s, self.cfg.load_backoff_s * 2 ** (h.failures - 1))
        h.retry_at = now + wait
        self._emit(
            Event(
                now,
                "load_failure",
                data={"model": model, "failures": h.failures, "error": error, "retry_in_s": wait},
            )
        )

    def _expire_unloadable(self, now: float) -> None:
        """While a model keeps failing to load, fail its waiting jobs once their deadlines can no longer be
        met (a best-effort job once its deadline has passed), naming the reason."""
        for model, h in self.load_health.items():
            if h.failures == 0 or any(
                w.model == model and w.ready_at is not None for w in self.workers.values()
            ):
                continue
            prof = self.profiles.profile(model)
            gpu = self.cfg.gpu_type
            fastest = max(prof.throughput(gpu, n) for n in range(1, max(1, self.cfg.max_workers) + 1))
            start = max(now, h.retry_at) + prof.cold_start_s[gpu]
            for rt in [j for j in self.jobs.values() if j.payload.model == model]:
                left = max(1.0, rt.work_steps - rt.steps_done)
                earliest = start + left / fastest if fastest > 0 else float("inf")
                if (rt.deadline >= now) if rt.best_effort else (earliest <= rt.deadline):
                    continue  # it can still be served: a best-effort job until its deadline has passed
                self._detach_all(rt, now)
                msg = (
                    f"model {model!r} could not be loaded ({h.failures} cold starts failed in a row; last: "
                    f"{h.error}) and the deadline can no longer be met"
                )
                self._close(rt, JobPhase.FAILED, now, kind="fail", data={"error": msg}, error=msg)
                self._need_decide = True
