"""``prompttuner status``'s table says each half of the SLO in words, so piped output keeps them."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from prompttuner.cli.service_common import jobs_table


def _job(jid: str, reached: bool | None, deadline_met: bool | None, slo: bool | None) -> dict[str, Any]:
    done = deadline_met is not None
    return {
        "id": jid,
        "training_file": f"file-{jid}",
        "status": "succeeded" if done else "running",
        "progress": {"steps_done": 12, "accuracy": 0.62},
        "max_steps": 50,
        "target_accuracy": 0.7,
        "target_reached": reached,
        "deadline_met": deadline_met,
        "slo_met": slo,
        "deadline": 1_000.0,
        "finished_at": 900.0 if done else None,
        "gpu_seconds": 3.5,
    }


def test_status_table_names_target_deadline_and_slo_in_words() -> None:
    jobs = [
        _job("job-aaaaaaaa-ok", True, True, True),
        _job("job-bbbbbbbb-below", False, True, False),  # stopped on time below its target
        _job("job-cccccccc-running", None, None, None),
    ]
    console = Console(no_color=True, width=200, record=True)
    console.print(jobs_table(jobs, names={j["id"]: j["id"][-7:] for j in jobs}))
    text = console.export_text().splitlines()
    lines = {key: next(line for line in text if key in line) for key in ("-ok", "below", "running")}
    assert " reached " in lines["-ok"] and "met" in lines["-ok"] and "missed" not in lines["-ok"]
    # the deadline was met, the target was not: the SLO is missed, and the table says which half failed
    assert "not reached" in lines["below"] and "met +100s" in lines["below"] and "missed" in lines["below"]
    assert "reached" not in lines["running"] and "met" not in lines["running"]
