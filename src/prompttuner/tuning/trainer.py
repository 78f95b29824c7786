"""PromptTrainer: one prompt-tuning job, steppable, elastic and checkpointable.

The trainable parameter is PEFT's prompt-tuning embedding (``peft.PromptEmbedding``); the forward pass
is the pure :mod:`prompttuner.tuning.engine`.  A step draws the next global batch (a deterministic
function of the seed and the data position), splits it into ``replicas`` shards, computes each shard's
gradient and applies their weighted average.  Because the gradient of a sum is the sum of the gradients,
the result does not depend on how many replicas ran the step: a job can grow, shrink or move between
workers mid-run and follow the same trajectory.  Everything needed to continue (prompt, optimizer,
step, data position) is in :meth:`PromptTrainer.state_dict`: kilobytes of plain tensors and ints.

Where the prompt starts is ``TuningConfig.init``, a typed value (:mod:`prompttuner.tuning.inits`); a
start chosen elsewhere (a Prompt Bank warm start) arrives already resolved, as a ``TensorInit``.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from peft import PromptEmbedding, PromptTuningConfig, PromptTuningInit, TaskType

from prompttuner.core.slo import eval_due
from prompttuner.tuning.data import Task
from prompttuner.tuning.engine import DEFAULT_MAX_LENGTH, GradResult, compute_gradient, evaluate_accuracy
from prompttuner.tuning.inits import INIT_TYPES, Init, RandomInit, TensorInit, default_lr, resolve_init
from prompttuner.tuning.models import LoadedModel
from prompttuner.tuning.split import training_split
from prompttuner.tuning.verbalizer import Verbalizer


@dataclass
class TuningConfig:
    num_virtual_tokens: int = 16
    lr: float | None = None  # None: the init's (TensorInit.lr), else 0.03, or 0.003 for a warm start
    batch_size: int = 8
    seed: int = 0
    max_length: int = DEFAULT_MAX_LENGTH
    eval_every: int = 10
    eval_size: int = 64  # validation rows held out from train (fewer when train is small)
    target_accuracy: float | None = None
    max_steps: int = 200
    init: Init = RandomInit()  # RandomInit() | TextInit(text) | FileInit(path) | TensorInit(tensor, ...)
    device: str | None = None  # None: the model's device
    dtype: str | None = None  # None: the model's dtype (load_model's); "bf16" adds bf16 autocast on CUDA
    eval_batch_size: int = 32


@dataclass
class StepResult:
    step: int
    loss: float  # mean training loss of the step's global batch
    seconds: float


@dataclass
class CurvePoint:
    step: int
    train_loss: float | None  # mean over the steps since the previous point (None at step 0)
    val_accuracy: float
    wall_s: float


@dataclass
class TrainResult:
    curve: list[CurvePoint]
    reached: bool
    steps: int
    accuracy: float
    best_accuracy: float = 0.0
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class PromptTrainer:
    def __init__(self, loaded: LoadedModel, task: Task, config: TuningConfig | None = None) -> None:
        self.loaded = loaded
        self.task = task
        self.config = config = config or TuningConfig()
        if config.device is not None and torch.device(config.device) != loaded.device:
            raise ValueError(f"config.device={config.device} but the model is loaded on {loaded.device}")
        if config.dtype not in (None, "auto") and config.dtype not in ("bf16", "bfloat16", "fp32", "float32"):
            raise ValueError(f"unknown dtype {config.dtype!r}; use bf16 or fp32")
        self.autocast = config.dtype in ("bf16", "bfloat16") and loaded.device.type == "cuda"
        if config.batch_size < 1 or config.num_virtual_tokens < 1:
            raise ValueError("batch_size and num_virtual_tokens must be >= 1")
        self.verbalizer = Verbalizer(loaded.tokenizer, task.labels)
        self.train, self.val = training_split(task, config.eval_size)
        if not self.train:
            raise ValueError(f"task {task.name} has no training examples")
        init = config.init
        if not isinstance(init, INIT_TYPES):
            raise TypeError(
                f"TuningConfig.init must be RandomInit, TextInit, FileInit or TensorInit, not {init!r} "
                "(tuning.parse_init reads the command-line forms)"
            )
        self.kind: str = init.kind
        start = resolve_init(
            init, loaded, task, num_virtual_tokens=config.num_virtual_tokens, seed=config.seed
        )
        self.lr: float = default_lr(self.kind)
        if config.lr is not None:
            self.lr = config.lr
        elif isinstance(init, TensorInit) and init.lr is not None:  # its maker chose (e.g. the bank)
            self.lr = init.lr
        peft_cfg = PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=config.num_virtual_tokens,
            token_dim=loaded.embed_dim,
            num_transformer_submodules=1,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )
        self.prompt_encoder = PromptEmbedding(peft_cfg, loaded.model.get_input_embeddings())
        self.prompt_encoder.to(device=loaded.device, dtype=torch.float32)
        with torch.no_grad():
            self.prompt_encoder.embedding.weight.copy_(start.to(loaded.device))
        self.param: torch.Tensor = self.prompt_encoder.embedding.weight
        self.optimizer = torch.optim.AdamW([self.param], lr=self.lr, weight_decay=0.0)
        self.step_count = 0
        self.epoch = 0
        self.offset = 0
        self._perm_cache: tuple[int, list[int]] | None = None
        # the validation accuracy of the prompt as it is now (``evaluate()``), until the prompt changes:
        # a start checked before its race (``bank.race``) is not evaluated twice at step 0
        self._val_now: float | None = None

    # ---- data order -------------------------------------------------------------------------------
    def _perm(self, epoch: int) -> list[int]:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            self._perm_cache = (epoch, torch.randperm(len(self.train), generator=g).tolist())
        return self._perm_cache[1]

    def _walk(self, count: int) -> tuple[list[int], int, int]:
        epoch, offset = self.epoch, self.offset
        out: list[int] = []
        while len(out) < count:
            perm = self._perm(epoch)
            take = perm[offset : offset + count - len(out)]
            out.extend(take)
            offset += len(take)
            if offset >= len(perm):
                epoch, offset = epoch + 1, 0
        return out, epoch, offset

    def next_batch(self) -> list[int]:
        """Indices into ``self.train`` of the next global batch (does not advance)."""
        return self._walk(self.config.batch_size)[0]

    # ---- stepping ---------------------------------------------------------------------------------
    def prompt(self) -> torch.Tensor:
        return self.param.detach().clone()

    def shard_examples(self, replicas: int) -> list[list[Any]]:
        """The next global batch split into ``replicas`` contiguous shards (fewer if the batch is small)."""
        idx = self.next_batch()
        n = max(1, min(replicas, len(idx)))
        bounds = [round(i * len(idx) / n) for i in range(n + 1)]
        return [[self.train[j] for j in idx[bounds[i] : bounds[i + 1]]] for i in range(n)]

    def _precision(self) -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else nullcontext()

    def gradient(self, examples: list[Any]) -> GradResult:
        """The gradient of the summed loss over ``examples`` (one shard, maybe empty) at the current prompt,
        in the trainer's precision; :meth:`apply_gradients` combines the shards' results."""
        with self._precision():
            return compute_gradient(
                self.loaded, self.verbalizer, self.param.detach(), examples, max_length=self.config.max_length
            )

    def step(self, replicas: int = 1) -> StepResult:
        t0 = time.perf_counter()
        grads = [self.gradient(shard) for shard in self.shard_examples(replicas)]
        loss = self.apply_gradients(grads)
        return StepResult(self.step_count, loss, time.perf_counter() - t0)

    def apply_gradients(self, results: list[GradResult]) -> float:
        """Average shard gradients by size, take one optimizer step, advance; returns the mean loss."""
        total = sum(r.n for r in results)
        if total <= 0:
            raise ValueError("apply_gradients needs at least one example's gradient")
        grad = sum((r.grad.to(torch.float32) for r in results), torch.zeros(self.param.shape)) / total
        self.param.grad = grad.to(self.param.device)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._val_now = None
        self.step_count += 1
        _, self.epoch, self.offset = self._walk(self.config.batch_size)
        return sum(r.loss_sum for r in results) / total

    def evaluate(self, examples: list[Any] | None = None) -> float:
        """Accuracy on ``examples`` (None: the validation split; kept until the prompt changes)."""
        if examples is None and self._val_now is not None:
            return self._val_now
        ex = self.val if examples is None else examples
        with self._precision():
            acc = evaluate_accuracy(
                self.loaded,
                self.param.detach(),
                ex,
                self.verbalizer,
                batch_size=self.config.eval_batch_size,
                max_length=self.config.max_length,
            )
        if examples is None:
            self._val_now = acc
        return acc

    # ---- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.param.detach().to("cpu").clone(),
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "step": self.step_count,
            "epoch": self.epoch,
            "offset": self.offset,
            "seed": self.config.seed,
            "lr": self.lr,
            "num_train": len(self.train),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        prompt = state["prompt"]
        if tuple(prompt.shape) != tuple(self.param.shape):
            raise ValueError(
                f"checkpoint prompt has shape {tuple(prompt.shape)}, expected {tuple(self.param.shape)}"
            )
        if int(state.get("num_train", len(self.train))) != len(self.train):
            raise ValueError("checkpoint was made on a different training set (its size differs)")
        with torch.no_grad():
            self.param.copy_(prompt.to(self.param.device))
        self._val_now = None
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step"])
        self.epoch = int(state["epoch"])
        self.offset = int(state["offset"])
        self.lr = float(state.get("lr", self.lr))
        self._perm_cache = None

    def state_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        return buf.getvalue()

    def save_checkpoint(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(p)
        return p

    @classmethod
    def from_checkpoint(
        cls, loaded: LoadedModel, task: Task, config: TuningConfig, path: str | Path | bytes
    ) -> PromptTrainer:
        src: Any = io.BytesIO(path) if isinstance(path, bytes) else path
        state = torch.load(src, map_location="cpu", weights_only=True)
        trainer = cls(loaded, task, replace(config, init=TensorInit(state["prompt"])))
        trainer.load_state_dict(state)
        return trainer

    # ---- the loop ---------------------------------------------------------------------------------
    def train_to_target(
        self, progress: Callable[[StepResult | None, CurvePoint | None], None] | None = None
    ) -> TrainResult:
        """Step until the validation accuracy reaches ``target_accuracy`` or ``max_steps`` is spent.

        Evaluates where :meth:`eval_due` says -- at a start at step 0 (a warm start may already be at the
        target), every ``eval_every`` steps and at the end of the budget: the service's schedule
        (``runtime.worker``).  A start between two evaluation steps (a race's winner after its race
        steps) is first evaluated at the next one.
        """
        cfg = self.config
        t0 = time.perf_counter()
        curve: list[CurvePoint] = []
        acc, reached = float("nan"), False
        if self.eval_due():
            acc = self.evaluate()
            curve.append(CurvePoint(self.step_count, None, acc, 0.0))
            if progress:
                progress(None, curve[-1])
            reached = cfg.target_accuracy is not None and acc >= cfg.target_accuracy
        losses: list[float] = []
        while not reached and self.step_count < cfg.max_steps:
            r = self.step()
            losses.append(r.loss)
            point = None
            if self.eval_due():
                acc = self.evaluate()
                point = CurvePoint(self.step_count, sum(losses) / len(losses), acc, time.perf_counter() - t0)
                curve.append(point)
                losses = []
                reached = cfg.target_accuracy is not None and acc >= cfg.target_accuracy
            if progress:
                progress(r, point)
        return TrainResult(
            curve=curve,
            reached=reached,
            steps=self.step_count,
            accuracy=acc,
            best_accuracy=max(p.val_accuracy for p in curve),
            wall_s=time.perf_counter() - t0,
        )

    def eval_due(self) -> bool:
        """Whether the trainer evaluates at its current step (``core.slo.eval_due``: every ``eval_every``
        steps, step 0 included, and at the end of its budget -- the service's workers' rule)."""
        return eval_due(self.step_count, self.config.eval_every, self.config.max_steps)

    def metadata(self, **extra: Any) -> dict[str, Any]:
        """What :func:`save_prompt` should record about this trainer's prompt."""
        meta = {
            "model": self.loaded.name,
            "task": self.task.name,
            "labels": self.task.labels,
            "verbalizer": self.verbalizer.describe(),
            "steps": self.step_count,
            "init": self.config.init.spec,
            "num_virtual_tokens": self.config.num_virtual_tokens,
            "embed_dim": self.loaded.embed_dim,
            "max_length": self.config.max_length,
            "description": self.task.description,
        }
        init = self.config.init
        if isinstance(init, TensorInit) and init.meta:  # e.g. the bank entry it started from
            meta.update(init.meta)
            meta["lr"] = self.lr
        meta.update(extra)
        return meta


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
