"""The LLM catalog: step times, cold starts and memory of common open LLMs, derived in one place.

Every number a policy or the simulator uses about a base LLM comes from ``data/llm_catalog.json``
through :func:`load_catalog`.  The JSON holds *assumptions* (FLOPs per token, achievable fraction of
peak, weight-loading bandwidth, ...) and each model's parameter count; this module turns them into
:class:`~prompttuner.core.types.ModelProfile` objects.  A model's optional ``measured`` block (e.g. a step
time the engine measured) overrides the derivation for the fields it gives, so measurements replace
assumptions without touching the formulae.  A model's switch time (a warm worker that holds another model
loads this one) is its weight load alone: the cold start without ``instance_start_s``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prompttuner.config import REPO_DATA
from prompttuner.core.types import GPUType, ModelProfile

CATALOG_FILE = REPO_DATA / "llm_catalog.json"


@dataclass(frozen=True)
class Catalog:
    models: Mapping[str, ModelProfile]
    gpu_types: Mapping[str, GPUType]
    assumptions: Mapping[str, Any]

    def model(self, name: str) -> ModelProfile:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(f"unknown base LLM {name!r}; known: {', '.join(sorted(self.models))}") from None


def _pow2_at_least(x: float) -> int:
    n = 1
    while n < x:
        n *= 2
    return n


def derive_profile(
    name: str, params_b: float, gpu_types: Mapping[str, GPUType], a: Mapping[str, Any]
) -> ModelProfile:
    """Derive one model's profile from the catalog assumptions (see the JSON for their meaning)."""
    params = params_b * 1e9
    weight_bytes = params * float(a["bytes_per_param"])
    need_gib = weight_bytes / 2**30 * float(a["memory_overhead_factor"]) + float(a["memory_headroom_gib"])
    # GPUs per replica: the smallest power of two whose usable memory holds the model (same on every
    # type here since both GPUs have 80 GiB; the largest requirement wins so a replica fits everywhere)
    per_replica = 1
    for g in gpu_types.values():
        usable = g.memory_gib * float(a["usable_memory_fraction"])
        per_replica = max(per_replica, _pow2_at_least(need_gib / usable))
    tokens = int(a["reference_batch"]) * (int(a["sequence_length"]) + int(a["prompt_tokens"]))
    flops = float(a["flops_per_token_per_param"]) * params * tokens
    tp_eff = float(a["tensor_parallel_efficiency_per_doubling"]) ** math.log2(per_replica)
    step: dict[str, float] = {}
    cold: dict[str, float] = {}
    switch: dict[str, float] = {}
    for gname, g in gpu_types.items():
        rate = g.peak_tflops_bf16 * 1e12 * float(a["achievable_fraction_of_peak"]) * per_replica * tp_eff
        step[gname] = flops / rate + float(a["per_step_fixed_s"])
        load_s = weight_bytes / (per_replica * float(a["weight_load_gbps_per_gpu"]) * 1e9)
        cold[gname] = float(a["instance_start_s"]) + load_s
        switch[gname] = load_s  # a warm worker switching models loads the weights, starts no instance
    max_replicas = max(1, int(a["reference_batch"]) // int(a["min_replica_batch"]))
    return ModelProfile(
        name=name,
        params_b=params_b,
        gpus_per_replica=per_replica,
        cold_start_s=cold,
        step_time_s=step,
        max_replicas=max_replicas,
        sync_overhead_s=float(a["sync_overhead_s_per_doubling"]),
        min_replica_batch=int(a["min_replica_batch"]),
        switch_s=switch,
    )


def load_catalog(path: Path | str | None = None) -> Catalog:
    """Read the catalog JSON and derive every model's profile (measured values win)."""
    raw = json.loads(Path(path or CATALOG_FILE).read_text())
    a = raw["assumptions"]
    gpu_types = {name: GPUType(name=name, **spec) for name, spec in raw["gpu_types"].items()}
    models: dict[str, ModelProfile] = {}
    for name, spec in raw["models"].items():
        prof = derive_profile(name, float(spec["params_b"]), gpu_types, a)
        measured = spec.get("measured") or {}
        if measured:
            prof = ModelProfile(
                name=prof.name,
                params_b=prof.params_b,
                gpus_per_replica=int(measured.get("gpus_per_replica", prof.gpus_per_replica)),
                cold_start_s={**prof.cold_start_s, **measured.get("cold_start_s", {})},
                step_time_s={**prof.step_time_s, **measured.get("step_time_s", {})},
                max_replicas=int(measured.get("max_replicas", prof.max_replicas)),
                sync_overhead_s=float(measured.get("sync_overhead_s", prof.sync_overhead_s)),
                min_replica_batch=prof.min_replica_batch,
                switch_s={**prof.switch_s, **measured.get("switch_s", {})},
            )
        models[name] = prof
    return Catalog(models=models, gpu_types=gpu_types, assumptions=a)
