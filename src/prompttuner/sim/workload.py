"""Workloads for the simulator: arrival processes, model mix, job work and deadlines; seeded.

Arrivals come from a Poisson process or from the timestamps of real traces (Microsoft ITP raw jobs,
Azure LLM inference requests), rescaled in time to reach a target load.  Load is the offered GPU demand
divided by the cluster's GPUs: ``rate x E[GPU-seconds of a job at its reference size] / GPUs``.

Each job's work (steps to target) comes from the engine's measured convergence profiles when
``data/convergence_profiles.json`` exists, else from the documented distribution in
``data/job_work.json``.  The profiles were measured on a 135M model on a CPU, to a modest target: they give
the *relative* sizes (task to task, init to init), scaled so that the median random-init job has the
documented median size (``job_work.json``: ``steps_random_init.median``).  A bank-init job's work is a
random-init job's times the bank / random steps of one measured job of the service stream
(``data/bank_stream_pairs.json``), by default a job of the same random-init difficulty rank
(``bank_pairing``), and a text-init job's the same with the text / random steps of the same stream jobs;
without that file, text init is the placeholder ``init_factor`` and bank init text init divided by the
Prompt Bank's measured speed-up (``data/bank_speedup.json``, ``bank_speedup_over_text``).
Deadline = arrival + ``slo_tightness`` x the job's runtime alone at its reference
size (``ref_replicas`` warm replicas of ``ref_gpu``), so tightness 1 leaves no room for queueing or a
cold start at that size; a bank (text) job's runtime here is that of its random-init work
(``bank_deadline``: its user cannot know what the bank will save), so a bank workload is the random-init
one with only the bank jobs' work changed.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import functools
import json
import math
import random
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prompttuner.config import REPO_DATA, shared_data
from prompttuner.core.types import SLO, JobSpec
from prompttuner.sim.catalog import Catalog

WORK_FILE = REPO_DATA / "job_work.json"
INITS = ("random", "text", "bank")
BANK_PAIRINGS = ("rank", "independent")
BANK_DEADLINES = ("random", "own")
PROFILES_FILE = REPO_DATA / "convergence_profiles.json"
BANK_FILE = REPO_DATA / "bank_speedup.json"
BANK_PAIRS_FILE = REPO_DATA / "bank_stream_pairs.json"  # benchmarks/bank_stream.py --summarize --write-data
_NO_FILE = Path("/nonexistent/prompttuner/no-profiles.json")  # forces the documented distribution

DEFAULT_MIX: dict[str, float] = {
    "qwen2.5-0.5b": 0.15,
    "llama-3.2-1b": 0.2,
    "llama-3.2-3b": 0.2,
    "llama-3.1-8b": 0.25,
    "llama-2-13b": 0.1,
    "qwen2.5-32b": 0.05,
    "llama-3.1-70b": 0.05,
}


@dataclass
class WorkloadConfig:
    arrivals: str = "poisson"  # poisson | itp | azure
    n_jobs: int = 1000
    load: float = 0.5
    slo_tightness: float = 2.0
    capacity: dict[str, int] = field(default_factory=lambda: {"a100": 128})
    model_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    init_mix: dict[str, float] = field(default_factory=lambda: {"random": 1.0})
    ref_replicas: int = 1
    ref_gpu: str = "a100"
    seed: int = 0
    trace: str | None = None  # a trace file (itp raw csv or azure csv); default: a shared one
    trace_offset: int = 0  # skip this many arrivals of the trace
    # job sizes: "profiles" (the measured convergence profiles when present, else the distribution) or
    # "distribution" (always the documented distribution of job_work.json)
    work: str = "profiles"
    # what the policies know of each job's work and step time: "measured" (the predictor's measured
    # error, see sim/prediction.py), "oracle" (the truth; an ablation) or "lognormal:SIGMA"
    prediction: str = "oracle"
    refresh: bool = True  # the estimate is refreshed from each job's progress (off: the ablation)
    # how a bank job's work is drawn from the measured (random, bank) pairs: "rank" (the pair of the same
    # random-init difficulty rank as the job) or "independent" (any pair); see WorkModel
    bank_pairing: str = "rank"
    # what the deadline of a job whose work comes from measured pairs (bank, text init) is set from:
    # "random", its random-init work (what its user can expect; the workload is then the random-init one,
    # same arrivals, models, deadlines and random-init work, with only those jobs' work changed, so its
    # offered load is the random-init workload's times their mean work), or "own", its own work (as before
    # 2026-12-07: a start that lands at the target gets a deadline of a few steps, the pair comes from the
    # main random stream and arrivals are calibrated to the load with the mean work).  Without measured
    # pairs (no pairs file) such jobs' work is drawn on its own and "own" applies.
    bank_deadline: str = "random"


@dataclass(frozen=True)
class WorkModel:
    """Samples steps-to-target per init method."""

    source: str
    per_task: Mapping[str, Mapping[str, float]]  # task -> init -> steps (from profiles), may be empty
    median: float
    sigma: float
    lo: float
    hi: float
    init_factor: Mapping[str, float]
    bank_over_text: float
    profile_scale: float = 1.0  # per-task profile steps x this = simulated steps
    # measured (random-init steps, bank-init steps) of the same jobs (the service stream): a bank job's
    # work is a random-init job's times the ratio of one pair
    bank_pairs: tuple[tuple[float, float], ...] = ()
    # the same jobs' (random-init steps, text-init steps): a text-init job's work likewise
    text_pairs: tuple[tuple[float, float], ...] = ()
    # which pair: "rank" draws among the pairs whose random-init steps have the job's own random-init
    # quantile (the bank's effect depends on how hard the task is for random init: on the stream its
    # ratio falls with the random-init steps, so a pair measured on a 5-step task does not scale a hard
    # job); "independent" draws any pair (E[bank work] = E[random work] x the mean of the ratios).  The
    # same rule draws text init's pairs.
    bank_pairing: str = "rank"

    def __post_init__(self) -> None:
        if self.bank_pairing not in BANK_PAIRINGS:
            raise ValueError(f"unknown bank pairing {self.bank_pairing!r}; use {' or '.join(BANK_PAIRINGS)}")

    def pairs(self, init: str) -> tuple[tuple[float, float], ...]:
        """The measured (random-init steps, ``init`` steps) pairs a job of ``init`` draws its work from
        (none for random init, or where none were measured)."""
        return {"bank": self.bank_pairs, "text": self.text_pairs}.get(init, ())

    def sample(self, rng: random.Random, init: str) -> float:
        if self.pairs(init):
            return self.paired_work(rng, self.sample(rng, "random"), init)
        if self.per_task:
            task = rng.choice(sorted(self.per_task))
            row = self.per_task[task]
            if init in row:
                steps = row[init]
            elif init == "bank" and "text" in row:
                steps = row["text"] / self.bank_over_text
            else:
                steps = row.get("random", next(iter(row.values())))
            return steps * self.profile_scale
        x = rng.lognormvariate(math.log(self.median), self.sigma) * self.init_factor.get(init, 1.0)
        return float(min(self.hi, max(self.lo, round(x))))

    def paired_work(self, rng: random.Random, base: float, init: str = "bank") -> float:
        """The work from ``init`` (bank or text) of a job whose random-init work is ``base``: ``base``
        times the ``init`` / random steps of one measured pair (drawn as ``bank_pairing`` says)."""
        if self.bank_pairing == "independent":
            r, b = rng.choice(self.pairs(init))
        else:
            lo, hi = self.quantile(base)
            r, b = rng.choice(self._pairs_at(lo + (hi - lo) * rng.random(), init))
        return max(1.0, base * b / r)

    def mean(self) -> float:
        if self.per_task:
            return statistics.fmean(self._random_steps())
        return self.median * math.exp(self.sigma**2 / 2)

    def _random_steps(self) -> list[float]:
        return sorted(
            r.get("random", next(iter(r.values()))) * self.profile_scale for r in self.per_task.values()
        )

    def quantile(self, steps: float) -> tuple[float, float]:
        """The range of random-init quantiles a random-init job of ``steps`` steps covers: a point for
        the lognormal distribution, a task's share of the tasks for the profiles (ties share one)."""
        if self.per_task:
            vals = self._random_steps()
            return bisect.bisect_left(vals, steps) / len(vals), bisect.bisect_right(vals, steps) / len(vals)
        u = statistics.NormalDist().cdf((math.log(steps) - math.log(self.median)) / self.sigma)
        return u, u

    @functools.cached_property
    def _ranked(self) -> dict[str, tuple[list[float], dict[float, list[tuple[float, float]]]]]:
        out = {}
        for init in ("bank", "text"):
            ranked = sorted(self.pairs(init))
            ties: dict[float, list[tuple[float, float]]] = {}
            for p in ranked:
                ties.setdefault(p[0], []).append(p)
            out[init] = ([p[0] for p in ranked], ties)
        return out

    def _pairs_at(self, u: float, init: str = "bank") -> list[tuple[float, float]]:
        """The measured pairs of ``init`` at random-init quantile ``u``: the pair of that rank and every
        pair tied with it in random-init steps."""
        rs, ties = self._ranked[init]
        return ties[rs[min(len(rs) - 1, int(u * len(rs)))]]

    def paired_factor(self, init: str, grid: int = 1 << 14) -> float:
        """E[``init`` work] / E[random work] under this pairing (the arrival rate is calibrated with it):
        the mean of the ratios when pairs are drawn independently, else the ratio at each random-init
        quantile weighted by the work there (a midpoint sum over ``grid`` quantiles)."""
        if self.bank_pairing == "independent":
            return statistics.mean(b / r for r, b in self.pairs(init))
        vals = self._random_steps()
        mean_at = {r: statistics.mean(b / r for _, b in at) for r, at in self._ranked[init][1].items()}
        rs = self._ranked[init][0]
        num = den = 0.0
        for k in range(grid):
            u = (k + 0.5) / grid
            if vals:
                w = vals[min(len(vals) - 1, int(u * len(vals)))]
            else:
                z = statistics.NormalDist().inv_cdf(u)
                w = min(self.hi, max(self.lo, round(self.median * math.exp(self.sigma * z))))
            num += w * mean_at[rs[min(len(rs) - 1, int(u * len(rs)))]]
            den += w
        return num / den


