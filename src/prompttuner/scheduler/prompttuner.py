"""The PromptTuner policy: warm pools per base LLM, fewest GPUs per deadline, cheap re-allocation.

Mechanisms (each can be switched off for the ablation):

- ``warm_pool``: keep idle workers of each base LLM warm, sized from the forecast arrivals of that model
  (the ``pool_quantile`` of Poisson arrivals during one cold start, times the replicas a job of that model
  takes now), pre-warm up to that size, and release idle workers above it once they have been idle
  ``keep_factor`` cold starts (keeping longer costs more than the cold starts they save).  Off: idle
  workers are released at once and nothing is pre-warmed.  ``count_frees`` (off by default) counts the
  replicas that running jobs of the model free within one cold start as part of the pool, so the pool
  does not grow with the arrival rate when completions already supply warm workers.
- cold-start waste (both off by default; ``prompttuner-lean`` turns them on): ``min_cold_use`` -- a running
  job adds cold replicas only when its plan keeps them working at least that many cold starts once
  ready; ``cancel_prov`` -- workers still loading that no job holds and the pool does not need are
  released at once instead of becoming idle workers that wait out a keep-alive.
- ``work_margin``: a job is planned for its estimated steps left times 1.3, the 65th percentile of the
  predictor's measured ``actual / predicted`` over its median (1.56 / 1.21, ``data/work_prediction.json``):
  the estimate errs low more often than not.  Chosen on tuning seeds 100-101 (disjoint from the
  comparison's 0-4; 2,000 jobs, tightness 1): violations on Poisson 7.3 -> 5.4 %, Azure conv 11.9 ->
  9.1 %, ITP cluster04 42.1 -> 39.7 %, cost -1 to +0.5 %; at tightness 2 on Poisson 0.35 -> 0.12 % at
  +3.5 % cost (``benchmarks/sim_knobs.py``; margins 1.15 / 1.5 are within 0.2-1 point of 1.3, 2.0 costs
  more and loses on Poisson: 1.3 is the quantile rule, not the sweep's best cell).  A job is declined
  only if even its plain estimate is hopeless.
- ``min_gpus``: each job gets the fewest replicas that meet its deadline (with a safety ``margin``),
  in earliest-deadline-first order.  Off: each job takes the fastest allocation it can get.
- ``elastic``: at every decision, jobs that fall behind grow, taking warm idle workers or the surplus of
  jobs that are ahead (a move costs a warm move: only prompt and optimizer state travel); idle warm
  workers can be lent to running jobs (``boost``, off by default: the ablation shows the pauses of
  lending and taking back cost more than the speed-up buys) and taken back when needed.  Off: a job
  keeps the allocation it started with.
- ``admission``: a new job whose deadline cannot be met even with every worker it could get (warm now,
  cold starts, and capacity that running jobs free later) is declined with a quote that names the
  tightest deadline that could be met.  A job that misses only by ``admit_tolerance`` of its time left
  is admitted "at risk" and served after the jobs that are on track.  Off: every job is admitted.
  ``admit_tolerance`` 1.0 declined fewer jobs than the default 0.5 and violated 0.35-0.9 points less on the
  comparison's seeds 0-4 (Poisson 9.42 -> 9.00 %, cluster04 40.67 -> 39.77 %, Azure conv 11.97 -> 11.62 %,
  T 1, cost +0.05 to +0.8 %; chosen on tuning seeds 100-101, ``benchmarks/sim_knobs.py``); the default
  stays 0.5 until the comparison that the headline reports is re-run with it.

- ``switch`` (off by default; on in ``prompttuner-switch`` and in a service that serves several base
  LLMs): where a decision would release an idle warm worker of one model and cold-start one of another
  on the same GPU type, the idle worker switches to the other model instead when its load time beats
  the cold start (:func:`~prompttuner.scheduler.common.switch_for_cold_starts`).  Off by default so the
  committed simulator results, made before the switch existed, reproduce.

Cold starts happen only for replicas the warm pool, provisioning workers and surplus cannot cover in time.

A decision surveys every admitted job (finish, short of GPUs, surplus).  Where the snapshot's live index
feeds every change of a job's view (``LiveIndex.feeds_jobs``: the simulator's does), the survey is kept
between decisions and revisits only the jobs that changed or whose classification could have
(``scheduler/prompttuner_inc.py``); its decisions are those of a fresh policy on the same snapshot.
"""

from __future__ import annotations

