"""The API's defences against inputs a fuzzer finds: bounds on every number, serialisers that never raise
on a stored value, and one error envelope (with the right ``Allow`` on a 405) for every 4xx and 5xx."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prompttuner.api.app import create_app
from prompttuner.api.data import clean_filename
from prompttuner.api.job_creation import parse_time
from prompttuner.api.schemas import INT64_MAX, MAX_DEADLINE_AHEAD_S
from prompttuner.service import Service
from prompttuner.state.models import EventRow, Job
from prompttuner.state.serial import iso_time, json_safe
from test_api_service import ROWS, job_body, make_service

YEAR = MAX_DEADLINE_AHEAD_S


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Service]]:
    service = make_service(
        tmp_path_factory.mktemp("hard") / "home", max_request_bytes=64_000, max_upload_bytes=32_000
    )
    with TestClient(create_app(service)) as client:
        yield client, service


@pytest.fixture
def svc(shared: tuple[TestClient, Service]) -> Iterator[tuple[TestClient, Service]]:
    client, service = shared
    _, key = service.store.create_tenant(f"t-{uuid.uuid4().hex[:8]}")
    client.headers["Authorization"] = f"Bearer {key}"
    yield client, service


def envelope(r: Any, status: int) -> dict[str, Any]:
    """The error of ``r``, checked to be the envelope with ``status``."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str)
    assert "param" in err
    return err  # type: ignore[no-any-return]


def no_jobs(client: TestClient) -> bool:
    r = client.get("/v1/jobs")
    assert r.status_code == 200, r.text
    return r.json()["data"] == []


# -- 1. deadlines and durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "param", "needle"),
    [
        ({"duration_s": None, "deadline": 1e20}, "deadline", "less than or equal to 253402300799"),
        ({"duration_s": None, "deadline": -1e20}, "deadline", "greater than 0"),
        ({"duration_s": 1e300}, "duration_s", "less than or equal to 31536000"),
        ({"duration_s": YEAR + 1}, "duration_s", "less than or equal to 31536000"),
        ({"duration_s": 0}, "duration_s", "greater than 0"),
        ({"duration_s": None, "deadline": time.time() + 2 * YEAR}, "deadline", "more than a year ahead"),
        ({"duration_s": None, "deadline": "9999-12-31T23:59:59Z"}, "deadline", "more than a year ahead"),
        ({"duration_s": None, "deadline": "2026-02-30T00:00:00Z"}, "deadline", "not ISO 8601"),
        ({"duration_s": None, "deadline": "0000-01-01T00:00:00Z"}, "deadline", "not ISO 8601"),
        ({"duration_s": None, "deadline": "2030-01-01T00:00:00+25:00"}, "deadline", "not ISO 8601"),
        ({"duration_s": None, "deadline": True}, "deadline", "deadline"),
        ({"duration_s": 600, "deadline": time.time() + 600}, "deadline", "not both"),
    ],
)
def test_deadlines_out_of_bounds_are_refused_before_anything_is_stored(
    svc: tuple[TestClient, Service], over: dict[str, Any], param: str, needle: str
) -> None:
    client, _ = svc
    err = envelope(client.post("/v1/jobs", json=job_body(**over)), 422)
    assert err["param"] == param and needle in err["message"], err
    assert no_jobs(client)


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_in_json_are_refused(svc: tuple[TestClient, Service], raw: str) -> None:
    client, _ = svc
    text = json.dumps(job_body(duration_s=600)).replace('"duration_s": 600', f'"duration_s": {raw}')
    r = client.post("/v1/jobs", content=text, headers={"Content-Type": "application/json"})
    err = envelope(r, 422)
    assert err["param"] == "duration_s", err
    assert no_jobs(client)


def test_deadlines_within_a_year_are_accepted(svc: tuple[TestClient, Service]) -> None:
    client, _ = svc
    soon = time.time() + YEAR - 3600
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(soon))
    for over in (
        {"duration_s": YEAR},
        {"duration_s": None, "deadline": soon},
        {"duration_s": None, "deadline": iso},
    ):
        r = client.post("/v1/jobs", json=job_body(max_steps=2, **over))
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["deadline_iso"] is not None and job["deadline"] <= time.time() + YEAR
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert len(client.get("/v1/jobs").json()["data"]) == 3


