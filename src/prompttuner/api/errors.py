"""The error envelope: every error is ``{"error": {"message", "type", "param", ...}}`` with a 4xx/5xx.

Routes raise :class:`ApiError`; :func:`add_error_handlers` turns it, every other ``HTTPException``
(FastAPI's and Starlette's own: an unknown path 404, a method not allowed 405, a body that cannot be
parsed 400, a body over the limit 413), request validation errors (422, naming the first bad field) and
unexpected exceptions (500, without the traceback) into the envelope.  A 405 carries the ``Allow`` of the
whole resource, every method its routes answer.

:func:`responses` declares error statuses in the OpenAPI (``@router.get(..., responses=responses(404))``),
each with the envelope as its schema.  A dependency that answers errors itself (authentication: 401, 403,
429) says so with :func:`raises`, and the app declares those statuses on every route that depends on it
(``api.app``); every operation also declares 422 (with the envelope, not FastAPI's own body) and 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)


class ApiError(HTTPException):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers=headers)
        self.type_, self.param, self.extra = type_, param, extra or {}


class ErrorDetail(BaseModel):
    """What went wrong; some errors add fields (an infeasible SLO: ``tightest_deadline`` and ``quote``)."""

    model_config = ConfigDict(extra="allow")
    message: str = Field(description="what is wrong, naming the field or line")
    type: str = Field(
        description="invalid_request_error, authentication_error, permission_error, request_too_large, "
        "rate_limit_error, infeasible_slo, unavailable, worker_error, timeout or server_error"
    )
    param: str | None = Field(None, description="the request field at fault, if one is")


class ErrorEnvelope(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The body cannot be parsed (e.g. a malformed multipart upload)",
    401: "Missing or invalid API key",
    403: "The key may not use this route",
    404: "No such resource (or it belongs to another tenant)",
    405: "Method not allowed (the Allow header lists those that are)",
    409: "The resource is not in a state that allows this",
    413: "The request body is over the limit",
    422: "The request is invalid (the message names the field)",
    429: "Over a rate limit or quota (see Retry-After)",
    500: "Unexpected server error",
    501: "Not available on this service",
    502: "A worker failed",
    503: "Temporarily unavailable",
    504: "Timed out",
}

# what a route that takes a tenant's key may answer before it runs: no key or a bad one, a key of the
# wrong kind, and the rate limits
AUTH_ERRORS = (401, 403, 429)


F = TypeVar("F", bound=Callable[..., Any])

ERROR_STATUSES_ATTR = "__prompttuner_error_statuses__"


def raises(*statuses: int) -> Callable[[F], F]:
    """Mark a dependency as answering ``statuses`` itself; every route that depends on it declares them."""

    def mark(fn: F) -> F:
        setattr(
            fn, ERROR_STATUSES_ATTR, tuple(sorted(set(statuses) | set(getattr(fn, ERROR_STATUSES_ATTR, ()))))
        )
        return fn

    return mark


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for ``statuses``, each with the envelope as its body."""
    return {s: response_spec(s) for s in sorted(set(statuses))}


def response_spec(status: int) -> dict[str, Any]:
    """The OpenAPI response of one error status (the envelope; 429 with its Retry-After)."""
    spec: dict[str, Any] = {"model": ErrorEnvelope, "description": ERROR_DESCRIPTIONS[status]}
    if status == 429:
        spec["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}
        }
    return spec


def error_response(
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The envelope as a response."""
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": param, **extra}}, status, headers=headers
    )


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method the app answers at this request's path (for ``Allow``): those its routes match fully."""
    routes = request.app.router.routes
    allowed = []
    for method in _METHOD_ORDER:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in routes):
            allowed.append(method)
    return allowed


_STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 413: "request_too_large"}


def _http_message(request: Request, e: StarletteHTTPException) -> str:
    detail = str(e.detail)
    if e.status_code == 404 and detail == "Not Found":
        return f"no route {request.url.path!r} (see /docs)"
    if e.status_code == 405:
        return f"method {request.method} is not allowed on {request.url.path!r}"
    if e.status_code == 400:
        cause = e.__cause__ or (e.__context__.__cause__ or e.__context__ if e.__context__ else None)
        why = f" ({cause})" if cause is not None and str(cause) and str(cause) != detail else ""
        return f"the request body cannot be parsed: {detail.rstrip('.')}{why}"
    return detail


def _param(loc: tuple[Any, ...]) -> str:
    """A validation error's location as a dotted field path: ``hyperparameters.batch_size``, ``after``.

    Without the part of the request (body, query, ...) and the tags pydantic adds for the members of a
    union (``constrained-float``, ``function-after[...]``).
    """
    if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
        head, loc = loc[0], loc[1:]
        if head != "body":
            return ".".join(str(x) for x in loc)
    return ".".join(str(x) for x in loc if not (isinstance(x, str) and ("-" in x or "[" in x)))


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error with the envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, e: ApiError) -> JSONResponse:
        headers = dict(e.headers) if e.headers else None
        return error_response(e.status_code, str(e.detail), e.type_, e.param, headers, **e.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(req: Request, e: StarletteHTTPException) -> JSONResponse:
        headers = dict(e.headers or {})
        if e.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(req))
        type_ = _STATUS_TYPES.get(
            e.status_code, "invalid_request_error" if e.status_code < 500 else "server_error"
        )
        return error_response(e.status_code, _http_message(req, e), type_, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, e: RequestValidationError) -> JSONResponse:
        errs = list(e.errors())
        first: dict[str, Any] = dict(errs[0]) if errs else {"loc": (), "msg": "invalid request"}
        loc = _param(tuple(first.get("loc", ())))
        msg = f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))
        if first.get("type") == "json_invalid":
            ctx = first.get("ctx") or {}
            msg = f"malformed JSON body: {ctx.get('error', first.get('msg'))}"
            loc = ""
        return error_response(422, msg, "invalid_request_error", loc or None)

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, e: Exception) -> JSONResponse:
        log.error("unexpected error answering %s %s", req.method, req.url.path, exc_info=e)
        return error_response(500, "internal server error", "server_error")
