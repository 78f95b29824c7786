"""The pure core of prompt tuning: forward a batch through the frozen LLM with a soft prompt in front.

These functions hold no state beyond their arguments, so the live service can run the shards of one
global batch on different worker processes (:func:`compute_gradient`) and combine the gradients
elsewhere (``PromptTrainer.apply_gradients``): the only thing that crosses a process is the prompt and
its gradient, ``num_virtual_tokens x embed_dim`` floats.

The input is laid out as PEFT prompt tuning does it: ``[virtual tokens][text tokens]``.  Two choices keep
a step cheap on a CPU: each batch is right-padded to its own longest row (right padding also leaves the
real tokens' computation untouched, so a batch split into shards gives the same gradient), and logits are
computed only at the one position that predicts the label (``logits_to_keep``), not over the whole
sequence and vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from prompttuner.tuning.data import Example
from prompttuner.tuning.models import LoadedModel
from prompttuner.tuning.verbalizer import Verbalizer

ANSWER_SUFFIX = "\nAnswer:"
DEFAULT_MAX_LENGTH = 256


@dataclass
class GradResult:
    """Gradient of the *summed* loss over ``n`` examples w.r.t. the prompt (so shards add up exactly)."""

    grad: torch.Tensor  # [num_virtual_tokens, embed_dim], float32, CPU
    loss_sum: float
    n: int


def format_example(ex: Example) -> str:
    if ex.text_a is not None and ex.text_b is not None:
        return f"{ex.text_a}\n{ex.text_b}"
    return ex.text


_VERBALIZERS: dict[tuple[int, tuple[str, ...]], Verbalizer] = {}


def as_verbalizer(loaded: LoadedModel, verbalizer_or_labels: Verbalizer | list[str]) -> Verbalizer:
    if isinstance(verbalizer_or_labels, Verbalizer):
        return verbalizer_or_labels
    key = (id(loaded.tokenizer), tuple(verbalizer_or_labels))
    if key not in _VERBALIZERS:
        _VERBALIZERS[key] = Verbalizer(loaded.tokenizer, list(verbalizer_or_labels))
    return _VERBALIZERS[key]


def encode(loaded: LoadedModel, texts: list[str], max_length: int = DEFAULT_MAX_LENGTH) -> list[list[int]]:
    """Token ids of ``<bos?> text \\nAnswer:``; long texts lose their end, never the answer cue."""
    tok = loaded.tokenizer
    suffix = list(tok(ANSWER_SUFFIX, add_special_tokens=False)["input_ids"])
    bos = [tok.bos_token_id] if getattr(tok, "add_bos_token", False) and tok.bos_token_id is not None else []
    budget = max(1, max_length - len(suffix) - len(bos))
    bodies = tok(texts, add_special_tokens=False)["input_ids"]
    return [bos + list(b[:budget]) + suffix for b in bodies]


def _batch_tensors(ids: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    longest = max(len(r) for r in ids)
    input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), longest), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    lengths = torch.tensor([len(r) for r in ids], dtype=torch.long)
    return input_ids.to(device), mask.to(device), lengths.to(device)


def label_logits(
    loaded: LoadedModel, prompt: torch.Tensor, ids: list[list[int]], verbalizer: Verbalizer
) -> torch.Tensor:
    """Logits of each label's first token at the answer position (float32, on the model's device).

    ``prompt`` ``[n, d]``: one prompt in front of every row, logits ``[len(ids), num_labels]``.
    ``prompt`` ``[g, n, d]``: ``g`` prompts, each in front of every row, in one forward pass of
    ``g * len(ids)`` sequences (a batched probe), logits ``[g * len(ids), num_labels]``, prompt-major.
    """
    model = loaded.model
    dev = loaded.device
    input_ids, mask, lengths = _batch_tensors(ids, int(loaded.tokenizer.pad_token_id), dev)
    emb_layer = model.get_input_embeddings()
    words = emb_layer(input_ids)
    n_virtual = prompt.shape[-2]
    if prompt.dim() == 2:
        soft = prompt.to(device=dev, dtype=words.dtype).unsqueeze(0).expand(len(ids), -1, -1)
    else:
        g, rows = prompt.shape[0], len(ids)
        soft = prompt.to(device=dev, dtype=words.dtype)[:, None].expand(g, rows, n_virtual, prompt.shape[-1])
        soft = soft.reshape(g * rows, n_virtual, -1)
        words, mask, lengths = words.repeat(g, 1, 1), mask.repeat(g, 1), lengths.repeat(g)
    batch = soft.shape[0]
    inputs = torch.cat([soft, words], dim=1)
    full_mask = torch.cat([torch.ones((batch, n_virtual), dtype=mask.dtype, device=dev), mask], dim=1)
    answer_pos = (n_virtual + lengths - 1).unsqueeze(1)  # [B, 1]: the position that predicts the label
    out = model(inputs_embeds=inputs, attention_mask=full_mask, logits_to_keep=answer_pos, use_cache=False)
    logits = out.logits.reshape(batch, -1)  # [B, vocab]
    return logits[:, verbalizer.first_ids.to(dev)].float()


def compute_gradient(
    loaded: LoadedModel,
    verbalizer_or_labels: Verbalizer | list[str],
    prompt: torch.Tensor,
    examples: list[Example],
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> GradResult:
    """Gradient of the summed cross-entropy (restricted to the label words) w.r.t. ``prompt`` only."""
    verbalizer = as_verbalizer(loaded, verbalizer_or_labels)
    if not examples:
        return GradResult(torch.zeros(prompt.shape, dtype=torch.float32), 0.0, 0)
    p = prompt.detach().to(device=loaded.device, dtype=torch.float32).requires_grad_(True)
    ids = encode(loaded, [format_example(e) for e in examples], max_length)
    logits = label_logits(loaded, p, ids, verbalizer)
    target = verbalizer.targets([e.label for e in examples]).to(loaded.device)
    loss = F.cross_entropy(logits, target, reduction="sum")
    (grad,) = torch.autograd.grad(loss, p)
    return GradResult(grad.detach().to("cpu", torch.float32), float(loss.detach()), len(examples))


@torch.no_grad()
def _all_logits(
    loaded: LoadedModel,
    prompt: torch.Tensor,
    texts: list[str],
    verbalizer: Verbalizer,
    batch_size: int,
    max_length: int,
) -> torch.Tensor:
    parts = []
    ids = encode(loaded, texts, max_length)
    # sort by length so each batch pads little; restore the order afterwards
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        parts.append(label_logits(loaded, prompt, [ids[i] for i in chunk], verbalizer).cpu())
    logits = torch.cat(parts) if parts else torch.zeros((0, len(verbalizer.labels)))
    out = torch.empty_like(logits)
    out[torch.tensor(order, dtype=torch.long)] = logits
    return out


def evaluate_accuracy(
    loaded: LoadedModel,
    prompt: torch.Tensor,
    examples: list[Example],
    labels: Verbalizer | list[str],
    *,
    batch_size: int = 16,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> float:
    verbalizer = as_verbalizer(loaded, labels)
    if not examples:
        return 0.0
    logits = _all_logits(
        loaded, prompt, [format_example(e) for e in examples], verbalizer, batch_size, max_length
    )
    return verbalizer.accuracy(logits, [e.label for e in examples])


def prompt_loss(
    loaded: LoadedModel,
    prompt: torch.Tensor,
    examples: list[Example],
    labels: Verbalizer | list[str],
    *,
    batch_size: int = 16,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> float:
    """Mean cross-entropy of the label words under ``prompt`` (no gradient): the Prompt Bank's probe."""
    verbalizer = as_verbalizer(loaded, labels)
    if not examples:
        raise ValueError("prompt_loss needs at least one example")
    logits = _all_logits(
        loaded, prompt, [format_example(e) for e in examples], verbalizer, batch_size, max_length
    )
    return float(F.cross_entropy(logits, verbalizer.targets([e.label for e in examples])))


def predict(
    loaded: LoadedModel,
    prompt: torch.Tensor,
    texts: list[str] | list[Example],
    labels: Verbalizer | list[str],
    *,
    batch_size: int = 16,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> list[str]:
    """The label of each text (restricted argmax over the label words' first tokens)."""
    verbalizer = as_verbalizer(loaded, labels)
    strs = [format_example(t) if isinstance(t, Example) else t for t in texts]
    if not strs:
        return []
    logits = _all_logits(loaded, prompt, strs, verbalizer, batch_size, max_length)
    return [verbalizer.labels[i] for i in logits.argmax(dim=-1).tolist()]


def word_embeddings(loaded: LoadedModel, ids: list[int]) -> torch.Tensor:
    """The input embeddings of ``ids`` as float32 on CPU (used for text and vocab-sample inits)."""
    emb: Any = loaded.model.get_input_embeddings()
    with torch.no_grad():
        t = emb(torch.tensor(ids, dtype=torch.long, device=loaded.device))
    return t.detach().to("cpu", torch.float32)
