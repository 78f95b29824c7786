"""The service on PostgreSQL: the SQLite suite's own service tests again, and the store's column types.

The service tests below are imported from ``test_api_service`` and ``test_runtime_service`` and collected a
second time here.  Every service they start (in this process, or ``prompttuner serve`` in a subprocess) and
the ``prompttuner tenant`` command open ``$PROMPTTUNER_DB_URL`` when no URL is given; the fixtures point it
at a database on the session's private PostgreSQL server (``tests/conftest.py``): one for the module's
shared API service, a fresh one for each test that starts its own service.  After each of those tests the
fixture checks that its service really did migrate that PostgreSQL database.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from pg_support import DB_ENV, PgServer
from prompttuner.state.models import Base, DataFile, EventRow, Job, Tenant
from prompttuner.state.store import MIGRATIONS, Store, make_engine

# the same tests as on SQLite (collected again: they run here on PostgreSQL)
from test_api_service import (  # noqa: F401 - fixtures and tests, collected again in this module
    shared,
    svc,
    test_a_job_cancelled_before_the_controller_takes_it_never_runs,
    test_a_job_that_ends_while_its_cancel_waits_is_not_reported_cancelled,
    test_bad_job_inputs_name_the_problem,
    test_infeasible_slo_gets_tightest_deadline_unless_best_effort,
    test_job_lifecycle_over_http,
    test_malformed_oversized_and_bad_uploads,
    test_slo_is_the_target_reached_by_the_deadline_in_the_api_and_metrics,
    test_tenant_command_creates_a_working_key,
    test_tenant_isolation,
    test_upload_then_reference_and_cancel,
)
from test_runtime_service import (  # noqa: F401 - collected again in this module
    test_migrations_match_the_models,
    test_service_killed_and_restarted_loses_nothing,
    test_worker_killed_mid_job_resumes_from_checkpoint,
)

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module", autouse=True)
def api_db(pg_server: PgServer) -> Iterator[str]:
    """The database of ``test_api_service.shared`` (the module's one API service), set before it starts."""
    url = pg_server.create_database()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DB_ENV, url)
        yield url
    pg_server.drop_database(url)


@pytest.fixture(autouse=True)
def own_db(
    request: pytest.FixtureRequest, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A fresh database for an imported test that starts its own service; after it, proof that it was used.

    (The tests written here pass their URLs explicitly; those on the shared service keep its database.)
    """
    if request.function.__module__ == __name__ or "shared" in request.fixturenames:
        yield
        return
    url = request.getfixturevalue("pg_url")
    monkeypatch.setenv(DB_ENV, url)
    yield
    with pg_server.admin(url) as conn:
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert len(version) == 1, f"the test's service did not migrate its PostgreSQL database: {version}"


def test_the_shared_api_service_runs_on_postgresql(request: pytest.FixtureRequest, api_db: str) -> None:
    _client, service = request.getfixturevalue("shared")
    assert service.store.engine.dialect.name == "postgresql"
    assert service.store.engine.dialect.driver == "psycopg"
    assert service.store.url == api_db


# -- the store on both databases ---------------------------------------------------------------------


def test_json_numbers_times_and_text_round_trip_exactly(db_url: str, tmp_path: Path) -> None:
    store = Store(tmp_path / "home", db_url)
    now = time.time()
    hyper = {
        "batch_size": 4,
        "lr": 0.1,
        "tiny": 5e-324,
        "huge": 1.7976931348623157e308,
        "big_int": 2**63 - 1,
        "beyond_int64": 2**70,
        "flags": [True, False, None],
        "nested": {"words": ["élan", "漢字", "emoji 🙂", 'quote " and \\ backslash']},
    }
    tenant, _key = store.create_tenant("json-tenant")
    with store.session() as s:
        s.add(
            DataFile(
                id="file-1",
                tenant_id=tenant.id,
                filename="données.jsonl",
                path="files/x",
                bytes=2**31 - 1,  # the Integer columns are 32-bit on PostgreSQL
                rows=3,
                labels=["bad", "good"],
                created_at=now,
            )
        )
        s.flush()
        s.add(
            Job(
                id="job-1",
                tenant_id=tenant.id,
                model="tiny",
                training_file="file-1",
                labels=["bad", "good"],
                target_accuracy=None,
                max_steps=10_000,
                hyperparameters=hyper,
                deadline=now + 3600.000001,
                work_steps=123.456789012345,
                quote=None,
                phase="queued",
                created_at=now,
                updated_at=now,
            )
        )
    with store.session() as s:
        job = s.get(Job, "job-1")
        f = s.get(DataFile, "file-1")
        assert job is not None and f is not None
        assert job.hyperparameters == hyper
        assert type(job.hyperparameters["big_int"]) is int and type(job.hyperparameters["lr"]) is float
        assert job.created_at == now and job.deadline == now + 3600.000001  # float epoch seconds, bit-exact
        assert job.work_steps == 123.456789012345
        assert job.quote is None and job.target_accuracy is None and job.accuracy is None
        assert (job.steps_done, job.gpu_seconds, job.admitted, job.bank_warm_start) == (0, 0.0, False, False)
        assert f.bytes == 2**31 - 1 and f.filename == "données.jsonl" and f.labels == ["bad", "good"]
        # ordering by a float time and by the events' integer ids
        assert s.scalars(select(Job.id).where(Job.deadline > now).order_by(Job.created_at)).all() == ["job-1"]
    store.engine.dispose()


def test_non_finite_numbers_in_json_are_stored_as_null(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL's json refuses NaN and Infinity: a diverged loss in an event must not fail the write."""
    from prompttuner.core.types import Event

    caplog.set_level(logging.WARNING)
    store = Store(tmp_path / "home", db_url)
    data = {"loss": math.nan, "cost": math.inf, "trace": [1.5, -math.inf, {"x": math.nan}], "ok": 2.0}
    store.add_events([Event(1.0, "progress", "job-x", data=data), Event(2.0, "progress", "job-x", data={})])
    with store.session() as s:
        rows = s.scalars(select(EventRow).order_by(EventRow.id)).all()
    assert [r.data for r in rows] == [
        {"loss": None, "cost": None, "trace": [1.5, None, {"x": None}], "ok": 2.0},
        {},
    ]
    assert rows[0].id < rows[1].id
    assert not [
        r.getMessage() for r in caplog.records if "closure" in r.getMessage()
    ]  # psycopg's leak warning
    store.engine.dispose()


# -- PostgreSQL specifics ----------------------------------------------------------------------------


def test_plain_postgresql_urls_mean_psycopg_3(pg_url: str) -> None:
    from sqlalchemy import make_url

    rest = make_url(pg_url).render_as_string(hide_password=False).split("://", 1)[1]
    for scheme in ("postgresql", "postgres"):
        eng = make_engine(f"{scheme}://{rest}")
        try:
            assert eng.dialect.name == "postgresql" and eng.dialect.driver == "psycopg"
            with eng.connect() as conn:
                assert (
                    conn.exec_driver_sql("SELECT current_setting('application_name')").scalar()
                    == "prompttuner"
                )
        finally:
            eng.dispose()


def test_connections_the_server_closed_are_replaced(pg_url: str, pg_server: PgServer, tmp_path: Path) -> None:
    """After the server drops every connection (a restart, an idle timeout) the next session still works."""
    store = Store(tmp_path / "home", pg_url)
    store.create_tenant("before")
    from sqlalchemy import make_url

    db = make_url(pg_url).database
    with pg_server.admin() as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s", (db,)
        ).fetchone()
    assert killed is not None and killed[0] >= 1  # the store's pooled connection was among them
    assert store.tenant_by_name("before") is not None  # a fresh connection, no OperationalError
    store.create_tenant("after")
    store.engine.dispose()


