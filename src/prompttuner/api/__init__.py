"""The PromptTuner HTTP API (``app``), its metrics and the Prompt Bank view.

Persistent state lives in ``prompttuner.state`` and the assembled service in ``prompttuner.service``.

Endpoints (OpenAPI at ``/docs``): ``POST /v1/files``, ``POST/GET /v1/jobs``, ``GET /v1/jobs/{id}``,
``GET /v1/jobs/{id}/events``, ``POST /v1/jobs/{id}/cancel``, ``GET /v1/jobs/{id}/prompt``,
``POST /v1/predict``, ``GET/POST /v1/bank/prompts``, ``GET /v1/models``, ``GET /v1/cluster``,
``GET /metrics``, ``GET /healthz``.
"""
