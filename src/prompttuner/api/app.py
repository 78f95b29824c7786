"""The HTTP API: jobs, files, prompts, predictions, the cluster and metrics (OpenAPI at ``/docs``).

Shaped like the hosted fine-tuning job APIs: upload a file (or send rows inline), create a job that
references it, poll the job and its events, download the result.  The API is thin: it validates, writes
the rows (all in one transaction, so a rejected request leaves nothing behind) and hands the job to the
controller.  Every error is ``{"error": {"message", "type", "param"}}`` with a 4xx that names the problem.
Tenants authenticate with ``Authorization: Bearer <key>`` and only ever see their own jobs and files.

This module only assembles the app; the routes are in ``routers/`` (one per resource), the request
bodies in ``schemas``, the error envelope in ``errors``, the body limit in ``middleware``, the response
JSON in ``serializers`` and job creation in ``job_creation``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from prompttuner.api.errors import add_error_handlers
from prompttuner.api.middleware import BodyLimit
from prompttuner.api.routers import ROUTERS
from prompttuner.service import Service


def create_app(service: Service, manage: bool = True) -> FastAPI:
    """The FastAPI app over ``service``; with ``manage`` the app starts and stops the service."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage:
            service.start()
        try:
            yield
        finally:
            if manage:
                service.stop()

    app = FastAPI(
        title="PromptTuner",
        version="1",
        lifespan=lifespan,
        description="Prompt-Tuning-as-a-Service: SLO-aware elastic soft-prompt tuning.",
    )
    app.add_middleware(
        BodyLimit, max_body=service.cfg.max_request_bytes, max_upload=service.cfg.max_upload_bytes
    )
    app.state.service = service
    add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
