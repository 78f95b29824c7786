"""Scheduling policies: pure decisions over a cluster snapshot (see ``base.Policy``)."""

from prompttuner.scheduler import edf, prompttuner  # noqa: F401  (register the policies)
from prompttuner.scheduler.base import Policy, make_policy, policy_names, register

__all__ = ["Policy", "make_policy", "policy_names", "register"]
