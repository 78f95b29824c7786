"""What a worker needs from the tuning engine, as one small interface.

Workers never import the engine directly: they build an :class:`Engine` from a ``"module:attr"`` string
(default :data:`REAL_ENGINE`, the real ``prompttuner.tuning`` engine).  The controller, the backends and
the tests therefore share one contract, and the tests can swap in a tiny fake engine to exercise
scheduling, failures and restarts without loading an LLM.

A :class:`Session` is one job's trainer on one worker.  Its whole trainable state (prompt, optimizer,
step, data position) round-trips through :meth:`Session.state` as bytes (kilobytes), which is what a
checkpoint, a move between workers and recovery after a worker failure all rely on.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

REAL_ENGINE = "prompttuner.runtime.real_engine:RealEngine"


@dataclass(frozen=True)
class JobPayload:
    """Everything a worker needs to run a job (picklable; no database, no clock)."""

    job_id: str
    model: str
    train_path: str
    test_path: str | None
    labels: tuple[str, ...]
    max_steps: int
    target_accuracy: float | None = None
    # the task in the user's words (None: the default made from the label words): the text init's
    # instruction and, with the labels and sample texts, the Prompt Bank's features of the job
    description: str | None = None
    num_virtual_tokens: int = 8
    lr: float | None = None  # None: the engine's default (lower for a warm start)
    batch_size: int = 4
    seed: int = 0
    eval_every: int = 5
    max_length: int = 64
    max_eval: int = 64  # validation rows used per evaluation (keeps evaluation cheap)
    warm_start: bool = False
    bank_dir: str | None = None
    tenant: str = "public"  # whose private Prompt Bank entries the warm start may use
    bank_race: bool = True  # the warm start's race (False: the probe's best start as it is)
    # a started job (bank prompt or text init) more than bank_fallback_rows validation rows below its
    # target at its first evaluation at or after bank_fallback_at steps goes on from random init, with the
    # steps left (``bank.RaceSettings.fallback_at``, the same default: None, never)
    bank_fallback_at: int | None = None
    bank_fallback_rows: int = 2


class Session(Protocol):
    """One job's trainer held by a worker."""

    @property
    def steps_done(self) -> int: ...

    def step(self) -> float:
        """Run one optimisation step on the next batch; return its mean loss."""

    def shard_gradient(self, index: int, count: int) -> bytes:
        """The gradient of shard ``index`` of ``count`` of the batch the next step would use.

        Must not advance the session: every replica of a data-parallel step computes its shard from the
        same state, then the lead applies them all with :meth:`apply_gradients`.
        """

    def apply_gradients(self, shards: list[bytes]) -> float:
        """Consume the next batch and apply the combined gradient of its shards; return the mean loss."""

    def evaluate(self) -> float:
        """Validation accuracy of the current prompt."""

    def state(self) -> bytes:
        """The whole trainable state, serialised."""

    def export_prompt(self, path: str) -> None:
        """Write the tuned prompt (safetensors) to ``path``."""


class Engine(Protocol):
    """What a worker runs.  An engine may also have ``unload_model(loaded)``, called when a worker
    switches to another base LLM, to free what ``load_model`` holds."""

    def load_model(self, name: str) -> Any:
        """Load a base LLM once per worker."""

    def open(self, loaded: Any, job: JobPayload, state: bytes | None) -> Session:
        """A session for ``job``, fresh (``state is None``) or restored from ``state``."""

    def warm_start(self, loaded: Any, job: JobPayload) -> dict[str, Any]:
        """Pick an initial prompt from the Prompt Bank: ``{"state": bytes, "init": str, ...}``.

        Raises :class:`WarmStartUnavailable` when the bank cannot be used (not installed, empty).
        """

    def predict(self, loaded: Any, prompt_path: str, texts: list[str], labels: list[str]) -> list[str]:
        """Classify ``texts`` with a tuned prompt."""


class WarmStartUnavailable(RuntimeError):
    """The Prompt Bank cannot give a warm start; the job goes on from its default init."""


def load_engine(spec: str) -> Engine:
    """Build the engine named ``"module:attr"`` (a class or a factory taking no arguments)."""
    mod_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"engine spec {spec!r} must look like 'module:attr'")
    factory = getattr(importlib.import_module(mod_name), attr)
    return factory()  # type: ignore[no-any-return]
