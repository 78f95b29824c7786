"""ElasticFlow compatibility mode: replay an ElasticFlow-format trace the way the authors' simulator does.

PromptTuner's evaluation is stated as ratios to ElasticFlow (ASPLOS'23), so our model of that baseline must
reproduce the deadline satisfactory ratios that the authors' released simulator (pkusys/ElasticFlow,
``ElasticFlow/scheduler/``, schedules ``ef-accessctrl`` and ``edf``) reports on the same traces
(``elasticflow-reference.json``).  This is a clean-room implementation written from reading that code:
same mechanisms and arithmetic, our own structure.  Entry point::

    from prompttuner.efsim import run_trace
    result = run_trace(path, cluster="n8g8", slot=240, policy="elasticflow")   # or policy="edf"

This is a simulator of its own, separate from :mod:`prompttuner.sim` (which drives PromptTuner's
scheduling policies): it imports nothing of the project but :mod:`prompttuner.config`, to find the
shared data.  Modules, one job each:

- ``inputs``: traces, throughput profiles, cluster specs and the per-job record (no other module reads
  files).
- ``plan``: the timeline planners (minimum satisfactory share; EDF's ``min(cap, free)``).
- ``place``: node placement, which decides the key of the scaling-overhead cache.
- ``events``: the event list, progress between events and the counters both policies share.
- ``elasticflow``: the ElasticFlow policy (admission control, leftover GPUs, overhead); its docstring
  says step by step how the replay follows the released code.
- ``edf``: the EDF baseline.
- ``replay``: :func:`run_trace`, the entry point.

Metric: ``ddl_satis_ratio = met / (met + missed + declined)``, i.e. over all jobs of the trace (the
released ``accepted / (accepted + declined)``, where late completions move from accepted to declined).

Fidelity: the planner and the leftover handout were cross-checked against a literal scratch port of the
released ``ef_sim_allocation`` / ``get_marginal`` / ``allocate_free_gpus`` (not part of the project) on
random cases.  With the defaults, all eight reference runs (EDF and ElasticFlow, cluster01_head500 and
cluster10, n16g8 and n8g8) are reproduced exactly (to the reported digits); see
``benchmarks/results/elasticflow_compat.md``.

Interpretations where the released code would crash or is undefined (never reached on the reference
runs, as far as we can tell): an event with no jobs while nothing is runnable is skipped; a job listed in
an end event twice is ended once; a job in an end event that holds no GPUs is not ended (ElasticFlow)
and is ended anyway (EDF, where the released code would fail to release it).
"""

from __future__ import annotations

from prompttuner.efsim.plan import PlanError
from prompttuner.efsim.replay import POLICIES, run_trace

__all__ = ["run_trace", "POLICIES", "PlanError"]
