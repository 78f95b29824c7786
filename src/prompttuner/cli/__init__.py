"""The ``prompttuner`` command line.

Each command group lives in its own module with a ``register(app)`` function, so the parts of the
project (engine, bank, simulator, service) add commands without touching each other.
"""

from __future__ import annotations

import typer

from prompttuner import __version__
from prompttuner.cli import bank, serve, simulate, tenants, tune
from prompttuner.cli.common import JSON_OPTION, console, emit_json

app = typer.Typer(
    name="prompttuner",
    help="SLO-aware elastic prompt tuning: tune soft prompts, search the Prompt Bank, simulate schedulers, "
    "run the service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """SLO-aware elastic prompt tuning."""


@app.command()
def version(json_out: bool = JSON_OPTION) -> None:
    """Print PromptTuner's version."""
    if json_out:
        emit_json({"version": __version__})
    else:
        console.print(f"prompttuner {__version__}")


for _module in (tune, bank, simulate, serve, tenants):
    _module.register(app)


def main() -> None:
    app()
