"""Where a prompt starts: the typed init values of :class:`~prompttuner.tuning.TuningConfig` and the
tensors they stand for.

As PEFT's ``PromptTuningConfig`` (``prompt_tuning_init`` and its ``prompt_tuning_init_text``), an init is a
value with a type, not a string for the trainer to interpret:

- :class:`RandomInit`: embeddings of vocabulary tokens sampled with the trainer's seed;
- :class:`TextInit`: an instruction's token embeddings (the task's description when ``text`` is empty);
- :class:`FileInit`: a saved ``prompt.safetensors`` (a warm start);
- :class:`TensorInit`: a prompt in memory (a warm start, or whatever its maker says it is).  Whoever
  made it may fix its learning rate and say what the prompt file records about it; a warm start from
  the Prompt Bank is one, built by the bank before the trainer (``prompttuner.bank.bank_init``).

:func:`parse_init` reads the command-line form (``random``, ``text``, ``text:<instruction>``, a path) and
``init.spec`` gives it back.  :func:`resolve_init` is the one place where an init becomes a tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from prompttuner.tuning.data import Task
from prompttuner.tuning.engine import word_embeddings
from prompttuner.tuning.models import LoadedModel
from prompttuner.tuning.prompts import PromptFileError, load_prompt

DEFAULT_LR = 0.03
WARM_LR_FACTOR = 0.1  # a reused prompt already scores well at step 0; the random-init lr knocks it off


def default_lr(kind: str) -> float:
    """The learning rate of a start of ``kind`` (an init's ``kind``) when nothing else fixes it.

    Cold starts (``random``, ``text``) take ``DEFAULT_LR``; a warm start (a reused prompt) takes
    ``WARM_LR_FACTOR`` times less, so that a prompt that already scores well is not knocked off.
    """
    return DEFAULT_LR * WARM_LR_FACTOR if kind == "warm" else DEFAULT_LR


@dataclass(frozen=True)
class RandomInit:
    """Embeddings of vocabulary tokens sampled with the seed (PEFT's SAMPLE_VOCAB)."""

    kind: ClassVar[str] = "random"

    @property
    def spec(self) -> str:
        return "random"


@dataclass(frozen=True)
class TextInit:
    """The token embeddings of ``text`` repeated or cut to length (PEFT's TEXT); blank: the task's
    description."""

    text: str = ""
    kind: ClassVar[str] = "text"

    @property
    def spec(self) -> str:
        return f"text:{self.text}" if self.text else "text"


@dataclass(frozen=True)
class FileInit:
    """A saved prompt (``prompt.safetensors`` or its folder): a warm start."""

    path: str | Path
    kind: ClassVar[str] = "warm"

    @property
    def spec(self) -> str:
        return str(self.path)


@dataclass(frozen=True, eq=False)
class TensorInit:
    """A prompt tensor ``[num_virtual_tokens, embed_dim]``, with what its maker decided about it.

    ``lr``: the learning rate to start with (None: :func:`default_lr` of ``kind``; an explicit
    ``TuningConfig.lr`` wins over both).  ``kind``: ``warm`` for a reused prompt, or the cold init the
    tensor is (a maker that fell back to one keeps its cold nature).  ``meta``: what the prompt file
    records about this start (added to ``PromptTrainer.metadata``, with the learning rate; an ``init`` key
    replaces ``tensor``).  ``info``: anything else the maker wants to hand its caller (the trainer does
    not read it).
    """

    tensor: torch.Tensor
    lr: float | None = None
    kind: str = "warm"
    meta: Mapping[str, Any] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        return "tensor"


Init = RandomInit | TextInit | FileInit | TensorInit
INIT_TYPES = (RandomInit, TextInit, FileInit, TensorInit)


def parse_init(spec: str) -> Init:
    """The init that the command-line string ``spec`` names: ``random``, ``text`` (the task's
    description), ``text:<instruction>`` or a path to a prompt file (which must exist)."""
    s = str(spec)
    if s == "random":
        return RandomInit()
    if s == "text" or s.startswith("text:"):
        return TextInit(s[5:] if s.startswith("text:") else "")
    if not Path(s).expanduser().exists():
        raise ValueError(f"unknown init {s!r}: use 'random', 'text:<instruction>' or a path to a prompt file")
    return FileInit(s)


def resolve_init(
    init: Init, loaded: LoadedModel, task: Task, *, num_virtual_tokens: int = 16, seed: int = 0
) -> torch.Tensor:
    """The tensor ``[num_virtual_tokens, embed_dim]`` (float32, CPU) that ``init`` stands for.

    - :class:`RandomInit`: embeddings of vocabulary tokens sampled with ``seed`` (in the embedding's own
      scale, which trains far better than N(0, 1)).
    - :class:`TextInit`: the instruction's token embeddings, repeated or cut to length.
    - :class:`FileInit`, :class:`TensorInit`: the prompt itself, checked against the model and the length.
    """
    n, d = num_virtual_tokens, loaded.embed_dim
    if isinstance(init, TensorInit):
        t = init.tensor.detach().to("cpu", torch.float32)
        if t.dim() != 2 or t.shape[1] != d:
            raise ValueError(f"init tensor has shape {tuple(t.shape)}; {loaded.name} needs [tokens, {d}]")
        if t.shape[0] != n:
            raise ValueError(f"init tensor has {t.shape[0]} virtual tokens, the config asks for {n}")
        return t.clone()
    if isinstance(init, RandomInit):
        g = torch.Generator().manual_seed(seed)
        vocab = int(loaded.model.get_input_embeddings().weight.shape[0])
        special = set(getattr(loaded.tokenizer, "all_special_ids", []) or [])
        ids: list[int] = []
        while len(ids) < n:
            i = int(torch.randint(0, vocab, (1,), generator=g))
            if i not in special:
                ids.append(i)
        return word_embeddings(loaded, ids)
    if isinstance(init, TextInit):
        text = init.text.strip() or task.description
        tok_ids = list(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
        if not tok_ids:
            raise ValueError(f"init text {text!r} encodes to no tokens")
        tok_ids = (tok_ids * math.ceil(n / len(tok_ids)))[:n]
        return word_embeddings(loaded, tok_ids)
    if not isinstance(init, FileInit):
        raise TypeError(
            f"an init is one of RandomInit, TextInit, FileInit, TensorInit (parse_init reads the string "
            f"forms), not {type(init).__name__}"
        )
    path = Path(init.path).expanduser()
    if not path.exists():
        raise ValueError(f"init prompt file {str(init.path)!r} does not exist")
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
