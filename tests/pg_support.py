"""The private PostgreSQL server of a test session (started by ``tests/conftest.py``), as a value the
tests can import (a ``conftest`` module cannot be imported by name: each test folder has its own)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_ENV = "PROMPTTUNER_DB_URL"


@dataclass(frozen=True)
class PgServer:
    url: str  # SQLAlchemy URL of the server's `postgres` database (superuser, psycopg 3)
    dir: Path

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL."""
        from psycopg import sql
        from sqlalchemy import make_url

        name = "pt_" + uuid.uuid4().hex[:12]
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url``, closing whatever connections a test left open to it."""
        from psycopg import sql
        from sqlalchemy import make_url

        name = make_url(url).database
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def admin(self, url: str | None = None) -> Any:
        """A psycopg connection (autocommit) to the admin database or to ``url``'s."""
        import psycopg
        from sqlalchemy import make_url

        u = make_url(url or self.url).set(drivername="postgresql")
        return psycopg.connect(u.render_as_string(hide_password=False), autocommit=True)
