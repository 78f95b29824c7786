"""How long a cold start and a switch of base LLM take on a local worker, for the two bundled models.

On local worker processes (the service's ``LocalBackend``, the real engine, one thread each, as
``prompttuner serve`` runs them), for ``--rounds`` rounds and each bundled model:

- cold start: from asking for a worker to the worker holding the model (``cold_start_wall_s``: what the
  controller sees and now plans with), and the worker's own timing of its ``load_model`` (``load_s``:
  the engine imports torch and transformers in its first load, so that is in it; only the process start
  is not);
- switch: a warm worker that holds the other model is sent ``switch`` (unload it, load this one); the wall
  time from the request to the reply (``switch_wall_s``), and its unload and load as the worker measures
  them.

Before the timed rounds each model is loaded once untimed, so a first load that still converts the GGUF
file into the safetensors cache (``tuning/models.py``) is not counted (its time is reported apart).
Writes ``benchmarks/results/model_switch.json`` and ``.md``.  Run with ``nice -n 10``; on a shared CPU the
numbers are noisy: read the switch against the cold start within a round.

    PYTHONPATH=src nice -n 10 python benchmarks/model_switch.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from prompttuner.runtime.backend import LocalBackend, Reply

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("smollm2-135m", "gemma3-270m")


def wait_reply(backend: LocalBackend, wid: str, timeout: float = 1800.0) -> Reply:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for r in backend.poll(1.0):
            if r.worker_id == wid:
                return r
    raise TimeoutError(f"no reply from {wid}")


def cold_start(backend: LocalBackend, wid: str, model: str) -> dict[str, float]:
    t0 = time.monotonic()
    backend.start_worker(wid, model)
    r = wait_reply(backend, wid)
    if not r.ok:
        raise RuntimeError(f"{model} did not load: {r.error}")
    return {"cold_start_wall_s": time.monotonic() - t0, "load_s": float(r.result["load_s"])}


def switch(backend: LocalBackend, wid: str, model: str) -> dict[str, float]:
    t0 = time.monotonic()
    backend.send(wid, "switch", {"model": model})
    r = wait_reply(backend, wid)
    if not r.ok:
        raise RuntimeError(f"switch to {model} failed: {r.error}")
    res = r.result
    return {
        "switch_wall_s": time.monotonic() - t0,
        "switch_unload_s": float(res["unload_s"]),
        "switch_load_s": float(res["load_s"]),
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--md-only", action="store_true", help="rewrite the .md from the .json in --out")
    args = ap.parse_args()
    if args.md_only:
        write_md(json.loads((args.out / "model_switch.json").read_text()), args.out)
        return
    backend = LocalBackend(threads_per_worker=1, load_timeout_s=1800.0)
    samples: dict[str, dict[str, list[float]]] = {m: {} for m in MODELS}
    first: dict[str, dict[str, float]] = {}
    try:
        for m in MODELS:  # untimed: fills the model cache if this is the first load here
            first[m] = cold_start(backend, f"warmup-{m}", m)
            backend.stop_worker(f"warmup-{m}")
            print(f"first load of {m}: {first[m]}", flush=True)
        for k in range(args.rounds):
            for m, other in (MODELS, MODELS[::-1]):
                wid = f"r{k}-{m}"
                for key, v in cold_start(backend, wid, m).items():
                    samples[m].setdefault(key, []).append(v)
                for key, v in switch(backend, wid, other).items():
                    samples[other].setdefault(key, []).append(v)
                backend.stop_worker(wid)
            print(f"round {k + 1}/{args.rounds} done", flush=True)
    finally:
        backend.shutdown()
    table = {m: {k: summary(v) for k, v in s.items()} for m, s in samples.items()}
    for m in MODELS:
        cs = samples[m]["cold_start_wall_s"]
        sw = samples[m]["switch_wall_s"]
        table[m]["switch_over_cold_start"] = summary([s / c for s, c in zip(sw, cs, strict=True)])
    cmd = f"PYTHONPATH=src nice -n 10 python benchmarks/model_switch.py --rounds {args.rounds}"
    out = {
        "command": cmd,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_at_end": os.getloadavg(),
        },
        "threads_per_worker": 1,
        "first_load_untimed": first,
        "models": table,
        "samples": samples,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_switch.json").write_text(json.dumps(out, indent=2) + "\n")
    write_md(out, args.out)


def write_md(out: dict[str, Any], folder: Path) -> None:
    table, first, machine = out["models"], out["first_load_untimed"], out["machine"]
    cmd = out["command"]
    med = {m: {k: v["median"] for k, v in table[m].items()} for m in MODELS}
    lines = [
        "# model_switch: a cold start against a switch of base LLM on a warm worker",
        "",
        f"`{cmd}` on {machine['platform']}, {machine['cpus']} CPUs shared with another CPU benchmark "
        f"(load average {machine['load_average_at_end'][0]:.1f} at the end), Python {machine['python']}; "
        "local worker processes of the service (`LocalBackend`, real engine, 1 thread each).",
        "",
        "| model | quantity | median | min | max |",
        "|---|---|---|---|---|",
    ]
    for m in MODELS:
        for key, s in table[m].items():
            lines.append(f"| {m} | {key} | {s['median']:.3g} | {s['min']:.3g} | {s['max']:.3g} |")
    lines += [
        "",
        "Medians: "
        + "; ".join(
            f"{m}: switch {med[m]['switch_wall_s']:.2f} s against a cold start of "
            f"{med[m]['cold_start_wall_s']:.2f} s ({med[m]['switch_over_cold_start']:.2f}x)"
            for m in MODELS
        )
        + ".",
    ]
    lines += [
        "",
        "cold_start_wall_s: from asking the backend for a worker to its `load` reply (process start, torch "
        "and transformers imports, weight load from the safetensors cache); load_s: the worker's own timing "
        "of its first `load_model`, which includes the torch and transformers imports (only the process "
        "start is outside it).  A switch in a warm process pays neither: it is the weight load alone.  "
        "switch_wall_s: from sending `switch` to a warm worker that holds the "
        "other model to its reply; switch_unload_s / switch_load_s: its two parts as the worker times them. "
        "switch_over_cold_start: per round, the switch's wall time over the cold start's of the same model.",
        "",
        "First loads (untimed rounds, may include the GGUF conversion into the cache): "
        + ", ".join(f"{m} {v['cold_start_wall_s']:.1f} s" for m, v in first.items())
        + ".",
        "",
        "What it means for the service: the live controller times cold starts and switches the same way "
        "(`runtime/profiles.py`) and the policy switches an idle worker only when the switch time beats "
        "the cold start (`scheduler/common.py: switch_for_cold_starts`).  The simulator's switch time is the "
        "catalog's weight load without its instance start (`sim/catalog.py`).",
    ]
    (folder / "model_switch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
