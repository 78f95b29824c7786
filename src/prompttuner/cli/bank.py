"""``prompttuner bank ...``: build, fill, inspect and search a Prompt Bank folder.

Thin: parse, call :mod:`prompttuner.bank`, print.  Every user mistake (no such bank, a prompt of another
model, a corrupt tensor file, a task folder that does not validate) ends in one clear line, not a
traceback.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from prompttuner.cli.common import JSON_OPTION, console, emit_json, fail

bank_app = typer.Typer(
    name="bank",
    help="The Prompt Bank: tuned prompts and a two-layer index that picks a job's starting prompt.",
    no_args_is_help=True,
)

BANK_OPTION = typer.Option(None, "--bank", help="Bank folder (default: $PROMPTTUNER_HOME/bank).")
MODEL_OPTION = typer.Option("smollm2-135m", "--model", help="Base model (bundled name or path).")
DTYPE_OPTION = typer.Option(
    None, "--dtype", help="fp32 (default, or $PROMPTTUNER_DTYPE) | bf16 | auto (bf16 on a CPU with AMX-BF16)."
)


def _bank_dir(bank: Path | None) -> Path:
    from prompttuner.bank import default_bank_dir

    return bank if bank is not None else default_bank_dir()


def _open(bank: Path | None, create: bool = False) -> Any:
    from prompttuner.bank import BankError, PromptBank

    try:
        return PromptBank(_bank_dir(bank), create=create)
    except BankError as e:
        fail(str(e))


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _load_model(name: str, dtype: str | None = None) -> Any:
    _offline()
    from prompttuner.tuning import load_model

    try:
        return load_model(name, dtype=dtype)
    except Exception as e:  # ModelNotFoundError and loader failures: one line for the user
        fail(f"cannot load model {name!r}: {e}")


def _load_task(path: Path, labels: str | None = None) -> Any:
    from prompttuner.tuning import TaskDataError, load_task

    try:
        return load_task(path, labels=labels.split(",") if labels else None)
    except (TaskDataError, OSError, ValueError) as e:
        fail(f"task {path}: {e}")


def _expand_tasks(paths: list[Path]) -> list[Path]:
    """Task folders; a folder of task folders (like shared/data/tasks) stands for all of them."""
    out: list[Path] = []
    for p in paths:
        if not p.is_dir():
            fail(f"{p} is not a task folder")
        if (p / "train.jsonl").exists() or any(p.glob("*.jsonl")) or any(p.glob("*.csv")):
            out.append(p)
        else:
            subs = sorted(q for q in p.iterdir() if q.is_dir() and (q / "train.jsonl").exists())
            if not subs:
                fail(f"{p} holds no task (no train.jsonl in it or in its sub-folders)")
            out.extend(subs)
    return out


def _entry_row(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "model": e.model,
        "task": e.task_name,
        "labels": list(e.labels),
        "accuracy": e.accuracy,
        "steps": e.steps,
        "owner": e.owner,
        "tokens": e.num_tokens,
        "cluster": e.cluster_id,
        "created_at": e.created_at,
    }


@bank_app.command("build", context_settings={"allow_extra_args": True})
def build(
    ctx: typer.Context,
    model: str = MODEL_OPTION,
    tasks: list[Path] = typer.Option(..., "--tasks", help="Task folders (or folders of task folders)."),
    bank: Path | None = BANK_OPTION,
    prompts: Path | None = typer.Option(
        None,
        "--prompts",
        help="Import already tuned prompts from <prompts>/<task>/<run>/prompt.safetensors instead of tuning.",
    ),
    target: float | None = typer.Option(
        None, "--target", help="Target accuracy when tuning (default: none)."
    ),
    max_steps: int = typer.Option(30, "--max-steps"),
    tokens: int = typer.Option(8, "--tokens", help="Virtual tokens when tuning."),
    batch_size: int = typer.Option(4, "--batch-size"),
    max_length: int = typer.Option(48, "--max-length"),
    init: str = typer.Option("text", "--init", help="Init when tuning: random | text | text:<instruction>."),
    keep_all: bool = typer.Option(False, "--keep-all", help="Also keep prompts that missed the target."),
    seeds: str = typer.Option("0", "--seeds", help="When tuning: one prompt per seed (e.g. 0,1,2)."),
    subsets: int = typer.Option(
        1,
        "--subsets",
        help="When tuning: cut each task's training rows into this many disjoint parts, "
        "one prompt per part and seed (prompts that saw different data).",
    ),
    owner: str = typer.Option("public", "--owner"),
    dtype: str | None = DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Fill a bank from task folders: tune each task (or import its tuned prompts) and add the results.

    Seeding a bank with several well-converged prompts per task: ``--seeds 0,1 --subsets 2 --target T
    --max-steps N`` tunes every task 4 times (2 seeds x 2 disjoint halves of its rows) and keeps those
    that reached ``T``; the cost (steps and CPU seconds of the tuning) is printed per task and in total."""
    from prompttuner.bank import BankError, NewEntry

    # `--tasks A B C` as in the issue: typer takes one value per flag, the rest arrive as extra arguments
    extra = [Path(a) for a in ctx.args]
    if any(str(a).startswith("-") for a in extra):
        fail(f"unknown option(s): {' '.join(map(str, extra))}")
    folders = _expand_tasks(list(tasks) + extra)
    from prompttuner.tuning import parse_init

    if prompts is None:  # a bad --init, --seeds or --subsets fails before the model loads
        try:
            parse_init(init)
        except ValueError as e:
            fail(f"--init: {e}")
    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        fail(f"--seeds: comma-separated integers, not {seeds!r}")
    if subsets < 1 or not seed_list:
        fail("--subsets must be >= 1 and --seeds must name at least one seed")
    loaded = _load_model(model, dtype)
    b = _open(bank, create=True)
    added: list[dict[str, Any]] = []
    seeding: list[dict[str, Any]] = []  # what tuning the bank's content cost
    for folder in folders:
        task = _load_task(folder)
        sample = [e.text for e in task.train[:8]]
        items: list[NewEntry] = []
        if prompts is not None:
            from prompttuner.tuning import PromptFileError, load_prompt

            for f in sorted((prompts / folder.name).glob("*/prompt.safetensors")):
                try:
                    t, meta = load_prompt(f)
                except PromptFileError as e:
                    fail(str(e))
                if meta.get("reached") is False and not keep_all:
                    continue
                items.append(
                    NewEntry(
                        t,
                        loaded.name,
                        task.description,
                        task.labels,
                        meta.get("accuracy"),
                        meta.get("steps"),
                        owner,
                        task.name,
                        None,
                        sample,
                        extra={"source": str(f)},
                    )
                )
        else:
            from prompttuner.bank.seed import seed_task
            from prompttuner.tuning import TuningConfig

            cfg = TuningConfig(
                num_virtual_tokens=tokens,
                batch_size=batch_size,
                max_length=max_length,
                target_accuracy=target,
                max_steps=max_steps,
                init=parse_init(init),
            )

            def say(what: str, name: str = task.name) -> None:
                if not json_out:  # --json prints one JSON document, nothing else
                    console.print(f"tuning {name} ({init}, {what}, up to {max_steps} steps)")

            got, runs = seed_task(
                loaded, task, cfg, seed_list, subsets, keep_all=keep_all, owner=owner, on_start=say
            )
            items += got
            seeding += runs
        try:
            ids = b.add_many(items)
        except BankError as e:
            fail(f"{folder}: {e}")
        added += [{"id": i, "task": task.name} for i in ids]
        if not json_out:
            console.print(f"{task.name}: {len(ids)} prompt(s) added")
    cost = {
        "tunings": len(seeding),
        "steps": sum(x["steps"] for x in seeding),
        "cpu_s": round(sum(x["cpu_s"] for x in seeding), 2),
    }
    if json_out:
        out: dict[str, Any] = {"bank": str(_bank_dir(bank)), "added": added, "entries": b.count()}
        if seeding:
            out["seeding"] = {"runs": seeding, **cost}
        emit_json(out)
    else:
        if seeding:
            console.print(
                f"seeding cost: {cost['tunings']} tuning runs, {cost['steps']} steps, "
                f"{cost['cpu_s']:.1f} CPU-s ({sum(x['reached'] for x in seeding)} reached the target)"
            )
        console.print(f"bank {_bank_dir(bank)}: {b.count()} entries")


