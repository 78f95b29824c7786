"""The one definition of a job's SLO outcome, used by the simulator, the controller, the API, the metrics
and the CLI alike.

A job with a quality target meets its SLO when it *reaches the target by its deadline*.  Stopping at the
user's step budget (``max_steps``) below the target misses it, and so does finishing late.  A job without
a target (``target_reached is None``) meets its SLO when it finishes by its deadline.  A job that never
finished (declined, failed, cancelled, cut off) misses it.
"""

from __future__ import annotations

from dataclasses import dataclass

# finish times within this of the deadline count as on time (the drivers' clocks are floats)
DEADLINE_TOLERANCE_S = 1e-6


@dataclass(frozen=True)
class SLOOutcome:
    target_reached: bool | None  # None: the job has no quality target
    deadline_met: bool  # it finished (reached its target or stopped) by the deadline
    slo_met: bool  # reached the target (or, without one, finished) by the deadline

    def as_dict(self) -> dict[str, bool | None]:
        return {
            "target_reached": self.target_reached,
            "deadline_met": self.deadline_met,
            "slo_met": self.slo_met,
        }


def slo_outcome(deadline: float, finished_at: float | None, target_reached: bool | None) -> SLOOutcome:
    """Judge a job: ``finished_at`` is when it stopped training (None: it never finished);
    ``target_reached`` whether it reached its quality target (None: it has none)."""
    on_time = finished_at is not None and finished_at <= deadline + DEADLINE_TOLERANCE_S
    met = on_time and target_reached is not False
    return SLOOutcome(target_reached=target_reached, deadline_met=on_time, slo_met=met)


def target_reached(target: float | None, accuracy: float | None) -> bool | None:
    """Whether ``accuracy`` reaches ``target`` (None when the job has no target; False when it was never
    evaluated)."""
    if target is None:
        return None
    return accuracy is not None and accuracy >= target


def eval_due(steps_done: int, eval_every: int, max_steps: int) -> bool:
    """Whether a job evaluates after ``steps_done`` steps: every ``eval_every`` steps (a start at step 0
    included) and at the end of its budget -- one schedule for the service's workers and the engine's
    trainer (``PromptTrainer.eval_due``), so the benchmarks measure what the service does; a start between
    two evaluation steps (a race's winner) is first evaluated at the next one."""
    return (eval_every > 0 and steps_done % eval_every == 0) or steps_done >= max_steps


# The Prompt Bank's fallback to random init (``bank.RaceSettings.fallback_at``, the service's
# ``JobPayload.bank_fallback_at``): one check, at one step, by one rule, wherever a job trains.
def fallback_check_step(fallback_at: int, eval_every: int) -> int:
    """The step of the fallback's check: the job's first evaluation at or after ``fallback_at`` (a job
    evaluates every ``eval_every`` steps); a start already at or past it is not checked."""
    every = max(1, eval_every)
    return -(-fallback_at // every) * every


def lag_threshold(target: float, rows: int, margin_rows: int) -> float:
    """``margin_rows`` validation rows (of ``rows``) below ``target``."""
    return target - margin_rows / max(1, rows)


def lags_target(accuracy: float, target: float, rows: int, margin_rows: int) -> bool:
    """Whether ``accuracy`` on ``rows`` validation rows is below :func:`lag_threshold` (up to float32
    rounding: exactly ``margin_rows`` rows below does not lag)."""
    return accuracy < lag_threshold(target, rows, margin_rows) - 1e-6
