"""The Prompt Bank: a store of tuned prompts and a two-layer index that picks a job's starting prompt.

Entry points:
- :class:`PromptBank` (``store.py``): ``add``, ``list``, ``get``, ``remove``, ``load_tensor``, ``search``;
- :func:`select_for_task`: choose for a loaded model and a task (runs the probes);
- :func:`select_init`: what ``prompttuner tune --init bank:DIR`` calls (via ``tuning.resolve_init``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prompttuner.bank.errors import (
    BankError,
    CorruptEntryError,
    EntryNotFoundError,
    ModelMismatchError,
    NoCandidatesError,
)
from prompttuner.bank.select import Budget, JobQuery, ProbeRecord, ProbeScore, Selection, rank_key
from prompttuner.bank.store import PUBLIC, Entry, NewEntry, PromptBank

log = logging.getLogger(__name__)

__all__ = [
    "COLD_INIT",
    "PUBLIC",
    "BankError",
    "Budget",
    "cold_init_wins",
    "CorruptEntryError",
    "Entry",
    "EntryNotFoundError",
    "JobQuery",
    "ModelMismatchError",
    "NewEntry",
    "NoCandidatesError",
    "ProbeRecord",
    "ProbeScore",
    "PromptBank",
    "Selection",
    "default_bank_dir",
    "job_query",
    "select_for_task",
    "select_init",
]


def default_bank_dir() -> Path:
    """The service's own bank: ``$PROMPTTUNER_HOME/bank``."""
    from prompttuner.config import home

    return home() / "bank"


def job_query(
    task: Any,
    model: str,
    *,
    embed_dim: int | None = None,
    tenant: str = PUBLIC,
    budget: Budget | None = None,
    num_tokens: int | None = None,
    max_steps: int | None = None,
) -> JobQuery:
    """A :class:`JobQuery` from an engine ``Task`` (its description, labels and a sample of its texts)."""
    from prompttuner.bank.probe import probe_sample

    b = budget or Budget()
    sample = probe_sample(task.train, b)
    return JobQuery(
        model=model,
        description=task.description or task.name,
        labels=list(task.labels),
        sample_texts=[e.text for e in sample],
        embed_dim=embed_dim,
        tenant=tenant,
        num_tokens=num_tokens,
        max_steps=max_steps,
    )


def select_for_task(
    bank: PromptBank,
    loaded: Any,
    task: Any,
    *,
    tenant: str = PUBLIC,
    budget: Budget | None = None,
    num_tokens: int | None = None,
    probes: bool = True,
    max_length: int = 64,
    max_steps: int | None = None,
    cold_init: str | None = None,
    examples: Any = None,
) -> Selection:
    """Choose the start prompt for ``task``; probes run on ``loaded`` (``probes=False``: features only).

    ``cold_init`` (e.g. ``"text"``): also probe the job's own cold init of ``num_tokens`` tokens; its loss
    is in ``info["baseline_scores"][cold_init]``.  ``examples``: the rows the probes may sample (default:
    the task's training data; a trainer passes its training split, so its validation rows stay unseen).
    """
    from prompttuner.bank.probe import make_probe

    b = budget or Budget()
    q = job_query(
        task,
        loaded.name,
        embed_dim=loaded.embed_dim,
        tenant=tenant,
        budget=b,
        num_tokens=num_tokens,
        max_steps=max_steps,
    )
    probe = make_probe(loaded, task, b, max_length=max_length, examples=examples) if probes else None
    baselines = None
    if cold_init is not None and probes:
        from prompttuner.tuning import resolve_init

        baselines = {cold_init: resolve_init(cold_init, loaded, task, num_virtual_tokens=num_tokens or 16)}
    return bank.search(q, probe, budget=b, baselines=baselines)


def describe(score: ProbeScore) -> str:
    """``accuracy 0.750, loss 0.612`` (the accuracy only when the probe measured one)."""
    acc = "" if score.accuracy != score.accuracy else f"accuracy {score.accuracy:.3f}, "
    return f"{acc}loss {score.loss:.3f}"


COLD_INIT = "text"  # what a bank warm start must beat: the job's own instruction (text init)


def cold_init_wins(sel: Selection) -> ProbeScore | None:
    """The cold init's probe score when it ranks at least as high as the best entry's (then the job should
    start cold), else None."""
    cold = sel.info.get("baseline_scores", {}).get(COLD_INIT)
    if cold is None:
        return None
    cs = ProbeScore(**cold)
    best = ProbeScore(loss=sel.loss, accuracy=sel.info.get("accuracy", float("nan")))
    by = sel.info.get("rank_by", "accuracy")
    return cs if rank_key(cs, by) <= rank_key(best, by) else None


def select_init(
    bank_dir: str | Path | None,
    loaded: Any,
    task: Any,
    *,
    tenant: str = PUBLIC,
    num_tokens: int = 16,
    budget: Budget | None = None,
    max_length: int = 64,
    examples: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """``--init bank:DIR``: the bank's choice for this job as ``(tensor, info)``.

    The job's own text init is probed beside the bank's candidates; when it scores a lower loss than the
    best entry, nothing in the bank is closer to the job than its own instruction, and the result is
    ``("text", info)`` (``info["fallback"] == "text"``): a cold start with the cold learning rate, rather
    than a warm start's low learning rate on a prompt that does not fit.  ``info`` holds the chosen entry,
    the probes, timings and the predicted steps (logged at INFO).
    """
    folder = Path(bank_dir) if bank_dir else default_bank_dir()
    with PromptBank(folder, create=False) as bank:
        sel = select_for_task(
            bank,
            loaded,
            task,
            tenant=tenant,
            num_tokens=num_tokens,
            budget=budget,
            max_length=max_length,
            cold_init=COLD_INIT,
            examples=examples,
        )
    info = sel.to_dict()
    cold = cold_init_wins(sel)
    if cold is not None:
        info["fallback"] = COLD_INIT
        log.info(
            "bank %s: best entry %s (%s) does not beat the job's text init (%s); cold start",
            folder,
            sel.entry.task_name,
            describe(ProbeScore(sel.loss, info.get("accuracy", float("nan")))),
            describe(cold),
        )
        return COLD_INIT, info
    log.info(
        "bank %s chose entry %s (task %s, probe loss %.3f) in %.2fs; predicted %.0f steps",
        folder,
        sel.entry.id,
        sel.entry.task_name,
        sel.loss,
        sel.timings["total_s"],
        sel.predicted_steps,
    )
    return sel.tensor.float(), info
