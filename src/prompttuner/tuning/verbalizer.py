"""Label words as the model writes them after the prompt.

A label is scored by the logit of the first token of its word (with a leading space, as it would follow
``Answer:``).  Classification is an argmax restricted to those first tokens, so two labels whose words
start with the same token could never be told apart: they are refused up front.
"""

from __future__ import annotations

from typing import Any

import torch


def label_word(label: str) -> str:
    """The word the model should produce for ``label`` (underscores read as spaces: ``not_entailment``)."""
    return " " + label.replace("_", " ").strip()


class Verbalizer:
    def __init__(self, tokenizer: Any, labels: list[str]) -> None:
        if len(labels) < 2:
            raise ValueError(f"need at least 2 labels, got {labels}")
        self.labels = list(labels)
        self.words = [label_word(lab) for lab in self.labels]
        self.token_ids: list[list[int]] = []
        for lab, word in zip(self.labels, self.words, strict=True):
            ids = list(tokenizer(word, add_special_tokens=False)["input_ids"])
            if not ids:
                raise ValueError(f"label {lab!r} encodes to no tokens")
            self.token_ids.append(ids)
        seen: dict[int, str] = {}
        for lab, ids in zip(self.labels, self.token_ids, strict=True):
            first = ids[0]
            if first in seen:
                tok = tokenizer.convert_ids_to_tokens(first)
                raise ValueError(
                    f"labels {seen[first]!r} and {lab!r} start with the same token {tok!r} (id {first}); "
                    "rename one so their first words differ"
                )
            seen[first] = lab
        self.first_ids = torch.tensor([ids[0] for ids in self.token_ids], dtype=torch.long)
        self.index = {lab: i for i, lab in enumerate(self.labels)}

    def targets(self, labels: list[str]) -> torch.Tensor:
        """Class indices of ``labels`` (positions in ``self.labels``)."""
        try:
            return torch.tensor([self.index[lab] for lab in labels], dtype=torch.long)
        except KeyError as exc:
            raise ValueError(f"label {exc.args[0]!r} is not one of {self.labels}") from None

    def describe(self) -> dict[str, list[int]]:
        return {lab: ids for lab, ids in zip(self.labels, self.token_ids, strict=True)}

    def accuracy(self, label_logits: torch.Tensor, labels: list[str]) -> float:
        """Accuracy of restricted-argmax predictions (``label_logits``: [n, num_labels])."""
        if not labels:
            return 0.0
        pred = label_logits.argmax(dim=-1).cpu()
        return float((pred == self.targets(labels)).float().mean())
