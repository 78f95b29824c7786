"""Classification tasks: the shared JSONL folder format and users' own JSONL/CSV files.

Everything is validated before any work starts: a bad upload must fail at submission with a message that
names the file, the line and the problem, not an hour later on a GPU.  Nothing is half-loaded: either a
complete :class:`Task` comes back or :class:`TaskDataError` is raised.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAIR_SEPARATOR = " ||| "
DEFAULT_TEST_FRACTION = 0.2


class TaskDataError(ValueError):
    """Task data cannot be used; the message names the file, the line (when there is one) and the problem."""


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    text_a: str | None = None
    text_b: str | None = None


@dataclass
class Task:
    name: str
    labels: list[str]
    train: list[Example]
    test: list[Example]
    meta: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.description:
            self.description = str(self.meta.get("description") or "") or default_description(self.labels)


def default_description(labels: list[str]) -> str:
    return (
        "Classify the text as "
        + ", ".join(labels[:-1])
        + (" or " if len(labels) > 1 else "")
        + labels[-1]
        + "."
    )


def _err(path: Path, line: int | None, problem: str) -> TaskDataError:
    where = f"{path}" + (f", line {line}" if line is not None else "")
    return TaskDataError(f"{where}: {problem}")


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _err(path, None, f"cannot read file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _err(path, line, f"not valid UTF-8 (byte {exc.start}); save the file as UTF-8") from None
    if not text.strip():
        raise _err(path, None, "file is empty")
    return text


def _row_to_example(path: Path, line: int, row: Any) -> Example:
    if not isinstance(row, dict):
        raise _err(path, line, f"expected an object with 'text' and 'label', got {type(row).__name__}")
    label = row.get("label")
    if label is None or (isinstance(label, str) and not label.strip()):
        raise _err(path, line, "missing field 'label'")
    if not isinstance(label, str | int):
        raise _err(path, line, f"field 'label' must be a string, got {type(label).__name__}")
    text_a, text_b = row.get("text_a"), row.get("text_b")
    text = row.get("text")
    if text_a not in (None, "") or text_b not in (None, ""):
        if (
            not isinstance(text_a, str)
            or not isinstance(text_b, str)
            or not text_a.strip()
            or not text_b.strip()
        ):
            raise _err(path, line, "pair rows need both 'text_a' and 'text_b' as non-empty strings")
        if not isinstance(text, str) or not text.strip():
            text = text_a + PAIR_SEPARATOR + text_b
    else:
        text_a = text_b = None
    if text is None:
        raise _err(path, line, "missing field 'text' (or 'text_a' and 'text_b')")
    if not isinstance(text, str):
        raise _err(path, line, f"field 'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise _err(path, line, "field 'text' is empty")
    return Example(text=text, label=str(label).strip(), text_a=text_a, text_b=text_b)


def _read_rows(path: Path) -> list[tuple[int, Example]]:
    """(line number, example) for every row of a JSONL or CSV file."""
    text = _read_text(path)
    rows: list[tuple[int, Example]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        fields = reader.fieldnames or []
        if "label" not in fields or not ({"text"} <= set(fields) or {"text_a", "text_b"} <= set(fields)):
            raise _err(
                path, 1, f"CSV header must have 'text' (or 'text_a','text_b') and 'label'; got {fields}"
            )
        try:
            for rec in reader:
                if None in rec:
                    raise _err(path, reader.line_num, "row has more fields than the header")
                rows.append((reader.line_num, _row_to_example(path, reader.line_num, dict(rec))))
        except csv.Error as exc:
            raise _err(path, reader.line_num, f"malformed CSV ({exc})") from None
    else:
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _err(path, i, f"not valid JSON ({exc.msg})") from None
            rows.append((i, _row_to_example(path, i, obj)))
    if not rows:
        raise _err(path, None, "file has no examples")
    return rows


def _split(rows: list[tuple[int, Example]], fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic stratified split: a fixed share of each label goes to test (none if a label is rare)."""
    by_label: dict[str, list[tuple[int, Example]]] = {}
    for r in rows:
        by_label.setdefault(r[1].label, []).append(r)
    train: list[tuple[int, Example]] = []
    test: list[tuple[int, Example]] = []
    rng = random.Random(seed)
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        k = int(len(group) * fraction)
        test.extend(group[:k])
        train.extend(group[k:])
    train.sort(key=lambda r: r[0])
    test.sort(key=lambda r: r[0])
    return train, test


