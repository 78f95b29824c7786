"""The service's persistent state as SQLAlchemy tables.

Everything a restarted service needs to recover lives here (or in files these rows point to under
``$PROMPTTUNER_HOME``): tenants and their API keys (hashed; several a tenant, revocable, plus the
operator's admin keys), uploaded data files, jobs with their phase and progress, and the append-only event
log that the API shows and ``/metrics`` counts.  Times are float
epoch seconds (UTC) so they compare directly with the controller's clock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from prompttuner.core.slo import SLOOutcome, slo_outcome
from prompttuner.core.types import JobPhase


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


KEY_ROLES = ("tenant", "admin")


class ApiKey(Base):
    """One API key: a tenant's (``role`` "tenant") or the operator's (``role`` "admin", no tenant).

    Only the key's sha256 is stored, with its first characters (``prefix``) so that a listing can tell the
    keys apart.  A key authenticates while ``revoked_at`` is None or still in the future (a rotation with a
    grace period revokes the old keys at a later time).
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), nullable=True, index=True)
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the key
    prefix: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None for migrated keys
    label: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    def active(self, now: float) -> bool:
        return self.revoked_at is None or self.revoked_at > now


class DataFile(Base):
    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)  # under $PROMPTTUNER_HOME/files
    bytes: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))  # 64-bit on both
    rows: Mapped[int] = mapped_column(Integer)
    labels: Mapped[list[str]] = mapped_column(JSON)  # distinct label words seen, sorted
    created_at: Mapped[float] = mapped_column(Float)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    model: Mapped[str] = mapped_column(String(128))
    training_file: Mapped[str] = mapped_column(ForeignKey("files.id"))
    validation_file: Mapped[str | None] = mapped_column(ForeignKey("files.id"), nullable=True)
    labels: Mapped[list[str]] = mapped_column(JSON)
    # what the task is, in the user's words (the text init's instruction, the bank's task features)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    target_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_steps: Mapped[int] = mapped_column(Integer)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    bank_warm_start: Mapped[bool] = mapped_column(Boolean, default=False)
    best_effort: Mapped[bool] = mapped_column(Boolean, default=False)
    deadline: Mapped[float] = mapped_column(Float)
    work_steps: Mapped[float] = mapped_column(Float)  # the estimate the scheduler plans with
    quote: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    phase: Mapped[str] = mapped_column(String(32), index=True)
    admitted: Mapped[bool] = mapped_column(Boolean, default=False)
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    target_reached: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    deadline_met: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    checkpoint_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    checkpoint_step: Mapped[int] = mapped_column(Integer, default=0)
    prompt_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    init: Mapped[str] = mapped_column(String(64), default="random")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)

    def slo(self) -> SLOOutcome | None:
        """The job's SLO outcome by the one definition (``core.slo``); None while it has not ended.

        A cancelled job ended by its user's choice and has no SLO outcome either.
        """
        if self.phase not in _JUDGED:
            return None
        finished = self.finished_at if self.phase == JobPhase.SUCCEEDED.value else None
        reached = self.target_reached if self.target_accuracy is not None else None
        return slo_outcome(self.deadline, finished, reached)


_JUDGED = {JobPhase.SUCCEEDED.value, JobPhase.FAILED.value, JobPhase.DECLINED.value}


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_job_time", "job_id", "id"),)

    # 64-bit on PostgreSQL; on SQLite an INTEGER primary key is the 64-bit rowid already (and only that
    # spelling autoincrements there)
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    time: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