def test_rfc3339_times() -> None:
    assert parse_time("2030-01-01T00:00:00Z") == 1893456000.0
    assert parse_time("2030-01-01t01:00:00+01:00") == 1893456000.0
    assert parse_time("2029-12-31T23:59:60Z") == 1893455999.0  # a leap second: the second before
    assert parse_time("2030-01-01T00:00:00.123456789z") == pytest.approx(1893456000.123456)
    for bad in ("2030-01-01", "2030-01-01T00:00:00", "2030-01-01 00:00:00Z", "٢٠٣٠-01-01T00:00:00Z", "x"):
        with pytest.raises(ValueError):
            parse_time(bad)


# -- 2. cursors, limits and filters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("after=9223372036854775808", "after"),
        ("after=-1", "after"),
        ("after=1e3", "after"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
    ],
)
def test_event_cursor_out_of_bounds_is_422(svc: tuple[TestClient, Service], query: str, param: str) -> None:
    client, _ = svc
    jid = client.post("/v1/jobs", json=job_body(max_steps=2)).json()["id"]
    err = envelope(client.get(f"/v1/jobs/{jid}/events?{query}"), 422)
    assert err["param"] == param, err


def test_event_cursor_at_the_bounds(svc: tuple[TestClient, Service]) -> None:
    client, _ = svc
    jid = client.post("/v1/jobs", json=job_body(max_steps=2)).json()["id"]
    r = client.get(f"/v1/jobs/{jid}/events?after={INT64_MAX}&limit=10000")
    assert r.status_code == 200 and r.json()["data"] == []
    assert client.get(f"/v1/jobs/{jid}/events?after=0&limit=1").status_code == 200


@pytest.mark.parametrize(
    ("query", "param"), [("status=bogus", "status"), ("limit=0", "limit"), ("limit=1001", "limit")]
)
def test_job_list_query_out_of_bounds_is_422(svc: tuple[TestClient, Service], query: str, param: str) -> None:
    client, _ = svc
    err = envelope(client.get(f"/v1/jobs?{query}"), 422)
    assert err["param"] == param, err
    assert client.get("/v1/jobs?status=succeeded&limit=1000").status_code == 200


@pytest.mark.parametrize("path", ["/v1/jobs/" + "j" * 65, "/v1/jobs/-x", "/v1/jobs/a%20b/events"])
def test_job_ids_out_of_shape_are_422(svc: tuple[TestClient, Service], path: str) -> None:
    client, _ = svc
    err = envelope(client.get(path), 422)
    assert err["param"] == "job_id", err


# -- 3. hyperparameters and the other numbers of a job ----------------------------------------------------


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"max_steps": 10_001}, "max_steps"),  # the service's max_steps_limit
        ({"max_steps": 2_000_000}, "max_steps"),
        ({"max_steps": True}, "max_steps"),
        ({"max_steps": "5"}, "max_steps"),
        ({"target_accuracy": 0}, "target_accuracy"),
        ({"target_accuracy": 1.5}, "target_accuracy"),
        ({"hyperparameters": {"batch_size": 257}}, "hyperparameters.batch_size"),
        ({"hyperparameters": {"batch_size": 4.5}}, "hyperparameters.batch_size"),
        ({"hyperparameters": {"num_virtual_tokens": 0}}, "hyperparameters.num_virtual_tokens"),
        ({"hyperparameters": {"num_virtual_tokens": 257}}, "hyperparameters.num_virtual_tokens"),
        ({"hyperparameters": {"max_length": 7}}, "hyperparameters.max_length"),
        ({"hyperparameters": {"max_length": 4097}}, "hyperparameters.max_length"),
        ({"hyperparameters": {"eval_every": 0}}, "hyperparameters.eval_every"),
        ({"hyperparameters": {"eval_every": 1_000_001}}, "hyperparameters.eval_every"),
        ({"hyperparameters": {"lr": 0}}, "hyperparameters.lr"),
        ({"hyperparameters": {"lr": 11}}, "hyperparameters.lr"),
        ({"hyperparameters": {"seed": -1}}, "hyperparameters.seed"),
        ({"hyperparameters": {"seed": 2**32}}, "hyperparameters.seed"),
        ({"hyperparameters": {"seed": 2**70}}, "hyperparameters.seed"),
        ({"hyperparameters": {"max_eval": 10_001}}, "hyperparameters.max_eval"),
        ({"labels": ["bad", "good", "bad"]}, "labels"),
        ({"labels": ["bad", " "]}, "labels.1"),
        ({"labels": [f"l{i}" for i in range(65)]}, "labels"),
        ({"training_data": [{"text": "x" * 100_001, "label": "good"}] * 2}, "training_data.0.text"),
        ({"training_data": None, "training_file": "../../etc/passwd"}, "training_file"),
        ({"model": ""}, "model"),
    ],
)
def test_numbers_and_fields_out_of_bounds_are_422(
    svc: tuple[TestClient, Service], over: dict[str, Any], param: str
) -> None:
    client, _ = svc
    r = client.post("/v1/jobs", json=job_body(**over))
    if r.status_code == 413:  # the long text is over this service's request limit: refused all the same
        return
    err = envelope(r, 422)
    assert err["param"] == param, err
    assert no_jobs(client)


