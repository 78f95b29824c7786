"""Checking uploaded task data before anything is stored, then storing it.

A data file is JSON Lines, one ``{"text": str, "label": str}`` object a line (the format of the shared
tasks; pair tasks put both sentences in ``text``).  Every problem is reported with its line number, and a
file is only written to disk after it passed, so a bad upload leaves nothing behind.
"""

from __future__ import annotations

import json
import secrets
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prompttuner.state.models import DataFile
from prompttuner.state.store import write_private


class DataError(ValueError):
    """Bad task data; the message names the line and the problem."""


@dataclass(frozen=True)
class CheckedData:
    rows: int
    labels: tuple[str, ...]  # distinct labels seen, sorted
    counts: dict[str, int]


def check_jsonl(raw: bytes, name: str = "upload") -> CheckedData:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not UTF-8 text (byte {e.start})") from None
    counts: dict[str, int] = {}
    rows = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{name} line {lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{name} line {lineno}: expected an object with 'text' and 'label'")
        t, lab = obj.get("text"), obj.get("label")
        if not isinstance(t, str) or not t.strip():
            raise DataError(f"{name} line {lineno}: 'text' must be a non-empty string")
        if not isinstance(lab, str) or not lab.strip():
            raise DataError(f"{name} line {lineno}: 'label' must be a non-empty string")
        counts[lab] = counts.get(lab, 0) + 1
        rows += 1
    if rows == 0:
        raise DataError(f"{name}: no rows (expected JSON Lines with 'text' and 'label')")
    return CheckedData(rows, tuple(sorted(counts)), counts)


def check_labels(raw: bytes, labels: list[str], name: str) -> None:
    """Every row's label must be one of the job's label words (names the first offending line)."""
    allowed = set(labels)
    for lineno, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        lab = json.loads(line)["label"]
        if lab not in allowed:
            raise DataError(f"{name} line {lineno}: label {lab!r} is not one of the job's labels {labels}")


def rows_to_jsonl(rows: list[dict[str, object]]) -> bytes:
    return ("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n").encode()


MAX_FILENAME_CHARS = 255  # the width of files.filename


def clean_filename(name: str) -> str:
    """An uploaded file's name as kept: without control characters, at most 255 characters."""
    kept = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    return kept[:MAX_FILENAME_CHARS] or "upload.jsonl"


def store_file(s: Any, home: Path, tenant_id: str, filename: str, raw: bytes, max_rows: int) -> DataFile:
    """Check ``raw``, write it under ``home/files`` and add its row to session ``s``."""
    checked = check_jsonl(raw, filename)
    if checked.rows > max_rows:
        raise DataError(f"{filename}: {checked.rows} rows is more than the limit of {max_rows}")
    fid = "file-" + secrets.token_hex(8)
    path = home / "files" / f"{fid}.jsonl"
    write_private(path, raw)  # 0600, atomically (state.store)
    row = DataFile(
        id=fid,
        tenant_id=tenant_id,
        filename=clean_filename(filename),
        path=str(path),
        bytes=len(raw),
        rows=checked.rows,
        labels=list(checked.labels),
        created_at=time.time(),
    )
    s.add(row)
    return row
