"""Opening the service's database and the few operations every part of the service shares.

The database is a SQLite file under ``$PROMPTTUNER_HOME`` by default (WAL mode, so the API threads and the
controller thread can read while one writes) or any SQLAlchemy URL (PostgreSQL in production).  The
schema is created and upgraded by the Alembic migrations in ``state/migrations`` on every start, so an old
home folder is upgraded in place and a fresh one gets the full schema.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, select
from sqlalchemy.orm import Session, sessionmaker

from prompttuner.core.types import Event
from prompttuner.state.models import EventRow, Tenant

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def default_url(home: Path) -> str:
    """The database when none is given: ``$PROMPTTUNER_DB_URL`` if set, else the SQLite file in ``home``.

    The variable lets ``serve``, ``tenant`` and every other command open the same PostgreSQL database
    (``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB``) without a ``--db`` on each.
    """
    return os.environ.get("PROMPTTUNER_DB_URL", "").strip() or f"sqlite:///{home / 'prompttuner.db'}"


def make_engine(url: str) -> Engine:
    """The engine for ``url``: SQLite (WAL, foreign keys on) or a server, PostgreSQL through psycopg 3.

    On both, JSON columns are written without NaN or Infinity: PostgreSQL's json type refuses them and the
    API's JSON has neither, so a non-finite number is stored as null (as ``state.serial`` writes it).
    """

    def dumps(o: Any) -> str:  # no closure: psycopg caches its JSON dumper by this function's code
        import json
        import math

        try:
            return json.dumps(o, allow_nan=False)
        except ValueError:  # NaN or Infinity somewhere

            def finite(x: Any) -> Any:
                if isinstance(x, float):
                    return x if math.isfinite(x) else None
                if isinstance(x, dict):
                    return {k: finite(v) for k, v in x.items()}
                if isinstance(x, list | tuple):
                    return [finite(v) for v in x]
                return x

            return json.dumps(finite(o), allow_nan=False)

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        sqlite_args = {"check_same_thread": False, "timeout": 30}
        eng = create_engine(u, connect_args=sqlite_args, json_serializer=dumps)

        @event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return eng
    # a plain postgresql:// or postgres:// URL means psycopg 3, the driver the package installs (SQLAlchemy
    # would pick psycopg2); pool_pre_ping replaces a connection the server closed (a restart, an idle
    # timeout) before a session gets it
    connect_args: dict[str, Any] = {}
    if u.drivername in ("postgres", "postgresql"):
        u = u.set(drivername="postgresql+psycopg")
    if u.drivername == "postgresql+psycopg":
        defaults = {"connect_timeout": 10, "application_name": "prompttuner"}
        connect_args = {k: v for k, v in defaults.items() if k not in u.query}  # the URL's own settings win
    return create_engine(u, pool_pre_ping=True, connect_args=connect_args, json_serializer=dumps)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """A database plus the home folder the rows point into."""

    def __init__(self, home: Path, url: str | None = None) -> None:
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        for sub in ("files", "jobs", "prompts"):
            (self.home / sub).mkdir(exist_ok=True)
        self.url = url or default_url(home)
        self.engine = make_engine(self.url)
        migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: committed when the block ends, rolled back (nothing half-written) on error."""
        s = self._sessions()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    # -- tenants -------------------------------------------------------------------------------------

    def create_tenant(self, name: str) -> tuple[Tenant, str]:
        """Create a tenant and return it with its API key (only its hash is stored)."""
        key = "pt-" + secrets.token_urlsafe(24)
        tenant = Tenant(
            id="tn-" + secrets.token_hex(6), name=name, key_hash=hash_key(key), created_at=time.time()
        )
        with self.session() as s:
            if s.scalar(select(Tenant).where(Tenant.name == name)) is not None:
                raise ValueError(f"tenant {name!r} already exists")
            s.add(tenant)
        return tenant, key

    def tenant_for_key(self, key: str) -> Tenant | None:
        with self.session() as s:
            return s.scalar(select(Tenant).where(Tenant.key_hash == hash_key(key)))

    def tenant_by_name(self, name: str) -> Tenant | None:
        with self.session() as s:
            return s.scalar(select(Tenant).where(Tenant.name == name))

    # -- events --------------------------------------------------------------------------------------

    def add_events(self, events: list[Event], session: Session | None = None) -> None:
        rows = [
            EventRow(time=e.time, kind=e.kind, job_id=e.job_id, worker_id=e.worker_id, data=dict(e.data))
            for e in events
        ]
        if session is not None:
            session.add_all(rows)
            return
        with self.session() as s:
            s.add_all(rows)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
