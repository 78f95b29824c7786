"""Job checkpoints on disk: a JSON header line followed by the engine's state bytes.

No pickle: a checkpoint is data, and the header (step, init, warm-start done) is readable with ``head``.
Writes go to a temporary file that replaces the old one atomically, so a crash leaves either the old or
the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_checkpoint(path: Path, state: bytes | None, header: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(json.dumps({**header, "has_state": state is not None}).encode() + b"\n")
        if state is not None:
            f.write(state)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> tuple[bytes | None, dict[str, Any]]:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n")
    header = json.loads(head)
    return (body if header.get("has_state") else None), header
