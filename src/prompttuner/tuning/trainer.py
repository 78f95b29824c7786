"""PromptTrainer: one prompt-tuning job, steppable, elastic and checkpointable.

The trainable parameter is PEFT's prompt-tuning embedding (``peft.PromptEmbedding``); the forward pass
is the pure :mod:`prompttuner.tuning.engine`.  A step draws the next global batch (a deterministic
function of the seed and the data position), splits it into ``replicas`` shards, computes each shard's
gradient and applies their weighted average.  Because the gradient of a sum is the sum of the gradients,
the result does not depend on how many replicas ran the step: a job can grow, shrink or move between
workers mid-run and follow the same trajectory.  Everything needed to continue (prompt, optimizer,
step, data position) is in :meth:`PromptTrainer.state_dict`: kilobytes of plain tensors and ints.
"""

from __future__ import annotations

import io
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from peft import PromptEmbedding, PromptTuningConfig, PromptTuningInit, TaskType

from prompttuner.tuning.data import Task
from prompttuner.tuning.engine import (
    DEFAULT_MAX_LENGTH,
    GradResult,
    compute_gradient,
    evaluate_accuracy,
    word_embeddings,
)
from prompttuner.tuning.models import LoadedModel
from prompttuner.tuning.prompts import PromptFileError, load_prompt
from prompttuner.tuning.verbalizer import Verbalizer

DEFAULT_LR = 0.03
WARM_LR_FACTOR = 0.1  # a reused prompt already scores well at step 0; the random-init lr knocks it off


def start_lr(kind: str, bank_info: dict[str, Any] | None = None, target: float | None = None) -> float:
    """The default learning rate for a start of ``kind`` (``init_kind``).

    Cold starts (random, text) take ``DEFAULT_LR``.  A warm start (a reused prompt) takes
    ``WARM_LR_FACTOR`` times less, so that a prompt that already scores well is not knocked off, *unless*
    it is the Prompt Bank's choice and its probe accuracy on the job's own rows is below the job's
    target: that prompt must move anyway, and at the warm rate it moves too slowly
    (``benchmarks/results/bank_speedup_lossprobe.md``: such starts took 2-5x the steps of random init).
    """
    if kind != "warm":
        return DEFAULT_LR
    acc = (bank_info or {}).get("accuracy")
    if acc is not None and target is not None and acc < target:
        return DEFAULT_LR
    return DEFAULT_LR * WARM_LR_FACTOR


@dataclass
class TuningConfig:
    num_virtual_tokens: int = 16
    lr: float | None = None  # None: 0.03, or 0.003 for a warm start (a tensor or a prompt file)
    batch_size: int = 8
    seed: int = 0
    max_length: int = DEFAULT_MAX_LENGTH
    eval_every: int = 10
    eval_size: int = 64  # validation rows held out from train (fewer when train is small)
    target_accuracy: float | None = None
    max_steps: int = 200
    init: Any = "random"  # "random" | "text:<instruction>" | path to prompt.safetensors | torch.Tensor
    device: str | None = None  # None: the model's device
    dtype: str | None = None  # None: the model's dtype; "bf16" runs the forward in bfloat16 (CUDA)
    eval_batch_size: int = 32
    bank_tenant: str | None = None  # a bank init may also use this tenant's private entries (None: public)


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


def init_kind(spec: Any) -> str:
    """``random``, ``text``, ``bank`` or ``warm`` (a tensor or a prompt file)."""
    if isinstance(spec, torch.Tensor):
        return "warm"
    s = str(spec)
    if s == "random":
        return "random"
    if s == "text" or s.startswith("text:"):
        return "text"
    if s == "bank" or s.startswith("bank:"):
        return "bank"
    return "warm"


