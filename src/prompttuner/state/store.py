"""Opening the service's database and the few operations every part of the service shares.

The database is a SQLite file under ``$PROMPTTUNER_HOME`` by default (WAL mode, so the API threads and the
controller thread can read while one writes) or any SQLAlchemy URL (PostgreSQL in production).  The
schema is created and upgraded by the Alembic migrations in ``state/migrations`` on every start, so an old
home folder is upgraded in place and a fresh one gets the full schema.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from prompttuner.core.types import Event
from prompttuner.state.models import EventRow, Tenant

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def default_url(home: Path) -> str:
    return f"sqlite:///{home / 'prompttuner.db'}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return eng
    return create_engine(url, pool_pre_ping=True)


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
