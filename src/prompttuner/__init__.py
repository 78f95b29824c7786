"""PromptTuner: SLO-aware elastic prompt tuning with a Prompt Bank and a workload scheduler."""

__version__ = "0.1.0"
