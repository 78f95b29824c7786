"""What the demo shows: one live board, the two quotes side by side, the final table and its JSON.

Everything the demo prints goes through one ``rich`` console on stderr (``--json`` writes one line of JSON
on stdout at the end); the workers' library progress bars are silenced where they run
(``runtime.worker``), so nothing interleaves with the board.
"""

from __future__ import annotations

import time
from typing import Any

from prompttuner.cli.service_common import cluster_line


def _dur(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}s"


def quote_summary(q: dict[str, Any], asked_at: float) -> dict[str, Any]:
    """A quote from ``POST /v1/quotes`` as the demo reports it (durations from when it was asked, so the
    bank's includes its selection).  The demo asks with a deadline the job meets with room: the quote is
    the cheapest plan's finish (an infeasible one names its ``tightest_deadline`` instead)."""
    sel = q.get("selection") or {}
    fin = q.get("finish_time") if q.get("feasible") else (q.get("tightest_deadline") or q.get("finish_time"))
    return {
        "predicted_steps": q.get("predicted_steps"),
        "prediction": q.get("prediction"),
        "start": sel.get("init") or "random",
        "probe_accuracy": sel.get("probe_accuracy"),
        "raced": sel.get("raced"),
        "no_race": sel.get("no_race"),
        "race_steps": (sel.get("race_steps") or 0) + (sel.get("steps_done") or 0),  # losers' + winner's
        "candidates": [c.get("name") for c in sel.get("candidates") or []],
        "selection_s": sel.get("seconds", q.get("selection_s")),
        "workers": q.get("gpus"),
        "feasible": q.get("feasible"),
        "quoted_s": (fin - asked_at) if isinstance(fin, int | float) else None,
    }


