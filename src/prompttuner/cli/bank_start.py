"""``prompttuner bank search``, shown: the selection, or with ``--race`` a job's start as the service makes it
(``bank.warm_start``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from prompttuner.cli.common import console, emit_json, fail


def show_start(
    folder: Path,
    loaded: Any,
    task: Any,
    cfg: Any,
    race_steps: int,
    json_out: bool,
    budget: Any = None,
    check_first: bool = True,
) -> None:
    """Run ``warm_start`` for ``task`` and print the candidates, the race rounds and the chosen start."""
    from prompttuner.bank import BankError, RaceSettings, warm_start

    race = RaceSettings(steps=race_steps, check_first=check_first)
    try:
        ws = warm_start(folder, loaded, task, cfg, race=race, budget=budget)
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
    why = "raced" if out["raced"] else f"no race: {ws.info.get('no_race', 'at the target on the probe')}"
    fc = ws.info.get("first_check")
    if fc:
        console.print(f"checked first on the validation rows: {fc['start']} at {fc['val_accuracy']:.3f}")
    console.print(
        f"chosen: [bold]{ws.chosen.name}[/] ({why}); lr {ws.trainer.lr:.4g}; race steps of the losers "
        f"{ws.extra_steps}, of the chosen {ws.trainer.step_count}; selection {out['select_cpu_s']:.2f} CPU-s"
    )


def show_selection(sel: Any, json_out: bool) -> None:
    """Print a plain ``bank search``'s selection: the chosen entry, every probe, the time, the predicted
    steps and how the job's own text init compares (what ``tune --init bank:DIR`` then starts from)."""
    from prompttuner.bank import COLD_INIT, ProbeScore, cold_init_wins, describe

    text_score = sel.info.get("baseline_scores", {}).get(COLD_INIT)
    if cold_init_wins(sel) is not None:
        # what `tune --init bank:DIR` does then: start from the job's own instruction (cold lr)
        sel.info["fallback"] = COLD_INIT
    if json_out:
        emit_json(sel.to_dict())
        return
    ent = sel.entry
    chosen = describe(ProbeScore(sel.loss, sel.info.get("accuracy", float("nan"))))
    console.print(
        f"chosen: [bold]{ent.id}[/] (task {ent.task_name or '?'}, labels {','.join(ent.labels)}, "
        f"cluster {ent.cluster_id}) probe {chosen}"
    )
    table = Table(title=f"probes ({sel.info.get('probe_evaluations', 0)} LLM evaluations)")
    for col in ("layer", "entry", "task", "cluster", "similarity", "accuracy", "loss"):
        table.add_column(col)
    for p in sel.probes:
        loss = p.error or ("-" if p.loss is None else f"{p.loss:.4f}")
        acc = "-" if p.accuracy is None else f"{p.accuracy:.3f}"
        table.add_row(
            str(p.layer), p.entry_id, p.task_name, str(p.cluster_id), f"{p.similarity:.3f}", acc, loss
        )
    console.print(table)
    t = sel.timings
    console.print(
        f"time {t['total_s']:.3f}s (features {t['features_s']:.3f}s, index {t['index_s']:.3f}s, "
        f"probes {t['probes_s']:.3f}s); {sel.candidates} candidates in {sel.clusters} clusters"
    )
    console.print(f"predicted steps to target: {sel.predicted_steps:.0f}")
    if text_score is not None:
        verdict = (
            "it ranks at least as high: `tune --init bank:DIR` starts from it (cold lr)"
            if sel.info.get("fallback")
            else "the chosen entry beats it: `tune --init bank:DIR` starts from the entry"
        )
        console.print(f"job's own text init: probe {describe(ProbeScore(**text_score))}; {verdict}")
