"""Inputs of the ElasticFlow compatibility mode: traces, throughput profiles, cluster specs.

ElasticFlow's simulator (pkusys/ElasticFlow, ``ElasticFlow/scheduler/``) reads a job trace in its own CSV
format, one throughput table per model and a cluster spec.  This module reads the same inputs from the
project's shared data (``traces/microsoft-itp/elasticflow/`` and ``profiles/elasticflow-a100/``) into plain
typed objects, so the event loops (:mod:`prompttuner.efsim.elasticflow`, :mod:`prompttuner.efsim.edf`)
never touch files.

Interpretations (see the docstring of :mod:`prompttuner.efsim` for the full list):

- Jobs keep the file order as their index and are then stably sorted by submission time.
- A throughput cell that is empty or zero means "cannot run at that size"; asking for it is an error.
- The per-model GPU cap of the ElasticFlow policy follows the released simulator's A100 rules; it is
  further clipped to the largest size with a measured throughput so that no job can ever be planned on a
  size the profile does not have.
- The EDF baseline caps a job at ``min(64, batch size, largest measured size)``, as the released code does.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from prompttuner import config

SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
"""The only legal GPU counts: the columns of the throughput tables."""

PROFILE_DIR = "profiles/elasticflow-a100"


@dataclass
class Profiles:
    """``tput[model][batch][n]`` = iterations per second on ``n`` GPUs (only measured, non-zero cells)."""

    tput: dict[str, dict[int, dict[int, float]]]

    def get(self, model: str, batch: int, n: int) -> float:
        try:
            return self.tput[model][batch][n]
        except KeyError:
            raise ValueError(f"no throughput for {model} batch {batch} on {n} GPUs") from None

    def largest_size(self, model: str, batch: int) -> int:
        try:
            return max(self.tput[model][batch])
        except (KeyError, ValueError):
            raise ValueError(f"no throughput profile for {model} batch {batch}") from None


def load_profiles(folder: Path | None = None) -> Profiles:
    """Read every ``<model>.csv`` of the ElasticFlow A100 throughput tables."""
    folder = folder if folder is not None else config.shared_data() / PROFILE_DIR
    tput: dict[str, dict[int, dict[int, float]]] = {}
    for path in sorted(folder.glob("*.csv")):
        model: dict[int, dict[int, float]] = {}
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                batch = int(row["global_batch_size"])
                cells: dict[int, float] = {}
                for n in SIZES:
                    raw = (row.get(str(n)) or "").strip()
                    if raw and raw.lower() != "nan" and float(raw) > 0:
                        cells[n] = float(raw)
                model[batch] = cells
        tput[path.stem] = model
    if not tput:
        raise FileNotFoundError(f"no throughput profiles (*.csv) in {folder}")
    return Profiles(tput)


@dataclass(frozen=True)
class ClusterSpec:
    nodes: int
    gpus_per_node: int

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def name(self) -> str:
        return f"n{self.nodes}g{self.gpus_per_node}"


def parse_cluster(spec: str) -> ClusterSpec:
    """``"n8g8"`` -> 8 nodes of 8 GPUs (the naming of ElasticFlow's ``cluster_specs/``; one switch)."""
    m = re.fullmatch(r"n(\d+)g(\d+)", spec.strip())
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f"cluster spec must look like 'n<nodes>g<gpus_per_node>', got {spec!r}")
    return ClusterSpec(int(m.group(1)), int(m.group(2)))


@dataclass(eq=False)
class Job:
    """One trace job plus the mutable state the event loop keeps for it (identity-compared)."""

    idx: int
    job_id: str
    submit: int
    ddl: int
    iterations: int
    model: str
    batch: int
    max_gpu: int = 0
    iter_left: float = 0.0
    num_gpu: int = 0
    allocations: dict[float, int] = field(default_factory=dict)
    end_time: float = 0
    real_end_time: float | None = None
    old_end_time: float = 0
    overhead: float = 0.0
    in_cache: bool = False
    placed: bool = False
    done: bool = False
    # bookkeeping of the leftover-GPU handout (get_marginal in the released code)
    next_level: int = 0
    marginal: float = 0.0
    nl_alloc: dict[float, int] = field(default_factory=dict)
    nl_ffg: dict[float, int] = field(default_factory=dict)
    nl_end: float = 0
    nl_real_end: float = 0
    # EDF's tentative plan
    new_alloc: dict[float, int] = field(default_factory=dict)
    new_end: float = 0


def elasticflow_max_gpu(model: str, batch: int) -> int:
    """Per-model cap of the ElasticFlow policy on A100 (the released simulator's ``get_max_gpu``)."""
    if model == "deepspeech2":
        return batch
    if model == "gpt2" and batch in (128, 256):
        return 16 if batch == 128 else 32
    if model == "bert":
        return 8 if batch == 64 else 16
    if model == "inception3" and batch in (64, 128):
        return 16 if batch == 64 else 32
    if model == "resnet50":
        return 32 if batch == 64 else min(batch, 64)
    if model == "vgg16" and batch == 64:
        return 32
    return min(batch, 64)


def load_jobs(path: Path, profiles: Profiles, policy: str, max_jobs: int | None = None) -> list[Job]:
    """Read an ElasticFlow-format trace (``job_id,submission_time,num_iteration,model_name,deadline,...``)."""
    jobs: list[Job] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"job_id", "submission_time", "num_iteration", "model_name", "deadline", "batch_size"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: not an ElasticFlow trace, missing columns {sorted(missing)}")
        for row in reader:
            if max_jobs is not None and len(jobs) >= max_jobs:
                break
            model, batch = row["model_name"].strip(), int(row["batch_size"])
            largest = profiles.largest_size(model, batch)
            if policy == "edf":
                cap = min(64, batch, largest)
            else:
                cap = min(elasticflow_max_gpu(model, batch), largest)
            cap = max(s for s in SIZES if s <= cap)
            iterations = int(row["num_iteration"])
            if iterations <= 0:
                raise ValueError(f"{path}: job {row['job_id']} has no iterations")
            jobs.append(
                Job(
                    idx=len(jobs),
                    job_id=row["job_id"],
                    submit=int(row["submission_time"]),
                    ddl=int(row["deadline"]),
                    iterations=iterations,
                    model=model,
                    batch=batch,
                    max_gpu=cap,
                    iter_left=float(iterations),
                )
            )
    jobs.sort(key=lambda j: j.submit)
    return jobs


def resolve_trace(name_or_path: str | Path) -> tuple[Path, int | None]:
    """Map a reference-run trace name to ``(csv path, max_jobs)``.

    ``cluster10`` -> the whole ``cluster10.csv``; ``cluster01_head500`` -> the first 500 jobs (file order)
    of ``cluster01.csv``, as ``elasticflow-reference.json`` defines it.  An existing path is returned as is.
    """
    p = Path(name_or_path)
    if p.suffix == ".csv":
        return (p if p.is_absolute() or p.exists() else config.shared_data() / p), None
    m = re.fullmatch(r"(cluster\d+)(?:_head(\d+))?", str(name_or_path))
    if not m:
        raise ValueError(f"unknown trace {name_or_path!r}")
    folder = config.shared_data() / "traces" / "microsoft-itp" / "elasticflow"
    return folder / f"{m.group(1)}.csv", (int(m.group(2)) if m.group(2) else None)