def _profile_steps(raw: Any, min_budget: float = 0.0) -> dict[str, dict[str, float]]:
    """Read steps-to-target per task and init from the engine's profiles, tolerating layouts.

    Accepts ``{"tasks": {task: {init: steps | {"steps_to_target": steps}, ...}}}`` or the same without
    the ``tasks`` wrapper, for init in random/text/bank; other per-task fields are ignored.  An init whose
    target was not reached (null) counts as its step ``budget`` when the profile states one (a lower
    bound: the task is at least that hard), else it is skipped.
    """
    tasks = raw.get("tasks", raw) if isinstance(raw, dict) else {}
    out: dict[str, dict[str, float]] = {}
    for task, row in tasks.items():
        if not isinstance(row, dict):
            continue
        inits: dict[str, float] = {}
        for init, v in row.items():
            if init not in INITS:  # other per-task fields (runs, target, labels, ...)
                continue
            if isinstance(v, dict):
                # a profile cut off by a small CPU step budget measures the budget, not the job: its
                # steps are not job sizes (the documented distribution is used instead)
                budget = v.get("budget")
                if isinstance(budget, int | float) and budget < min_budget:
                    continue
                v = v.get("steps_to_target", v.get("steps"))
                if v is None and isinstance(budget, int | float):
                    v = budget
            if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0:
                inits[str(init)] = max(1.0, float(v))  # 0: the init already scores; one step to confirm
        if inits:
            out[str(task)] = inits
    return out


