"""dtype "auto": bf16 on a CPU with AMX-BF16, else fp32; the default stays fp32 (see DEFAULT_DTYPE)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from prompttuner.tuning.models import DEFAULT_DTYPE, DTYPE_ENV, _resolve_dtype, auto_dtype, cpu_flags

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def amx() -> frozenset[str]:
    return frozenset({"fpu", "avx512f", "amx_tile", "amx_bf16", "amx_int8"})


def no_amx() -> frozenset[str]:
    return frozenset({"fpu", "avx2", "avx512f", "avx512_bf16"})  # bf16 instructions but no AMX tiles


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DTYPE_ENV, raising=False)


def test_auto_is_bf16_on_an_amx_cpu() -> None:
    assert auto_dtype(CPU, amx) is torch.bfloat16
    assert _resolve_dtype("auto", CPU, amx) is torch.bfloat16


def test_the_default_stays_fp32_even_with_amx() -> None:
    # benchmarks/results/bf16_cpu.md: bf16 converged worse than fp32, so it is opt-in
    assert DEFAULT_DTYPE == "fp32"
    assert _resolve_dtype(None, CPU, amx) is torch.float32


def test_auto_is_fp32_without_amx() -> None:
    assert auto_dtype(CPU, no_amx) is torch.float32
    assert _resolve_dtype(None, CPU, no_amx) is torch.float32
    assert _resolve_dtype("auto", CPU, no_amx) is torch.float32
    assert _resolve_dtype("auto", CPU, lambda: frozenset()) is torch.float32


def test_auto_keeps_fp32_weights_on_cuda() -> None:
    # on CUDA bf16 stays opt-in (--dtype bf16 = autocast); the flag reader is not even asked
    def boom() -> frozenset[str]:
        raise AssertionError("CPU flags read for a CUDA device")

    assert auto_dtype(CUDA, boom) is torch.float32


def test_explicit_dtype_and_env_override_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _resolve_dtype("fp32", CPU, amx) is torch.float32
    assert _resolve_dtype("float32", CPU, amx) is torch.float32
    assert _resolve_dtype("bf16", CPU, no_amx) is torch.bfloat16
    monkeypatch.setenv(DTYPE_ENV, "fp32")
    assert _resolve_dtype(None, CPU, amx) is torch.float32
    assert _resolve_dtype("bf16", CPU, amx) is torch.bfloat16  # an explicit choice beats the env
    monkeypatch.setenv(DTYPE_ENV, "auto")
    assert _resolve_dtype(None, CPU, amx) is torch.bfloat16
    assert _resolve_dtype(None, CPU, no_amx) is torch.float32
    monkeypatch.setenv(DTYPE_ENV, "bf16")
    assert _resolve_dtype(None, CPU, no_amx) is torch.bfloat16
    monkeypatch.setenv(DTYPE_ENV, "")
    assert _resolve_dtype(None, CPU, no_amx) is torch.float32


def test_unknown_dtype_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown dtype"):
        _resolve_dtype("int3", CPU, amx)
    monkeypatch.setenv(DTYPE_ENV, "half-ish")
    with pytest.raises(ValueError, match="unknown dtype"):
        _resolve_dtype(None, CPU, amx)


def test_cpu_flags_reads_a_set() -> None:
    flags = cpu_flags()
    assert isinstance(flags, frozenset)
    assert all(isinstance(f, str) and " " not in f for f in flags)


def test_a_bf16_model_tunes_with_an_fp32_prompt(tmp_path: Path) -> None:
    from prompttuner.tuning import PromptTrainer, TuningConfig, load_model, load_task

    rows = [{"text": f"great film {i}", "label": "positive"} for i in range(6)]
    rows += [{"text": f"awful film {i}", "label": "negative"} for i in range(6)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_model("smollm2-135m", dtype="bf16")
    assert loaded.dtype is torch.bfloat16
    cfg = TuningConfig(num_virtual_tokens=4, batch_size=4, eval_size=4, max_length=16, max_steps=2)
    trainer = PromptTrainer(loaded, load_task(tmp_path, labels=["negative", "positive"]), cfg)
    losses = [trainer.step().loss for _ in range(2)]
    assert all(math.isfinite(x) for x in losses)
    assert trainer.prompt().dtype is torch.float32  # the tuned prompt and AdamW stay fp32
    assert 0.0 <= trainer.evaluate() <= 1.0