@bank_app.command("add")
def add(
    prompt: Path = typer.Option(..., "--prompt", help="A prompt.safetensors (or its folder)."),
    bank: Path | None = BANK_OPTION,
    model: str | None = typer.Option(None, "--model", help="Base model (default: the file's metadata)."),
    task: Path | None = typer.Option(None, "--task", help="The task folder the prompt was tuned on."),
    description: str | None = typer.Option(None, "--description"),
    labels: str | None = typer.Option(None, "--labels", help="Comma-separated label words."),
    accuracy: float | None = typer.Option(None, "--accuracy"),
    steps: int | None = typer.Option(None, "--steps"),
    owner: str = typer.Option("public", "--owner"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Add one tuned prompt (metadata from the file, overridden by options)."""
    from prompttuner.bank import BankError
    from prompttuner.tuning import PromptFileError, load_prompt

    try:
        t, meta = load_prompt(prompt)
    except PromptFileError as e:
        fail(str(e))
    name = ""
    sample: list[str] = []
    desc, words = description, labels.split(",") if labels else None
    if task is not None:
        tk = _load_task(task)
        name, sample = tk.name, [e.text for e in tk.train[:8]]
        desc = desc or tk.description
        words = words or tk.labels
    desc = desc or meta.get("description") or ""
    words = words or meta.get("labels") or []
    model_name = model or meta.get("model")
    if not model_name:
        fail("the prompt file names no model: pass --model")
    if not words:
        fail("no label words: pass --labels or --task")
    b = _open(bank, create=True)
    try:
        eid = b.add(
            t,
            model=str(model_name),
            task_description=str(desc),
            labels=list(words),
            accuracy=accuracy if accuracy is not None else meta.get("accuracy"),
            steps=steps if steps is not None else meta.get("steps"),
            owner=owner,
            task_name=name or str(meta.get("task", "")),
            sample_texts=sample,
        )
    except BankError as e:
        fail(str(e))
    if json_out:
        emit_json(_entry_row(b.get(eid)))
    else:
        console.print(f"added {eid}")


@bank_app.command("list")
def list_entries(
    bank: Path | None = BANK_OPTION,
    model: str | None = typer.Option(None, "--model"),
    owner: str | None = typer.Option(None, "--owner"),
    limit: int | None = typer.Option(None, "--limit"),
    json_out: bool = JSON_OPTION,
) -> None:
    """List the bank's entries, newest first."""
    b = _open(bank)
    rows = [_entry_row(e) for e in b.list(model=model, owner=owner, limit=limit)]
    if json_out:
        emit_json({"bank": str(_bank_dir(bank)), "count": b.count(), "entries": rows})
        return
    table = Table(title=f"{_bank_dir(bank)} ({b.count()} entries)")
    for col in ("id", "model", "task", "labels", "accuracy", "steps", "owner", "cluster"):
        table.add_column(col)
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        table.add_row(
            r["id"],
            r["model"],
            r["task"],
            ",".join(r["labels"]),
            acc,
            str(r["steps"] or "-"),
            r["owner"],
            str(r["cluster"]),
        )
    console.print(table)


@bank_app.command("rm")
def rm(
    ids: list[str] = typer.Argument(..., help="Entry ids."),
    bank: Path | None = BANK_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Remove entries (and their tensors)."""
    from prompttuner.bank import EntryNotFoundError

    b = _open(bank)
    removed = []
    for i in ids:
        try:
            removed.append(b.remove(i).id)
        except EntryNotFoundError as e:
            fail(str(e))
    if json_out:
        emit_json({"removed": removed})
    else:
        console.print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}")


@bank_app.command("verify")
def verify(bank: Path | None = BANK_OPTION, json_out: bool = JSON_OPTION) -> None:
    """Check every entry's tensor file against its checksum; exit 1 if any is broken."""
    b = _open(bank)
    problems = b.verify()
    if json_out:
        emit_json({"entries": b.count(), "problems": problems})
    else:
        for p in problems:
            console.print(f"[red]{p}[/]")
        console.print(f"{b.count()} entries, {len(problems)} problem(s)")
    if problems:
        raise typer.Exit(1)


@bank_app.command("search")
def search(
    task: Path = typer.Option(..., "--task", help="The job's task folder (its training rows are probed)."),
    bank: Path | None = BANK_OPTION,
    model: str = MODEL_OPTION,
    labels: str | None = typer.Option(None, "--labels", help="The job's label words (default: the task's)."),
    tenant: str = typer.Option("public", "--tenant"),
    tokens: int | None = typer.Option(None, "--tokens", help="Only prompts with this many virtual tokens."),
    rows: int | None = typer.Option(
        None, "--rows", help="Probe sample size, rows of the job's training data (default: Budget's, 16)."
    ),
    reps: int | None = typer.Option(
        None, "--reps", help="Cluster representatives probed (default 4; with --race bank.NEAR's, 3)."
    ),
    members: int | None = typer.Option(
        None, "--members", help="Cluster members probed (default 4; with --race bank.NEAR's, 2)."
    ),
    nearest: int | None = typer.Option(
        None,
        "--nearest",
        help="Also probe the N entries nearest the job in task space, whatever their cluster (layer 0; "
        "default 0, with --race bank.NEAR's 1).",
    ),
    rank_by: str | None = typer.Option(
        None,
        "--rank-by",
        help="How probed prompts rank: accuracy (then loss), loss, or accuracy+similarity (accuracy, then "
        "the entry's task similarity, then loss).",
    ),
    no_probes: bool = typer.Option(False, "--no-probes", help="Features only: no LLM forward pass."),
    max_length: int = typer.Option(64, "--max-length", help="Probe rows are cut to this many tokens."),
    dtype: str | None = DTYPE_OPTION,
    race: bool = typer.Option(
        False,
        "--race",
        help="As a job starts (bank.warm_start): the selection (bank.NEAR), the blend, the check of the best "
        "start, the race of the best bank start against the job's text init (text against random without "
        "one), and the chosen start and learning rate.",
    ),
    target: float | None = typer.Option(None, "--target", help="With --race: the job's target accuracy."),
    race_steps: int = typer.Option(2, "--race-steps", help="With --race: steps per round, per start."),
    check_first: bool = typer.Option(
        True,
        "--check-first/--no-check-first",
        help="With --race: evaluate the best start on the validation rows first; no race at the target.",
    ),
    seed: int = typer.Option(0, "--seed", help="With --race: the job's seed."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Choose the starting prompt for a job: print the entry, the probes, the time and the predicted steps."""
    from prompttuner.bank import NEAR, Budget
    from prompttuner.bank.select import RANKS

    if rank_by is not None and rank_by not in RANKS:
        fail(f"unknown --rank-by {rank_by!r}: use one of {', '.join(RANKS)}")
    given: dict[str, Any] = {
        "rep_probes": reps,
        "member_probes": members,
        "sample_rows": rows,
        "nearest": nearest,
        "rank_by": rank_by,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if race:
        from prompttuner.bank import default_bank_dir
        from prompttuner.cli.bank_start import show_start
        from prompttuner.tuning import TuningConfig

        cfg = TuningConfig(
            num_virtual_tokens=tokens or 16, max_length=max_length, target_accuracy=target, seed=seed
        )
        loaded_task = _load_task(task, labels)
        show_start(
            bank or default_bank_dir(),
            _load_model(model, dtype),
            loaded_task,
            cfg,
            race_steps,
            json_out,
            budget=dataclasses.replace(NEAR, **given),
            check_first=check_first,
        )
        return
    from prompttuner.bank import COLD_INIT, BankError, select_for_task
    from prompttuner.cli.bank_start import show_selection

    b = _open(bank)
    tk = _load_task(task, labels)
    loaded = _load_model(model, dtype)
    budget = dataclasses.replace(Budget(), **given)
    try:
        sel = select_for_task(
            b,
            loaded,
            tk,
            tenant=tenant,
            budget=budget,
            num_tokens=tokens,
            probes=not no_probes,
            max_length=max_length,
            cold_init=None if no_probes else COLD_INIT,
        )
    except BankError as e:
        fail(str(e))
    show_selection(sel, json_out)


@bank_app.command("reindex")
def reindex(bank: Path | None = BANK_OPTION, json_out: bool = JSON_OPTION) -> None:
    """Re-cluster the whole bank now (normally automatic as it grows)."""
    b = _open(bank)
    out = b.reindex()
    if json_out:
        emit_json({"clusters": out})
    else:
        console.print(", ".join(f"{m}: {k} clusters" for m, k in out.items()) or "empty bank")


def register(app: typer.Typer) -> None:
    """Add the ``bank`` command group to ``app``."""
    app.add_typer(bank_app, name="bank")
