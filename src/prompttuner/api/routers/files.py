"""``/v1/files``: upload task data, list the tenant's files."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from sqlalchemy import select

from prompttuner.api.data import DataError, store_file
from prompttuner.api.deps import Auth, ServiceDep
from prompttuner.api.errors import AUTH_ERRORS, ApiError, responses
from prompttuner.api.limits import check_data_quota
from prompttuner.api.serializers import file_json
from prompttuner.state.models import DataFile

router = APIRouter(tags=["files"])


@router.post("/v1/files", status_code=201, responses=responses(*AUTH_ERRORS, 400, 413, 422))
def upload_file(
    service: ServiceDep,
    t: Auth,
    file: Annotated[UploadFile, File(description='JSON Lines, one {"text", "label"} object a line')],
    purpose: Annotated[str, Form(max_length=64)] = "prompt-tune",
) -> dict[str, Any]:
    """Upload task data: JSON Lines of {"text", "label"}.

    400: the multipart body cannot be parsed (a part's headers over 4 KiB, e.g. a very long filename);
    413: over the upload limit; 422: the data is not valid (the message names the line).  The filename
    is kept without control characters, at most 255 characters of it.
    """
    cfg, store = service.cfg, service.store
    raw = file.file.read(cfg.max_upload_bytes + 1)
    if len(raw) > cfg.max_upload_bytes:
        raise ApiError(
            413,
            f"file is larger than the limit of {cfg.max_upload_bytes} bytes",
            "request_too_large",
            "file",
        )
    check_data_quota(service, t, len(raw))  # 429 over the tenant's data quota (api.limits)
    try:
        with store.session() as s:
            row = store_file(s, store.home, t.id, file.filename or "upload.jsonl", raw, cfg.max_rows)
    except DataError as e:
        raise ApiError(422, str(e), param="file") from None
    return file_json(row)


@router.get("/v1/files", responses=responses(*AUTH_ERRORS))
def list_files(service: ServiceDep, t: Auth) -> dict[str, Any]:
    with service.store.session() as s:
        rows = s.scalars(select(DataFile).where(DataFile.tenant_id == t.id).order_by(DataFile.created_at))
        return {"object": "list", "data": [file_json(f) for f in rows]}
