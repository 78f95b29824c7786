"""Bank entries as callers see them (:class:`Entry`) and as they hand them in (:class:`NewEntry`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from prompttuner.bank.errors import BankError
from prompttuner.bank.tables import PUBLIC, EntryRow


@dataclass(frozen=True)
class Entry:
    """One prompt in the bank, as callers see it (the tensor is loaded separately, on demand)."""

    id: str
    model: str
    embed_dim: int
    num_tokens: int
    task_name: str
    task_description: str
    labels: tuple[str, ...]
    accuracy: float | None
    steps: int | None
    created_at: float
    owner: str
    source_job: str | None
    cluster_id: int | None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["labels"] = list(self.labels)
        d["extra"] = dict(self.extra)
        return d

    @staticmethod
    def from_row(r: EntryRow) -> Entry:
        return Entry(
            id=r.id,
            model=r.model,
            embed_dim=r.embed_dim,
            num_tokens=r.num_tokens,
            task_name=r.task_name,
            task_description=r.task_description,
            labels=tuple(json.loads(r.labels_json)),
            accuracy=r.accuracy,
            steps=r.steps,
            created_at=r.created_at,
            owner=r.owner,
            source_job=r.source_job,
            cluster_id=r.cluster_id,
            extra=json.loads(r.extra_json or "{}"),
        )


@dataclass
class NewEntry:
    """Everything :meth:`PromptBank.add_many` needs for one entry (``add`` builds one of these)."""

    tensor: torch.Tensor
    model: str
    task_description: str
    labels: Sequence[str]
    accuracy: float | None = None
    steps: int | None = None
    owner: str = PUBLIC
    task_name: str = ""
    source_job: str | None = None
    sample_texts: Sequence[str] = ()
    task_vec: np.ndarray | None = None
    prompt_vec: np.ndarray | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    created_at: float | None = None

    def checked_tensor(self) -> torch.Tensor:
        """The prompt as a contiguous CPU ``[num_virtual_tokens, embed_dim]`` tensor, or a
        :class:`BankError` that says what is wrong with this entry."""
        t = self.tensor
        if not isinstance(t, torch.Tensor):
            raise BankError(f"a prompt must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim == 3 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
            raise BankError(
                f"a prompt is a [num_virtual_tokens, embed_dim] tensor, got shape {tuple(t.shape)}"
            )
        if not torch.isfinite(t).all():
            raise BankError("the prompt holds NaN or infinite values; refusing to store it")
        if not self.model:
            raise BankError("an entry needs the name of its base model")
        if self.owner is None or not str(self.owner):
            raise BankError("owner must be 'public' or a tenant name")
        return t.detach().to("cpu").contiguous()
