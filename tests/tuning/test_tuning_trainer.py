"""The trainer on the real model, tiny slices: elastic data parallelism and checkpoints are exact."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch

from prompttuner.tuning import (
    ModelNotFoundError,
    PromptTrainer,
    TuningConfig,
    compute_gradient,
    load_model,
    load_prompt,
    load_task,
    predict,
    prompt_loss,
    save_prompt,
)

pytestmark = pytest.mark.model

CFG = dict(num_virtual_tokens=4, batch_size=4, max_length=32, eval_size=4, eval_every=2, seed=3)


def _trainer(loaded: Any, task_dir: Path, **over: Any) -> PromptTrainer:
    task = load_task(task_dir, tokenizer=loaded.tokenizer, max_length=loaded.max_context)
    return PromptTrainer(loaded, task, TuningConfig(**{**CFG, **over}))


def test_unknown_model_lists_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        load_model(str(tmp_path / "no-such-model"))
    msg = str(info.value)
    assert "bundled names" in msg and "smollm2-135m" in msg and "does not exist" in msg and "hub id" in msg


def test_model_is_loaded_once_per_process(loaded: Any) -> None:
    assert load_model("smollm2-135m") is loaded
    assert loaded.embed_dim == 576 and loaded.tokenizer.pad_token_id is not None
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_shards_sum_to_the_full_batch_gradient(loaded: Any, tiny_task_dir: Path) -> None:
    tr = _trainer(loaded, tiny_task_dir)
    batch = [tr.train[i] for i in tr.next_batch()]
    full = compute_gradient(loaded, tr.verbalizer, tr.prompt(), batch, max_length=32)
    parts = [
        compute_gradient(loaded, tr.task.labels, tr.prompt(), s, max_length=32)
        for s in (batch[:1], batch[1:])
    ]
    assert full.n == 4 and sum(p.n for p in parts) == 4
    assert torch.allclose(full.grad, parts[0].grad + parts[1].grad, atol=1e-5, rtol=1e-4)
    assert full.loss_sum == pytest.approx(sum(p.loss_sum for p in parts), rel=1e-5)
    assert full.grad.abs().sum() > 0


def test_elastic_replicas_follow_the_same_trajectory(loaded: Any, tiny_task_dir: Path) -> None:
    runs = []
    for schedule in ([1, 1, 1], [1, 3, 2]):
        tr = _trainer(loaded, tiny_task_dir)
        batches = []
        for n in schedule:
            batches.append(tr.next_batch())
            tr.step(replicas=n)
        runs.append((tr.prompt(), batches))
    base_prompt, base_batches = runs[0]
    for prompt, batches in runs[1:]:
        assert batches == base_batches
        # shards pad to different lengths, so float32 sums differ in the last bits (~1e-5 here); a wrong
        # weighting or a skipped example would show up at the scale of one Adam step (lr = 0.03)
        assert (prompt - base_prompt).abs().max() < 3e-4
    assert not torch.allclose(base_prompt, _trainer(loaded, tiny_task_dir).prompt())  # it did train


def test_resume_from_checkpoint_ends_where_the_uninterrupted_run_ends(
    loaded: Any, tiny_task_dir: Path, tmp_path: Path
) -> None:
    straight = _trainer(loaded, tiny_task_dir)
    for _ in range(4):  # 4 steps of 4 over 12 train rows: crosses an epoch boundary
        straight.step()

    first = _trainer(loaded, tiny_task_dir)
    for _ in range(2):
        first.step()
    ckpt = first.save_checkpoint(tmp_path / "ckpt.pt")
    blob = first.state_bytes()
    del first
    resumed = PromptTrainer.from_checkpoint(loaded, straight.task, TuningConfig(**CFG), ckpt)
    shipped = PromptTrainer.from_checkpoint(loaded, straight.task, TuningConfig(**CFG), blob)
    for tr in (resumed, shipped):
        assert tr.step_count == 2
        for _ in range(2):
            tr.step()
        assert tr.next_batch() == straight.next_batch()
        assert torch.allclose(tr.prompt(), straight.prompt(), atol=1e-5, rtol=1e-4)
    state = torch.load(io.BytesIO(blob), weights_only=True)  # plain tensors and ints only
    assert state["step"] == 2 and state["prompt"].shape == (4, 576)


def test_train_to_target_records_a_curve_and_stops(loaded: Any, tiny_task_dir: Path) -> None:
    tr = _trainer(loaded, tiny_task_dir, max_steps=3, target_accuracy=1.01)
    seen: list[Any] = []
    res = tr.train_to_target(lambda r, p: seen.append((r, p)))
    assert [p.step for p in res.curve] == [0, 2, 3]  # every eval_every steps, and at the end
    assert res.steps == 3 and not res.reached
    assert res.curve[0].train_loss is None and res.curve[1].train_loss is not None
    assert sum(1 for r, _ in seen if r is not None) == 3
    reached = _trainer(loaded, tiny_task_dir, max_steps=4, target_accuracy=0.0).train_to_target()
    assert reached.reached and reached.steps == 0  # already there at step 0: no step taken


def test_warm_start_from_file_uses_lower_lr_and_predict(
    loaded: Any, tiny_task_dir: Path, tmp_path: Path
) -> None:
    tr = _trainer(loaded, tiny_task_dir)
    tr.step()
    path = save_prompt(tmp_path / "p", tr.prompt(), tr.metadata(accuracy=0.5))
    warm = _trainer(loaded, tiny_task_dir, init=str(path))
    assert torch.equal(warm.prompt(), tr.prompt())
    assert warm.lr == pytest.approx(0.003) and tr.lr == pytest.approx(0.03)
    prompt, meta = load_prompt(path)
    assert meta["model"] == "smollm2-135m" and meta["labels"] == ["negative", "positive"]
    labels = predict(loaded, prompt, ["what a wonderful film", "dreadful"], meta["labels"])
    assert len(labels) == 2 and set(labels) <= {"negative", "positive"}
    loss = prompt_loss(loaded, prompt, tr.task.test, meta["labels"])
    assert 0.0 < loss < 10.0
    with pytest.raises(ValueError, match="virtual tokens"):
        _trainer(loaded, tiny_task_dir, init=str(path), num_virtual_tokens=8)


def test_text_init_and_bad_init(loaded: Any, tiny_task_dir: Path) -> None:
    tr = _trainer(loaded, tiny_task_dir, init="text:Is this review positive or negative?")
    ids = loaded.tokenizer(" Is", add_special_tokens=False)["input_ids"]
    assert tr.prompt().shape == (4, 576) and ids
    with pytest.raises(ValueError, match="unknown init"):
        _trainer(loaded, tiny_task_dir, init="nonsense")


def test_bank_init_goes_through_the_bank_hook(
    loaded: Any, tiny_task_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prompttuner.bank as bank
    from prompttuner.tuning import resolve_init

    task = load_task(tiny_task_dir)
    if hasattr(bank, "select_init"):
        monkeypatch.delattr(bank, "select_init")
    with pytest.raises(ValueError, match="needs the Prompt Bank"):
        resolve_init("bank:/somewhere", loaded, task, num_virtual_tokens=4)
    calls: list[Any] = []
    chosen = torch.full((4, 576), 0.5)

    def select_init(bank_dir: str | None, model: Any, t: Any, num_tokens: int, **kw: Any) -> Any:
        calls.append((bank_dir, model, t, num_tokens))
        return chosen, {"entry": "e1"}  # the real hook returns (tensor, info)

    monkeypatch.setattr(bank, "select_init", select_init, raising=False)
    assert torch.equal(resolve_init("bank:/somewhere", loaded, task, num_virtual_tokens=4), chosen)
    assert calls == [("/somewhere", loaded, task, 4)]
    monkeypatch.setattr(
        bank, "select_init", lambda d, m, t, num_tokens, **kw: "text:positive or negative?", raising=False
    )
    assert resolve_init("bank", loaded, task, num_virtual_tokens=4).shape == (4, 576)


def test_bank_init_learning_rate_follows_what_the_bank_answered(
    loaded: Any, tiny_task_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bank entry is a warm start (10x lower lr); the fallback to the job's text init is a cold start."""
    import prompttuner.bank as bank
    from prompttuner.tuning import resolve_init

    n = CFG.get("num_virtual_tokens", 16)
    entry = torch.full((n, loaded.embed_dim), 0.25)
    answers: list[Any] = [
        (entry, {"entry": {"id": "e7", "task_name": "other"}}),
        ("text", {"entry": {"id": "e7", "task_name": "other"}, "fallback": "text"}),
    ]
    monkeypatch.setattr(bank, "select_init", lambda d, m, t, num_tokens, **kw: answers.pop(0), raising=False)
    warm = _trainer(loaded, tiny_task_dir, init="bank:/x")
    cold = _trainer(loaded, tiny_task_dir, init="bank:/x")
    assert warm.kind == "warm" and torch.equal(warm.prompt(), entry)
    assert cold.kind == "text" and torch.equal(
        cold.prompt(), resolve_init("text", loaded, cold.task, num_virtual_tokens=n)
    )
    assert warm.lr == pytest.approx(cold.lr * 0.1)
    assert warm.metadata()["bank_entry"] == "e7" and warm.metadata()["bank_fallback"] is None
    assert cold.metadata()["bank_fallback"] == "text"