def load_work_model(
    work_file: Path | None = None,
    profiles_file: Path | None = None,
    bank_file: Path | None = None,
    bank_pairs_file: Path | None = None,
    bank_pairing: str = "rank",
) -> WorkModel:
    w = json.loads(Path(work_file or WORK_FILE).read_text())
    d = w["steps_random_init"]
    per_task: dict[str, dict[str, float]] = {}
    source = str(work_file or WORK_FILE)
    pf = Path(profiles_file or PROFILES_FILE)
    scale = 1.0
    if pf.exists():
        min_budget = float(w.get("profiles_min_budget", d["min"]))
        per_task = _profile_steps(json.loads(pf.read_text()), min_budget=min_budget)
        if per_task:
            source = str(pf)
            rand = sorted(r["random"] for r in per_task.values() if "random" in r)
            if rand and w.get("profiles_scale_to_median", True):
                scale = float(d["median"]) / statistics.median(rand)
    bank_over_text = float(w.get("bank_speedup_over_text", 1.5))
    bf = Path(bank_file or BANK_FILE)
    if bf.exists():  # the Prompt Bank benchmark's measured median speed-up over text init
        measured = json.loads(bf.read_text()).get("bank_speedup_over_text")
        if isinstance(measured, int | float) and measured > 0:
            bank_over_text = float(measured)
    factors = {k: float(v) for k, v in w["init_factor"].items() if k != "why"}
    pairs = load_bank_pairs(bank_pairs_file)
    text_pairs = load_bank_pairs(bank_pairs_file, key="text_pairs")
    model = WorkModel(
        source=source,
        per_task=per_task,
        median=float(d["median"]),
        sigma=float(d["sigma"]),
        lo=float(d["min"]),
        hi=float(d["max"]),
        init_factor=factors,
        bank_over_text=bank_over_text,
        profile_scale=scale,
        bank_pairs=pairs,
        text_pairs=text_pairs,
        bank_pairing=bank_pairing,
    )
    # the arrival rate is calibrated with the measured mean work of a bank (text) job
    measured = {i: model.paired_factor(i) for i in ("bank", "text") if model.pairs(i)}
    return dataclasses.replace(model, init_factor={**factors, **measured}) if measured else model