def test_integers_may_be_written_as_whole_floats_as_json_schema_allows(
    svc: tuple[TestClient, Service],
) -> None:
    client, _ = svc
    r = client.post("/v1/jobs", json=job_body(max_steps=3.0, hyperparameters={"batch_size": 4.0}))
    assert r.status_code == 201, r.text
    assert r.json()["max_steps"] == 3 and r.json()["hyperparameters"]["batch_size"] == 4


def test_predict_and_bank_bodies_are_bounded(svc: tuple[TestClient, Service]) -> None:
    client, _ = svc
    assert envelope(client.post("/v1/predict", json={"job": "job-x", "texts": []}), 422)["param"] == "texts"
    r = client.post("/v1/predict", json={"job": "job-x", "texts": ["a"] * 257})
    assert envelope(r, 422)["param"] == "texts"
    assert envelope(client.post("/v1/predict", json={"job": "", "texts": ["a"]}), 422)["param"] == "job"
    assert envelope(client.post("/v1/bank/prompts", json={"job": "a/b"}), 422)["param"] == "job"
    assert (
        envelope(client.post("/v1/bank/prompts", json={"job": "job-x", "public": 1}), 422)["param"]
        == "public"
    )


# -- 4. serialisers never raise on a stored value ---------------------------------------------------------


def _stored_job(service: Service, tenant_id: str, file_id: str, **over: Any) -> str:
    now = time.time()
    jid = "job-" + uuid.uuid4().hex[:16]
    row: dict[str, Any] = dict(
        id=jid,
        tenant_id=tenant_id,
        model="tiny",
        training_file=file_id,
        labels=["bad", "good"],
        max_steps=10,
        hyperparameters={"batch_size": 4},
        deadline=now + 600,
        work_steps=10.0,
        quote={"finish_time": None, "cost": None, "gpus": 1, "feasible": True, "tightest_deadline": None},
        phase="succeeded",
        steps_done=10,
        gpu_seconds=1.0,
        checkpoint_step=0,
        init="random",
        created_at=now,
        updated_at=now,
    )
    row.update(over)
    with service.store.session() as s:
        s.add(Job(**row))
    return jid


