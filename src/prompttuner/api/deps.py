"""What the routes depend on: the service, the calling tenant, and the rows that tenant owns.

Tenants authenticate with ``Authorization: Bearer <key>`` (or ``X-API-Key``) and only ever see their own
jobs and files: another tenant's row is answered like a missing one (404).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from prompttuner.api.errors import ApiError
from prompttuner.service import Service
from prompttuner.state.models import DataFile, Job, Tenant


def get_service(request: Request) -> Service:
    """The service the app was created over."""
    return request.app.state.service  # type: ignore[no-any-return]


def current_tenant(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Tenant:
    key = x_api_key
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            key = token.strip()
    if not key:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", "authentication_error")
    t = get_service(request).store.tenant_for_key(key)
    if t is None:
        raise ApiError(401, "invalid API key", "authentication_error")
    return t


Auth = Annotated[Tenant, Depends(current_tenant)]
ServiceDep = Annotated[Service, Depends(get_service)]


def own_job(s: Any, t: Tenant, job_id: str) -> Job:
    """The tenant's job ``job_id`` in session ``s``, or 404."""
    row = s.get(Job, job_id)
    if row is None or row.tenant_id != t.id:
        raise ApiError(404, f"no job {job_id!r}", param="job")
    return row  # type: ignore[no-any-return]


def own_file(s: Any, t: Tenant, fid: str, param: str) -> DataFile:
    """The tenant's file ``fid`` in session ``s``, or 404 naming ``param``."""
    f = s.get(DataFile, fid)
    if f is None or f.tenant_id != t.id:
        raise ApiError(404, f"no file {fid!r}", param=param)
    return f  # type: ignore[no-any-return]