def bank_choice(
    spec: str,
    loaded: LoadedModel,
    task: Task,
    *,
    num_virtual_tokens: int = 16,
    examples: list[Any] | None = None,
    max_length: int | None = None,
    tenant: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """``bank:<dir>`` (or ``bank``) -> ``(tensor or another init spec, info)`` from the Prompt Bank's hook
    ``prompttuner.bank.select_init(dir_or_None, loaded, task, num_tokens=..., examples=..., max_length=...,
    tenant=...)``; ``examples``: the rows its probes may read (the trainer's training split: never its
    validation rows); ``tenant``: whose private entries are candidates too."""
    try:
        from prompttuner import bank
    except ImportError:  # pragma: no cover - the package always exists in this project
        bank = None  # type: ignore[assignment]
    select = getattr(bank, "select_init", None)
    if select is None:
        raise ValueError(
            "init 'bank:...' needs the Prompt Bank (prompttuner.bank.select_init), not available"
        )
    bank_dir = spec[5:] if spec.startswith("bank:") else None
    kw: dict[str, Any] = {"examples": examples} if examples is not None else {}
    if max_length is not None:
        kw["max_length"] = max_length
    if tenant is not None:
        kw["tenant"] = tenant
    chosen = select(bank_dir, loaded, task, num_tokens=num_virtual_tokens, **kw)
    info: dict[str, Any] = {}
    if isinstance(chosen, tuple):  # select_init returns (tensor or spec, info)
        chosen, info = chosen
    if isinstance(chosen, str) and init_kind(chosen) == "bank":
        raise ValueError("the Prompt Bank returned another bank spec")
    return chosen, dict(info or {})


def resolve_init(
    spec: Any, loaded: LoadedModel, task: Task, *, num_virtual_tokens: int = 16, seed: int = 0
) -> torch.Tensor:
    """The one place where init specs become tensors [num_virtual_tokens, embed_dim] (float32, CPU).

    - ``random``: embeddings of vocabulary tokens sampled with ``seed`` (PEFT's SAMPLE_VOCAB; in the
      embedding's own scale, which trains far better than N(0, 1)).
    - ``text:<instruction>`` (``text`` alone uses the task's description): the instruction's token
      embeddings, repeated or cut to length (as PEFT's TEXT init).
    - a path to a ``prompt.safetensors`` (or its folder), or a tensor: a warm start.
    - ``bank:<dir>`` (or ``bank``): calls ``prompttuner.bank.select_init(dir_or_None, loaded, task)``,
      which returns a tensor or another init spec (e.g. ``random`` when the bank has nothing close).
    """
    n, d = num_virtual_tokens, loaded.embed_dim
    if isinstance(spec, torch.Tensor):
        t = spec.detach().to("cpu", torch.float32)
        if t.dim() != 2 or t.shape[1] != d:
            raise ValueError(f"init tensor has shape {tuple(t.shape)}; {loaded.name} needs [tokens, {d}]")
        if t.shape[0] != n:
            raise ValueError(f"init tensor has {t.shape[0]} virtual tokens, the config asks for {n}")
        return t.clone()
    s = str(spec)
    kind = init_kind(s)
    if kind == "random":
        g = torch.Generator().manual_seed(seed)
        vocab = int(loaded.model.get_input_embeddings().weight.shape[0])
        special = set(getattr(loaded.tokenizer, "all_special_ids", []) or [])
        ids: list[int] = []
        while len(ids) < n:
            i = int(torch.randint(0, vocab, (1,), generator=g))
            if i not in special:
                ids.append(i)
        return word_embeddings(loaded, ids)
    if kind == "text":
        text = s[5:].strip() if s.startswith("text:") else ""
        text = text or task.description
        tok_ids = list(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
        if not tok_ids:
            raise ValueError(f"init text {text!r} encodes to no tokens")
        tok_ids = (tok_ids * math.ceil(n / len(tok_ids)))[:n]
        return word_embeddings(loaded, tok_ids)
    if kind == "bank":
        chosen, _ = bank_choice(s, loaded, task, num_virtual_tokens=n)
        return resolve_init(chosen, loaded, task, num_virtual_tokens=n, seed=seed)
    path = Path(s).expanduser()
    if not path.exists():
        raise ValueError(
            f"unknown init {s!r}: use 'random', 'text:<instruction>', 'bank:<dir>' or a path to a prompt file"
        )
    try:
        t, meta = load_prompt(path)
    except PromptFileError as exc:
        raise ValueError(str(exc)) from None
    if t.shape[1] != d:
        raise ValueError(
            f"{path}: prompt was tuned for {meta.get('model', '?')} (dim {t.shape[1]}); {loaded.name} has {d}"
        )
    if t.shape[0] != n:
        raise ValueError(f"{path}: prompt has {t.shape[0]} virtual tokens, the config asks for {n}")
    return t.to(torch.float32)


def _validation_split(labels: list[str], eval_size: int) -> tuple[list[int], list[int]]:
    """Held-out validation indices: stratified by label and independent of the training seed.

    Stratified because the validation set is small (tens of rows): an unlucky draw (18 of 24 rows of one
    class on a balanced task) would move the measured accuracy, and any target set from it, by a lot.
    """
    n = len(labels)
    k = min(eval_size, n // 4)
    rng = random.Random(1234)
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    for g in groups.values():
        rng.shuffle(g)
    # largest-remainder quotas proportional to each label's share
    exact = {lab: k * len(g) / n for lab, g in groups.items()} if n else {}
    quota = {lab: int(x) for lab, x in exact.items()}
    for lab in sorted(exact, key=lambda x: (quota[x] - exact[x], x))[: k - sum(quota.values())]:
        quota[lab] += 1
    val = sorted(i for lab, g in groups.items() for i in g[: quota[lab]])
    held = set(val)
    return [i for i in range(n) if i not in held], val


def training_split(task: Task, eval_size: int) -> tuple[list[Any], list[Any]]:
    """``(train, validation)`` rows of ``task`` as a trainer with ``eval_size`` splits them."""
    train_idx, val_idx = _validation_split([e.label for e in task.train], eval_size)
    return [task.train[i] for i in train_idx], [task.train[i] for i in val_idx]


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
        spec: Any = config.init
        self.init_info: dict[str, Any] = {}  # the bank's choice (entry, probes, fallback), for bank inits
        if init_kind(spec) == "bank":
            # resolve first: the bank may answer with a cold init (its fallback), which keeps the cold lr
            spec, self.init_info = bank_choice(
                spec,
                loaded,
                task,
                num_virtual_tokens=config.num_virtual_tokens,
                examples=self.train,
                max_length=config.max_length,
                tenant=config.bank_tenant,
            )
        self.kind = init_kind(spec)
        init = resolve_init(
            spec, loaded, task, num_virtual_tokens=config.num_virtual_tokens, seed=config.seed
        )
        self.lr: float = (
            config.lr
            if config.lr is not None
            else start_lr(self.kind, self.init_info, config.target_accuracy)
        )
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
            self.prompt_encoder.embedding.weight.copy_(init.to(loaded.device))
        self.param: torch.Tensor = self.prompt_encoder.embedding.weight
        self.optimizer = torch.optim.AdamW([self.param], lr=self.lr, weight_decay=0.0)
        self.step_count = 0
        self.epoch = 0
        self.offset = 0
        self._perm_cache: tuple[int, list[int]] | None = None

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

    def _grad(self, examples: list[Any]) -> GradResult:
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else _null()
        with ctx:
            return compute_gradient(
                self.loaded, self.verbalizer, self.param.detach(), examples, max_length=self.config.max_length
            )

    def step(self, replicas: int = 1) -> StepResult:
        t0 = time.perf_counter()
        grads = [self._grad(shard) for shard in self.shard_examples(replicas)]
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
        self.step_count += 1
        _, self.epoch, self.offset = self._walk(self.config.batch_size)
        return sum(r.loss_sum for r in results) / total

    def evaluate(self, examples: list[Any] | None = None) -> float:
        ex = self.val if examples is None else examples
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else _null()
        with ctx:
            return evaluate_accuracy(
                self.loaded,
                self.param.detach(),
                ex,
                self.verbalizer,
                batch_size=self.config.eval_batch_size,
                max_length=self.config.max_length,
            )

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
        trainer = cls(loaded, task, replace(config, init=state["prompt"]))
        trainer.load_state_dict(state)
        return trainer

    # ---- the loop ---------------------------------------------------------------------------------
    def train_to_target(
        self, progress: Callable[[StepResult | None, CurvePoint | None], None] | None = None
    ) -> TrainResult:
        """Step until the validation accuracy reaches ``target_accuracy`` or ``max_steps`` is spent.

        Evaluates at the start (a warm start may already be there) and every ``eval_every`` steps.
        """
        cfg = self.config
        t0 = time.perf_counter()
        curve: list[CurvePoint] = []
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
            if self.step_count % cfg.eval_every == 0 or self.step_count >= cfg.max_steps:
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

    def metadata(self, **extra: Any) -> dict[str, Any]:
        """What :func:`save_prompt` should record about this trainer's prompt."""
        meta = {
            "model": self.loaded.name,
            "task": self.task.name,
            "labels": self.task.labels,
            "verbalizer": self.verbalizer.describe(),
            "steps": self.step_count,
            "init": self.config.init if isinstance(self.config.init, str) else "tensor",
            "num_virtual_tokens": self.config.num_virtual_tokens,
            "embed_dim": self.loaded.embed_dim,
            "max_length": self.config.max_length,
            "description": self.task.description,
        }
        if self.init_info:  # a bank init: which entry it started from, or that it fell back to a cold init
            entry = self.init_info.get("entry") or {}
            meta["bank_entry"] = entry.get("id") if isinstance(entry, dict) else str(entry)
            meta["bank_entry_task"] = entry.get("task_name") if isinstance(entry, dict) else None
            meta["bank_fallback"] = self.init_info.get("fallback")
            meta["bank_probe_accuracy"] = self.init_info.get("accuracy")
            meta["lr"] = self.lr
        meta.update(extra)
        return meta


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
