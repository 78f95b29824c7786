"""The error envelope: every error is ``{"error": {"message", "type", "param", ...}}`` with a 4xx/5xx.

Routes raise :class:`ApiError`; :func:`add_error_handlers` turns it, FastAPI's ``HTTPException`` and
request validation errors into the envelope (a validation error names the first bad field).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


class ApiError(HTTPException):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status, message)
        self.type_, self.param, self.extra = type_, param, extra or {}


def error_response(
    status: int, message: str, type_: str, param: str | None = None, **extra: Any
) -> JSONResponse:
    """The envelope as a response."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, **extra}}, status)


def add_error_handlers(app: FastAPI) -> None:
    """Answer ``ApiError``, ``HTTPException`` and validation errors with the envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status_code, str(e.detail), e.type_, e.param, **e.extra)

    @app.exception_handler(HTTPException)
    async def _http_error(_req: Request, e: HTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail), "invalid_request_error")

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, e: RequestValidationError) -> JSONResponse:
        errs = list(e.errors())
        first: dict[str, Any] = dict(errs[0]) if errs else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        msg = f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))
        if first.get("type") == "json_invalid":
            ctx = first.get("ctx") or {}
            msg = f"malformed JSON body: {ctx.get('error', first.get('msg'))}"
        return error_response(422, msg, "invalid_request_error", loc or None)
