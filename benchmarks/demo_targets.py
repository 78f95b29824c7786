"""The demo's targets, measured: each bundled demo slice from random init with the demo's settings
(``cli/demo.py``: HP, STEPS, seed 0), evaluated on its 24 test rows every ``eval_every`` steps, in one
process through the engine the workers run (``runtime/real_engine.py``), one replica.

    .venv/bin/python benchmarks/demo_targets.py [--tasks subj,subj_b] [--pairs sst2:mr,subj:subj_b]
        [--target mr=0.75 ...]

``--pairs EARLY:LATER``: the demo's bank pair as the service runs it: ``EARLY`` tunes from random init
until its target (its prompt goes to an empty bank, as the service adds a finished job's prompt), then
``LATER`` starts by the worker's warm start (``RealEngine.warm_start``: selection, blend, race, lr) from
that bank and goes on to its target; beside it ``LATER``'s random-init curve (from ``--tasks`` or run
here).  Reports the start chosen, the race's steps, the steps to target and the selection's wall time.

Results: ``results/demo_targets.{json,md}``.  The trainer's batches and optimizer state are a function of
the seed and the step, so this is the curve a demo job of one replica follows.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def payload(task: str, target: float | None, bank_dir: str | None = None) -> Any:
    from prompttuner.cli.demo import DEMO_TASKS, HP, STEPS
    from prompttuner.runtime.engine import JobPayload

    folder = DEMO_TASKS / task
    labels = sorted({json.loads(line)["label"] for line in (folder / "train.jsonl").read_text().splitlines()})
    return JobPayload(
        job_id=f"targets-{task}",
        model="smollm2-135m",
        train_path=str(folder / "train.jsonl"),
        test_path=str(folder / "test.jsonl"),
        labels=tuple(labels),
        max_steps=STEPS,
        target_accuracy=target,
        warm_start=bank_dir is not None,
        bank_dir=bank_dir,
        **HP,  # type: ignore[arg-type]
    )


def curve(
    engine: Any, loaded: Any, job: Any, state: bytes | None = None, stop_at_target: bool = False
) -> tuple[Any, list[tuple[int, float]]]:
    """Train ``job`` (from ``state``) to its step cap, evaluating where a worker does; the session and
    the evaluations."""
    sess = engine.open(loaded, job, state)
    out = []
    while sess.steps_done < job.max_steps:
        sess.step()
        if sess.steps_done % job.eval_every == 0:
            out.append((sess.steps_done, round(float(sess.evaluate()), 3)))
            target = job.target_accuracy
            if stop_at_target and target is not None and out[-1][1] >= target - 1e-9:
                break
    return sess, out


def first_at(c: list[tuple[int, float]], target: float) -> int | None:
    return next((s for s, acc in c if acc >= target - 1e-9), None)


def pair(engine: Any, loaded: Any, early: str, later: str, targets: dict[str, float]) -> dict[str, Any]:
    from prompttuner.service.bank import add_prompt

    with tempfile.TemporaryDirectory(prefix="pt-demo-pair-") as tmp:
        ej = payload(early, targets[early])
        sess, ec = curve(engine, loaded, ej, stop_at_target=True)
        prompt = str(Path(tmp) / "early.pt")
        sess.export_prompt(prompt)
        bank = str(Path(tmp) / "bank")
        add_prompt(
            bank,
            job_id=f"demo-{early}",
            tenant="public",
            model=ej.model,
            prompt_path=prompt,
            labels=list(ej.labels),
            accuracy=ec[-1][1],
            steps=ec[-1][0],
            train_path=ej.train_path,
        )
        lj = payload(later, targets[later], bank)
        t0 = time.perf_counter()
        ws = engine.warm_start(loaded, lj)
        sel_wall = time.perf_counter() - t0
        _, lc = curve(engine, loaded, lj, ws["state"])
    return {
        "early": early,
        "early_curve": ec,
        "later": later,
        "chosen": ws["chosen"],
        "kind": ws["kind"],
        "raced": ws["raced"],
        "race_steps": ws["race_steps"],
        "start_steps": ws["steps_done"],
        "probe_accuracy": ws["probe_accuracy"],
        "predicted_steps": ws["predicted_steps"],
        "lr": ws["lr"],
        "selection_wall_s": round(sel_wall, 1),
        "curve": lc,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--tasks", default="subj,subj_b")
    ap.add_argument("--pairs", default="", help="EARLY:LATER,...: the bank's start for LATER from EARLY")
    ap.add_argument("--target", action="append", default=[], help="TASK=ACC: a target other than the demo's")
    a = ap.parse_args()

    import torch

    from prompttuner.cli.demo import TARGETS
    from prompttuner.runtime.real_engine import RealEngine

    targets = dict(TARGETS)
    for t in a.target:
        k, v = t.split("=")
        targets[k] = float(v)
    pairs = [tuple(p.split(":")) for p in a.pairs.split(",") if p]
    tasks = [t for t in a.tasks.split(",") if t]
    tasks += [lt for _, lt in pairs if lt not in tasks]
    torch.set_num_threads(1)
    engine = RealEngine()
    loaded = engine.load_model("smollm2-135m")
    res = {t: curve(engine, loaded, payload(t, targets.get(t)))[1] for t in tasks}
    prs = [pair(engine, loaded, e, lt, targets) for e, lt in pairs]
    (RESULTS / "demo_targets.json").write_text(
        json.dumps({"targets": targets, "random": res, "pairs": prs}, indent=1) + "\n"
    )
    cmd = f"--tasks {shlex.quote(a.tasks)}" + (f" --pairs {a.pairs}" if a.pairs else "")
    cmd += "".join(f" --target {t}" for t in a.target)
    lines = [
        "# demo_targets: the demo's slices from random init and from the bank, one replica",
        "",
        f"`.venv/bin/python benchmarks/demo_targets.py {cmd}` (seed 0, the demo's settings, 1 thread). Test "
        "accuracy on each slice's 24 rows by step, and the first step at the target.",
        "",
        "| task | target | first step at target | accuracy by step |",
        "|---|---|---|---|",
    ]
    for t, c in res.items():
        f = first_at(c, targets[t])
        lines.append(
            f"| {t} | {targets[t]} | {f if f is not None else 'never'} | "
            + ", ".join(f"{s}: {acc:.3f}" for s, acc in c)
            + " |"
        )
    if prs:
        lines += [
            "",
            "## From the bank (the earlier task's prompt, the worker's warm start)",
            "",
            "| early -> later | early's steps | start chosen | probe acc | race (losers' steps) | selection "
            "wall | first step at target | random init's | accuracy by step |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for p in prs:
            f = first_at(p["curve"], targets[p["later"]])
            fr = first_at(res[p["later"]], targets[p["later"]])
            race = f"yes ({p['race_steps']})" if p["raced"] else "no"
            pa = "-" if p["probe_accuracy"] is None else f"{p['probe_accuracy']:.2f}"
            lines.append(
                f"| {p['early']} -> {p['later']} | {p['early_curve'][-1][0]} | {p['chosen']} | {pa} | "
                f"{race} | "
                f"{p['selection_wall_s']}s | {f if f is not None else 'never'} | "
                f"{fr if fr is not None else 'never'} | "
                + ", ".join(f"{s}: {acc:.3f}" for s, acc in p["curve"])
                + " |"
            )
    (RESULTS / "demo_targets.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
