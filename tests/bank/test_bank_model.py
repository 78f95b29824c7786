"""The bank on the real bundled LLM: the batched probe equals the engine's loss, and --init bank:DIR works."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from prompttuner.bank import Budget, PromptBank, select_init
from prompttuner.bank.probe import LLMProbe, probe_sample
from prompttuner.config import shared_data

pytestmark = pytest.mark.model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def loaded():  # type: ignore[no-untyped-def]
    from prompttuner.tuning import load_model

    torch.set_num_threads(1)
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def task():  # type: ignore[no-untyped-def]
    from prompttuner.tuning import load_task

    return load_task(shared_data() / "tasks" / "sst2")


def test_batched_probe_matches_engine_loss(loaded, task) -> None:  # type: ignore[no-untyped-def]
    from prompttuner.tuning import prompt_loss, resolve_init

    rows = probe_sample(task.train, Budget(sample_rows=4, max_words=12))
    assert sorted({r.label for r in rows}) == ["negative", "positive"]  # stratified
    prompts = [resolve_init("random", loaded, task, num_virtual_tokens=4, seed=s) for s in (0, 1)]
    probe = LLMProbe(loaded, rows, task.labels, max_length=24)
    got = [sc.loss for sc in probe(prompts)]
    want = [prompt_loss(loaded, p, rows, task.labels, max_length=24) for p in prompts]
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
    # one forward pass gives the accuracy too: the engine's accuracy on the same rows
    from prompttuner.tuning import evaluate_accuracy

    accs = [sc.accuracy for sc in probe.scores(prompts)]
    want_acc = [evaluate_accuracy(loaded, p, rows, probe.verbalizer, max_length=24) for p in prompts]
    assert accs == pytest.approx(want_acc)


def test_select_init_through_resolve_init(loaded, task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from prompttuner.tuning import resolve_init

    bank = PromptBank(tmp_path / "bank")
    text = resolve_init("text", loaded, task, num_virtual_tokens=4)
    rand = resolve_init("random", loaded, task, num_virtual_tokens=4, seed=3)
    ids = [
        bank.add(t, model=loaded.name, task_description=d, labels=["negative", "positive"], task_name=d)
        for t, d in ((text + 0.05 * torch.randn_like(text), "sentiment text"), (rand, "random words"))
    ]
    with pytest.raises(Exception, match="embed_dim"):
        bank.add(torch.zeros(4, 7), model=loaded.name, task_description="x", labels=["a"])
    bank.close()
    # the engine's resolve_init asks the bank (select_init returns (tensor or cold init spec, info))
    chosen, info = select_init(tmp_path / "bank", loaded, task, num_tokens=4)
    assert info["entry"]["id"] in ids
    assert info["probe_evaluations"] == 3  # a bank of two: both probed, and the job's own text init
    # the real probe measures accuracy and loss; the choice ranks by accuracy, then loss
    assert all(p["accuracy"] is not None for p in info["probes"])
    best = min(info["probes"], key=lambda p: (-p["accuracy"], p["loss"]))
    assert (info["entry"]["id"], info["accuracy"], info["loss"]) == (
        best["entry_id"],
        best["accuracy"],
        best["loss"],
    )
    text_score = info["baseline_scores"]["text"]
    via_engine = resolve_init(f"bank:{tmp_path / 'bank'}", loaded, task, num_virtual_tokens=4)
    if (-text_score["accuracy"], text_score["loss"]) <= (-best["accuracy"], best["loss"]):
        # no entry beats the job's own instruction: a cold start from it
        assert chosen == "text" and info["fallback"] == "text" and torch.equal(via_engine, text)
    else:
        assert chosen.shape == (4, loaded.embed_dim) and torch.equal(via_engine, chosen)
