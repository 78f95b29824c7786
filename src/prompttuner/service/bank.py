"""The service's side of the Prompt Bank: a finished job's prompt goes in, with a few of its texts.

Used by the service itself (jobs that met their target add their prompt, privately) and by the API
(``POST /v1/bank/prompts``).  The bank lives in ``$PROMPTTUNER_HOME/bank``; entries belong to the tenant
whose job tuned them unless added as public.
"""

from __future__ import annotations

import json
from pathlib import Path

SAMPLE_TEXTS = 16  # training texts stored with an entry (the bank describes the task by them)


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
    from prompttuner.bank import PUBLIC, PromptBank
    from prompttuner.tuning import load_prompt

    tensor, meta = load_prompt(prompt_path)
    texts: list[str] = []
    if train_path and Path(train_path).exists():
        with open(train_path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    texts.append(str(json.loads(line)["text"]))
                if len(texts) >= SAMPLE_TEXTS:
                    break
    with PromptBank(bank_dir) as b:
        entry_id: str = b.add(
            tensor,
            model=model,
            task_description=str(meta.get("description") or f"classify as {', '.join(labels)}"),
            labels=labels,
            accuracy=accuracy,
            steps=steps,
            owner=PUBLIC if public else tenant,
            source_job=job_id,
            task_name=str(meta.get("task") or job_id),
            sample_texts=texts,
        )
    return entry_id
