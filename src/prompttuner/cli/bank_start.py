"""``prompttuner bank search --race``: a job's start as the service makes it (``bank.warm_start``), shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from prompttuner.cli.common import console, emit_json, fail


def show_start(
    folder: Path, loaded: Any, task: Any, cfg: Any, race_steps: int, json_out: bool, budget: Any = None
) -> None:
    """Run ``warm_start`` for ``task`` and print the candidates, the race rounds and the chosen start."""
    from prompttuner.bank import BankError, RaceSettings, warm_start

    try:
        ws = warm_start(folder, loaded, task, cfg, race=RaceSettings(steps=race_steps), budget=budget)
    except BankError as e:
        fail(str(e))
    out = ws.summary()
    if json_out:
        emit_json(out)
        return
    rows = ws.info.get("selection", {}).get("rows")
    table = Table(
        title="starts" + (f" (probed on {rows} training rows)" if rows else " (no bank entry to probe)")
    )
    for col in ("start", "kind", "task similarity", "probe accuracy", "probe loss", "race (steps: accuracy)"):
        table.add_column(col)
    for c in ws.candidates:
        sc = c.score
        rounds = ", ".join(f"{int(r['steps'])}: {r['accuracy']:.3f}" for r in c.race)
        table.add_row(
            c.name,
            c.kind,
            "-" if c.similarity is None else f"{c.similarity:.3f}",
            "-" if sc is None else f"{sc.accuracy:.3f}",
            "-" if sc is None else f"{sc.loss:.3f}",
            rounds or "-",
        )
    console.print(table)
    why = "raced" if out["raced"] else "no race: it meets the target on the probe rows"
    console.print(
        f"chosen: [bold]{ws.chosen.name}[/] ({why}); lr {ws.trainer.lr:.4g}; race steps of the losers "
        f"{ws.extra_steps}, of the chosen {ws.trainer.step_count}; selection {out['select_cpu_s']:.2f} CPU-s"
    )