def test_stored_values_out_of_range_are_shown_as_null_not_a_500(
    svc: tuple[TestClient, Service], tmp_path: Any
) -> None:
    client, service = svc
    raw = "\n".join(json.dumps(r) for r in ROWS).encode()
    up = client.post("/v1/files", files={"file": ("train.jsonl", raw)}).json()
    tenant = service.store.authenticate(client.headers["Authorization"].split()[1])
    assert tenant is not None and tenant[1] is not None
    tid = tenant[1].id
    nan, inf = float("nan"), float("inf")
    ids = [
        _stored_job(service, tid, up["id"], deadline=1e20, finished_at=1e20),
        _stored_job(service, tid, up["id"], deadline=-1e20, started_at=-1e20),
        _stored_job(service, tid, up["id"], deadline=inf, gpu_seconds=inf, phase="failed"),
        _stored_job(service, tid, up["id"], deadline=-inf, phase="declined"),
        _stored_job(
            service,
            tid,
            up["id"],
            accuracy=nan,
            loss=inf,
            target_accuracy=nan,
            started_at=nan,
            finished_at=inf,
            quote={"finish_time": 1e300, "cost": -1e300, "gpus": 1, "feasible": True},
        ),
    ]
    with service.store.session() as s:
        s.add(EventRow(time=1e20, kind="progress", job_id=ids[0], data={"accuracy": 1e308}))
        s.add(EventRow(time=inf, kind="progress", job_id=ids[0], data={}))
    r = client.get("/v1/jobs")
    assert r.status_code == 200, r.text
    listed = {j["id"]: j for j in r.json()["data"]}
    assert set(listed) == set(ids)
    for jid in ids:
        one = client.get(f"/v1/jobs/{jid}")
        assert one.status_code == 200, one.text
        j = one.json()
        assert j == listed[jid]
    for jid in ids[:4]:  # none of these deadlines is a calendar time
        assert listed[jid]["deadline_iso"] is None, listed[jid]
    assert listed[ids[0]]["deadline"] == 1e20 and listed[ids[1]]["deadline"] == -1e20
    assert listed[ids[2]]["deadline"] is None and listed[ids[2]]["gpu_seconds"] is None
    assert listed[ids[4]]["progress"]["loss"] is None and listed[ids[4]]["finished_at"] is None
    ev = client.get(f"/v1/jobs/{ids[0]}/events")
    assert ev.status_code == 200, ev.text
    assert [e["time"] for e in ev.json()["data"]] == [1e20, None]
    assert client.post(f"/v1/jobs/{ids[0]}/cancel").status_code == 409  # it ended; shown, not a 500


def test_serial_helpers_never_raise() -> None:
    for t in (1e20, -1e20, float("nan"), float("inf"), -float("inf"), 1e300, None):
        assert iso_time(t) is None
    assert iso_time(0) == "1970-01-01T00:00:00+00:00"
    assert iso_time(253402300799.0) == "9999-12-31T23:59:59+00:00"
    out = json_safe({"a": [1.0, float("nan"), {"b": float("-inf")}], "c": "x", "d": 2})
    assert out == {"a": [1.0, None, {"b": None}], "c": "x", "d": 2}
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in out["a"])


# -- 5. one envelope for every error ----------------------------------------------------------------------


def test_oversized_chunked_upload_is_413_envelope(svc: tuple[TestClient, Service]) -> None:
    client, _ = svc

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1000

    ctype = {"Content-Type": "multipart/form-data; boundary=zz"}
    err = envelope(client.post("/v1/files", content=chunks(), headers=ctype), 413)
    assert err["type"] == "request_too_large" and "32000" in err["message"]
    json_type = {"Content-Type": "application/json"}
    err = envelope(client.post("/v1/jobs", content=chunks(), headers=json_type), 413)
    assert err["type"] == "request_too_large" and "64000" in err["message"]
    assert client.get("/v1/files").json()["data"] == []


def test_unparseable_bodies_are_400_envelope(svc: tuple[TestClient, Service]) -> None:
    client, _ = svc
    line = b'{"text": "a", "label": "b"}\n'
    err = envelope(client.post("/v1/files", files={"file": ("x" * 5000, line)}), 400)
    assert "cannot be parsed" in err["message"] and "header" in err["message"].lower()
    ctype = {"Content-Type": "multipart/form-data; boundary=zz"}
    err = envelope(client.post("/v1/files", content=b"garbage", headers=ctype), 400)
    assert "cannot be parsed" in err["message"]
    nob = {"Content-Type": "multipart/form-data"}
    assert "boundary" in envelope(client.post("/v1/files", content=b"x", headers=nob), 400)["message"]
    err = envelope(
        client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}), 422
    )
    assert "malformed JSON" in err["message"]
    assert client.get("/v1/files").json()["data"] == []


