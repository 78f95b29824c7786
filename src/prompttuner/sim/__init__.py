"""Trace-driven simulation of the scheduling policies.

- ``catalog``: LLM step times, cold starts and memory, derived from the assumptions in
  ``data/llm_catalog.json``.
- ``workload``: seeded workloads (Poisson, Microsoft ITP and Azure LLM arrivals rescaled to a load).
- ``engine``: the discrete-event simulator that drives any ``scheduler.Policy``.
- ``runner``: run several policies on one workload; summaries, ratios, sweeps and plots.
- ElasticFlow-format trace replays are a second simulator, in ``prompttuner.efsim``.
"""
