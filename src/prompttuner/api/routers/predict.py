"""``/v1/predict``: classify texts with a job's tuned prompt."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from prompttuner.api.deps import Auth, ServiceDep, own_job
from prompttuner.api.errors import AUTH_ERRORS, ApiError, responses
from prompttuner.api.schemas import PredictRequest

router = APIRouter(tags=["prompts"])


@router.post("/v1/predict", responses=responses(*AUTH_ERRORS, 404, 409, 413, 422, 502, 503, 504))
def predict(service: ServiceDep, t: Auth, body: PredictRequest) -> dict[str, Any]:
    """Classify texts with a job's tuned prompt (runs on a warm worker of the job's model)."""
    with service.store.session() as s:
        row = own_job(s, t, body.job)
        if row.prompt_path is None:
            raise ApiError(409, f"job {body.job} has no prompt yet ({row.phase})", param="job")
        model, path, labels = row.model, row.prompt_path, list(row.labels)
    try:
        preds = service.controller.predict(model, path, body.texts, labels)
    except LookupError as e:
        raise ApiError(503, str(e), "unavailable") from None
    except TimeoutError:
        raise ApiError(504, "prediction timed out; the workers are busy", "timeout") from None
    except RuntimeError as e:
        raise ApiError(502, f"prediction failed: {e}", "worker_error") from None
    return {"object": "list", "job": body.job, "labels": labels, "predictions": preds}