def load_task(
    path: str | Path,
    *,
    labels: list[str] | None = None,
    tokenizer: Any = None,
    max_length: int | None = None,
    min_per_label: int = 2,
    name: str | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    split_seed: int = 0,
) -> Task:
    """Read and validate a task.

    ``path`` is a folder with ``train.jsonl``, ``test.jsonl`` (optional) and ``meta.json`` (optional), or
    a single ``.jsonl``/``.csv`` file from which a stratified ``test_fraction`` is split off
    deterministically.  With ``tokenizer`` and ``max_length`` (the model's context, minus the prompt) a
    text that cannot fit is an error.  ``min_per_label`` counts training rows of every label.
    """
    p = Path(path).expanduser()
    meta: dict[str, Any] = {}
    if p.is_dir():
        train_file = p / "train.jsonl"
        if not train_file.is_file():
            alt = p / "train.csv"
            if not alt.is_file():
                raise _err(p, None, "folder has no train.jsonl (or train.csv)")
            train_file = alt
        meta_file = p / "meta.json"
        if meta_file.is_file():
            try:
                meta = json.loads(_read_text(meta_file))
            except json.JSONDecodeError as exc:
                raise _err(meta_file, exc.lineno, f"not valid JSON ({exc.msg})") from None
            if not isinstance(meta, dict):
                raise _err(meta_file, None, "meta.json must hold an object")
        train_rows = _read_rows(train_file)
        test_file = next((f for f in (p / "test.jsonl", p / "test.csv") if f.is_file()), None)
        if test_file is not None:
            test_rows = _read_rows(test_file)
            files = {"train": train_file, "test": test_file}
        else:
            train_rows, test_rows = _split(train_rows, test_fraction, split_seed)
            files = {"train": train_file, "test": train_file}
        task_name = name or str(meta.get("name") or p.name)
    elif p.is_file():
        if p.suffix.lower() not in (".jsonl", ".json", ".csv"):
            raise _err(p, None, "unsupported file type; use .jsonl or .csv (or a folder with train.jsonl)")
        train_rows, test_rows = _split(_read_rows(p), test_fraction, split_seed)
        files = {"train": p, "test": p}
        task_name = name or p.stem
    else:
        raise TaskDataError(f"{p}: no such file or folder")

    if labels is None:
        meta_labels = meta.get("labels")
        if meta_labels is not None:
            if not isinstance(meta_labels, list) or not all(isinstance(x, str) for x in meta_labels):
                raise _err(files["train"].parent / "meta.json", None, "'labels' must be a list of strings")
            labels = list(meta_labels)
        else:
            seen: dict[str, None] = {}  # order of first appearance in the file(s)
            ordered = train_rows + test_rows
            if files["train"] == files["test"]:
                ordered = sorted(ordered, key=lambda r: r[0])
            for _, ex in ordered:
                seen.setdefault(ex.label, None)
            labels = list(seen)
    labels = [str(x) for x in labels]
    if len(labels) < 2:
        raise _err(files["train"], None, f"a classification task needs at least 2 labels, got {labels}")
    if len(set(labels)) != len(labels):
        raise _err(files["train"], None, f"duplicate labels in {labels}")
    known = set(labels)
    for split, rows in (("train", train_rows), ("test", test_rows)):
        for line, ex in rows:
            if ex.label not in known:
                raise _err(files[split], line, f"label {ex.label!r} is not one of the task's labels {labels}")
    counts = Counter(ex.label for _, ex in train_rows)
    few = {lab: counts.get(lab, 0) for lab in labels if counts.get(lab, 0) < min_per_label}
    if few:
        raise _err(
            files["train"], None, f"too few training examples per label (need >= {min_per_label}): {few}"
        )
    if tokenizer is not None and max_length is not None:
        for split, rows in (("train", train_rows), ("test", test_rows)):
            texts = [ex.text for _, ex in rows]
            lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
            for (line, _), n in zip(rows, lengths, strict=True):
                if n > max_length:
                    raise _err(
                        files[split],
                        line,
                        f"text is {n} tokens, longer than the model's context ({max_length})",
                    )
    return Task(
        name=task_name,
        labels=labels,
        train=[ex for _, ex in train_rows],
        test=[ex for _, ex in test_rows],
        meta=meta,
    )
