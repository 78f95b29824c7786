"""The API's routes, one router per resource, in the order the app includes them (and OpenAPI lists them)."""

from __future__ import annotations

from prompttuner.api.routers import admin, bank, cluster, dashboard, files, jobs, ops, predict

ROUTERS = (
    files.router,
    jobs.router,
    predict.router,
    bank.router,
    cluster.router,
    ops.router,
    admin.router,
    dashboard.router,
)

__all__ = ["ROUTERS"]