def test_a_long_filename_within_the_header_limit_is_kept_clean(svc: tuple[TestClient, Service]) -> None:
    client, _ = svc
    line = b'{"text": "a", "label": "b"}\n'
    r = client.post("/v1/files", files={"file": ("n" * 1000 + ".jsonl", line)})
    assert r.status_code == 201, r.text
    assert r.json()["filename"] == "n" * 255
    assert clean_filename("a\x00b\nc\u200bd") == "abcd"  # control and format characters go
    assert clean_filename("\x00") == "upload.jsonl"


def test_routing_errors_are_envelopes_with_the_resources_allow(svc: tuple[TestClient, Service]) -> None:
    client, _ = svc
    assert envelope(client.get("/nope"), 404)["type"] == "invalid_request_error"
    assert envelope(client.get("/v1/jobs/job-x/nope"), 404)
    for method, path, allow in [
        ("DELETE", "/v1/jobs", "GET, POST"),
        ("PUT", "/v1/files", "GET, POST"),
        ("PATCH", "/v1/bank/prompts", "GET, POST"),
        ("OPTIONS", "/v1/jobs/job-x", "GET"),
        ("GET", "/v1/jobs/job-x/cancel", "POST"),
        ("DELETE", "/v1/predict", "POST"),
    ]:
        r = client.request(method, path)
        err = envelope(r, 405)
        assert r.headers["allow"] == allow, (method, path, r.headers)
        assert method in err["message"]


def test_unexpected_errors_are_500_envelopes_without_the_traceback(
    svc: tuple[TestClient, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = svc
    from prompttuner.api.routers import jobs

    assert client.post("/v1/jobs", json=job_body(max_steps=2)).status_code == 201

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("secret internals /srv/prompttuner")

    monkeypatch.setattr(jobs, "job_json", boom)
    bare = TestClient(client.app, raise_server_exceptions=False, headers=dict(client.headers))
    r = bare.get("/v1/jobs")
    err = envelope(r, 500)
    assert err == {"message": "internal server error", "type": "server_error", "param": None}
    assert "secret" not in r.text and "Traceback" not in r.text


# -- 6. the OpenAPI shows the bounds and every status -----------------------------------------------------


def test_openapi_shows_the_bounds_and_declares_the_error_statuses(svc: tuple[TestClient, Service]) -> None:
    client, service = svc
    doc = client.get("/openapi.json").json()
    comps = doc["components"]["schemas"]
    job = comps["JobCreate"]["properties"]
    assert job["model"]["enum"] == ["tiny"]
    assert job["max_steps"]["maximum"] == service.cfg.max_steps_limit
    assert {"type": "number", "maximum": YEAR, "exclusiveMinimum": 0.0} in job["duration_s"]["anyOf"]
    assert any(a.get("format") == "date-time" for a in job["deadline"]["anyOf"])
    hp = comps["Hyperparameters"]["properties"]
    for name in ("num_virtual_tokens", "batch_size", "seed", "eval_every", "max_length", "max_eval"):
        assert "maximum" in hp[name] and "minimum" in hp[name], name
    assert "HTTPValidationError" not in comps
    events = {p["name"]: p["schema"] for p in doc["paths"]["/v1/jobs/{job_id}/events"]["get"]["parameters"]}
    assert events["after"]["maximum"] == INT64_MAX and events["after"]["minimum"] == 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            statuses = set(op["responses"])
            assert "500" in statuses, (method, path)
            if not path.startswith(("/v1/jobs", "/v1/files", "/v1/predict", "/v1/bank")):
                continue
            assert {"401", "403", "422", "429"} <= statuses, (method, path, statuses)
            for status, spec in op["responses"].items():
                if status.startswith(("4", "5")):
                    ref = spec["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorEnvelope"), (method, path, status)
    assert {"404", "409"} <= set(doc["paths"]["/v1/jobs/{job_id}/cancel"]["post"]["responses"])
    assert {"400", "413"} <= set(doc["paths"]["/v1/files"]["post"]["responses"])
