"""What ``serve`` and ``demo`` share: the service built from command-line options, and the table and line
that show its jobs and its worker pool.
"""

from __future__ import annotations

import importlib
import re
import time
from pathlib import Path
from typing import Any


def build_service(
    home: Path,
    workers: int,
    warm: int | None,
    model: str | tuple[str, ...],
    backend: str,
    policy: str,
    db: str | None,
    engine: str | None,
    plugins: list[str],
    chunk_s: float = 4.0,
    backend_options: dict[str, Any] | None = None,
    max_replicas: int | None = None,
) -> Any:
    """The service ``serve`` and ``demo`` run (imports ``plugins`` first: tests register fake engines);
    ``model``: the base LLM, or the base LLMs, the warm pools hold."""
    for mod in plugins:
        importlib.import_module(mod)
    from prompttuner.runtime.engine import REAL_ENGINE
    from prompttuner.service import Service, ServiceConfig

    cfg = ServiceConfig(
        home=home,
        db_url=db,
        backend=backend,
        engine=engine or REAL_ENGINE,
        policy=policy,
        models=(model,) if isinstance(model, str) else tuple(model),
        workers=workers,
        warm=warm,
        backend_options=dict(backend_options or {}),
    )
    cfg.controller.chunk_s = chunk_s
    cfg.controller.max_replicas = max_replicas
    return Service(cfg)


def jobs_table(
    jobs: list[dict[str, Any]], title: str = "jobs", names: dict[str, str] | None = None, short: bool = False
) -> Any:
    """Jobs at a glance: the target (reached or not), the deadline (met or missed with the margin, or the
    time left) and the SLO (the target reached by the deadline, ``core.slo``)."""
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("job", overflow="fold")
    t.add_column("task", overflow="fold", max_width=8)
    t.add_column("status", no_wrap=True)
    t.add_column("steps", justify="right", no_wrap=True)
    t.add_column("acc/target", justify="right", no_wrap=True)
    t.add_column("target", no_wrap=True)
    t.add_column("deadline")
    t.add_column("SLO", no_wrap=True)
    t.add_column("GPU-s", justify="right", no_wrap=True)
    now = time.time()
    for j in jobs:
        p = j["progress"]
        acc = f"{p['accuracy']:.2f}" if p["accuracy"] is not None else "-"
        margin = j["deadline"] - (j["finished_at"] or now)
        if j["deadline_met"] is True:
            dl = f"[green]met[/] {margin:+.0f}s"
        elif j["deadline_met"] is False:
            dl = f"[red]missed[/] {margin:+.0f}s"
        else:
            dl = f"{margin:.0f}s left" if margin >= 0 else f"[red]late[/] {-margin:.0f}s"
        target = j.get("target_accuracy")
        if target is not None:
            colour = {True: "green", False: "red", None: ""}[j.get("target_reached")]
            acc = f"{acc}/[{colour}]{target:.2f}[/]" if colour else f"{acc}/{target:.2f}"
        # each of the SLO's two halves in words (a colour alone is lost when the output is piped)
        words = {True: "[green]reached[/]", False: "[red]not reached[/]", None: "-"}
        reached = words[j.get("target_reached")]
        slo = {True: "[green]met[/]", False: "[red]missed[/]", None: "-"}[j.get("slo_met")]
        t.add_row(
            j["id"][4:12] if short else j["id"],
            (names or {}).get(j["id"], j["training_file"]),
            j["status"],
            f"{p['steps_done']}/{j['max_steps']}",
            acc,
            reached,
            dl,
            slo,
            f"{j['gpu_seconds']:.1f}",
        )
    return t


def cluster_line(c: dict[str, Any]) -> str:
    """The worker pool in one line: workers by state, capacity, backend, policy, warm workers per base LLM,
    GPU-seconds."""
    states: dict[str, int] = {}
    for w in c["workers"]:
        states[w["state"]] = states.get(w["state"], 0) + 1
    ws = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"
    warm = c.get("warm_models") or {}
    by_model = f"; warm by model: {', '.join(f'{m} {n}' for m, n in sorted(warm.items()))}" if warm else ""
    return (
        f"workers: {ws} (capacity {c['capacity']}, backend {c['backend']}, policy {c['policy']}{by_model}); "
        f"GPU-seconds held {c['gpu_seconds_held']:.1f}, busy {c['gpu_seconds_busy']:.1f}, "
        f"utilisation {c['utilisation']:.0%}"
    )


def home_dir(home: Path | None) -> Path:
    """``--home`` if given, else ``$PROMPTTUNER_HOME`` (default ``~/.prompttuner``); created if missing."""
    from prompttuner import config

    if home is None:
        return config.home()
    p = home.expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise ValueError(f"duration {text!r}: use a number of seconds or 30s, 15m, 2h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
