"""Taking over jobs: from a new database row, or after a restart from the rows and checkpoints left.

A job that was running when the service stopped goes back to the queue at its last checkpoint (at most one
unit of work is lost); one that had not been answered by the policy is offered to it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from prompttuner.core.types import SLO, Event, JobPhase, JobSpec
from prompttuner.runtime.checkpoint import read_checkpoint
from prompttuner.runtime.engine import JobPayload
from prompttuner.runtime.jobstate import ControllerBase
from prompttuner.runtime.records import JobRT
from prompttuner.runtime.work import OWN_KEEP
from prompttuner.state.models import DataFile, Job

TERMINAL = {p.value for p in JobPhase if p.terminal}
_HP_FIELDS = {
    "num_virtual_tokens",
    "lr",
    "batch_size",
    "seed",
    "eval_every",
    "max_length",
    "max_eval",
    "bank_race",
    "bank_fallback_at",
    "bank_fallback_rows",
}


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
        description=row.description,
        max_steps=row.max_steps,
        target_accuracy=row.target_accuracy,
        warm_start=row.bank_warm_start,
        bank_dir=bank_dir,
        tenant=row.tenant_id,
        **{k: v for k, v in hp.items() if k in _HP_FIELDS},
    )


class Recovery(ControllerBase):
    payload_for: Callable[[Job, Session], JobPayload]

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

    def _spec(self, rt: JobRT) -> JobSpec:
        """The job as a policy sees it (its work is the current estimate, at least one step left)."""
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

    def _replay_history(self, s: Session) -> None:
        """The steps to target of the jobs that ended before this run (what the service's own predictions
        learn from, :meth:`WorkPredictor.observe`), read back from their rows, oldest first."""
        done = s.scalars(
            select(Job)
            .where(Job.phase == JobPhase.SUCCEEDED.value, Job.target_accuracy.is_not(None))
            .order_by(Job.finished_at)
        ).all()
        for row in done[-OWN_KEEP * 4 :]:
            kind = self.work.kind(row.bank_warm_start)
            self.work.observe(row.model, kind, row.steps_done, bool(row.target_reached), row.max_steps)

    @staticmethod
    def _restore_budget(rt: JobRT, header: dict[str, Any]) -> None:
        """A job that fell back to random init (``Dispatcher._fall_back``) goes on with the budget its
        checkpoint names (the row keeps the one asked for)."""
        budget = header.get("max_steps")
        if budget is not None and 0 < int(budget) < rt.payload.max_steps:
            rt.payload = replace(rt.payload, max_steps=int(budget))

    def _recover(self) -> None:
        """Take over every unfinished job; running ones continue from their last checkpoint; the ended
        ones' steps to target go back into the service's own predictions."""
        now = self.clock()
        with self.store.session() as s:
            self._replay_history(s)
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
                    self._restore_budget(rt, header)
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
                self.book.note_arrival(self._spec(rt))
                self.store.add_events(
                    [
                        Event(
                            now,
                            "recover",
                            rt.job_id,
                            data={
                                "from_step": from_step,
                                "was": was.value,
                                "max_steps": rt.payload.max_steps,
                            },
                        )
                    ],
                    s,
                )
