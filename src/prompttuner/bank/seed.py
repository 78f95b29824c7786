"""Seeding a bank from a task folder: several well-converged prompts per task, one per seed and disjoint
part of the task's training rows (``prompttuner bank build --seeds --subsets``), with what they cost."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from prompttuner.bank.entries import NewEntry


def seed_task(
    loaded: Any,
    task: Any,
    config: Any,
    seeds: Sequence[int],
    parts: int,
    *,
    keep_all: bool = False,
    owner: str = "public",
    on_start: Callable[[str], None] | None = None,
) -> tuple[list[NewEntry], list[dict[str, Any]]]:
    """Tune ``task`` once per seed and part (``config`` with that seed), from ``config.init``.

    Returns the entries to add (those that reached ``config.target_accuracy``, all of them when there is
    no target or with ``keep_all``) and one cost record per tuning: task, seed, part, reached, steps and
    the CPU seconds it took (``time.process_time``)."""
    from prompttuner.tuning import PromptTrainer

    if parts < 1 or not seeds:
        raise ValueError("seeding needs at least one part and one seed")
    sample = [e.text for e in task.train[:8]]
    items: list[NewEntry] = []
    runs: list[dict[str, Any]] = []
    for part in range(parts):
        rows = task.train[part::parts]
        sub = dataclasses.replace(task, train=rows) if parts > 1 else task
        for seed in seeds:
            cfg = dataclasses.replace(config, seed=seed)
            if on_start is not None:
                what = f"seed {seed}" + (f", part {part + 1}/{parts} ({len(rows)} rows)" if parts > 1 else "")
                on_start(what)
            c0 = time.process_time()
            trainer = PromptTrainer(loaded, sub, cfg)
            res = trainer.train_to_target()
            runs.append(
                {
                    "task": task.name,
                    "seed": seed,
                    "part": part,
                    "reached": res.reached,
                    "steps": res.steps,
                    "cpu_s": round(time.process_time() - c0, 2),
                }
            )
            if res.reached or cfg.target_accuracy is None or keep_all:
                extra = {"init": cfg.init.spec, "seed": seed, "part": part, "parts": parts}
                items.append(
                    NewEntry(
                        trainer.prompt(),
                        loaded.name,
                        task.description,
                        task.labels,
                        res.accuracy,
                        res.steps,
                        owner,
                        task.name,
                        None,
                        sample,
                        extra=extra,
                    )
                )
    return items, runs
