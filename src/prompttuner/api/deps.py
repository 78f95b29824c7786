"""What the routes depend on: the service, the calling tenant (or the operator), and the rows it owns.

Callers authenticate with ``Authorization: Bearer <key>`` (or ``X-API-Key``).  A tenant's key reaches the
tenant routes, where a tenant only ever sees its own jobs and files (another tenant's row is answered
like a missing one, 404); the admin key reaches the operator's routes (``/metrics``, ``/v1/admin``) and
the full ``/v1/cluster``.  Authentication also applies the rate limits (``api.limits``): failed attempts
a client address, requests a tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from prompttuner.api.errors import ApiError, raises
from prompttuner.api.limits import (
    check_auth_allowed,
    check_request_rate,
    client_address,
    get_limiter,
    note_auth_failure,
)
from prompttuner.service import Service
from prompttuner.state.models import ApiKey, DataFile, Job, Tenant


def get_service(request: Request) -> Service:
    """The service the app was created over."""
    return request.app.state.service  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, and its tenant (None for an admin key)."""

    key: ApiKey
    tenant: Tenant | None

    @property
    def admin(self) -> bool:
        return self.key.role == "admin"


def _key_from(authorization: str | None, x_api_key: str | None) -> str | None:
    key = x_api_key
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            key = token.strip()
    return key or None


@raises(401, 429)
def current_principal(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    """The caller's active key (401 without one; 429 over a rate limit)."""
    limiter = get_limiter(request)
    address = client_address(request)
    check_auth_allowed(limiter, address)
    key = _key_from(authorization, x_api_key)
    found = get_service(request).store.authenticate(key) if key else None
    if found is None:
        note_auth_failure(limiter, address)
        if not key:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", "authentication_error")
        raise ApiError(401, "invalid API key", "authentication_error")
    row, tenant = found
    check_request_rate(limiter, tenant.id if tenant is not None else row.id)
    return Principal(row, tenant)


@raises(403)
def current_tenant(principal: Annotated[Principal, Depends(current_principal)]) -> Tenant:
    """The calling tenant (403 for the admin key: tenant routes need a tenant's key)."""
    if principal.tenant is None:
        raise ApiError(403, "this route needs a tenant's API key, not the admin key", "permission_error")
    return principal.tenant


@raises(403)
def current_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """The operator (403 for a tenant's key)."""
    if not principal.admin:
        raise ApiError(403, "this route needs the admin key", "permission_error")
    return principal


Auth = Annotated[Tenant, Depends(current_tenant)]
Admin = Annotated[Principal, Depends(current_admin)]
Caller = Annotated[Principal, Depends(current_principal)]
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
