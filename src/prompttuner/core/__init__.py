"""Plain data types shared by every part of PromptTuner (no I/O, no clock)."""

from prompttuner.core.types import (
    SLO,
    Admission,
    ArrivalStats,
    ClusterSnapshot,
    Decisions,
    Event,
    GPUType,
    JobPhase,
    JobSpec,
    JobView,
    ModelProfile,
    Provision,
    Quote,
    Switch,
    WorkerState,
    WorkerView,
)

__all__ = [
    "SLO",
    "Admission",
    "ArrivalStats",
    "ClusterSnapshot",
    "Decisions",
    "Event",
    "GPUType",
    "JobPhase",
    "JobSpec",
    "JobView",
    "ModelProfile",
    "Provision",
    "Quote",
    "Switch",
    "WorkerState",
    "WorkerView",
]
