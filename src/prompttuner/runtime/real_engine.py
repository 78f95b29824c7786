"""The worker's :class:`~prompttuner.runtime.engine.Engine` over the real tuning engine.

A session is a :class:`~prompttuner.tuning.PromptTrainer`; its state is ``trainer.state_bytes()``
(prompt, AdamW moments, step, data position), so a job restored on another worker continues with the
same batches and optimizer state.  Data-parallel shards are ``trainer.shard_examples(n)``, their
gradients summed over examples (``GradResult``) so the lead's ``apply_gradients`` gives the same step as
one worker on the whole batch.

Validation: with a validation file the target is checked on it (at most ``max_eval`` rows); without one
the trainer holds ``max_eval`` training rows out (its own split), so a single uploaded file is enough.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prompttuner.core.types import json_safe
from prompttuner.runtime.engine import JobPayload, WarmStartUnavailable

CALIBRATION_STEPS = 3  # timed steps a worker runs as it warms up


@dataclass
class RealSession:
    trainer: Any  # PromptTrainer
    job: JobPayload
    val: list[Any] | None  # validation examples when the job has a validation file

    @property
    def steps_done(self) -> int:
        return int(self.trainer.step_count)

    def step(self) -> float:
        return float(self.trainer.step().loss)

    def shard_gradient(self, index: int, count: int) -> bytes:
        import torch

        shards = self.trainer.shard_examples(count)
        # a batch smaller than the replica count leaves some replicas without examples: a zero gradient
        g = self.trainer.gradient(shards[index] if index < len(shards) else [])
        buf = io.BytesIO()
        torch.save({"grad": g.grad, "loss_sum": g.loss_sum, "n": g.n}, buf)
        return buf.getvalue()

    def apply_gradients(self, shards: list[bytes]) -> float:
        import torch

        from prompttuner.tuning import GradResult

        results = []
        for raw in shards:
            d = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            results.append(GradResult(d["grad"], float(d["loss_sum"]), int(d["n"])))
        return float(self.trainer.apply_gradients(results))

    @property
    def val_rows(self) -> int:
        """Rows an evaluation reads (the fallback's margin is in rows)."""
        return len(self.val[: self.job.max_eval]) if self.val is not None else len(self.trainer.val)

    def evaluate(self) -> float:
        if self.val is not None:
            return float(self.trainer.evaluate(self.val[: self.job.max_eval]))
        return float(self.trainer.evaluate())

    def state(self) -> bytes:
        return bytes(self.trainer.state_bytes())

    def export_prompt(self, path: str) -> None:
        from prompttuner.tuning import save_prompt

        p = path if path.endswith(".safetensors") else path + ".safetensors"
        save_prompt(p, self.trainer.prompt(), self.trainer.metadata(job=self.job.job_id))
        if p != path:
            os.replace(p, path)


class RealEngine:
    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str | None, tuple[str, ...], str | None], Any] = {}

    def load_model(self, name: str) -> Any:
        from prompttuner.tuning import load_model

        return load_model(name)

    def unload_model(self, loaded: Any) -> None:
        """Forget ``loaded`` (a worker switches to another base LLM): its memory can be freed."""
        from prompttuner.tuning.models import unload_model

        unload_model(loaded)

    def _task(self, job: JobPayload) -> Any:
        from prompttuner.tuning import load_task

        key = (job.train_path, job.test_path, job.labels, job.description)
        if key not in self._tasks:
            labels = list(job.labels)
            if job.test_path is None:
                task = load_task(job.train_path, labels=labels, test_fraction=0.0, name=job.job_id)
            else:  # a task folder of links to the two files, gone once the task is read (into memory)
                with tempfile.TemporaryDirectory(prefix=f"pt-{job.job_id}-") as tmp:
                    folder = Path(tmp)
                    (folder / "train.jsonl").symlink_to(job.train_path)
                    (folder / "test.jsonl").symlink_to(job.test_path)
                    task = load_task(folder, labels=labels, name=job.job_id)
            if job.description:  # the user's words (else the default Task made from the labels)
                task = replace(task, description=job.description)
            self._tasks[key] = task
            while len(self._tasks) > 16:
                self._tasks.pop(next(iter(self._tasks)))
        return self._tasks[key]

    def _config(self, job: JobPayload) -> Any:
        from prompttuner.tuning import TuningConfig

        return TuningConfig(
            num_virtual_tokens=job.num_virtual_tokens,
            lr=job.lr,
            batch_size=job.batch_size,
            seed=job.seed,
            max_length=job.max_length,
            eval_every=job.eval_every,
            eval_size=job.max_eval,
            target_accuracy=job.target_accuracy,
            max_steps=job.max_steps,
        )

    def open(self, loaded: Any, job: JobPayload, state: bytes | None) -> RealSession:
        from prompttuner.tuning import PromptTrainer

        task = self._task(job)
        cfg = self._config(job)
        trainer = (
            PromptTrainer.from_checkpoint(loaded, task, cfg, state)
            if state is not None
            else PromptTrainer(loaded, task, cfg)
        )
        return RealSession(trainer, job, list(task.test) if job.test_path is not None else None)

    def warm_start(self, loaded: Any, job: JobPayload) -> dict[str, Any]:
        """The job's start as ``bank search --race`` makes it (``prompttuner.bank.warm_start``), as a state.

        The selection (``bank.NEAR``) over the bank's public entries and the tenant's own (probes on the
        job's training split only), the blend of the two best, then, unless the best start already meets the
        target on the probe rows or on the job's validation rows at step 0, the race of the best bank start
        against the job's text init (``job.bank_race`` False: none, the probe's best start); the learning
        rate from the start's fit.  The winner's race steps are in
        its state (``steps_done``); the losers' (``race_steps``) were run for this job too.  The chosen
        start is evaluated on the rows the job's target is judged on (its validation file's first
        ``max_eval`` rows, else the trainer's held-out rows): ``start_accuracy`` at or above the target
        ends the job at its start."""
        from prompttuner.bank import RaceSettings, warm_start

        if job.bank_dir is None:
            raise WarmStartUnavailable("no Prompt Bank is configured for this service")
        if not (Path(job.bank_dir) / "bank.sqlite").exists():
            raise WarmStartUnavailable(f"the Prompt Bank at {job.bank_dir} is empty (no prompts yet)")
        task = self._task(job)
        try:
            race = RaceSettings() if job.bank_race else RaceSettings(candidates=1)
            val = list(task.test)[: job.max_eval] if job.test_path is not None else None  # RealSession's
            cfg = self._config(job)
            ws = warm_start(job.bank_dir, loaded, task, cfg, race=race, tenant=job.tenant, validation=val)
        except Exception as e:  # noqa: BLE001 - a damaged bank, a model mismatch...: the default init
            why = f"{type(e).__name__}: {e}"
            raise WarmStartUnavailable(f"the Prompt Bank gave no warm start: {why}") from None
        return start_result(ws)

    def calibrate(self, loaded: Any, steps: int = CALIBRATION_STEPS) -> list[float]:
        """Seconds of each of ``steps`` training steps of a job with the service's default settings (8
        virtual tokens, batches of 4, 64 tokens) on the bundled sst2 slice, after one untimed step (the
        first pays for lazy setup).  What a worker measures as it warms up, so the first quotes plan with
        this machine's step time."""
        import time

        from prompttuner.config import REPO_DATA

        job = JobPayload(
            job_id="calibration",
            model=str(loaded.name),
            train_path=str(REPO_DATA / "demo_tasks" / "sst2" / "train.jsonl"),
            test_path=None,
            labels=("negative", "positive"),
            max_steps=steps + 1,
            max_eval=8,
        )
        sess = self.open(loaded, job, None)
        sess.step()
        out = []
        for _ in range(steps):
            t0 = time.perf_counter()
            sess.step()
            out.append(time.perf_counter() - t0)
        self._tasks.clear()
        return out

    def predict(self, loaded: Any, prompt_path: str, texts: list[str], labels: list[str]) -> list[str]:
        from prompttuner.tuning import load_prompt, predict

        tensor, meta = load_prompt(prompt_path)
        return list(predict(loaded, tensor, texts, labels, max_length=int(meta.get("max_length", 256))))


