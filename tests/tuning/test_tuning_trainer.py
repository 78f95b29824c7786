"""The trainer on the real model, tiny slices: elastic data parallelism and checkpoints are exact."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch

from prompttuner.tuning import (
    FileInit,
    ModelNotFoundError,
    PromptTrainer,
    TensorInit,
    TextInit,
    TuningConfig,
    compute_gradient,
    load_model,
    load_prompt,
    load_task,
    parse_init,
    predict,
    prompt_loss,
    resolve_init,
    save_prompt,
)

pytestmark = pytest.mark.model

CFG = dict(num_virtual_tokens=4, batch_size=4, max_length=32, eval_size=4, eval_every=2, seed=3)


def _trainer(loaded: Any, task_dir: Path, **over: Any) -> PromptTrainer:
    task = load_task(task_dir, tokenizer=loaded.tokenizer, max_length=loaded.max_context)
    return PromptTrainer(loaded, task, TuningConfig(**{**CFG, **over}))


def test_the_gradient_method_is_the_steps_own(loaded: Any, tiny_task_dir: Path) -> None:
    """``gradient`` (what a data-parallel worker runs on its shard) gives what ``step`` applies."""
    tr = _trainer(loaded, tiny_task_dir)
    twin = _trainer(loaded, tiny_task_dir)
    shards = tr.shard_examples(2)
    tr.apply_gradients([tr.gradient(s) for s in shards])
    twin.step(replicas=2)
    assert torch.equal(tr.prompt(), twin.prompt())
    empty = tr.gradient([])  # a replica with no rows of a small batch
    assert empty.n == 0 and empty.loss_sum == 0.0 and not empty.grad.any()


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
    warm = _trainer(loaded, tiny_task_dir, init=parse_init(str(path)))
    assert warm.config.init == FileInit(str(path)) and warm.metadata()["init"] == str(path)
    assert torch.equal(warm.prompt(), tr.prompt())
    assert warm.lr == pytest.approx(0.003) and tr.lr == pytest.approx(0.03)
    prompt, meta = load_prompt(path)
    assert meta["model"] == "smollm2-135m" and meta["labels"] == ["negative", "positive"]
    labels = predict(loaded, prompt, ["what a wonderful film", "dreadful"], meta["labels"])
    assert len(labels) == 2 and set(labels) <= {"negative", "positive"}
    loss = prompt_loss(loaded, prompt, tr.task.test, meta["labels"])
    assert 0.0 < loss < 10.0
    with pytest.raises(ValueError, match="virtual tokens"):
        _trainer(loaded, tiny_task_dir, init=FileInit(path), num_virtual_tokens=8)


def test_text_init_and_bad_init(loaded: Any, tiny_task_dir: Path) -> None:
    from prompttuner.tuning.engine import word_embeddings

    text = "Is this review positive or negative?"
    tr = _trainer(loaded, tiny_task_dir, init=TextInit(text))
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 4 and torch.equal(tr.prompt(), word_embeddings(loaded, ids[:4]))
    assert tr.kind == "text" and tr.lr == pytest.approx(0.03) and tr.metadata()["init"] == f"text:{text}"
    own = resolve_init(TextInit(), loaded, tr.task, num_virtual_tokens=4)  # blank: the task's description
    described = resolve_init(TextInit(tr.task.description), loaded, tr.task, num_virtual_tokens=4)
    assert torch.equal(own, described)
    with pytest.raises(TypeError, match="parse_init"):
        _trainer(loaded, tiny_task_dir, init="random")  # a string is not an init
    with pytest.raises(ValueError, match="does not exist"):
        _trainer(loaded, tiny_task_dir, init=FileInit("/no/such/prompt.safetensors"))


def test_a_tensor_init_starts_where_its_maker_said(loaded: Any, tiny_task_dir: Path) -> None:
    """A ``TensorInit`` is a warm start at the warm lr unless its maker fixed the lr; its kind and the
    metadata it records are its maker's (a Prompt Bank that fell back to the job's text init hands over a
    cold start); an explicit ``TuningConfig.lr`` wins over all."""
    n = CFG["num_virtual_tokens"]
    t = torch.full((n, loaded.embed_dim), 0.25)
    plain = _trainer(loaded, tiny_task_dir, init=TensorInit(t))
    assert plain.kind == "warm" and plain.lr == pytest.approx(0.003) and torch.equal(plain.prompt(), t)
    assert plain.metadata()["init"] == "tensor" and "lr" not in plain.metadata()
    made = TensorInit(t, lr=0.03, kind="text", meta={"init": "bank:/x", "bank_entry": "e7"}, info={"x": 1})
    tr = _trainer(loaded, tiny_task_dir, init=made)
    assert tr.kind == "text" and tr.lr == pytest.approx(0.03) and torch.equal(tr.prompt(), t)
    meta = tr.metadata(accuracy=0.5)
    assert (meta["init"], meta["bank_entry"], meta["lr"], meta["accuracy"]) == ("bank:/x", "e7", 0.03, 0.5)
    assert _trainer(loaded, tiny_task_dir, init=made, lr=0.01).lr == pytest.approx(0.01)
    with pytest.raises(ValueError, match="virtual tokens"):
        _trainer(loaded, tiny_task_dir, init=TensorInit(torch.zeros(n + 1, loaded.embed_dim)))