from prompttuner.core.types import (
    Admission,
    ClusterSnapshot,
    Decisions,
    JobPhase,
    JobSpec,
    JobView,
    Quote,
)
from prompttuner.scheduler.base import register
from prompttuner.scheduler.common import Index, keep_warm_floor, switch_for_cold_starts
from prompttuner.scheduler.prompttuner_inc import KeptSurvey
from prompttuner.scheduler.prompttuner_plan import _Ctx, _Plan
from prompttuner.scheduler.prompttuner_pools import WarmPools, arrival_rate, poisson_quantile

__all__ = [
    "PromptTunerLeanPolicy",
    "PromptTunerNoPoolPolicy",
    "PromptTunerPolicy",
    "PromptTunerSwitchPolicy",
    "arrival_rate",
    "poisson_quantile",
]


@register("prompttuner")
class PromptTunerPolicy(WarmPools):
    accepts_switch = True

    def __init__(
        self,
        warm_pool: bool = True,
        min_gpus: bool = True,
        elastic: bool = True,
        admission: bool = True,
        boost: bool = False,
        keep_factor: float = 2.0,
        pool_quantile: float = 0.9,
        arrival_window_s: float = 1800.0,
        margin: float = 0.05,
        work_margin: float = 1.3,
        boost_efficiency: float = 0.6,
        admit_tolerance: float = 0.5,
        violation_cost_gpu_s: float = 600.0,
        count_frees: bool = False,
        min_cold_use: float = 0.0,
        cancel_prov: bool = False,
        switch: bool = False,
    ) -> None:
        self.warm_pool = warm_pool
        self.min_gpus = min_gpus
        self.elastic = elastic
        self.admission = admission
        self.boost = boost and elastic
        self.keep_factor = keep_factor
        self.pool_quantile = pool_quantile
        self.arrival_window_s = arrival_window_s
        self.margin = margin
        self.work_margin = work_margin
        self.boost_efficiency = boost_efficiency
        self.admit_tolerance = admit_tolerance
        self.violation_cost_gpu_s = violation_cost_gpu_s
        self.count_frees = count_frees
        self.min_cold_use = min_cold_use
        self.cancel_prov = cancel_prov
        self.switch = switch
        self._tight_memo: dict[tuple[str, str, float, int], tuple[float, float]] = {}
        self._tight_per: dict[tuple[str, str, float, float, float], tuple[int, int]] = {}
        self._kept: KeptSurvey | None = None

    def _kept_survey(self, snapshot: ClusterSnapshot) -> KeptSurvey | None:
        """The survey kept between decisions, when the snapshot's live index feeds every change of a
        job's view (``scheduler/prompttuner_inc.py``); None: survey every admitted job."""
        live = snapshot.live
        if live is None or not getattr(live, "feeds_jobs", False) or self.boost:
            self._kept = None
            return None
        k = self._kept
        if k is None or k.live is not live or snapshot.now < k.now:
            k = self._kept = KeptSurvey(live, self)
        return k

    # ------------------------------------------------------------------ decide
    def decide(self, snapshot: ClusterSnapshot) -> Decisions:
        ix = Index.build(snapshot)
        ctx = _Ctx(ix=ix)
        kept = self._kept_survey(snapshot)
        admitted: list[JobView]
        if kept is None:
            admitted = sorted(
                (j for j in ix.active if j.admitted and j.job_id not in ix.new),
                key=lambda j: (j.deadline, j.job_id),
            )
            new = sorted((j for j in ix.active if j.job_id in ix.new), key=lambda j: (j.deadline, j.job_id))
            short = self._survey(ctx, admitted)
        else:
            # the same jobs without listing every view: the new ones by id, the admitted ones kept
            views = snapshot.live.jobs
            new = sorted(
                (
                    views[i]
                    for i in dict.fromkeys(snapshot.new_job_ids)
                    if i in views and not views[i].phase.terminal
                ),
                key=lambda j: (j.deadline, j.job_id),
            )
            short = kept.survey(self, ctx)
            admitted = []  # only lending (``boost``, never on this path) reads them
        admissions: list[Admission] = []
        self._serve_short(ctx, short)
        at_risk: list[tuple[JobView, _Plan | None]] = []
        for j in new:
            plan = self._plan(ctx, j, j.spec, with_future=False)
            if plan is None or not plan.feasible:
                later = self._plan(ctx, j, j.spec, with_future=True)
                if later is not None and later.feasible:
                    # feasible once running jobs free capacity: admit now, it waits in the queue
                    ctx.claim(later.gpu, j.deadline, later.n * snapshot.models[j.spec.model].gpus_per_replica)
                    q = self._quote_of(snapshot, j.spec, later)
                    admissions.append(Admission(j.job_id, True, "queued until capacity frees", q))
                    continue
                best = min((p for p in (plan, later) if p is not None), key=lambda p: p.finish, default=None)
                quoted = best  # the quote names the deadline this policy would admit: margin included
                if self.work_margin != 1.0:
                    # the margin is for serving; a job is hopeless only if its estimate itself is
                    plain = [self._plan(ctx, j, j.spec, f, work_margin=1.0) for f in (False, True)]
                    best = min((p for p in plain if p is not None), key=lambda p: p.finish, default=best)
                slack = self.admit_tolerance * max(0.0, j.deadline - snapshot.now)
                hopeless = best is None or best.finish > j.deadline + slack
                if self.admission and hopeless and not j.spec.slo.best_effort:
                    q = self._quote_of(snapshot, j.spec, quoted)
                    earliest = "never" if q.tightest_deadline is None else f"{q.tightest_deadline:.0f}"
                    admissions.append(
                        Admission(
                            j.job_id,
                            False,
                            f"deadline {j.deadline:.0f} infeasible; tightest feasible deadline {earliest}",
                            q,
                        )
                    )
                    continue
                # borderline: admitted, but served after the jobs that are on track
                admissions.append(
                    Admission(j.job_id, True, "at risk", self._quote_of(snapshot, j.spec, best))
                )
                at_risk.append((j, plan))
                continue
            admissions.append(Admission(j.job_id, True, "", self._quote_of(snapshot, j.spec, plan)))
            if plan is not None:
                self._take(ctx, j, plan)
        for j, _ in at_risk:
            plan = self._plan(ctx, j, j.spec, with_future=False)
            if plan is not None:
                self._take(ctx, j, plan)
        accepted = {a.job_id for a in admissions if a.admitted}
        if kept is not None:
            kept.pending |= accepted  # surveyed from the next decision on
        self._manage_pools(ctx, admitted + [j for j in new if j.job_id in accepted])
        wake = self._next_release(ctx)
        d = keep_warm_floor(
            snapshot,
            Decisions(
                allocations={k: tuple(v) for k, v in ctx.alloc.items()},
                provision=tuple(ctx.provisions),
                release=tuple(ctx.release),
                admissions=tuple(admissions),
                wake_at=wake,
            ),
        )
        return switch_for_cold_starts(snapshot, d) if self.switch else d

    def quote(self, snapshot: ClusterSnapshot, job: JobSpec) -> Quote:
        """Finish time and cost if ``job`` were admitted now; when infeasible, the tightest deadline."""
        if job.model not in snapshot.models:
            raise KeyError(f"unknown base LLM {job.model!r}")
        ix = Index.build(snapshot)
        ctx = _Ctx(ix=ix)
        admitted = sorted(
            (j for j in ix.active if j.admitted and j.job_id != job.job_id), key=lambda j: j.deadline
        )
        short = self._survey(ctx, admitted)
        self._serve_short(ctx, short)
        view = JobView(spec=job, phase=JobPhase.QUEUED)
        plan = self._plan(ctx, view, job, with_future=False)
        if plan is None or not plan.feasible:
            later = self._plan(ctx, view, job, with_future=True)
            if later is not None and (plan is None or later.finish < plan.finish):
                plan = later
        return self._quote_of(snapshot, job, plan)


