"""The prompt-tuning engine: load a frozen LLM and a task, tune a soft prompt, save and reuse it.

This is the API the Prompt Bank, the scheduler's workers and the service call; see each module for why
it works the way it does.
"""

from prompttuner.tuning.data import Example, Task, TaskDataError, load_task
from prompttuner.tuning.engine import (
    GradResult,
    compute_gradient,
    encode,
    evaluate_accuracy,
    predict,
    prompt_loss,
)
from prompttuner.tuning.models import BUNDLED, LoadedModel, ModelNotFoundError, load_model
from prompttuner.tuning.prompts import PROMPT_FILE, PromptFileError, load_prompt, save_prompt
from prompttuner.tuning.trainer import (
    CurvePoint,
    PromptTrainer,
    StepResult,
    TrainResult,
    TuningConfig,
    init_kind,
    resolve_init,
)
from prompttuner.tuning.verbalizer import Verbalizer

__all__ = [
    "BUNDLED",
    "PROMPT_FILE",
    "CurvePoint",
    "Example",
    "GradResult",
    "LoadedModel",
    "ModelNotFoundError",
    "PromptFileError",
    "PromptTrainer",
    "StepResult",
    "Task",
    "TaskDataError",
    "TrainResult",
    "TuningConfig",
    "Verbalizer",
    "compute_gradient",
    "encode",
    "evaluate_accuracy",
    "init_kind",
    "load_model",
    "load_prompt",
    "load_task",
    "predict",
    "prompt_loss",
    "resolve_init",
    "save_prompt",
]
