"""Fixtures for the engine tests: the real bundled model (loaded once per session) and tiny tasks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from tuning_helpers import write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODEL = "smollm2-135m"

POS = [
    "a gripping , beautiful film",
    "great acting and a lovely story",
    "i loved every minute of it",
    "a warm , funny delight",
    "superb and moving",
    "one of the best films this year",
    "charming and smart",
    "a joy to watch",
    "brilliant performances all round",
    "wonderful fun",
]
NEG = [
    "a dull , lifeless mess",
    "boring and far too long",
    "i hated every minute of it",
    "a tedious , clumsy film",
    "awful and cheap",
    "one of the worst films this year",
    "stupid and lazy",
    "a chore to sit through",
    "terrible acting all round",
    "painfully bad",
]


@pytest.fixture(scope="session")
def loaded() -> Any:
    import torch

    from prompttuner.tuning import load_model

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_model(MODEL)


@pytest.fixture(scope="session")
def tiny_task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-train / 4-test sentiment task in the shared folder format."""
    d = tmp_path_factory.mktemp("tiny_sentiment")
    rows = [{"text": t, "label": "positive"} for t in POS] + [{"text": t, "label": "negative"} for t in NEG]
    train = rows[:8] + rows[10:18]
    test = rows[8:10] + rows[18:20]
    write_jsonl(d / "train.jsonl", train)
    write_jsonl(d / "test.jsonl", test)
    (d / "meta.json").write_text(json.dumps({"name": "tiny", "labels": ["negative", "positive"]}))
    return d
