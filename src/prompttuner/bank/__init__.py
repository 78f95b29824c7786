"""The Prompt Bank: a store of tuned prompts and a two-layer index that picks a job's starting prompt.

Entry points:
- :class:`PromptBank` (``store.py``): ``add``, ``list``, ``get``, ``remove``, ``load_tensor``, ``search``;
- :func:`select_for_task`: choose for a loaded model and a task (runs the probes);
- :func:`select_init`: the bank's choice for a job, an entry's tensor or the job's own cold init;
- :func:`bank_init`: that choice as the trainer's ``TensorInit`` (with its learning rate, :func:`start_lr`):
  what ``prompttuner tune --init bank:DIR`` and the service's warm start call before building the trainer;
- :func:`warm_start` (``race.py``): cheaper selection (:data:`NEAR`), a blend, a check of the best start, a
  short race of the best start against the job's text init, a learning rate from the start's fit: a
  trainer ready to go on; :func:`train_from_start` trains it to the target (with
  ``RaceSettings.fallback_at``: back to random init when the start lags at that step).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prompttuner.bank.entries import Entry, NewEntry
from prompttuner.bank.errors import (
    BankError,
    CorruptEntryError,
    EntryNotFoundError,
    ModelMismatchError,
    NoCandidatesError,
)
from prompttuner.bank.race import RaceSettings, Trained, WarmStart, falls_back, train_from_start, warm_start
from prompttuner.bank.select import (
    CHEAP,
    NEAR,
    Budget,
    JobQuery,
    ProbeRecord,
    ProbeScore,
    Selection,
    rank_key,
    select,
)
from prompttuner.bank.store import PromptBank
from prompttuner.bank.tables import PUBLIC

if TYPE_CHECKING:
    from prompttuner.tuning import TensorInit, TuningConfig

log = logging.getLogger(__name__)

__all__ = [
    "CHEAP",
    "NEAR",
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
    "RaceSettings",
    "Trained",
    "Selection",
    "WarmStart",
    "bank_init",
    "default_bank_dir",
    "job_query",
    "select_for_task",
    "select_init",
    "start_lr",
    "falls_back",
    "train_from_start",
    "warm_start",
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
    probe: Any = None,
) -> Selection:
    """Choose the start prompt for ``task``; probes run on ``loaded`` (``probes=False``: features only).

    ``cold_init`` (e.g. ``"text"``, as ``tuning.parse_init`` reads it): also probe the job's own cold init
    of ``num_tokens`` tokens; its probe score (loss and accuracy) is in
    ``info["baseline_scores"][cold_init]``.  ``examples``: the rows the probes may sample (default: the
    task's training data; :func:`bank_init` passes the trainer's training split, so its validation rows
    stay unseen).  ``probe``: one made already (``bank.probe.make_probe``) for the same rows and budget.
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
    if not probes:
        probe = None
    elif probe is None:
        probe = make_probe(loaded, task, b, max_length=max_length, examples=examples)
    baselines = None
    if cold_init is not None and probes:
        from prompttuner.tuning import parse_init, resolve_init

        cold = resolve_init(parse_init(cold_init), loaded, task, num_virtual_tokens=num_tokens or 16)
        baselines = {cold_init: cold}
    return select(bank, q, probe, budget=b, baselines=baselines)


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
    rows = sel.info.get("baseline_rows", {}).get(COLD_INIT)
    best_rows = max((p.rows or 0) for p in sel.probes if p.loss is not None) if sel.probes else 0
    if rows is not None and rows < best_rows:  # it fell out of the race over rows: an entry beat it
        return None
    cs = ProbeScore(**cold)
    best = ProbeScore(loss=sel.loss, accuracy=sel.info.get("accuracy", float("nan")))
    by = sel.info.get("rank_by", "accuracy")
    sim = next((p.task_similarity for p in sel.probes if p.entry_id == sel.entry.id), None)
    return cs if rank_key(cs, by) <= rank_key(best, by, sim) else None


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
    """The bank's choice for this job as ``(tensor, info)`` (:func:`bank_init` makes it a trainer's init).

    The job's own text init is probed beside the bank's candidates; when it ranks at least as high as the
    best entry (by probe accuracy, the loss breaking ties: ``Budget.rank_by``, :func:`cold_init_wins`),
    nothing in the bank is closer to the job than its own instruction, and the result is ``("text", info)``
    (``info["fallback"] == "text"``): a cold start with the cold learning rate, rather than a warm start's
    low learning rate on a prompt that does not fit.  ``info`` holds the chosen entry, the probes, timings
    and the predicted steps (logged at INFO).
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


def start_lr(kind: str, info: Mapping[str, Any] | None = None, target: float | None = None) -> float:
    """The learning rate of a bank start of ``kind`` (``warm``: an entry; else the job's cold init).

    As any start of its kind (``tuning.default_lr``: cold 0.03, warm 10x less, so that a prompt that
    already scores well is not knocked off), *unless* it is an entry whose probe accuracy on the job's own
    rows (``info["accuracy"]``) is below the job's ``target``: that prompt must move anyway, and at the
    warm rate it moves too slowly (``benchmarks/results/bank_speedup_lossprobe.md``: such starts took 2-5x
    the steps of random init), so it takes the cold rate.
    """
    from prompttuner.tuning import DEFAULT_LR, default_lr

    if kind == "warm":
        acc = (info or {}).get("accuracy")
        if acc is not None and target is not None and acc < target:
            return DEFAULT_LR
    return default_lr(kind)


def bank_init(
    bank_dir: str | Path | None,
    loaded: Any,
    task: Any,
    config: TuningConfig,
    *,
    tenant: str = PUBLIC,
) -> TensorInit:
    """The bank's warm start for a job that will train with ``config``, as its ``config.init``.

    What ``prompttuner tune --init bank:DIR`` (``bank_dir=None``: :func:`default_bank_dir`) and the
    service's warm start do before they build the trainer: :func:`select_init` with probes that read the
    job's training split only (``tuning.training_split(task, config.eval_size)``: never the trainer's
    validation rows), at ``config.max_length``, among public entries and ``tenant``'s own.  The result
    holds the chosen entry's tensor (or the job's own cold init when no entry beats it), the learning rate
    (:func:`start_lr` with ``config.target_accuracy``), the selection (``info``) and what the prompt file
    records about it (``meta``: ``init``, ``bank_entry``, ``bank_entry_task``, ``bank_fallback``,
    ``bank_probe_accuracy``).
    """
    from prompttuner.tuning import TensorInit, parse_init, resolve_init, training_split

    train, _ = training_split(task, config.eval_size)
    chosen, info = select_init(
        bank_dir,
        loaded,
        task,
        tenant=tenant,
        num_tokens=config.num_virtual_tokens,
        max_length=config.max_length,
        examples=train,
    )
    if isinstance(chosen, str):  # the fallback: the job's own cold init, which keeps the cold lr
        cold = parse_init(chosen)
        kind = cold.kind
        tensor = resolve_init(
            cold, loaded, task, num_virtual_tokens=config.num_virtual_tokens, seed=config.seed
        )
    else:
        kind, tensor = "warm", chosen
    entry = info.get("entry") or {}
    meta = {
        "init": "bank" if bank_dir is None else f"bank:{bank_dir}",
        "bank_entry": entry.get("id") if isinstance(entry, dict) else str(entry),
        "bank_entry_task": entry.get("task_name") if isinstance(entry, dict) else None,
        "bank_fallback": info.get("fallback"),
        "bank_probe_accuracy": info.get("accuracy"),
    }
    lr = start_lr(kind, info, config.target_accuracy)
    return TensorInit(tensor, lr=lr, kind=kind, meta=meta, info=info)
