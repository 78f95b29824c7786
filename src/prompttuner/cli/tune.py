"""``prompttuner tune`` and ``prompttuner predict``: the engine from the command line.

Every user mistake (unknown model, bad data, bad init, a corrupt prompt file) ends in ``fail()`` with a
clear sentence; tracebacks are for bugs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import typer

from prompttuner.cli.common import JSON_OPTION, console, emit_json, fail


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _load_model(name: str, device: str, dtype: str | None, quiet: bool) -> Any:
    from prompttuner.tuning import ModelNotFoundError, load_model

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.perf_counter()
    try:
        if quiet:
            loaded = load_model(name, device=device, dtype=dtype)
        else:
            with console.status(f"loading model {name} (the first load converts the GGUF file, ~30 s)"):
                loaded = load_model(name, device=device, dtype=dtype)
    except ModelNotFoundError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    if not quiet:
        console.print(
            f"model [bold]{loaded.name}[/] on {loaded.device} (dim {loaded.embed_dim}) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
    return loaded


def _start(spec: str, loaded: Any, task: Any, config: Any) -> Any:
    """The ``--init`` string as the trainer's init: ``bank`` / ``bank:DIR`` asks the Prompt Bank (which
    resolves its choice, and the learning rate, before the trainer exists); the rest is
    ``tuning.parse_init``'s (``random``, ``text``, ``text:<instruction>``, a path)."""
    from prompttuner.tuning import parse_init

    if spec == "bank" or spec.startswith("bank:"):
        from prompttuner.bank import bank_init

        return bank_init(spec[5:] if spec.startswith("bank:") else None, loaded, task, config)
    try:
        return parse_init(spec)
    except ValueError as exc:
        raise ValueError(f"{exc} (or bank:DIR, a Prompt Bank)") from None


