"""Synthetic prompt families and a probe whose right answer is known (shared by the bank tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from prompttuner.bank.store import PromptBank

DIM = 32
TOKENS = 4

FAMILIES = {
    "sentiment": (
        "Classify the sentiment of a movie review.",
        ["negative", "positive"],
        ["a wonderful heartfelt film", "boring and far too long", "the acting was great"],
    ),
    "topic": (
        "Classify the topic of a news article.",
        ["world", "sports", "business", "technology"],
        ["stocks fell as the bank raised rates", "the team won the final match", "new chip released"],
    ),
    "entailment": (
        "Does the first sentence entail the second?",
        ["entailment", "not_entailment"],
        ["a man plays guitar ||| a person makes music", "the cat sleeps ||| the dog runs"],
    ),
}


def family_base(name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    return torch.randn(DIM, generator=g)


def make_prompt(family: str, seed: int, noise: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return family_base(family)[None, :] + noise * torch.randn(TOKENS, DIM, generator=g)


def fill(bank: PromptBank, per_family: int = 3, model: str = "toy", owner: str = "public") -> dict[str, str]:
    """Add ``per_family`` prompts of each family; returns entry id -> family."""
    out = {}
    seed = 0
    for fam, (desc, labels, texts) in FAMILIES.items():
        for _ in range(per_family):
            seed += 1
            eid = bank.add(
                make_prompt(fam, seed),
                model=model,
                task_description=desc,
                labels=labels,
                accuracy=0.8,
                steps=100 + seed,
                owner=owner,
                task_name=fam,
                sample_texts=texts,
            )
            out[eid] = fam
    return out


def family_probe(family: str) -> Callable[[Sequence[torch.Tensor]], list[float]]:
    """Loss = squared distance of the prompt's mean to the family's base: the family's prompts win."""
    base = family_base(family)

    def probe(prompts: Sequence[torch.Tensor]) -> list[float]:
        return [float(((p.float().mean(0) - base) ** 2).sum()) for p in prompts]

    return probe
