"""CLI for tenants and keys, on the server's machine through its database (who can read the home folder
is the operator): ``tenant NAME`` creates a tenant with a key, ``tenants`` lists them, ``keys
list|create|rotate|revoke`` manage a tenant's keys (several at once, so a rotation needs no downtime), and
``admin-key`` prints or rotates the operator's admin key (``$PROMPTTUNER_HOME/admin_key``, for
``/metrics``, the full ``/v1/cluster`` and the ``/v1/admin`` routes).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from prompttuner.cli.common import JSON_OPTION, console, emit_json, fail
from prompttuner.cli.service_common import home_dir, parse_duration

HOME_OPTION = typer.Option(None, "--home", help="state folder (default: $PROMPTTUNER_HOME)")
DB_OPTION = typer.Option(None, "--db", help="SQLAlchemy URL (default: SQLite in the home folder)")


def _store(home: Path | None, db: str | None) -> Any:
    from prompttuner.state.store import Store

    return Store(home_dir(home), db)


def _key_json(k: Any, secret: str | None = None) -> dict[str, Any]:
    from prompttuner.api.routers.admin import key_json

    return key_json(k, secret=secret)


def _print_keys(keys: list[dict[str, Any]]) -> None:
    from rich.table import Table

    t = Table("key", "prefix", "label", "created", "last used", "revoked", box=None)
    stamp = lambda x: time.strftime("%Y-%m-%d %H:%M", time.localtime(x)) if x else "-"  # noqa: E731
    for k in keys:
        revoked = stamp(k["revoked_at"]) + ("" if not k["active"] or not k["revoked_at"] else " (pending)")
        t.add_row(
            k["id"],
            k["prefix"] or "(migrated)",
            k["label"] or "",
            stamp(k["created"]),
            stamp(k["last_used"]),
            revoked if k["revoked_at"] else "-",
        )
    console.print(t)


def _tenant_or_fail(store: Any, ref: str) -> Any:
    t = store.find_tenant(ref)
    if t is None:
        fail(f"no tenant {ref!r} (prompttuner tenants lists them)")
    return t


def tenant_cmd(
    name: str = typer.Argument(..., help="tenant name (unique)"),
    label: str = typer.Option(None, "--label", help="a note on the key (who or what uses it)"),
    home: Path = HOME_OPTION,
    db: str = DB_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Create a tenant and print its API key (shown once; only its hash is stored)."""
    store = _store(home, db)
    try:
        tenant, key = store.create_tenant(name, label)
        (row,) = store.keys(tenant.id)
    except ValueError as e:
        fail(str(e))
    finally:
        store.engine.dispose()
    if json_out:
        emit_json({"tenant": tenant.id, "name": name, "api_key": key, "key_id": row.id})
    else:
        console.print(f"tenant [bold]{name}[/] ({tenant.id}); API key {row.id} (keep it, it is shown once):")
        print(key)


def tenants_cmd(home: Path = HOME_OPTION, db: str = DB_OPTION, json_out: bool = JSON_OPTION) -> None:
    """List the tenants and how many active keys each has."""
    store = _store(home, db)
    try:
        now = time.time()
        rows = [
            {
                "id": t.id,
                "name": t.name,
                "created": t.created_at,
                "keys_active": sum(1 for k in store.keys(t.id) if k.active(now)),
            }
            for t in store.tenants()
        ]
    finally:
        store.engine.dispose()
    if json_out:
        emit_json({"tenants": rows})
        return
    for r in rows:
        console.print(f"{r['id']}  {r['name']:<24} {r['keys_active']} active key(s)")


keys_app = typer.Typer(
    help="A tenant's API keys: list, create, rotate (with a grace period) and revoke.", no_args_is_help=True
)


