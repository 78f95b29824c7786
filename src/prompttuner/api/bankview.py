"""The service's Prompt Bank: warm-start source for new jobs, fed by the prompts of finished ones.

It lives in ``$PROMPTTUNER_HOME/bank``.  Entries belong to the tenant whose job tuned them (private) or
are public; a tenant lists and warm-starts from public entries and its own, never another tenant's
private prompts.  The bank is optional: when it cannot be imported or opened, the endpoints answer 501
with the reason and jobs go on from their default init.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class BankUnavailable(RuntimeError):
    pass


def _bank_module() -> Any:
    try:
        import prompttuner.bank as bank
    except ImportError as e:  # pragma: no cover - the package ships with the project
        raise BankUnavailable(f"the Prompt Bank is not available in this build ({e})") from None
    if not hasattr(bank, "PromptBank"):
        raise BankUnavailable("the Prompt Bank is not available in this build (no PromptBank)")
    return bank


def list_entries(bank_dir: str, tenant: str) -> list[dict[str, Any]]:
    bank = _bank_module()
    if not (Path(bank_dir) / "bank.sqlite").exists():
        return []
    with bank.PromptBank(bank_dir, create=False) as b:
        entries = b.list(tenant=tenant)
    return [
        {
            "id": e.id,
            "model": e.model,
            "task": e.task_name,
            "labels": list(e.labels),
            "accuracy": e.accuracy,
            "steps": e.steps,
            "public": e.owner == bank.PUBLIC,
            "mine": e.owner == tenant,
            "source_job": e.source_job if e.owner == tenant else None,
            "created_at": e.created_at,
        }
        for e in entries
    ]


def add_prompt(
    bank_dir: str,
    *,
    job_id: str,
    tenant: str,
    model: str,
    prompt_path: str,
    labels: list[str],
    accuracy: float | None,
    steps: int | None,
    train_path: str | None,
    public: bool = False,
) -> str:
    """Add a finished job's prompt; returns the entry id."""
    bank = _bank_module()
    from prompttuner.tuning import load_prompt

    tensor, meta = load_prompt(prompt_path)
    texts: list[str] = []
    if train_path and Path(train_path).exists():
        with open(train_path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    texts.append(str(json.loads(line)["text"]))
                if len(texts) >= 16:
                    break
    with bank.PromptBank(bank_dir) as b:
        entry_id: str = b.add(
            tensor,
            model=model,
            task_description=str(meta.get("description") or f"classify as {', '.join(labels)}"),
            labels=labels,
            accuracy=accuracy,
            steps=steps,
            owner=bank.PUBLIC if public else tenant,
            source_job=job_id,
            task_name=str(meta.get("task") or job_id),
            sample_texts=texts,
        )
    return entry_id