def test_migrations_go_down_and_up_again_with_the_data(pg_url: str, tmp_path: Path) -> None:
    """Every revision's downgrade and upgrade run on PostgreSQL; a key issued before still works after."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    store = Store(tmp_path / "home", pg_url)
    _tenant, key = store.create_tenant("kept")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_revision("head")
    assert head is not None

    def alembic(direction: str, revision: str) -> None:
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            getattr(command, direction)(cfg, revision)

    if head.down_revision is not None:  # the newest migration keeps the data it moves, both ways
        alembic("downgrade", "-1")
        alembic("upgrade", "head")
        found = store.tenant_for_key(key)
        assert found is not None and found.name == "kept"
    alembic("downgrade", "base")
    assert inspect(store.engine).get_table_names() == ["alembic_version"]
    store.engine.dispose()
    again = Store(tmp_path / "home", pg_url)  # the service's start migrates an empty database to head
    with again.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert sorted(inspect(conn).get_table_names()) == sorted([*Base.metadata.tables, "alembic_version"])
    with again.session() as s:
        assert s.scalars(select(Tenant)).all() == []
    again.engine.dispose()


def test_file_sizes_and_event_ids_are_64_bit(db_url: str, tmp_path: Path) -> None:
    """A 3 GiB upload's size and an event id past 2**31 fit (32-bit INTEGER on PostgreSQL did not)."""
    from prompttuner.core.types import Event
    from prompttuner.state.models import DataFile, EventRow

    store = Store(tmp_path / "home", db_url)
    tenant, _ = store.create_tenant("big")
    with store.session() as s:
        s.add(
            DataFile(
                id="file-big",
                tenant_id=tenant.id,
                filename="x",
                path="x",
                bytes=3 << 30,
                rows=1,
                labels=["a"],
                created_at=0.0,
            )
        )
        s.add(EventRow(id=(1 << 31) + 5, time=0.0, kind="arrive", data={}))
    store.add_events([Event(1.0, "arrive")])
    with store.session() as s:
        assert s.get(DataFile, "file-big").bytes == 3 << 30  # type: ignore[union-attr]
        ids = sorted(e.id for e in s.query(EventRow).all())
    assert len(ids) == 2 and (1 << 31) + 5 in ids  # stored and read back beside an ordinary event