@keys_app.command("list")
def keys_list_cmd(
    tenant: str = typer.Argument(..., help="tenant id or name"),
    home: Path = HOME_OPTION,
    db: str = DB_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """The tenant's keys, revoked ones included (never the keys themselves: they are not stored)."""
    store = _store(home, db)
    try:
        t = _tenant_or_fail(store, tenant)
        keys = [_key_json(k) for k in store.keys(t.id)]
    finally:
        store.engine.dispose()
    if json_out:
        emit_json({"tenant": t.id, "keys": keys})
    else:
        _print_keys(keys)


@keys_app.command("create")
def keys_create_cmd(
    tenant: str = typer.Argument(..., help="tenant id or name"),
    label: str = typer.Option(None, "--label", help="a note on the key"),
    home: Path = HOME_OPTION,
    db: str = DB_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """A further key for the tenant (its other keys keep working); printed once."""
    store = _store(home, db)
    try:
        t = _tenant_or_fail(store, tenant)
        row, key = store.create_key(t.id, label)
    finally:
        store.engine.dispose()
    if json_out:
        emit_json(_key_json(row, key))
    else:
        console.print(f"new key {row.id} of tenant [bold]{t.name}[/] (keep it, it is shown once):")
        print(key)


@keys_app.command("rotate")
def keys_rotate_cmd(
    tenant: str = typer.Argument(..., help="tenant id or name"),
    grace: str = typer.Option("0", "--grace", help="the old keys keep working this long (90s, 15m, 2h)"),
    label: str = typer.Option(None, "--label", help="a note on the new key"),
    home: Path = HOME_OPTION,
    db: str = DB_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """A new key for the tenant; its other active keys end after --grace (default: now)."""
    try:
        grace_s = parse_duration(grace)
    except ValueError as e:
        fail(str(e))
    store = _store(home, db)
    try:
        t = _tenant_or_fail(store, tenant)
        row, key, ended = store.rotate_keys(t.id, grace_s, label)
    finally:
        store.engine.dispose()
    if json_out:
        emit_json({**_key_json(row, key), "replaced": [_key_json(k) for k in ended]})
        return
    when = "now" if grace_s == 0 else f"in {grace}"
    console.print(
        f"new key {row.id} of tenant [bold]{t.name}[/]; {len(ended)} old key(s) end {when}. "
        "The new key (keep it, it is shown once):"
    )
    print(key)


@keys_app.command("revoke")
def keys_revoke_cmd(
    key_id: str = typer.Argument(..., help="the key's id (key-...), from `keys list`"),
    home: Path = HOME_OPTION,
    db: str = DB_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Revoke a tenant's key now."""
    store = _store(home, db)
    try:
        k = store.get_key(key_id)
        if k is None or k.role != "tenant":
            fail(f"no tenant key {key_id!r} (admin keys: prompttuner admin-key --rotate)")
        row = store.revoke_key(key_id)
    finally:
        store.engine.dispose()
    if json_out:
        emit_json(_key_json(row))
    else:
        console.print(f"key {row.id} of tenant {row.tenant_id} revoked")


def admin_key_cmd(
    rotate: bool = typer.Option(False, "--rotate", help="make a new admin key; the old ones end (--grace)"),
    grace: str = typer.Option("0", "--grace", help="with --rotate: the old keys keep working this long"),
    home: Path = HOME_OPTION,
    db: str = DB_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Print the operator's admin key (from $PROMPTTUNER_HOME/admin_key; made if there is none)."""
    try:
        grace_s = parse_duration(grace)
    except ValueError as e:
        fail(str(e))
    h = home_dir(home)
    store = _store(h, db)
    try:
        key = (
            store.rotate_admin_key(h / "admin_key", grace_s)
            if rotate
            else store.ensure_admin_key(h / "admin_key")
        )
    finally:
        store.engine.dispose()
    if key is None:
        fail(f"{h / 'admin_key'} is missing or holds a revoked key: run prompttuner admin-key --rotate")
    if json_out:
        emit_json({"admin_key": key, "file": str(h / "admin_key"), "rotated": rotate})
    else:
        console.print(f"admin key ({h / 'admin_key'}, mode 0600):")
        print(key)


def register(app: typer.Typer) -> None:
    app.command("tenant")(tenant_cmd)
    app.command("tenants")(tenants_cmd)
    app.add_typer(keys_app, name="keys")
    app.command("admin-key")(admin_key_cmd)