def tune(
    task: Path = typer.Option(
        ..., "--task", help="Task folder (train.jsonl/test.jsonl/meta.json) or a JSONL/CSV file."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for prompt.safetensors and curve.json."),
    model: str = typer.Option("smollm2-135m", "--model", help="Bundled name, local HF folder or hub id."),
    steps: int = typer.Option(200, "--steps", min=1, help="Most training steps."),
    target_accuracy: float | None = typer.Option(
        None, "--target-accuracy", min=0.0, max=1.0, help="Stop once validation accuracy reaches this."
    ),
    eval_every: int = typer.Option(10, "--eval-every", min=1),
    eval_size: int = typer.Option(64, "--eval-size", min=1, help="Validation rows held out from train."),
    init: str = typer.Option(
        "random", "--init", help='random | text:"instruction" | PATH to a prompt | bank:DIR'
    ),
    seed: int = typer.Option(0, "--seed"),
    lr: float | None = typer.Option(None, "--lr", help="Default 0.03 (0.003 for a warm start)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    virtual_tokens: int = typer.Option(16, "--virtual-tokens", min=1),
    max_length: int = typer.Option(256, "--max-length", min=8, help="Text tokens per example (longer: cut)."),
    device: str = typer.Option("auto", "--device"),
    dtype: str | None = typer.Option(
        None,
        "--dtype",
        help="Frozen-model precision (default fp32, or $PROMPTTUNER_DTYPE). bf16: bfloat16 weights on CPU "
        "(~1.7x cheaper steps with AMX, not shown to converge like fp32: benchmarks/results/bf16_cpu.md), "
        "bf16 autocast on CUDA. auto: bf16 on a CPU with AMX-BF16, else fp32.",
    ),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Tune a soft prompt for a classification task; writes OUT/prompt.safetensors and OUT/curve.json."""
    from prompttuner.tuning import PromptTrainer, TaskDataError, TuningConfig, load_task, save_prompt

    _set_threads(threads)
    if out.exists() and not out.is_dir():
        fail(f"--out {out} exists and is not a folder")
    loaded = _load_model(model, device, dtype, json_out)
    try:
        data = load_task(task, tokenizer=loaded.tokenizer, max_length=loaded.max_context)
    except TaskDataError as exc:
        fail(f"task data: {exc}")
    config = TuningConfig(
        num_virtual_tokens=virtual_tokens,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        max_length=max_length,
        eval_every=eval_every,
        eval_size=eval_size,
        target_accuracy=target_accuracy,
        max_steps=steps,
        dtype=dtype,
    )
    from prompttuner.bank import BankError

    try:
        config = dataclasses.replace(config, init=_start(init, loaded, data, config))
        trainer = PromptTrainer(loaded, data, config)
    except (ValueError, BankError) as exc:
        fail(str(exc))
    if not json_out:
        console.print(
            f"task [bold]{data.name}[/]: {len(trainer.train)} train, {len(trainer.val)} validation, "
            f"{len(data.test)} test; labels {data.labels}; init {trainer.kind} (lr {trainer.lr:g})"
        )
    result = _run(trainer, json_out)
    test_acc = trainer.evaluate(data.test) if data.test else None
    meta = trainer.metadata(
        accuracy=result.accuracy,
        test_accuracy=test_acc,
        reached=result.reached,
        model_source=model,
        target_accuracy=target_accuracy,
        seed=seed,
    )
    out.mkdir(parents=True, exist_ok=True)
    prompt_path = save_prompt(out, trainer.prompt(), meta)
    curve = {
        "task": data.name,
        "model": loaded.name,
        "init": meta["init"],
        "seed": seed,
        "target_accuracy": target_accuracy,
        "reached": result.reached,
        "steps": result.steps,
        "val_accuracy": result.accuracy,
        "test_accuracy": test_acc,
        "wall_s": result.wall_s,
        "curve": [p.__dict__ for p in result.curve],
    }
    (out / "curve.json").write_text(json.dumps(curve, indent=2) + "\n")
    if json_out:
        emit_json({**curve, "prompt": str(prompt_path)})
    else:
        if target_accuracy is None:
            head = f"ran {result.steps} steps"
        else:
            verdict = "reached" if result.reached else "did not reach"
            head = f"{verdict} target {target_accuracy:g} after {result.steps} steps"
        console.print(
            f"{head} in {result.wall_s:.0f} s: validation accuracy {result.accuracy:.3f}"
            + (f", test accuracy {test_acc:.3f}" if test_acc is not None else "")
        )
        console.print(f"wrote {prompt_path} and {out / 'curve.json'}")


def _run(trainer: Any, quiet: bool) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if quiet:
        return trainer.train_to_target()
    state = {"loss": float("nan"), "acc": float("nan")}
    with Progress(
        TextColumn("[bold]tuning[/]"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f}  val acc {task.fields[acc]:.3f}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        tid = bar.add_task(
            "tune",
            total=trainer.config.max_steps,
            completed=trainer.step_count,
            loss=state["loss"],
            acc=state["acc"],
        )

        def progress(step: Any, point: Any) -> None:
            if step is not None:
                state["loss"] = step.loss
            if point is not None:
                state["acc"] = point.val_accuracy
            bar.update(tid, completed=trainer.step_count, loss=state["loss"], acc=state["acc"])

        return trainer.train_to_target(progress)


def predict(
    prompt: Path = typer.Option(..., "--prompt", help="A tuned prompt folder (or its prompt.safetensors)."),
    text: list[str] = typer.Option(..., "--text", help="Text to classify (repeat for several)."),
    model: str | None = typer.Option(None, "--model", help="Default: the model the prompt was tuned on."),
    device: str = typer.Option("auto", "--device"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Classify texts with a tuned prompt."""
    from prompttuner.tuning import PromptFileError, load_prompt
    from prompttuner.tuning import predict as run_predict

    try:
        tensor, meta = load_prompt(prompt)
    except PromptFileError as exc:
        fail(str(exc))
    labels: list[str] = [str(x) for x in meta.get("labels") or []]
    if len(labels) < 2:
        fail(f"{prompt}: prompt file records no labels; was it written by prompttuner tune?")
    name = model or str(meta.get("model_source") or meta.get("model") or "")
    if not name:
        fail(f"{prompt}: prompt file does not say which model it was tuned on; pass --model")
    loaded = _load_model(name, device, None, json_out)
    if tensor.shape[1] != loaded.embed_dim:
        fail(f"prompt has dim {tensor.shape[1]} but {loaded.name} has dim {loaded.embed_dim}; wrong --model?")
    preds = run_predict(loaded, tensor, list(text), labels, max_length=int(meta.get("max_length", 256)))
    if json_out:
        emit_json({"predictions": [{"text": t, "label": p} for t, p in zip(text, preds, strict=True)]})
    else:
        for t, p in zip(text, preds, strict=True):
            typer.echo(f"{p}\t{t}")


def register(app: typer.Typer) -> None:
    """Add ``tune`` and ``predict``."""
    app.command("tune")(tune)
    app.command("predict")(predict)
