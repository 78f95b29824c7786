"""``/v1/admin``: tenants and their API keys, for the operator (the admin key only).

A tenant may hold several keys at once, so a key is rotated without downtime: create the new key (or
``rotate``, which also ends the old ones, at once or after a grace period), move the clients over, revoke
what is left.  A key's secret is only ever in the answer that creates it; listings show its id, its
first characters, when it was created, last used and revoked.  Admin keys themselves are managed with
the command line (``prompttuner admin-key --rotate``), which needs access to the server's home folder.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from prompttuner.api.deps import Admin, ServiceDep
from prompttuner.api.errors import ApiError, responses
from prompttuner.service import Service
from prompttuner.state.models import ApiKey, Tenant
from prompttuner.state.serial import iso_time

router = APIRouter(prefix="/v1/admin", tags=["admin"])

MAX_GRACE_S = 30 * 86400.0


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    label: str | None = Field(None, max_length=128, description="a note on the first key")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    label: str | None = Field(None, max_length=128)


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    label: str | None = Field(None, max_length=128)
    grace_s: float = Field(0.0, ge=0, le=MAX_GRACE_S, description="the old keys keep working this long")


def key_json(k: ApiKey, now: float | None = None, secret: str | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    out: dict[str, Any] = {
        "id": k.id,
        "object": "api_key",
        "tenant": k.tenant_id,
        "role": k.role,
        "prefix": k.prefix,
        "label": k.label,
        "created": k.created_at,
        "last_used": k.last_used_at,
        "revoked_at": k.revoked_at,
        "revoked_at_iso": iso_time(k.revoked_at),
        "active": k.active(now),
    }
    if secret is not None:
        out["api_key"] = secret  # shown once
    return out


def tenant_json(service: Service, t: Tenant) -> dict[str, Any]:
    now = time.time()
    keys = service.store.keys(t.id)
    return {
        "id": t.id,
        "object": "tenant",
        "name": t.name,
        "created": t.created_at,
        "keys_active": sum(1 for k in keys if k.active(now)),
    }


def _tenant(service: Service, ref: str) -> Tenant:
    t = service.store.find_tenant(ref)
    if t is None:
        raise ApiError(404, f"no tenant {ref!r}", param="tenant")
    return t


@router.get("/tenants")
def list_tenants(service: ServiceDep, _admin: Admin) -> dict[str, Any]:
    return {"object": "list", "data": [tenant_json(service, t) for t in service.store.tenants()]}


@router.post("/tenants", status_code=201, responses=responses(409))
def create_tenant(service: ServiceDep, _admin: Admin, body: TenantCreate) -> dict[str, Any]:
    """Create a tenant with one key (its secret is in this answer only)."""
    try:
        t, secret = service.store.create_tenant(body.name, body.label)
    except ValueError as e:
        raise ApiError(409, str(e), param="name") from None
    (key,) = service.store.keys(t.id)
    return {**tenant_json(service, t), "key": key_json(key, secret=secret)}


@router.get("/tenants/{tenant}/keys", responses=responses(404))
def list_keys(service: ServiceDep, _admin: Admin, tenant: str) -> dict[str, Any]:
    """The tenant's keys (by id or name), revoked ones included, oldest first."""
    t = _tenant(service, tenant)
    return {"object": "list", "data": [key_json(k) for k in service.store.keys(t.id)]}


@router.post("/tenants/{tenant}/keys", status_code=201, responses=responses(404))
def create_key(
    service: ServiceDep, _admin: Admin, tenant: str, body: KeyCreate | None = None
) -> dict[str, Any]:
    """A further key for the tenant; its other keys keep working."""
    t = _tenant(service, tenant)
    row, secret = service.store.create_key(t.id, body.label if body else None)
    return key_json(row, secret=secret)


@router.post("/tenants/{tenant}/keys/rotate", status_code=201, responses=responses(404))
def rotate_keys(
    service: ServiceDep, _admin: Admin, tenant: str, body: KeyRotate | None = None
) -> dict[str, Any]:
    """A new key for the tenant; its other active keys end after ``grace_s`` (default: now)."""
    t = _tenant(service, tenant)
    body = body or KeyRotate.model_validate({})
    row, secret, ended = service.store.rotate_keys(t.id, body.grace_s, body.label)
    return {**key_json(row, secret=secret), "replaced": [key_json(k) for k in ended]}


@router.post("/keys/{key_id}/revoke", responses=responses(404))
def revoke_key(service: ServiceDep, _admin: Admin, key_id: str) -> dict[str, Any]:
    """Revoke a tenant's key now (admin keys: ``prompttuner admin-key --rotate``)."""
    k = service.store.get_key(key_id)
    if k is None or k.role != "tenant":
        raise ApiError(404, f"no tenant key {key_id!r}", param="key")
    return key_json(service.store.revoke_key(key_id))