def load_bank_pairs(path: Path | None = None, key: str = "pairs") -> tuple[tuple[float, float], ...]:
    """The measured per-job ``(random-init steps, bank-init steps)`` pairs (``key="text_pairs"``: the
    same jobs' text-init steps; a miss counts as the step budget, a start already at the target as 1
    step), or none when the file or the key is absent."""
    p = Path(path or BANK_PAIRS_FILE)
    if not p.exists():
        return ()
    raw = json.loads(p.read_text())
    return tuple((float(r), float(b)) for r, b in raw.get(key, ()) if r > 0 and b > 0)


def _pick(rng: random.Random, mix: Mapping[str, float]) -> str:
    keys = sorted(mix)
    return rng.choices(keys, weights=[mix[k] for k in keys])[0]


def read_itp_arrivals(path: Path) -> list[float]:
    with open(path, newline="") as f:
        return sorted(float(r["submission_time"]) for r in csv.DictReader(f))


def read_azure_arrivals(path: Path) -> list[float]:
    out: list[float] = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            ts = r["TIMESTAMP"]
            if "." in ts:  # nanoseconds-ish fractions: keep microseconds for datetime
                head, frac = ts.split(".")
                ts = f"{head}.{frac[:6]}"
            out.append(datetime.fromisoformat(ts).timestamp())
    return sorted(out)


def trace_kind(path: Path) -> str:
    """The arrival format of a trace file, from its header: ``itp`` (Microsoft ITP raw: job_id,
    submission_time, ...) or ``azure`` (Azure LLM: TIMESTAMP, ...); a clear error for anything else
    (an ElasticFlow-format trace, with deadlines and iterations, is replayed with --elasticflow-trace)."""
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    cols = {c.strip() for c in header}
    if {"num_iteration", "deadline", "submission_time"} <= cols:
        raise ValueError(
            f"{path} is an ElasticFlow-format trace (iterations and deadlines); replay it with "
            "--elasticflow-trace, or give a Microsoft ITP raw or an Azure LLM arrival trace"
        )
    if "submission_time" in cols:
        return "itp"
    if "TIMESTAMP" in cols:
        return "azure"
    raise ValueError(
        f"cannot tell the arrival format of {path}: its header {sorted(cols)} has neither "
        "'submission_time' (Microsoft ITP raw) nor 'TIMESTAMP' (Azure LLM)"
    )


def trace_arrivals(kind: str, trace: str | None) -> list[float]:
    if kind == "itp":
        path = Path(trace) if trace else shared_data() / "traces/microsoft-itp/raw/cluster04.csv"
        return read_itp_arrivals(path)
    if kind == "azure":
        path = (
            Path(trace) if trace else shared_data() / "traces/azure-llm-2023/AzureLLMInferenceTrace_conv.csv"
        )
        return read_azure_arrivals(path)
    raise ValueError(f"unknown arrival process {kind!r}; use poisson, itp or azure")


