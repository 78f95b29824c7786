"""ASGI middleware of the API: the request body limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prompttuner.api.errors import ApiError, error_response


class BodyTooLarge(ApiError):
    """413: a body over the limit.  Raised while the body is read, so the error handlers answer it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes", "request_too_large")


class BodyLimit:
    """Refuse bodies over the limit (413 with the error envelope), uploads with their own larger limit.

    A ``Content-Length`` over the limit is refused before anything is read; a body without one (chunked)
    is counted as it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: Any, max_body: int, max_upload: int) -> None:
        self.app, self.max_body, self.max_upload = app, max_body, max_upload

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload if scope["path"].startswith("/v1/files") else self.max_body
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _too_big(BodyTooLarge(limit))(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return msg

        async def watched(msg: Any) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited, watched)
        except BodyTooLarge as e:  # read outside the routes' error handling
            if started:
                raise
            await _too_big(e)(scope, receive, send)


def _too_big(e: BodyTooLarge) -> Any:
    return error_response(e.status_code, str(e.detail), e.type_)
