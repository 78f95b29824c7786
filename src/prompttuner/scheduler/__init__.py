"""Scheduling policies: pure decisions over a cluster snapshot (see ``base.Policy``)."""

from prompttuner.scheduler import edf, elasticflow, infless, prompttuner, reserved  # noqa: F401  (register)
from prompttuner.scheduler.base import Policy, make_policy, policy_names, register

__all__ = ["Policy", "make_policy", "policy_names", "register"]
