"""The PromptTuner HTTP API (``app.create_app``), its metrics and the Prompt Bank view.

Persistent state lives in ``prompttuner.state`` and the assembled service in ``prompttuner.service``.
Layout: ``app`` assembles the FastAPI app; ``routers/`` holds one ``APIRouter`` per resource (``files``,
``jobs``, ``predict``, ``bank``, ``cluster``: models and the worker pool, ``ops``: metrics and health);
``schemas`` the request bodies, ``errors`` the error envelope, ``middleware`` the body limit,
``serializers`` the response JSON, ``deps`` authentication and ownership, ``job_creation`` how a request
becomes a job, ``data`` checking and storing task data.

Endpoints (OpenAPI at ``/docs``): ``POST /v1/files``, ``POST/GET /v1/jobs``, ``GET /v1/jobs/{id}``,
``GET /v1/jobs/{id}/events``, ``POST /v1/jobs/{id}/cancel``, ``GET /v1/jobs/{id}/prompt``,
``POST /v1/predict``, ``GET/POST /v1/bank/prompts``, ``GET /v1/models``, ``GET /v1/cluster``,
``GET /metrics``, ``GET /healthz``.
"""
