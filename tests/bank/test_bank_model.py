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


def test_service_warm_start_follows_the_bank_and_the_lr_rule(
    loaded, task, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The service's warm start (RealEngine.warm_start) asks the bank as `tune --init bank:DIR` does: on
    the job's training split only, at the job's max_length; the entry keeps the warm lr only when its probe
    accuracy meets the job's target."""
    import prompttuner.bank as pb
    from prompttuner.runtime.engine import JobPayload
    from prompttuner.runtime.real_engine import RealEngine
    from prompttuner.tuning import resolve_init
    from prompttuner.tuning.trainer import training_split

    (tmp_path / "bank").mkdir()
    (tmp_path / "bank" / "bank.sqlite").touch()  # the engine checks that a bank exists; the choice is faked
    entry = resolve_init("random", loaded, task, num_virtual_tokens=4, seed=5)
    seen: list[dict] = []

    def fake_select_init(bank_dir, model, t, **kw):  # type: ignore[no-untyped-def]
        seen.append(kw)
        return entry, {"entry": {"id": "e1", "task_name": "mr"}, "accuracy": 0.75, "predicted_steps": 3.0}

    monkeypatch.setattr(pb, "select_init", fake_select_init)
    engine = RealEngine()
    out = {}
    for target in (0.7, 0.8):
        job = JobPayload(
            job_id=f"j{target}",
            model=loaded.name,
            train_path=str(shared_data() / "tasks" / "sst2" / "train.jsonl"),
            test_path=None,
            labels=tuple(task.labels),
            max_steps=5,
            target_accuracy=target,
            num_virtual_tokens=4,
            max_length=32,
            max_eval=16,
            bank_dir=str(tmp_path / "bank"),
            tenant="acme",
        )
        out[target] = engine.warm_start(loaded, job)
    assert out[0.7]["lr"] == pytest.approx(0.003)  # the start already meets its target: keep it
    assert out[0.8]["lr"] == pytest.approx(0.03)  # below its target: it must move
    assert out[0.8]["init"] == "bank:e1" and out[0.8]["probe_accuracy"] == 0.75
    train, val = training_split(engine._task(job), 16)
    assert seen[0]["examples"] == train and not any(v in seen[0]["examples"] for v in val)
    assert seen[0]["max_length"] == 32 and seen[0]["tenant"] == "acme"
