"""``/v1/bank/prompts``: the Prompt Bank entries a tenant may use, and adding a succeeded job's prompt."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from prompttuner.api.deps import Auth, ServiceDep, own_job
from prompttuner.api.errors import AUTH_ERRORS, ApiError, responses
from prompttuner.api.schemas import BankAdd
from prompttuner.core.types import Event, JobPhase
from prompttuner.state.models import DataFile

router = APIRouter(tags=["bank"])


@router.get("/v1/bank/prompts", responses=responses(*AUTH_ERRORS, 501))
def bank_list(service: ServiceDep, t: Auth) -> dict[str, Any]:
    """Prompt Bank entries this tenant may use: public ones and its own."""
    from prompttuner.api.bankview import BankUnavailable, list_entries

    try:
        return {"object": "list", "data": list_entries(str(service.controller.cfg.bank_dir), t.id)}
    except BankUnavailable as e:
        raise ApiError(501, str(e), "unavailable") from None


@router.post("/v1/bank/prompts", status_code=201, responses=responses(*AUTH_ERRORS, 404, 409, 413, 422, 501))
def bank_add(service: ServiceDep, t: Auth, body: BankAdd) -> dict[str, Any]:
    """Add a succeeded job's prompt to the bank (private to this tenant unless ``public``)."""
    from prompttuner.api.bankview import BankUnavailable, add_prompt

    with service.store.session() as s:
        row = own_job(s, t, body.job)
        if row.phase != JobPhase.SUCCEEDED.value or row.prompt_path is None:
            raise ApiError(409, f"job {body.job} has not succeeded ({row.phase})", param="job")
        train = s.get(DataFile, row.training_file)
        args: dict[str, Any] = {
            "job_id": row.id,
            "tenant": t.id,
            "model": row.model,
            "prompt_path": row.prompt_path,
            "labels": list(row.labels),
            "accuracy": row.accuracy,
            "steps": row.steps_done,
            "train_path": train.path if train else None,
        }
    try:
        entry = add_prompt(str(service.controller.cfg.bank_dir), public=body.public, **args)
    except BankUnavailable as e:
        raise ApiError(501, str(e), "unavailable") from None
    except Exception as e:  # noqa: BLE001 - e.g. a prompt the bank cannot index
        raise ApiError(422, f"the Prompt Bank refused this prompt: {type(e).__name__}: {e}") from None
    service.store.add_events(
        [Event(time.time(), "bank", row.id, data={"added": True, "entry": entry, "public": body.public})]
    )
    return {"id": entry, "job": body.job, "public": body.public}
