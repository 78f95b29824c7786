"""Prompt files: round trip with metadata; corrupt or foreign files give a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from prompttuner.tuning import PromptFileError, load_prompt, save_prompt


def test_round_trip_keeps_tensor_and_metadata(tmp_path: Path) -> None:
    t = torch.randn(4, 8)
    meta = {"model": "m", "labels": ["a", "b"], "steps": 3, "accuracy": 0.75, "verbalizer": {"a": [1]}}
    p = save_prompt(tmp_path / "out", t, meta)
    assert p.name == "prompt.safetensors"
    t2, meta2 = load_prompt(tmp_path / "out")
    assert torch.equal(t, t2)
    assert meta2["labels"] == ["a", "b"] and meta2["steps"] == 3 and meta2["verbalizer"] == {"a": [1]}
    assert meta2["num_virtual_tokens"] == 4 and meta2["embed_dim"] == 8


def test_corrupt_and_foreign_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(PromptFileError, match="not a readable safetensors file"):
        load_prompt(bad)
    other = tmp_path / "other.safetensors"
    save_file({"weights": torch.zeros(2, 2)}, str(other))
    with pytest.raises(PromptFileError, match="has no 'prompt' tensor"):
        load_prompt(other)
    with pytest.raises(PromptFileError, match="no such prompt file"):
        load_prompt(tmp_path / "missing")
