"""Opening the service's database and the few operations every part of the service shares.

The database is a SQLite file under ``$PROMPTTUNER_HOME`` by default (WAL mode, so the API threads and the
controller thread can read while one writes) or any SQLAlchemy URL (PostgreSQL in production).  The
schema is created and upgraded by the Alembic migrations in ``state/migrations`` on every start, so an old
home folder is upgraded in place and a fresh one gets the full schema.

The home folder and its sub-folders are private to the service's user (0700), and so are the files the
store creates there (0600): the SQLite database (its WAL and shared-memory files get the database's mode)
and whatever is written with :func:`write_private` (uploaded data, the key files).

API keys: a tenant has any number of keys (``api_keys`` rows; only their sha256 is stored); a key is
revoked at once or, in a rotation with a grace period, at a later time.  Admin keys (no tenant) are the
operator's: ``/metrics``, the full ``/v1/cluster`` and the ``/v1/admin`` routes.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, make_url, select
from sqlalchemy.orm import Session, sessionmaker

from prompttuner.core.types import Event, JobPhase
from prompttuner.state.models import ApiKey, DataFile, EventRow, Job, Tenant

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


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the newest Alembic revision (idempotent), or up to ``revision``."""
    _alembic(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (for a maintainer; the service only upgrades)."""
    _alembic(engine, "downgrade", revision)


def _alembic(engine: Engine, direction: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:  # SQLite alters a table by rebuilding it, which foreign keys pointing to it forbid
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        with conn.begin():
            cfg.attributes["connection"] = conn
            getattr(command, direction)(cfg, revision)
        if sqlite:
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()
            if broken:
                raise RuntimeError(f"the migration left rows pointing to missing rows: {broken[:5]}")


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private_dir(path: Path) -> Path:
    """``path`` (and missing parents) as a folder only its owner may enter (0700, also if it existed)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR)
    return path


