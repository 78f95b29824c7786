"""The rows of a task's training data that a trainer holds out for validation (and never trains on)."""

from __future__ import annotations

import random
from typing import Any

from prompttuner.tuning.data import Task


def validation_indices(labels: list[str], eval_size: int) -> tuple[list[int], list[int]]:
    """``(train, validation)`` indices: the validation rows stratified by label, independent of the seed.

    Stratified because the validation set is small (tens of rows): an unlucky draw (18 of 24 rows of one
    class on a balanced task) would move the measured accuracy, and any target set from it, by a lot.
    """
    n = len(labels)
    k = min(eval_size, n // 4)
    rng = random.Random(1234)
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    for g in groups.values():
        rng.shuffle(g)
    # largest-remainder quotas proportional to each label's share
    exact = {lab: k * len(g) / n for lab, g in groups.items()} if n else {}
    quota = {lab: int(x) for lab, x in exact.items()}
    for lab in sorted(exact, key=lambda x: (quota[x] - exact[x], x))[: k - sum(quota.values())]:
        quota[lab] += 1
    val = sorted(i for lab, g in groups.items() for i in g[: quota[lab]])
    held = set(val)
    return [i for i in range(n) if i not in held], val


def training_split(task: Task, eval_size: int) -> tuple[list[Any], list[Any]]:
    """``(train, validation)`` rows of ``task`` as a trainer with ``eval_size`` splits them."""
    train_idx, val_idx = validation_indices([e.label for e in task.train], eval_size)
    return [task.train[i] for i in train_idx], [task.train[i] for i in val_idx]
