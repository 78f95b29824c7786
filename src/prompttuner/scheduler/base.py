"""The one interface every scheduling policy implements.

A policy is a pure decision: ``decide(snapshot) -> Decisions``.  It owns no clock (``snapshot.now`` is
the time), does no I/O and keeps no hidden state that a driver could not rebuild; the simulator
(``sim/``) and the live controller (``runtime/``) drive the same objects.  Policies register themselves
by name so drivers and the CLI can build them from a string.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from prompttuner.core.types import ClusterSnapshot, Decisions, JobSpec, ModelProfile, Quote, WorkerState

# Moving a job between warm workers moves only its prompt and optimizer state (kilobytes) and waits for
# a step boundary: about a second plus half a step.
WARM_MOVE_S = 1.0


class Policy(ABC):
    name: ClassVar[str] = "abstract"
    # whether the policy takes ``switch=True`` (turn idle warm workers to another base LLM instead of
    # cold starts); a service serving several models asks for it where it is accepted
    accepts_switch: ClassVar[bool] = False

    @abstractmethod
    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        """Return what should change at ``snapshot.now``."""

    def quote(self, snapshot: ClusterSnapshot, job: JobSpec) -> Quote:
        """Predict finish time and cost of ``job`` if it were admitted now (used by the API).

        This default, for policies without a planner of their own, assumes one replica on the first GPU
        type, starting now on an idle worker of the model or else after a cold start.
        """
        prof = snapshot.models[job.model]
        gpu = next(iter(snapshot.gpu_types))
        idle = snapshot.workers_of(job.model, WorkerState.IDLE)
        start = snapshot.now if idle else snapshot.now + prof.cold_start_s[gpu]
        run_s = job.work_steps * prof.step_time(gpu, 1)
        finish = start + run_s
        cost = run_s / 3600.0 * snapshot.gpu_types[gpu].price_per_hour
        feasible = finish <= job.deadline
        return Quote(finish, cost, 1, feasible, None if feasible else finish)

    def rescale_overhead_s(self, profile: ModelProfile, gpu_type: str, old_n: int, new_n: int) -> float:
        """Seconds a job makes no progress when its set of ready replicas changes from old_n to new_n.

        This is a property of the system a policy stands for (PromptTuner moves kilobytes between warm
        workers; a serverless baseline checkpoints and restarts), so drivers ask the policy.
        """
        if old_n == new_n:
            return 0.0
        return WARM_MOVE_S + 0.5 * profile.step_time_s[gpu_type]


_REGISTRY: dict[str, Callable[..., Policy]] = {}


def register(name: str) -> Callable[[type[Policy]], type[Policy]]:
    def deco(cls: type[Policy]) -> type[Policy]:
        if name in _REGISTRY:
            raise ValueError(f"policy {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def make_policy(name: str, **kwargs: object) -> Policy:
    import prompttuner.scheduler  # noqa: F401  (imports every policy module so they register)

    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return factory(**kwargs)


def accepts_switch(name: str) -> bool:
    """Whether the policy registered as ``name`` takes ``switch=True``."""
    import prompttuner.scheduler  # noqa: F401

    factory = _REGISTRY.get(name)
    return bool(getattr(factory, "accepts_switch", False))


def policy_names() -> list[str]:
    import prompttuner.scheduler  # noqa: F401

    return sorted(_REGISTRY)