def generate(cfg: WorkloadConfig, catalog: Catalog, work: WorkModel | None = None) -> list[JobSpec]:
    """Jobs of one workload, deterministic for a given config."""
    if cfg.work not in ("profiles", "distribution"):
        raise ValueError(f"unknown work model {cfg.work!r}; use profiles or distribution")
    if cfg.bank_deadline not in BANK_DEADLINES:
        raise ValueError(f"unknown bank deadline {cfg.bank_deadline!r}; use {' or '.join(BANK_DEADLINES)}")
    if work is not None and work.bank_pairing != cfg.bank_pairing:
        raise ValueError(
            f"the work model draws its pairs {work.bank_pairing!r}, the config asks {cfg.bank_pairing!r}"
        )
    if work is None:
        work = load_work_model(
            profiles_file=None if cfg.work == "profiles" else _NO_FILE, bank_pairing=cfg.bank_pairing
        )
    rng = random.Random(cfg.seed)
    for m in cfg.model_mix:
        catalog.model(m)
    # mean GPU-seconds per job at its reference size -> arrival rate for the target load
    # with measured pairs and random-init deadlines, bank (text) jobs keep the random-init workload's jobs
    paired = {i for i in ("bank", "text") if work.pairs(i)} if cfg.bank_deadline == "random" else set()

    def factor(init: str) -> float:
        return 1.0 if init in paired else work.init_factor.get(init, 1.0)

    mean_steps = (
        work.mean() * sum(cfg.init_mix[i] * factor(i) for i in cfg.init_mix) / sum(cfg.init_mix.values())
    )
    bank_rng = random.Random(f"bank-pairs-{cfg.seed}")  # its own stream: the other draws stay the same
    tot = sum(cfg.model_mix.values())
    gpu_s = 0.0
    for m, wgt in cfg.model_mix.items():
        prof = catalog.models[m]
        t = prof.step_time(cfg.ref_gpu, cfg.ref_replicas) * mean_steps
        gpu_s += wgt / tot * t * cfg.ref_replicas * prof.gpus_per_replica
    gpus = sum(cfg.capacity.values())
    rate = cfg.load * gpus / gpu_s  # jobs per second
    if cfg.arrivals == "poisson":
        times: list[float] = []
        t = 0.0
        for _ in range(cfg.n_jobs):
            t += rng.expovariate(rate)
            times.append(t)
    else:
        raw = trace_arrivals(cfg.arrivals, cfg.trace)
        if len(raw) < 2:
            raise ValueError("trace has fewer than two arrivals")
        raw = raw[cfg.trace_offset :]
        # repeat the trace (shifted) if it is shorter than the requested number of jobs
        period = raw[-1] - raw[0] + (raw[-1] - raw[0]) / max(1, len(raw) - 1)
        seq: list[float] = []
        k = 0
        while len(seq) < cfg.n_jobs:
            seq.extend(x - raw[0] + k * period for x in raw[: cfg.n_jobs - len(seq)])
            k += 1
        span = seq[-1] - seq[0]
        scale = (len(seq) - 1) / rate / span if span > 0 else 1.0
        times = [(x - seq[0]) * scale + 1.0 for x in seq]
    jobs: list[JobSpec] = []
    for i, t in enumerate(times):
        model = _pick(rng, cfg.model_mix)
        init = _pick(rng, cfg.init_mix)
        if init in paired:
            nominal = work.sample(rng, "random")
            steps = work.paired_work(bank_rng, nominal, init)
        else:
            steps = nominal = work.sample(rng, init)
        prof = catalog.models[model]
        alone = nominal * prof.step_time(cfg.ref_gpu, cfg.ref_replicas)
        jobs.append(
            JobSpec(
                job_id=f"j{i:06d}",
                model=model,
                arrival=round(t, 3),
                slo=SLO(deadline=round(t + cfg.slo_tightness * alone, 3)),
                work_steps=steps,
                init=init,
            )
        )
    return jobs


def save_jobs(jobs: list[JobSpec], path: Path) -> None:
    rows = [
        {
            "job_id": j.job_id,
            "model": j.model,
            "arrival": j.arrival,
            "deadline": j.deadline,
            "work_steps": j.work_steps,
            "init": j.init,
        }
        for j in jobs
    ]
    Path(path).write_text(json.dumps({"jobs": rows}, indent=1))


def load_jobs(path: Path) -> list[JobSpec]:
    """A workload file: ``{"jobs": [{job_id, model, arrival, deadline, work_steps, init?}, ...]}``."""
    raw = json.loads(Path(path).read_text())
    return [
        JobSpec(
            job_id=str(r["job_id"]),
            model=str(r["model"]),
            arrival=float(r["arrival"]),
            slo=SLO(deadline=float(r["deadline"])),
            work_steps=float(r["work_steps"]),
            init=str(r.get("init", "random")),
        )
        for r in raw["jobs"]
    ]
