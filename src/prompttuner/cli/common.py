"""Helpers shared by the CLI commands: one way to print results for people and for machines."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console

console = Console(stderr=True)  # progress and tables for people go to stderr; --json goes to stdout

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout instead of tables.")


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> None:
    """Print a clear error and exit; never a traceback for a user's mistake."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