def test_bank_start_below_its_target_on_the_probe_takes_the_cold_lr(
    loaded: Any, tiny_task_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bank's entry keeps the warm lr only when its probe accuracy already meets the job's target; and
    the bank's probes read the trainer's training split, never its validation rows."""
    import prompttuner.bank as bank

    n = CFG.get("num_virtual_tokens", 16)
    entry = torch.full((n, loaded.embed_dim), 0.25)
    seen: list[Any] = []
    accuracies = [0.4, 0.9, 0.4]

    def select_init(d: Any, m: Any, t: Any, num_tokens: int, **kw: Any) -> Any:
        seen.append(kw)
        return entry, {"entry": {"id": "e1", "task_name": "other"}, "accuracy": accuracies.pop(0)}

    monkeypatch.setattr(bank, "select_init", select_init, raising=False)
    below = _trainer(loaded, tiny_task_dir, init="bank:/x", target_accuracy=0.8)
    above = _trainer(loaded, tiny_task_dir, init="bank:/x", target_accuracy=0.8)
    no_target = _trainer(loaded, tiny_task_dir, init="bank:/x")
    assert below.lr == pytest.approx(0.03) and below.metadata()["bank_probe_accuracy"] == 0.4
    assert above.lr == pytest.approx(0.003) and no_target.lr == pytest.approx(0.003)
    rows = seen[0]["examples"]
    assert rows == below.train and not any(v in rows for v in below.val)
    assert seen[0]["max_length"] == CFG["max_length"]
