"""The HTTP API: jobs, files, prompts, predictions, the cluster and metrics (OpenAPI at ``/docs``).

Shaped like the hosted fine-tuning job APIs: upload a file (or send rows inline), create a job that
references it, poll the job and its events, download the result.  The API is thin: it validates, writes
the rows (all in one transaction, so a rejected request leaves nothing behind) and hands the job to the
controller.  Every error is ``{"error": {"message", "type", "param"}}`` with a 4xx that names the problem
(or a 500 that names none).  Tenants authenticate with ``Authorization: Bearer <key>`` and only ever see
their own jobs and files.

This module only assembles the app; the routes are in ``routers/`` (one per resource), the request
bodies in ``schemas``, the error envelope in ``errors``, the body limit in ``middleware``, the response
JSON in ``serializers`` and job creation in ``job_creation``.  The OpenAPI it serves declares every status
an operation answers (``errors``) and this service's own limits: its models and its caps on steps and
rows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic.json_schema import models_json_schema

from prompttuner.api.errors import ERROR_STATUSES_ATTR, ErrorEnvelope, add_error_handlers, response_spec
from prompttuner.api.middleware import BodyLimit
from prompttuner.api.routers import ROUTERS
from prompttuner.service import Service

_REF = "#/components/schemas/"


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
    app.openapi = _completed_openapi(app, service)  # type: ignore[method-assign]
    return app


def _completed_openapi(app: FastAPI, service: Service) -> Callable[[], dict[str, Any]]:
    """``app.openapi``, completed once for each schema FastAPI generates (see :func:`complete_openapi`)."""
    generate = app.openapi
    done: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        schema = generate()
        if not done or done[0] is not schema:
            complete_openapi(schema, service)
            done[:] = [schema]
        return schema

    return openapi


def dependency_statuses(route: APIRoute) -> set[int]:
    """The error statuses the dependencies of ``route`` declare (``errors.raises``), at any depth."""
    found: set[int] = set()
    stack = [route.dependant]
    while stack:
        d = stack.pop()
        found |= set(getattr(d.call, ERROR_STATUSES_ATTR, ()))
        stack.extend(d.dependencies)
    return found


def api_routes() -> list[APIRoute]:
    """The routes of the routers the app includes (as they are included: at their own paths)."""
    return [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]


def complete_openapi(schema: dict[str, Any], service: Service) -> None:
    """Declare what FastAPI leaves out, in place.

    Every operation answers 500 (an unexpected error, with the envelope) and, where FastAPI declared its
    own 422 body, the envelope instead; one with a body also 400 (it cannot be parsed) and 413 (over the
    body limit, ``middleware``); the statuses its dependencies raise; and the service's models,
    ``max_steps_limit`` and ``max_rows`` as bounds of a new job.
    """
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorEnvelope" not in comps:
        _, defs = models_json_schema([(ErrorEnvelope, "serialization")], ref_template=_REF + "{model}")
        comps.update(defs.get("$defs", {}))

    def spec(status: int) -> dict[str, Any]:
        out = dict(response_spec(status))
        out.pop("model")
        out["content"] = {"application/json": {"schema": {"$ref": _REF + "ErrorEnvelope"}}}
        return out

    for route in api_routes():
        if not route.include_in_schema:
            continue
        for method in route.methods or ():
            op = schema["paths"].get(route.path_format, {}).get(method.lower())
            if op is None:
                continue
            resp = op.setdefault("responses", {})
            v422 = json.dumps(resp.get("422", {}))
            if "HTTPValidationError" in v422:
                resp["422"] = spec(422)
            implied = dependency_statuses(route) | {500}
            if "requestBody" in op:  # a body that cannot be parsed (400) or is over the limit (413)
                implied |= {400, 413}
            for status in sorted(implied):
                resp.setdefault(str(status), spec(status))
    text = json.dumps(schema.get("paths", {}))
    if "HTTPValidationError" not in text:
        comps.pop("HTTPValidationError", None)
        if "ValidationError" not in json.dumps(comps):
            comps.pop("ValidationError", None)

    job = comps.get("JobCreate", {}).get("properties", {})
    if "model" in job and service.models:
        job["model"]["enum"] = list(service.models)
    if "max_steps" in job:
        job["max_steps"]["maximum"] = service.cfg.max_steps_limit
    for alt in job.get("training_data", {}).get("anyOf", []):
        if alt.get("type") == "array":
            alt["maxItems"] = service.cfg.max_rows