def start_result(ws: Any) -> dict[str, Any]:
    """A :class:`~prompttuner.bank.WarmStart` as the worker's reply to ``select``: the state to go on
    from, the start it names (``bank:<entry id>``, ``bank:blend``, or the job's ``text``/``random`` init
    when a cold init won the race), the candidates and race, and the steps predicted to target (the
    bank's prediction for a bank start; None for a cold one, which plans with the population's)."""
    c = ws.chosen
    sel = ws.info.get("selection") or {}
    entry = sel.get("entry") or {}
    if c.kind == "warm":
        init = f"bank:{c.entry_id}" if c.entry_id else "bank:blend"
        predicted = sel.get("predicted_steps")
    else:
        init, predicted = c.kind, None
    task_of = {p.get("entry_id"): p.get("task_name") for p in sel.get("probes", [])}
    score = c.score
    return json_safe(
        {
            "state": ws.trainer.state_bytes(),
            "init": init,
            "chosen": c.name,
            "kind": c.kind,
            "entry_task": task_of.get(c.entry_id) if c.entry_id else None,
            "best_entry": entry.get("id"),
            "probe_loss": score.loss if score is not None else None,
            "probe_accuracy": score.accuracy if score is not None else None,
            "predicted_steps": predicted,
            "lr": ws.trainer.lr,
            "raced": bool(ws.info.get("raced")),
            "no_race": ws.info.get("no_race"),  # why there was no race (None: there was one)
            # the best start's accuracy on the job's validation rows before any race (None: not checked)
            "first_check": ws.info.get("first_check"),
            # the chosen start on the job's validation rows before its first step, as the job's own first
            # evaluation (None: no target): at or above the target, the job is done at its start
            "start_accuracy": ws.start_accuracy,
            "start_eval": ws.info.get("start_eval"),
            "steps_done": int(ws.trainer.step_count),  # the winner's race steps, in its state
            "race_steps": int(ws.extra_steps),  # the losers' race steps: run for this job too
            "candidates": [x.brief() for x in ws.candidates],
            "select_s": round(float(ws.info.get("select_wall_s", 0.0)), 3),
            "race_cpu_s": round(float(ws.info.get("race_cpu_s", 0.0)), 3),
            **({"note": ws.info["no_candidates"]} if ws.info.get("no_candidates") else {}),
        }
    )
