"""The Prompt Bank's tensor files: one safetensors file per entry, written atomically, checked on load.

Layout: ``<tensor_dir>/<ab>/<id>.safetensors`` holds one prompt ``[num_virtual_tokens, embed_dim]``.

Atomicity, both ways (with the row's transaction, see :mod:`prompttuner.bank.store`):

- *no entry without its tensor*: the tensor is written to a temporary file, fsynced and renamed to its
  final name *before* the row's transaction commits; if the commit fails the file is removed again.
- *no tensor without its entry*: a crash between rename and commit (or, on delete, between commit and
  unlink) can leave a file with no row.  Each write names its files in a small journal first and removes
  the journal when done; :meth:`TensorFiles.sweep` deletes the files of journals older than
  ``ORPHAN_AGE_S`` (old enough that no live writer in another process is between rename and commit) that
  have no row.

Every tensor's SHA-256 is kept with its row, so a corrupt or swapped file is detected on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes

from prompttuner.bank.errors import CorruptEntryError

ORPHAN_AGE_S = 600.0
TENSOR_KEY = "prompt"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TensorFiles:
    """The tensor files of one bank, under ``root`` (created if missing)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def rel_for(entry_id: str) -> str:
        """The file of an entry, relative to the root (what its row records)."""
        return f"{entry_id[:2]}/{entry_id}.safetensors"

    def path(self, rel: str) -> Path:
        return self.root / rel

    def journal(self, rels: Sequence[str]) -> Path:
        """Name the files a write is about to create or delete, before touching them (see :meth:`sweep`);
        the writer removes the journal when it is done."""
        j = self.root / f".journal-{uuid.uuid4().hex}.json"
        j.write_text(json.dumps(list(rels)))
        return j

    def write(self, entry_id: str, tensor: torch.Tensor, model: str, *, fsync: bool) -> tuple[str, str]:
        """Write an entry's tensor to its final name (through a temporary file); returns ``(rel, sha256)``.

        ``fsync=False`` leaves flushing to the caller (one ``os.sync`` for a bulk insert), which must still
        happen before the row commits.
        """
        rel = self.rel_for(entry_id)
        final = self.path(rel)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{entry_id}-{os.getpid()}"
        blob = save_bytes({TENSOR_KEY: tensor}, metadata={"model": model, "entry_id": entry_id})
        try:
            with open(tmp, "wb") as fh:
                fh.write(blob)
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return rel, hashlib.sha256(blob).hexdigest()

    def load(self, entry_id: str, rel: str, sha256: str, shape: tuple[int, int]) -> torch.Tensor:
        """The tensor of an entry whose row says ``rel``, ``sha256`` and ``shape``; a missing, unreadable or
        altered file raises :class:`CorruptEntryError`."""
        path = self.path(rel)
        if not path.is_file():
            raise CorruptEntryError(f"tensor file of bank entry {entry_id} is missing: {path}")
        if sha256_file(path) != sha256:
            raise CorruptEntryError(
                f"tensor file of bank entry {entry_id} does not match its checksum "
                f"(corrupt or replaced): {path}"
            )
        try:
            t = load_file(str(path))[TENSOR_KEY]
        except (SafetensorError, KeyError, OSError, ValueError) as e:
            raise CorruptEntryError(f"cannot read tensor file of bank entry {entry_id} ({path}): {e}") from e
        if tuple(t.shape) != shape:
            raise CorruptEntryError(
                f"tensor of bank entry {entry_id} has shape {tuple(t.shape)}, expected {shape}"
            )
        return t

    def sweep(
        self,
        known: Callable[[list[str]], set[str]],
        min_age_s: float = ORPHAN_AGE_S,
        full: bool = False,
    ) -> int:
        """Delete tensor files that no entry refers to (``known(rels)``: those of ``rels`` that rows
        name); returns how many.

        A journal that outlived ``min_age_s`` marks an interrupted write: only its files are checked (cost
        O(files of interrupted writes), not O(bank)).  ``full=True`` checks every file in the bank.
        """
        now = time.time()
        rels: set[str] = set()
        journals = [j for j in self.root.glob(".journal-*.json") if now - j.stat().st_mtime >= min_age_s]
        for j in journals:
            try:
                rels.update(json.loads(j.read_text()))
            except (OSError, ValueError):
                pass
        if full:
            rels.update(
                f"{p.parent.name}/{p.name}"
                for p in self.root.glob("*/*")
                if p.is_file() and now - p.stat().st_mtime >= min_age_s
            )
        removed = 0
        if rels:
            referenced = known(sorted(rels))
            for rel in rels:
                p = self.path(rel)
                if rel not in referenced and p.exists():
                    p.unlink()
                    removed += 1
        for folder in {self.path(r).parent for r in rels} | (set(self.root.glob("*/")) if full else set()):
            for tmp in folder.glob(".tmp-*"):
                if now - tmp.stat().st_mtime >= min_age_s:
                    tmp.unlink(missing_ok=True)
                    removed += 1
        for j in journals:
            j.unlink(missing_ok=True)
        return removed
