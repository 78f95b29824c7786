"""Fixtures for every test module: a private PostgreSQL server for the session and databases on it.

The server is Debian's ``postgresql`` (``scripts/postgres.sh install`` puts it there when it is missing;
``scripts/test.sh`` runs that first): one cluster for the whole session in a temporary folder, listening on
127.0.0.1 and a free port only, started and stopped by ``scripts/postgres.sh`` (as the ``postgres`` user
when the tests run as root).  ``pg_url`` is a fresh database on it for one test; ``db_url`` runs a test
twice, on a SQLite file and on a PostgreSQL database.

Where PostgreSQL cannot be had (not installed and no root or apt-get to install it), the tests that need it
are skipped with the reason, which is repeated in a banner at the end of the run; with ``CI=true`` they
fail instead, so CI never passes without them.  ``-m "not postgres"`` leaves them out on purpose.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pg_support import DB_ENV, PgServer

PG_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "postgres.sh"

# The tests choose their databases themselves: a $PROMPTTUNER_DB_URL left in the shell (a real service's
# database) must never be opened by a test that means its home folder's SQLite file.
os.environ.pop(DB_ENV, None)

_skipped_because: list[str] = []


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: runs on the session's private PostgreSQL server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "pg_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped_because:
        terminalreporter.section("PostgreSQL tests SKIPPED", sep="!", red=True, bold=True)
        terminalreporter.line(_skipped_because[0], red=True, bold=True)
        terminalreporter.line("install Debian's postgresql package, or run bash scripts/test.sh as root")


def _script(*args: str | Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PG_SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fake_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("FAKE_")}


@pytest.fixture(autouse=True)
def fake_engine_env_kept() -> Iterator[None]:
    """The fake engine's knobs (``FAKE_STEP_S`` and the other ``FAKE_*`` variables) are each test's own:
    one left changed reaches the workers of every service the later tests start (a leaked FAKE_STEP_S=0
    made a 5000-step job finish within its first second, before the cancel meant for it while running)."""
    before = _fake_env()
    yield
    after = _fake_env()
    assert after == before, f"the test left the fake engine's environment changed: {before} -> {after}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server, installed if missing; skipped (failed under CI) where it cannot be."""
    inst = _script("install", timeout=900)
    if inst.returncode != 0:
        reason = (inst.stderr.strip().splitlines() or ["postgres.sh install failed"])[-1]
        reason = f"PostgreSQL is not available: {reason}"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run)", pytrace=False)
        _skipped_because.append(reason)
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="prompttuner-pg-"))
    os.chmod(base, 0o711)  # the postgres user, who runs the server when we are root, must reach the cluster
    cluster = base / "cluster"
    try:
        start = _script("start", cluster, _free_port(), timeout=120)
        if start.returncode != 0:  # installed but not starting: a real failure, locally as well
            pytest.fail(f"the PostgreSQL test server did not start:\n{start.stderr}", pytrace=False)
        yield PgServer(url=start.stdout.strip().splitlines()[-1], dir=cluster)
    finally:
        stop = _script("stop", cluster, timeout=120)
        shutil.rmtree(base, ignore_errors=True)
        if stop.returncode != 0:
            raise RuntimeError(f"the PostgreSQL test server did not stop:\n{stop.stderr}")


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh PostgreSQL database for one test (dropped after it)."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test once on a fresh SQLite file and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        folder = tmp_path / "sqlite"
        folder.mkdir()
        return f"sqlite:///{folder / 'prompttuner.db'}"
    return str(request.getfixturevalue("pg_url"))