def quotes_table(task: str, with_bank: dict[str, Any], without: dict[str, Any], deadline_s: float) -> Any:
    """The quote of one job with and without the Prompt Bank, side by side."""
    from rich import box
    from rich.table import Table

    t = Table(title=f"one job ({task}), two quotes", box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("")
    t.add_column("with the Prompt Bank", overflow="fold")
    t.add_column("from random init", overflow="fold")
    acc = with_bank.get("probe_accuracy")
    rows = [
        ("start", with_bank["start"] + (f" (probe acc {acc:.2f})" if acc is not None else ""), "random"),
        ("predicted steps", f"{with_bank['predicted_steps']:.0f}", f"{without['predicted_steps']:.0f}"),
        ("from", str(with_bank["prediction"]), str(without["prediction"])),
        ("candidates", ", ".join(with_bank.get("candidates") or []) or "-", "-"),
        (
            "race",
            f"{with_bank['race_steps']} steps"
            if with_bank.get("raced")
            else f"none ({with_bank.get('no_race') or 'no race'})",
            "-",
        ),
        ("selection", f"{with_bank['selection_s'] or 0:.1f}s (done at the quote)", "-"),
        ("quoted finish", _dur(with_bank["quoted_s"]), _dur(without["quoted_s"])),
        (
            f"deadline {deadline_s:.0f}s",
            "[green]feasible[/]" if with_bank["quoted_s"] <= deadline_s else "[red]infeasible[/]",
            "[green]feasible[/]" if without["quoted_s"] <= deadline_s else "[red]infeasible[/]",
        ),
    ]
    for r in rows:
        t.add_row(*r)
    return t


def _short(start: str) -> str:
    """A bank entry's id cut to its first 8 digits (the JSON keeps it whole)."""
    return start[:13] if start.startswith("bank:") else start


def board(jobs: list[dict[str, Any]], labels: dict[str, str], info: dict[str, Any], phase: str) -> Any:
    """The live board: a line per job, the pool in one line, what the demo is doing."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="jobs (live)")
    for col in ("job", "task / start", "status", "steps", "acc/target", "quoted", "deadline"):
        t.add_column(col, no_wrap=True)
    now = time.time()
    for j in sorted(jobs, key=lambda j: j["created_at"]):
        p = j["progress"]
        acc = "-" if p["accuracy"] is None else f"{p['accuracy']:.2f}"
        q = j.get("quote") or {}
        quoted = q.get("finish_time")
        left = j["deadline"] - (j["finished_at"] or now)
        dl = f"{left:.0f}s left" if j["finished_at"] is None else ("met" if j["deadline_met"] else "missed")
        t.add_row(
            j["id"][4:12],
            labels.get(j["id"], "?"),
            j["status"],
            f"{p['steps_done']}/{j['max_steps']}",
            f"{acc}/{j['target_accuracy']:.2f}" if j.get("target_accuracy") else acc,
            _dur(quoted - j["created_at"]) if isinstance(quoted, int | float) else "-",
            dl,
        )
    return Group(t, Text(cluster_line(info)), Text(phase, style="bold"))


def job_result(
    j: dict[str, Any], label: str, selection_at_quote_s: float | None = None, since: float | None = None
) -> dict[str, Any]:
    """One job of the final table (and of the JSON line).  ``selection_at_quote_s``: the seconds the bank's
    selection and race ran for it at its quote, before it was submitted (in its GPU-seconds).  Its
    deadline, quoted finish and time run from ``since`` (the epoch time of its quote, so that they include
    that selection; ``counts_from`` says "quote") or else from its submission."""
    q = j.get("quote") or {}
    fin = q.get("finish_time") or q.get("tightest_deadline")  # infeasible (best effort): the tightest
    end = j["finished_at"]
    t0 = j["created_at"] if since is None else since
    return {
        "id": j["id"],
        "task": label.split(" ")[0],
        "start": j["init"],
        "bank_warm_start": j["bank_warm_start"],
        "best_effort": j["best_effort"],
        "status": j["status"],
        "steps": j["progress"]["steps_done"],
        # the warm start's race: the losing starts' steps, run for this job too
        "race_steps": int(((q.get("start") or {}).get("race_steps")) or 0),
        "accuracy": j["progress"]["accuracy"],
        "target": j["target_accuracy"],
        "target_reached": j["target_reached"],
        "deadline_met": j["deadline_met"],
        "slo_met": j["slo_met"],
        "gpu_seconds": j["gpu_seconds"],
        "counts_from": "submission" if since is None else "quote",
        "deadline_s": round(j["deadline"] - t0, 1),
        "quoted_s": round(fin - t0, 1) if isinstance(fin, int | float) else None,
        "actual_s": round(end - t0, 1) if end is not None else None,
        "selection_at_quote_s": None if selection_at_quote_s is None else round(selection_at_quote_s, 1),
    }


def final_table(rows: list[dict[str, Any]]) -> Any:
    """The jobs at the end: ``*`` marks a best-effort job, ``+N`` the steps its warm start's race ran
    for it beside its own (the losing starts')."""
    from rich import box
    from rich.table import Table

    yes = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}
    notes = ["* best effort"] if any(r["best_effort"] for r in rows) else []
    if any(r.get("race_steps") for r in rows):
        notes.append("+N: steps of the losing starts of its warm start's race")
    if any(r.get("selection_at_quote_s") for r in rows):
        notes.append("at quote: the bank's selection and race, run at the quote before the job was submitted")
    if any(r.get("counts_from") == "quote" for r in rows):
        notes.append("^ times and deadline from its quote (its selection included), not its submission")
    t = Table(
        title="PromptTuner demo: jobs",
        caption="; ".join(notes) or None,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in (
        "task",
        "start",
        "steps",
        "acc/target",
        "quoted",
        "took",
        "at quote",
        "deadline",
        "target",
        "deadline met",
    ):
        t.add_column(col, no_wrap=True)
    t.add_column("SLO met", no_wrap=True)
    t.add_column("GPU-s", justify="right", no_wrap=True)
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}"
        start = _short(str(r["start"]))
        t.add_row(
            r["task"] + ("^" if r.get("counts_from") == "quote" else ""),
            start + ("*" if r["best_effort"] else ""),
            str(r["steps"]) + (f" +{r['race_steps']}" if r.get("race_steps") else ""),
            f"{acc}/{r['target']:.2f}",
            _dur(r["quoted_s"]),
            _dur(r["actual_s"]),
            _dur(r.get("selection_at_quote_s")) if r.get("selection_at_quote_s") else "-",
            _dur(r["deadline_s"]),
            yes[r["target_reached"]],
            yes[r["deadline_met"]],
            yes[r["slo_met"]],
            f"{r['gpu_seconds']:.1f}",
        )
    return t
