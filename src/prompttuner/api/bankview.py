"""The service's Prompt Bank: warm-start source for new jobs, fed by the prompts of finished ones.

It lives in ``$PROMPTTUNER_HOME/bank``.  Entries belong to the tenant whose job tuned them (private) or
are public; a tenant lists and warm-starts from public entries and its own, never another tenant's
private prompts.  The bank is part of every build; a service without a bank folder yet lists no entries,
and its jobs go on from their default init.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prompttuner import bank


class BankUnavailable(RuntimeError):
    """Kept for the routers that catch it; nothing here raises it since the bank is always built in."""


def list_entries(bank_dir: str, tenant: str) -> list[dict[str, Any]]:
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


def add_prompt(bank_dir: str, **job: Any) -> str:
    """Add a finished job's prompt (:func:`prompttuner.service.bank.add_prompt`); returns the entry id."""
    from prompttuner.service.bank import add_prompt as add

    return add(bank_dir, **job)
