"""The prompt-tuning engine: load a frozen LLM and a task, tune a soft prompt, save and reuse it.

This is the API the Prompt Bank, the scheduler's workers and the service call; see each module for why
it works the way it does::

    loaded = load_model("smollm2-135m")                       # ~1 s once the safetensors cache exists
    task = load_task("path/to/task", tokenizer=loaded.tokenizer, max_length=loaded.max_context)
    trainer = PromptTrainer(loaded, task, TuningConfig(target_accuracy=0.8, init=TextInit()))
    result = trainer.train_to_target()                       # or trainer.step(replicas=n) one at a time
    save_prompt("out/prompt.safetensors", trainer.prompt(), trainer.metadata(accuracy=result.accuracy))

Elastic data parallelism across processes: each worker runs ``compute_gradient(loaded, labels, prompt,
shard)`` on its share of ``trainer.shard_examples(n)``; the owner calls ``trainer.apply_gradients(results)``.
A job moves between workers as ``trainer.state_bytes()`` (kilobytes) and ``PromptTrainer.from_checkpoint``.

Where a prompt starts is a typed value (``inits.py``): ``RandomInit()``, ``TextInit(text)``,
``FileInit(path)`` or ``TensorInit(tensor, lr=...)``; ``parse_init`` reads the command-line forms.  This
package knows nothing of the Prompt Bank: a bank warm start is resolved by the bank into a ``TensorInit``.
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
from prompttuner.tuning.inits import (
    DEFAULT_LR,
    FileInit,
    Init,
    RandomInit,
    TensorInit,
    TextInit,
    default_lr,
    parse_init,
    resolve_init,
)
from prompttuner.tuning.models import BUNDLED, LoadedModel, ModelNotFoundError, load_model
from prompttuner.tuning.prompts import PROMPT_FILE, PromptFileError, load_prompt, save_prompt
from prompttuner.tuning.split import training_split
from prompttuner.tuning.trainer import CurvePoint, PromptTrainer, StepResult, TrainResult, TuningConfig
from prompttuner.tuning.verbalizer import Verbalizer

__all__ = [
    "BUNDLED",
    "DEFAULT_LR",
    "PROMPT_FILE",
    "CurvePoint",
    "Example",
    "FileInit",
    "GradResult",
    "Init",
    "LoadedModel",
    "ModelNotFoundError",
    "PromptFileError",
    "PromptTrainer",
    "RandomInit",
    "StepResult",
    "Task",
    "TaskDataError",
    "TensorInit",
    "TextInit",
    "TrainResult",
    "TuningConfig",
    "Verbalizer",
    "compute_gradient",
    "default_lr",
    "encode",
    "evaluate_accuracy",
    "load_model",
    "load_prompt",
    "load_task",
    "parse_init",
    "predict",
    "prompt_loss",
    "resolve_init",
    "save_prompt",
    "training_split",
]
