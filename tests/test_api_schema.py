"""The live app against its own OpenAPI: a bounded schemathesis run over every operation, in process.

schemathesis generates requests from the schema the app serves (examples, coverage of each bound and
each undeclared method, then fuzzing; valid and invalid ones) and checks every answer: no 5xx, only
declared statuses, bodies and headers as declared, valid requests accepted, invalid ones rejected, a 405
with the right ``Allow``.

A request the schema calls valid can still be refused for what only the service knows: a file id that
does not exist (404, which schemathesis accepts), or, for a new job, a deadline relative to now, label
words that must match the data, an SLO the cluster cannot meet (422).  So that valid requests reach job
creation, uploads, prediction and the bank, :func:`_with_service_facts` gives each case a valid key
(the tenant's, or the operator's on the admin routes) unless its headers are what is invalid about it,
and each valid case what this service has: a valid upload's content, an existing file, a finished and a
running job, and an SLO in the future.  Invalid cases otherwise go as generated.

Bounded: a fixed seed, derandomized, ``MAX_EXAMPLES`` fuzzed cases an operation, no shrinking database.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import Case, GenerationMode
from schemathesis.core.parameters import ParameterLocation

from prompttuner.api.app import create_app
from prompttuner.state.limits import Limits
from test_api_service import ROWS, make_service, wait_for

MAX_EXAMPLES = 25
SEED = 20261201

_home = Path(tempfile.mkdtemp(prefix="prompttuner-schema-"))
atexit.register(shutil.rmtree, _home, ignore_errors=True)
set_hypothesis_home_dir(_home / "hypothesis")  # its caches go there, not into the work tree
# no rate limits or jobs-in-flight quota: the run is one tenant sending many requests, most of them bad
_limits = Limits(
    requests_per_s=None, auth_failures_per_s=None, max_jobs_in_flight=None, max_batch_tokens=None
)
service = make_service(_home / "home", max_request_bytes=64_000, max_upload_bytes=32_000, limits=_limits)
_, KEY = service.store.create_tenant("fuzz")
app = create_app(service, manage=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.seed = SEED
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
# a body over the service's byte limit is refused with 413 (declared on every operation with a body), valid
# by its schema or not: JSON Schema cannot state a size in bytes, so 413 counts as refusing either
for _check in (schema.config.checks.positive_data_acceptance, schema.config.checks.negative_data_rejection):
    _check.expected_statuses = [*_check.expected_statuses, "413"]

JSONL = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
FACTS: dict[str, str] = {}  # file, succeeded job, running job: filled by the running service


@pytest.fixture(scope="module", autouse=True)
def running_service() -> Iterator[None]:
    """The service runs for the module, with a file, a succeeded job and a long-running job of the tenant."""
    from fastapi.testclient import TestClient

    service.start()
    try:
        client = TestClient(app, headers={"Authorization": f"Bearer {KEY}"})
        up = client.post("/v1/files", files={"file": ("train.jsonl", JSONL)})
        assert up.status_code == 201, up.text
        FACTS["file"] = up.json()["id"]
        body = {"model": "tiny", "training_file": FACTS["file"], "duration_s": 3600, "max_steps": 4}
        done = client.post("/v1/jobs", json=body).json()["id"]
        long = client.post("/v1/jobs", json={**body, "max_steps": 10_000, "best_effort": True}).json()["id"]
        wait_for(lambda: client.get(f"/v1/jobs/{done}").json()["status"] == "succeeded", timeout=60)
        FACTS["succeeded"], FACTS["running"] = done, long
        yield
    finally:
        service.stop()


def _pick(case: Case, options: list[Any]) -> Any:
    """One of ``options``, the same for the same case (the run stays deterministic)."""
    key = f"{case.method} {case.path} {case.path_parameters} {case.query}".encode()
    return options[zlib.crc32(key) % len(options)]


def _with_service_facts(case: Case) -> None:
    """Give a case what only the service knows (see the module's docstring): every case the key (unless
    its headers are the invalid part), a valid case the rest; an invalid case keeps what makes it so."""
    meta = case.meta
    if meta is None:
        return
    coverage_at = getattr(meta.phase.data, "parameter_location", None)  # a coverage case's target
    if not meta.is_negative_at(ParameterLocation.HEADER) and coverage_at != ParameterLocation.HEADER:
        operator = case.path.startswith("/v1/admin") or case.path == "/metrics"
        key = str(service.admin_key) if operator else KEY
        case.headers = {**(case.headers or {}), "authorization": f"Bearer {key}"}
    if meta.generation.mode != GenerationMode.POSITIVE:
        return
    if case.path_parameters and "job_id" in case.path_parameters:
        case.path_parameters["job_id"] = _pick(case, [FACTS["succeeded"], FACTS["running"], "job-0"])
    body = case.body
    op = (case.method.upper(), case.path)
    if op == ("POST", "/v1/files") and isinstance(body, dict):
        body["file"] = JSONL.decode()  # a str, as schemathesis generates a binary part (it revalidates)
    elif op in (("POST", "/v1/predict"), ("POST", "/v1/bank/prompts")) and isinstance(body, dict):
        body["job"] = _pick(case, [FACTS["succeeded"], FACTS["succeeded"], "job-0"])
    elif op in (("POST", "/v1/jobs"), ("POST", "/v1/quotes")) and isinstance(body, dict):
        _valid_job(case, body)


def _valid_job(case: Case, body: dict[str, Any]) -> None:
    """A generated job body, made to pass the checks a schema cannot state (exactly one training source
    and one SLO, label words of the data, a deadline ahead and an SLO the cluster can meet)."""
    if body.get("training_data") is not None or _pick(case, [True, False]):
        body["training_data"] = [dict(r) for r in ROWS[:8]]
        body.pop("training_file", None)
    else:
        body.pop("training_data", None)
        body["training_file"] = FACTS["file"]
    if body.get("validation_file") is not None:
        body["validation_file"] = FACTS["file"]
    if body.get("labels") is not None:
        body["labels"] = ["bad", "good"]
    ahead = time.time() + 30 * 86400
    deadline = body.get("deadline")
    if isinstance(deadline, str):
        body["deadline"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ahead))
        body.pop("duration_s", None)
    elif isinstance(deadline, int | float) and not isinstance(deadline, bool):
        body["deadline"] = ahead
        body.pop("duration_s", None)
    else:
        body.pop("deadline", None)
        duration = body.get("duration_s")
        body["duration_s"] = max(duration, 86400.0) if isinstance(duration, int | float) else 86400.0


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_every_operation_conforms_to_its_openapi(case: Case) -> None:
    _with_service_facts(case)
    case.call_and_validate()
