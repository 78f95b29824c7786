"""Probes: the accuracy and loss of a job's own sample under candidate prompts, on the job's model (no
gradient).

The sample is small and fixed per job (``Budget.sample_rows`` rows, stratified by label; texts may be cut
to ``Budget.max_words`` words, which keeps their start, the part that says what a text is).  Candidates are
evaluated *together*: one forward pass holds every (prompt, row) pair, because on a CPU a batch of
``prompts x rows`` sequences runs at several times the throughput of ``prompts`` separate small batches.
The forward pass is the engine's own (:func:`prompttuner.tuning.engine.label_logits` with a batch of
prompts), so the layout, ``[prompt][text\\nAnswer:]``, and the loss, cross-entropy over the job's label
words at the answer position, are those of :func:`prompttuner.tuning.prompt_loss`; ``tests/bank`` checks
they agree.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from prompttuner.bank.select import Budget, ProbeScore
from prompttuner.tuning.engine import as_verbalizer, encode, format_example, label_logits


def probe_sample(examples: Sequence[Any], budget: Budget) -> list[Any]:
    """``budget.sample_rows`` examples, round-robin over labels (so every label word is probed)."""
    rng = random.Random(budget.seed)
    by_label: dict[str, list[Any]] = {}
    for ex in examples:
        by_label.setdefault(ex.label, []).append(ex)
    pools = [rng.sample(v, len(v)) for _, v in sorted(by_label.items())]
    out: list[Any] = []
    while len(out) < budget.sample_rows and any(pools):
        for pool in pools:
            if pool and len(out) < budget.sample_rows:
                out.append(pool.pop())
    return out if budget.max_words is None else [_cut(ex, budget.max_words) for ex in out]


def _cut(ex: Any, max_words: int) -> Any:
    from dataclasses import replace

    if getattr(ex, "text_a", None) is not None and getattr(ex, "text_b", None) is not None:
        half = max(1, max_words // 2)
        return replace(ex, text_a=cut_to(ex.text_a, half), text_b=cut_to(ex.text_b, half))
    return replace(ex, text=cut_to(ex.text, max_words))


def cut_to(s: str, n: int) -> str:
    words = s.split()
    return s if len(words) <= n else " ".join(words[:n])


class LLMProbe:
    """Batched ``prompt_loss`` and accuracy over many prompts for one job sample (a :data:`ProbeFn`)."""

    def __init__(
        self,
        loaded: Any,
        examples: Sequence[Any],
        labels: Sequence[str],
        *,
        max_length: int = 64,
        max_batch_rows: int = 64,
    ) -> None:
        if not examples:
            raise ValueError("a probe needs at least one example of the job")
        self.loaded = loaded
        self.verbalizer = as_verbalizer(loaded, list(labels))
        self.ids = encode(loaded, [format_example(e) for e in examples], max_length)
        self.targets = self.verbalizer.targets([e.label for e in examples])
        self.max_batch_rows = max_batch_rows
        self.evaluations = 0

    @property
    def rows(self) -> int:
        return len(self.ids)

    def split(self, first: int) -> tuple[LLMProbe, LLMProbe | None]:
        """Two probes over the first ``first`` rows of the sample and over the rest (None when none are
        left): the race over rows (``Budget.first_rows``).  The sample is round-robin over labels, so the
        first rows hold every label when ``first`` >= the number of labels."""
        k = max(1, min(first, self.rows))
        return self._part(0, k), (self._part(k, self.rows) if k < self.rows else None)

    def _part(self, a: int, b: int) -> LLMProbe:
        p = object.__new__(LLMProbe)
        p.loaded, p.verbalizer, p.max_batch_rows, p.evaluations = (
            self.loaded,
            self.verbalizer,
            self.max_batch_rows,
            0,
        )
        p.ids, p.targets = self.ids[a:b], self.targets[a:b]
        return p

    @torch.no_grad()
    def logits(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Label-word logits ``[len(prompts), rows, labels]`` of the sample under each prompt (CPU)."""
        loaded = self.loaded
        rows = len(self.ids)
        if not prompts:
            return torch.zeros((0, rows, len(self.verbalizer.first_ids)))
        for p in prompts:
            if p.ndim != 2 or p.shape[1] != loaded.embed_dim:
                raise ValueError(
                    f"prompt of shape {tuple(p.shape)} does not fit {loaded.name} "
                    f"(embed_dim {loaded.embed_dim})"
                )
        per_batch = max(1, self.max_batch_rows // rows)
        dtype = loaded.model.get_input_embeddings().weight.dtype
        out_all: list[torch.Tensor] = []
        for s in range(0, len(prompts), per_batch):
            group = prompts[s : s + per_batch]
            if any(p.shape[0] != group[0].shape[0] for p in group):  # mixed lengths: one at a time
                out_all.extend(self.logits([p]) for p in group)
                continue
            soft = torch.stack([p.to(loaded.device, dtype) for p in group])  # [g, n, d]
            got = label_logits(loaded, soft, self.ids, self.verbalizer)  # [g * rows, labels]
            out_all.append(got.cpu().reshape(len(group), rows, -1))
            self.evaluations += len(group)
        return torch.cat(out_all)

    def scores(self, prompts: Sequence[torch.Tensor]) -> list[ProbeScore]:
        """Loss and accuracy of the sample under each prompt (one forward pass gives both)."""
        lg = self.logits(prompts)
        return [
            ProbeScore(
                loss=float(F.cross_entropy(x, self.targets)),
                accuracy=float((x.argmax(-1) == self.targets).float().mean()),
            )
            for x in lg
        ]

    def row_losses(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Each sample row's label-word cross-entropy under each prompt, ``[len(prompts), rows]``: what a
        paired comparison of two starts on the same rows needs."""
        lg = self.logits(prompts)
        return torch.stack([F.cross_entropy(x, self.targets, reduction="none") for x in lg])

    def __call__(self, prompts: Sequence[torch.Tensor]) -> list[ProbeScore]:
        return self.scores(prompts)


def make_probe(
    loaded: Any,
    task: Any,
    budget: Budget | None = None,
    max_length: int = 64,
    examples: Sequence[Any] | None = None,
) -> LLMProbe:
    """The probe for ``task`` (a sample of its own rows, ``examples`` or its training data, with its own
    label words) on ``loaded``."""
    b = budget or Budget()
    rows = task.train if examples is None else examples
    return LLMProbe(loaded, probe_sample(rows, b), task.labels, max_length=max_length)
