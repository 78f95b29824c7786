"""The model cache is written atomically: a crash leaves nothing, a lost race leaves the winner's copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prompttuner.tuning import models


class FakeConfig:
    def __init__(self) -> None:
        self.quantization_config = {"quant_method": "gguf"}


class FakeModel:
    def __init__(self, fail: bool = False) -> None:
        self.config = FakeConfig()
        self.hf_quantizer: Any = object()
        self.fail = fail

    def save_pretrained(self, path: Path) -> None:
        path.mkdir(parents=True)
        (path / "config.json").write_text("{}")
        if self.fail:
            raise KeyboardInterrupt  # interrupted mid-save
        (path / "model.safetensors").write_text("weights")


class FakeTokenizer:
    def save_pretrained(self, path: Path) -> None:
        (path / "tokenizer.json").write_text("{}")


def test_cache_write_is_complete_and_drops_the_quantizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTTUNER_CACHE", str(tmp_path))
    m = FakeModel()
    models._write_cache("m", m, FakeTokenizer())
    final = tmp_path / "models" / "m"
    assert models._cache_complete(final) and (final / "model.safetensors").is_file()
    assert m.hf_quantizer is None and not hasattr(m.config, "quantization_config")
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["m"]  # no temp folder left


def test_interrupted_save_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTTUNER_CACHE", str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        models._write_cache("m", FakeModel(fail=True), FakeTokenizer())
    assert list((tmp_path / "models").iterdir()) == []


def test_losing_the_race_keeps_the_winners_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTTUNER_CACHE", str(tmp_path))
    models._write_cache("m", FakeModel(), FakeTokenizer())
    final = tmp_path / "models" / "m"
    (final / "winner").write_text("first")
    models._write_cache("m", FakeModel(), FakeTokenizer())  # a second process finishing later
    assert (final / "winner").read_text() == "first" and models._cache_complete(final)
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["m"]


@pytest.mark.slow
def test_gemma3_270m_loads_offline_and_tunes(tiny_task_dir: Path) -> None:
    """The second bundled model: assembled from its part packages, de-quantised, cached, and trainable.

    Slow (the first load converts the GGUF, ~2 min on 2 cores): ``pytest -m slow -k gemma3``.
    """
    import torch

    from prompttuner.tuning import PromptTrainer, TuningConfig, load_model, load_task

    loaded = load_model("gemma3-270m")
    assert loaded.name == "gemma3-270m" and loaded.embed_dim == 640
    task = load_task(tiny_task_dir, tokenizer=loaded.tokenizer, max_length=loaded.max_context)
    cfg = TuningConfig(num_virtual_tokens=4, batch_size=4, max_length=32, eval_size=4, seed=0)
    trainer = PromptTrainer(loaded, task, cfg)
    before = trainer.prompt().clone()
    res = trainer.step()
    assert res.loss > 0 and not torch.equal(trainer.prompt(), before)  # real gradients reach the prompt
    assert 0.0 <= trainer.evaluate() <= 1.0