def write_private(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` readable by its owner only (0600), atomically (temp file + rename).

    The file is never visible with a wider mode, not even for a moment (the temporary file is created
    0600), and an existing file at ``path`` is replaced.
    """
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, PRIVATE_FILE)  # in case a umask or an ACL widened it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite database file 0600 before SQLite does (it would use 0644), or narrow it."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return
    db = Path(u.database)
    if db.parent.exists():
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
        for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            if p.exists():
                os.chmod(p, PRIVATE_FILE)


class Store:
    """A database plus the home folder the rows point into."""

    def __init__(self, home: Path, url: str | None = None) -> None:
        self.home = home
        make_private_dir(self.home)
        for sub in ("files", "jobs", "prompts"):
            make_private_dir(self.home / sub)
        self.url = url or default_url(home)
        _private_sqlite_file(self.url)
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

    # -- tenants and keys ----------------------------------------------------------------------------

    def create_tenant(self, name: str, label: str | None = None) -> tuple[Tenant, str]:
        """Create a tenant with one API key; returns the tenant and the key (only its hash is stored).

        A name is 1-128 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit (the same
        rule as the admin API's; a longer one would not fit the column on PostgreSQL)."""
        if not TENANT_NAME.fullmatch(name):
            raise ValueError(
                f"tenant name {name[:40]!r}{'...' if len(name) > 40 else ''} is not 1-128 letters, digits, "
                "'.', '_' or '-' starting with a letter or digit"
            )
        now = time.time()
        tenant = Tenant(id="tn-" + secrets.token_hex(6), name=name, created_at=now)
        key, row = _new_key("tenant", tenant.id, label, now)
        with self.session() as s:
            if s.scalar(select(Tenant).where(Tenant.name == name)) is not None:
                raise ValueError(f"tenant {name!r} already exists")
            s.add(tenant)
            s.flush()
            s.add(row)
        return tenant, key

    def tenants(self) -> list[Tenant]:
        with self.session() as s:
            return list(s.scalars(select(Tenant).order_by(Tenant.created_at)))

    def tenant_by_name(self, name: str) -> Tenant | None:
        with self.session() as s:
            return s.scalar(select(Tenant).where(Tenant.name == name))

    def find_tenant(self, ref: str) -> Tenant | None:
        """The tenant with id or name ``ref``."""
        with self.session() as s:
            return s.get(Tenant, ref) or s.scalar(select(Tenant).where(Tenant.name == ref))

    def authenticate(self, key: str, now: float | None = None) -> tuple[ApiKey, Tenant | None] | None:
        """The active key ``key`` and its tenant (None for an admin key), or None if no such active key.

        Notes when the key was last used, at most once a minute a key (a write per request would
        compete with the controller for the database).
        """
        now = time.time() if now is None else now
        with self.session() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
            if row is None or not row.active(now):
                return None
            tenant = s.get(Tenant, row.tenant_id) if row.tenant_id is not None else None
            if row.role == "tenant" and tenant is None:
                return None
            if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY_S:
                row.last_used_at = now
        return row, tenant

    def tenant_for_key(self, key: str) -> Tenant | None:
        """The tenant an active tenant key belongs to (None for unknown, revoked and admin keys)."""
        found = self.authenticate(key)
        return found[1] if found is not None else None

    def keys(self, tenant_id: str | None, role: str = "tenant") -> list[ApiKey]:
        """The keys of tenant ``tenant_id`` (or, with None and role "admin", the admin keys), oldest first."""
        with self.session() as s:
            q = select(ApiKey).where(ApiKey.role == role)
            q = q.where(ApiKey.tenant_id.is_(None) if tenant_id is None else ApiKey.tenant_id == tenant_id)
            return list(s.scalars(q.order_by(ApiKey.created_at)))

    def create_key(self, tenant_id: str, label: str | None = None) -> tuple[ApiKey, str]:
        """A further key for tenant ``tenant_id`` (its other keys keep working); KeyError if no tenant."""
        with self.session() as s:
            if s.get(Tenant, tenant_id) is None:
                raise KeyError(f"no tenant {tenant_id!r}")
            key, row = _new_key("tenant", tenant_id, label, time.time())
            s.add(row)
        return row, key

    def get_key(self, key_id: str) -> ApiKey | None:
        with self.session() as s:
            return s.get(ApiKey, key_id)

    def rotate_keys(
        self, tenant_id: str | None, grace_s: float = 0.0, label: str | None = None, role: str = "tenant"
    ) -> tuple[ApiKey, str, list[ApiKey]]:
        """A new key for the tenant (or a new admin key); its other active keys end after ``grace_s``.

        Returns the new key's row, the key, and the keys it replaces (with their new ``revoked_at``).  All
        in one transaction: there is no moment without a working key.
        """
        if grace_s < 0:
            raise ValueError("grace_s must be >= 0")
        now = time.time()
        end = now + grace_s
        with self.session() as s:
            if tenant_id is not None and s.get(Tenant, tenant_id) is None:
                raise KeyError(f"no tenant {tenant_id!r}")
            owner = ApiKey.tenant_id.is_(None) if tenant_id is None else ApiKey.tenant_id == tenant_id
            ended = list(
                s.scalars(
                    select(ApiKey)
                    .where(owner, ApiKey.role == role)
                    .where(ApiKey.revoked_at.is_(None) | (ApiKey.revoked_at > end))
                    .order_by(ApiKey.created_at)
                )
            )
            for k in ended:
                k.revoked_at = end
            key, row = _new_key(role, tenant_id, label, now)
            s.add(row)
        return row, key, ended

    def revoke_key(self, key_id: str, tenant_id: str | None = None, at: float | None = None) -> ApiKey:
        """Revoke key ``key_id`` now (or at ``at``); KeyError if there is none (of ``tenant_id``, if given).

        Revoking a revoked key keeps its first revocation time, unless that is still ahead.
        """
        when = time.time() if at is None else at
        with self.session() as s:
            row = s.get(ApiKey, key_id)
            if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
                raise KeyError(f"no key {key_id!r}")
            if row.revoked_at is None or row.revoked_at > when:
                row.revoked_at = when
        return row

    def ensure_admin_key(self, key_file: Path) -> str | None:
        """The operator's admin key: on first start one is created and written to ``key_file`` (0600).

        Also when every admin key was revoked, a new one is made.  Returns the key in ``key_file`` when
        that still authenticates as admin, else None (an active admin key exists, but the file is gone or
        holds another key: ``prompttuner admin-key --rotate`` makes a new one).
        """
        now = time.time()
        if not any(k.active(now) for k in self.keys(None, role="admin")):
            _row, key, _ended = self.rotate_keys(None, role="admin", label="first start")
            write_private(key_file, key + "\n")
            return key
        if not key_file.exists():
            return None
        key = key_file.read_text().strip()
        found = self.authenticate(key)
        return key if found is not None and found[0].role == "admin" else None

    def rotate_admin_key(self, key_file: Path, grace_s: float = 0.0) -> str:
        """A new admin key written to ``key_file`` (0600); the former admin keys end after ``grace_s``."""
        _row, key, _ended = self.rotate_keys(None, grace_s, label="rotated", role="admin")
        write_private(key_file, key + "\n")
        return key

    def tenant_usage(self, tenant_id: str) -> tuple[int, int]:
        """What counts against the tenant's quotas: its jobs in flight and the bytes of its stored files."""
        ended = [p.value for p in JobPhase if p.terminal]
        with self.session() as s:
            jobs = s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.tenant_id == tenant_id, Job.phase.not_in(ended))
            )
            size = s.scalar(
                select(func.coalesce(func.sum(DataFile.bytes), 0)).where(DataFile.tenant_id == tenant_id)
            )
        return int(jobs or 0), int(size or 0)

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


LAST_USED_EVERY_S = 60.0
KEY_PREFIXES = {"tenant": "pt-", "admin": "pta-"}


TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key(role: str, tenant_id: str | None, label: str | None, now: float) -> tuple[str, ApiKey]:
    """A fresh random key and its row (192 random bits; the row keeps its hash and first characters)."""
    key = KEY_PREFIXES[role] + secrets.token_urlsafe(24)
    row = ApiKey(
        id="key-" + secrets.token_hex(8),
        tenant_id=tenant_id,
        role=role,
        key_hash=hash_key(key),
        prefix=key[: len(KEY_PREFIXES[role]) + 4],
        label=label[:128] if label else None,
        created_at=now,
        revoked_at=None,
        last_used_at=None,
    )
    return key, row
