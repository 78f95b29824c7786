"""The demo's targets, measured: each bundled demo slice from random init with the demo's settings
(``cli/demo.py``: HP, STEPS, seed 0), evaluated on its 24 test rows every ``eval_every`` steps, in one
process through the engine the workers run (``runtime/real_engine.py``), one replica.

    .venv/bin/python benchmarks/demo_targets.py [--tasks subj,subj_b]

Results: ``results/demo_targets.{json,md}``.  The trainer's batches and optimizer state are a function of
the seed and the step, so this is the curve a demo job of one replica follows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def curve(engine: object, loaded: object, task: str) -> list[tuple[int, float]]:
    from prompttuner.cli.demo import DEMO_TASKS, HP, STEPS
    from prompttuner.runtime.engine import JobPayload

    folder = DEMO_TASKS / task
    labels = sorted({json.loads(line)["label"] for line in (folder / "train.jsonl").read_text().splitlines()})
    job = JobPayload(
        job_id=f"targets-{task}",
        model="smollm2-135m",
        train_path=str(folder / "train.jsonl"),
        test_path=str(folder / "test.jsonl"),
        labels=tuple(labels),
        max_steps=STEPS,
        **HP,  # type: ignore[arg-type]
    )
    sess = engine.open(loaded, job, None)  # type: ignore[attr-defined]
    out = []
    for step in range(1, STEPS + 1):
        sess.step()
        if step % int(HP["eval_every"]) == 0:
            out.append((step, round(float(sess.evaluate()), 3)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--tasks", default="subj,subj_b")
    a = ap.parse_args()

    import torch

    from prompttuner.cli.demo import TARGETS
    from prompttuner.runtime.real_engine import RealEngine

    torch.set_num_threads(1)
    engine = RealEngine()
    loaded = engine.load_model("smollm2-135m")
    res = {t: curve(engine, loaded, t) for t in a.tasks.split(",")}
    (RESULTS / "demo_targets.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [
        "# demo_targets: the demo's slices from random init, one replica",
        "",
        f"`.venv/bin/python benchmarks/demo_targets.py --tasks {a.tasks}` (seed 0, the demo's settings). "
        "Test accuracy on each slice's 24 rows by step, and the first step at the demo's target.",
        "",
        "| task | target | first step at target | accuracy by step |",
        "|---|---|---|---|",
    ]
    for t, c in res.items():
        first = next((s for s, acc in c if acc >= TARGETS[t] - 1e-9), None)
        lines.append(
            f"| {t} | {TARGETS[t]} | {first if first is not None else 'never'} | "
            + ", ".join(f"{s}: {acc:.3f}" for s, acc in c)
            + " |"
        )
    (RESULTS / "demo_targets.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
