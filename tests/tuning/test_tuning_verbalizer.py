"""Label words: first-token collisions are refused; accuracy is a restricted argmax."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from prompttuner.tuning import Verbalizer


class FirstWordTokenizer:
    """Token id = hash of each word, so labels sharing a first word share a first token."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, Any]:
        return {"input_ids": [abs(hash(w)) % 10_000 for w in text.split()]}

    def convert_ids_to_tokens(self, i: int) -> str:
        return f"<{i}>"


def test_collision_is_refused_naming_both_labels() -> None:
    with pytest.raises(ValueError, match=r"labels 'very good' and 'very bad' start with the same token"):
        Verbalizer(FirstWordTokenizer(), ["very good", "very bad"])


def test_restricted_argmax_accuracy() -> None:
    v = Verbalizer(FirstWordTokenizer(), ["neg", "pos", "neutral"])
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert v.accuracy(logits, ["pos", "neg", "neutral", "pos"]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="not one of"):
        v.targets(["other"])


@pytest.mark.model
def test_real_tokenizer_label_words(loaded: Any) -> None:
    v = Verbalizer(loaded.tokenizer, ["entailment", "not_entailment"])
    assert v.words == [" entailment", " not entailment"]
    assert len(set(v.first_ids.tolist())) == 2
