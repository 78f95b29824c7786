"""Tenants, keys and limits: several keys a tenant, rotation and revocation (API and CLI, admin only), the
admin key for the operator's views, rate limits and quotas (429 with Retry-After), the key migration, and
private files.

The services here are not started (``manage=False``): no worker is needed to check who may call what, and
jobs submitted stay queued, which is what the jobs-in-flight quota counts.  The rate limiter gets a fake
clock, so refills are tested without waiting.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from prompttuner.api.app import create_app
from prompttuner.api.limits import Limiter
from prompttuner.service import Service
from prompttuner.state.limits import Limits
from prompttuner.state.store import Store, downgrade, hash_key, make_engine, migrate
from test_api_service import ROWS, job_body, make_service


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _client(service: Service, limits: Limits | None = None, clock: FakeClock | None = None) -> TestClient:
    if limits is not None:
        service.cfg.limits = limits  # type: ignore[attr-defined]
    app = create_app(service, manage=False)
    if clock is not None:
        app.state.limiter = Limiter(limits or Limits(), clock=clock)
    return TestClient(app)


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[tuple[TestClient, Service]]:
    service = make_service(tmp_path / "home")
    with _client(service) as client:
        client.headers.update(bearer(str(service.default_key)))
        yield client, service
    service.stop()


def _assert_429(r: Any, retry_after: int | None = None, type_: str | None = None) -> dict[str, Any]:
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    if retry_after is not None:
        assert r.headers["Retry-After"] == str(retry_after)
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param"}
    if type_ is not None:
        assert err["type"] == type_
    return err  # type: ignore[no-any-return]


# -- the admin key and the operator's views ------------------------------------------------------------------


def test_admin_key_is_made_at_first_start_and_guards_metrics(svc: tuple[TestClient, Service]) -> None:
    client, service = svc
    admin_file = service.store.home / "admin_key"
    assert stat.S_IMODE(admin_file.stat().st_mode) == 0o600
    admin = admin_file.read_text().strip()
    assert admin == service.admin_key and admin != service.default_key
    assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
    r = client.get("/metrics")  # a tenant's key
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    r = client.get("/metrics", headers=bearer(admin))
    assert r.status_code == 200 and "prompttuner_jobs" in r.text
    # the admin key is no tenant: tenant routes refuse it
    assert client.get("/v1/jobs", headers=bearer(admin)).status_code == 403
    # a restart keeps the same admin key
    again = make_service(service.store.home)
    assert again.admin_key == admin
    again.stop()


def test_cluster_shows_pids_to_the_admin_only(svc: tuple[TestClient, Service], monkeypatch: Any) -> None:
    client, service = svc
    mine = client.post("/v1/jobs", json=job_body(best_effort=True)).json()["id"]
    worker = {"state": "busy", "model": "tiny", "op": "train", "requested_at": 0.0, "ready_at": 1.0}
    view = {
        "workers": [
            {**worker, "id": "w1", "job": mine, "pid": 4242},
            {**worker, "id": "w2", "job": "job-of-someone-else", "pid": 4343},
        ],
        "warm_models": {"tiny": 2},
        "loop_error": "Traceback ... /srv/secret/path.py",
        "policy_error": None,
    }
    monkeypatch.setattr(service.controller, "cluster", lambda: json.loads(json.dumps(view)))
    tenant = client.get("/v1/cluster").json()
    assert all("pid" not in w for w in tenant["workers"])
    assert [w["job"] for w in tenant["workers"]] == [mine, "(another tenant)"]
    assert "loop_error" not in tenant and tenant["your_jobs"] == {"queued": 1}
    full = client.get("/v1/cluster", headers=bearer(str(service.admin_key))).json()
    assert [w["pid"] for w in full["workers"]] == [4242, 4343]
    assert full["workers"][1]["job"] == "job-of-someone-else" and full["jobs"] == {"queued": 1}


# -- keys: several a tenant, rotation, revocation ------------------------------------------------------------


def test_admin_api_creates_rotates_and_revokes_keys(svc: tuple[TestClient, Service]) -> None:
    client, service = svc
    admin = bearer(str(service.admin_key))
    # admin only
    assert client.get("/v1/admin/tenants").status_code == 403
    assert client.get("/v1/admin/tenants", headers={"Authorization": "Bearer nope"}).status_code == 401
    r = client.post("/v1/admin/tenants", json={"name": "acme", "label": "ci"}, headers=admin)
    assert r.status_code == 201, r.text
    tid, first = r.json()["id"], r.json()["key"]["api_key"]
    assert client.post("/v1/admin/tenants", json={"name": "acme"}, headers=admin).status_code == 409
    # a second key: both work
    r = client.post("/v1/admin/tenants/acme/keys", json={"label": "laptop"}, headers=admin)
    assert r.status_code == 201, r.text
    second, second_id = r.json()["api_key"], r.json()["id"]
    for k in (first, second):
        assert client.get("/v1/jobs", headers=bearer(k)).status_code == 200
    listed = client.get(f"/v1/admin/tenants/{tid}/keys", headers=admin).json()["data"]
    assert [k["label"] for k in listed] == ["ci", "laptop"] and all(k["active"] for k in listed)
    assert all("api_key" not in k and "hash" not in json.dumps(k) for k in listed)
    assert listed[0]["last_used"] is not None  # used above
    # revoke one: it stops, the other goes on
    r = client.post(f"/v1/admin/keys/{second_id}/revoke", headers=admin)
    assert r.status_code == 200 and r.json()["active"] is False
    assert client.get("/v1/jobs", headers=bearer(second)).status_code == 401
    assert client.get("/v1/jobs", headers=bearer(first)).status_code == 200
    assert client.post("/v1/admin/keys/key-nope/revoke", headers=admin).status_code == 404
    # rotate with a grace period: the old key works until then, the new one at once
    r = client.post("/v1/admin/tenants/acme/keys/rotate", json={"grace_s": 3600}, headers=admin)
    assert r.status_code == 201, r.text
    rotated = r.json()
    (replaced,) = rotated["replaced"]
    assert replaced["active"] is True and replaced["revoked_at"] > rotated["created"] + 3599
    assert client.get("/v1/jobs", headers=bearer(first)).status_code == 200
    assert client.get("/v1/jobs", headers=bearer(rotated["api_key"])).status_code == 200
    assert service.store.authenticate(first, now=replaced["revoked_at"] + 1) is None  # after the grace
    # rotate now: only the newest key works
    r = client.post("/v1/admin/tenants/acme/keys/rotate", headers=admin)
    newest = r.json()["api_key"]
    for k in (first, rotated["api_key"]):
        assert client.get("/v1/jobs", headers=bearer(k)).status_code == 401
    assert client.get("/v1/jobs", headers=bearer(newest)).status_code == 200
    tenants = {t["name"]: t for t in client.get("/v1/admin/tenants", headers=admin).json()["data"]}
    assert tenants["acme"]["keys_active"] == 1 and "default" in tenants
    # the tenant's jobs stay the tenant's across its keys
    job = client.post("/v1/jobs", json=job_body(best_effort=True), headers=bearer(newest)).json()["id"]
    assert client.get(f"/v1/jobs/{job}").status_code == 404  # the default tenant's key


def test_cli_manages_keys_and_the_admin_key(svc: tuple[TestClient, Service]) -> None:
    from typer.testing import CliRunner

    from prompttuner.cli import app

    client, service = svc
    home = ["--home", str(service.store.home)]
    run = CliRunner().invoke
    name = f"cli-{uuid.uuid4().hex[:6]}"
    out = run(app, ["tenant", name, *home, "--json"])
    assert out.exit_code == 0, out.output
    first = json.loads(out.stdout)["api_key"]
    out = run(app, ["keys", "create", name, "--label", "second", *home, "--json"])
    assert out.exit_code == 0, out.output
    second = json.loads(out.stdout)
    for k in (first, second["api_key"]):
        assert client.get("/v1/jobs", headers=bearer(k)).status_code == 200
    out = run(app, ["keys", "revoke", second["id"], *home])
    assert out.exit_code == 0, out.output
    assert client.get("/v1/jobs", headers=bearer(second["api_key"])).status_code == 401
    out = run(app, ["keys", "rotate", name, "--grace", "0", *home, "--json"])
    assert out.exit_code == 0, out.output
    new = json.loads(out.stdout)["api_key"]
    assert client.get("/v1/jobs", headers=bearer(first)).status_code == 401
    assert client.get("/v1/jobs", headers=bearer(new)).status_code == 200
    listed = json.loads(run(app, ["keys", "list", name, *home, "--json"]).stdout)["keys"]
    assert [k["active"] for k in listed] == [False, False, True]
    assert name in run(app, ["tenants", *home]).output
    assert run(app, ["keys", "list", "nobody", *home]).exit_code != 0
    # the admin key: printed from its file, rotated (the old one stops)
    out = run(app, ["admin-key", *home, "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["admin_key"] == service.admin_key
    out = run(app, ["admin-key", "--rotate", *home, "--json"])
    assert out.exit_code == 0, out.output
    new_admin = json.loads(out.stdout)["admin_key"]
    assert (service.store.home / "admin_key").read_text().strip() == new_admin
    assert stat.S_IMODE((service.store.home / "admin_key").stat().st_mode) == 0o600
    assert client.get("/metrics", headers=bearer(str(service.admin_key))).status_code == 401
    assert client.get("/metrics", headers=bearer(new_admin)).status_code == 200


# -- rate limits ---------------------------------------------------------------------------------------------


def test_request_rate_is_limited_per_tenant_with_retry_after(tmp_path: Path) -> None:
    clock = FakeClock()
    service = make_service(tmp_path / "home")
    limits = Limits(requests_per_s=2.0, request_burst=3)
    _, other = service.store.create_tenant("other")
    with _client(service, limits, clock) as client:
        me = bearer(str(service.default_key))
        assert [client.get("/v1/jobs", headers=me).status_code for _ in range(3)] == [200] * 3
        err = _assert_429(client.get("/v1/jobs", headers=me), retry_after=1, type_="rate_limit_error")
        assert "rate limit" in err["message"] and err["retry_after"] == 1
        assert client.get("/v1/jobs", headers=bearer(other)).status_code == 200  # its own bucket
        clock.t += 0.5  # one token back (2 a second)
        assert client.get("/v1/jobs", headers=me).status_code == 200
        _assert_429(client.get("/v1/jobs", headers=me))
        clock.t += 10  # refilled to the burst, no more
        assert [client.get("/v1/jobs", headers=me).status_code for _ in range(4)] == [200] * 3 + [429]
    service.stop()


def test_failed_authentication_is_limited_per_address(tmp_path: Path) -> None:
    clock = FakeClock()
    service = make_service(tmp_path / "home")
    limits = Limits(auth_failures_per_s=0.1, auth_failure_burst=5)
    with _client(service, limits, clock) as client:
        codes = [client.get("/v1/jobs", headers=bearer(f"pt-guess-{i}")).status_code for i in range(8)]
        assert codes == [401] * 5 + [429] * 3
        # the address is blocked before its key is looked at: a valid key waits as well
        r = client.get("/v1/jobs", headers=bearer(str(service.default_key)))
        err = _assert_429(r, retry_after=10, type_="rate_limit_error")
        assert "failed authentication" in err["message"]
        clock.t += 10  # one failure's worth refilled
        assert client.get("/v1/jobs", headers=bearer(str(service.default_key))).status_code == 200
        assert client.get("/v1/jobs", headers=bearer("pt-guess-again")).status_code == 401
        assert client.get("/v1/jobs", headers=bearer(str(service.default_key))).status_code == 429
        assert client.get("/healthz").status_code == 200  # needs no key, so no limit
    service.stop()


def test_300_wrong_keys_get_mostly_429_with_the_default_limits(svc: tuple[TestClient, Service]) -> None:
    client, _ = svc
    rs = [client.get("/v1/jobs", headers=bearer(f"pt-wrong-{i}")) for i in range(300)]
    codes = [r.status_code for r in rs]
    burst = Limits().auth_failure_burst
    assert codes == [401] * burst + [429] * (300 - burst)
    _assert_429(rs[-1], type_="rate_limit_error")


# -- quotas --------------------------------------------------------------------------------------------------


def test_quota_batch_tokens_a_job(svc: tuple[TestClient, Service]) -> None:
    client, _ = svc
    huge = job_body(best_effort=True, hyperparameters={"batch_size": 256, "max_length": 4096})
    err = _assert_429(client.post("/v1/jobs", json=huge), type_="quota_exceeded")
    assert "256 x 4096" in err["message"] and err["param"] == "hyperparameters.batch_size"
    assert client.get("/v1/jobs").json()["data"] == []
    ok = job_body(best_effort=True, hyperparameters={"batch_size": 64, "max_length": 512})  # 32,768
    assert client.post("/v1/jobs", json=ok).status_code == 201


def test_quota_jobs_in_flight_and_data_size(tmp_path: Path) -> None:
    service = make_service(tmp_path / "home")
    raw = "\n".join(json.dumps(r) for r in ROWS).encode()
    limits = Limits(max_jobs_in_flight=2, max_data_bytes=3 * len(raw), quota_retry_after_s=30)
    with _client(service, limits) as client:
        client.headers.update(bearer(str(service.default_key)))
        fid = client.post("/v1/files", files={"file": ("a.jsonl", raw)}).json()["id"]
        body = job_body(best_effort=True, training_data=None, training_file=fid)
        ids = [client.post("/v1/jobs", json=body).json()["id"] for _ in range(2)]
        err = _assert_429(client.post("/v1/jobs", json=body), retry_after=30, type_="quota_exceeded")
        assert "2 jobs in flight" in err["message"]
        client.post(f"/v1/jobs/{ids[0]}/cancel")  # one ends: room for another
        assert client.post("/v1/jobs", json=body).status_code == 201
        client.post(f"/v1/jobs/{ids[1]}/cancel")
        # data: uploads and inline training data count; 2 of 3 files' worth are left
        assert client.post("/v1/files", files={"file": ("b.jsonl", raw)}).status_code == 201
        assert client.post("/v1/files", files={"file": ("c.jsonl", raw)}).status_code == 201
        err = _assert_429(client.post("/v1/files", files={"file": ("d.jsonl", raw)}), type_="quota_exceeded")
        assert "data quota" in err["message"] and err["param"] == "file"
        err = _assert_429(client.post("/v1/jobs", json=job_body(best_effort=True)), type_="quota_exceeded")
        assert err["param"] == "training_data"
        assert len(client.get("/v1/files").json()["data"]) == 3
    service.stop()


# -- the key migration ---------------------------------------------------------------------------------------


def test_migration_0002_keeps_the_old_tenant_key_working(db_url: str, tmp_path: Path) -> None:
    """A database made at revision 0001 (one key hash a tenant) upgrades; the old key still authenticates."""
    engine = make_engine(db_url)
    migrate(engine, "0001")
    old_key = "pt-old-key-from-revision-0001"
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tenants (id, name, key_hash, created_at) VALUES (:i, :n, :h, :c)"),
            {"i": "tn-old", "n": "old", "h": hash_key(old_key), "c": 1.0},
        )
        conn.execute(
            text(
                "INSERT INTO files (id, tenant_id, filename, path, bytes, rows, labels, created_at) "
                "VALUES ('file-old', 'tn-old', 'a.jsonl', '/x', 1, 1, '[]', 1.0)"
            )
        )
    engine.dispose()
    store = Store(tmp_path / "home", db_url)  # upgrades to head
    found = store.authenticate(old_key)
    assert found is not None and found[1] is not None and found[1].id == "tn-old"
    (key,) = store.keys("tn-old")
    assert key.label == "migrated" and key.prefix is None and key.revoked_at is None
    with store.engine.connect() as conn:
        cols = [r[0] for r in conn.execute(text("SELECT * FROM tenants")).keys()]
        assert "key_hash" not in cols
        assert conn.execute(text("SELECT tenant_id FROM files")).scalar() == "tn-old"
    # and through the API, with the rest of a service on the same database
    service = make_service(tmp_path / "home", db_url=db_url)
    with _client(service) as client:
        assert client.get("/v1/files", headers=bearer(old_key)).json()["data"][0]["id"] == "file-old"
    service.stop()
    # the downgrade puts the key back where 0001 keeps it
    engine = make_engine(db_url)
    downgrade(engine, "0001")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, key_hash FROM tenants WHERE name = 'old'")).all()
        assert rows == [("tn-old", hash_key(old_key))]
    engine.dispose()


# -- private files -------------------------------------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_database_data_and_key_files_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # what a default shell has: files would be 0644
    try:
        home = tmp_path / "home"
        service = make_service(home)
        with _client(service) as client:
            client.headers.update(bearer(str(service.default_key)))
            up = client.post("/v1/files", files={"file": ("t.jsonl", b'{"text": "x", "label": "a"}\n')})
            assert up.status_code == 201, up.text
            inline = client.post("/v1/jobs", json=job_body(best_effort=True))
            assert inline.status_code == 201, inline.text
        service.stop()
        for d in (home, home / "files", home / "jobs", home / "prompts"):
            assert _mode(d) == 0o700, d
        db = home / "prompttuner.db"
        for f in [db, home / "api_key", home / "admin_key", *(home / "files").iterdir()]:
            assert _mode(f) == 0o600, f
        assert len(list((home / "files").iterdir())) == 2
        for extra in (home / "prompttuner.db-wal", home / "prompttuner.db-shm"):
            if extra.exists():
                assert _mode(extra) == 0o600, extra
        # an old home with a world-readable database is narrowed on the next start
        os.chmod(db, 0o644)
        os.chmod(home / "files", 0o755)
        Store(home).engine.dispose()
        assert _mode(db) == 0o600 and _mode(home / "files") == 0o700
    finally:
        os.umask(old_umask)


def test_tenant_names_are_checked_before_they_reach_the_database(db_url: str, tmp_path: Path) -> None:
    """A name PostgreSQL's column cannot hold (or with odd characters) is refused with a clear error."""
    from typer.testing import CliRunner

    from prompttuner.cli import app
    from prompttuner.state.store import Store

    store = Store(tmp_path / "home", db_url)
    for bad in ("x" * 200, "", "-lead", "white space", "ünï"):
        with pytest.raises(ValueError, match="is not 1-128 letters"):
            store.create_tenant(bad)
    assert store.create_tenant("a" * 128)[0].name == "a" * 128
    res = CliRunner().invoke(app, ["tenant", "y" * 200, "--home", str(tmp_path / "home"), "--db", db_url])
    assert res.exit_code == 2 and "is not 1-128 letters" in " ".join(res.output.split())