@register("prompttuner-nopool")
class PromptTunerNoPoolPolicy(PromptTunerPolicy):
    """PromptTuner's policy without its warm pool: idle workers are released at once, nothing pre-warmed.

    The system-vs-policy comparison: what the pool buys is PromptTuner minus this; what the policy buys
    is this against ElasticFlow and INFless, which also start every worker cold.
    """

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("warm_pool", False)
        super().__init__(**kwargs)  # type: ignore[arg-type]


@register("prompttuner-lean")
class PromptTunerLeanPolicy(PromptTunerPolicy):
    """PromptTuner with the two cloud-scale cost fixes on (``benchmarks/results/sim_cloud_scale.md``):
    a running job adds cold replicas only when they would work at least one cold start once ready
    (``min_cold_use=1``), and loading workers that no job holds and the pool does not need are released
    at once (``cancel_prov``).  At 1,024 GPUs PromptTuner's extra cost over INFless was cold starts that
    never worked (their job finished first, or a re-plan dropped them).
    """

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("min_cold_use", 1.0)
        kwargs.setdefault("cancel_prov", True)
        super().__init__(**kwargs)  # type: ignore[arg-type]


@register("prompttuner-switch")
class PromptTunerSwitchPolicy(PromptTunerPolicy):
    """PromptTuner that switches an idle warm worker to another base LLM instead of releasing it and
    cold-starting the other model (``switch``): what a service serving several models runs."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("switch", True)
        super().__init__(**kwargs)  # type: ignore[arg-type]
