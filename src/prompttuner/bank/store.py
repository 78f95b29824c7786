"""The Prompt Bank's store, :class:`PromptBank`: tensors on disk (safetensors), metadata in SQL.

Layout of a bank folder (copy the folder and you have copied the bank)::

    <bank>/bank.sqlite                    entries, clusters, settings
    <bank>/tensors/<ab>/<id>.safetensors  one prompt per entry ([num_virtual_tokens, embed_dim])

A SQL URL (``sqlite:///...`` or ``postgresql://...``) also works; the tensors then live in ``tensor_dir``.

Tensor files are written and checked by :mod:`prompttuner.bank.tensors` (atomic with the row's
transaction: no entry without its tensor, no tensor left without its entry; checksums); the tables are
:mod:`prompttuner.bank.tables`, the entries callers see :mod:`prompttuner.bank.entries`.

Concurrency: SQLite runs in WAL mode with a busy timeout, every write is one short transaction, and the
index's in-place updates (assigning a new entry to a cluster) happen in the same transaction as the insert,
so threads and processes can add and search at the same time.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import create_engine, event, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from prompttuner.bank import features as feat
from prompttuner.bank import index as idx
from prompttuner.bank.entries import Entry, NewEntry
from prompttuner.bank.errors import BankError, CorruptEntryError, EntryNotFoundError, ModelMismatchError
from prompttuner.bank.tables import PUBLIC, Base, EntryRow, SettingRow, blob_to_vec, vec_to_blob
from prompttuner.bank.tensors import ORPHAN_AGE_S, TensorFiles

BULK = 8  # above this many entries in one add_many, files are flushed together (os.sync) not one by one


def _is_url(s: str) -> bool:
    return "://" in s


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class PromptBank:
    """A bank of tuned prompts: add, list, remove, load, search.  Thread and process safe.

    ``PromptBank("/path/to/bank")`` opens (or creates) a bank folder; ``PromptBank("postgresql://...",
    tensor_dir=...)`` keeps metadata in that database instead.
    """

    def __init__(
        self,
        path_or_url: str | os.PathLike[str],
        *,
        tensor_dir: str | os.PathLike[str] | None = None,
        create: bool = True,
        embedder: feat.TextEmbedder | None = None,
    ) -> None:
        target = str(path_or_url)
        if _is_url(target):
            if tensor_dir is None:
                raise BankError("a bank given by a database URL needs tensor_dir= (where its tensors live)")
            self.root: Path | None = None
            self.tensor_dir = Path(tensor_dir)
            url = target
        else:
            self.root = Path(target)
            if not self.root.exists():
                if not create:
                    raise BankError(f"no Prompt Bank at {self.root} (run `prompttuner bank build` first)")
                self.root.mkdir(parents=True)
            elif not self.root.is_dir():
                raise BankError(f"{self.root} is a file, not a Prompt Bank folder")
            elif not create and not (self.root / "bank.sqlite").exists():
                raise BankError(f"{self.root} is not a Prompt Bank (no bank.sqlite)")
            self.tensor_dir = Path(tensor_dir) if tensor_dir else self.root / "tensors"
            url = f"sqlite:///{(self.root / 'bank.sqlite').resolve()}"
        self.url = url
        self.files = TensorFiles(self.tensor_dir)
        self._embedder = embedder
        self.engine: Engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._lock = threading.RLock()  # serialises this process's writers; SQL serialises processes
        self.sweep_orphans()

    # ------------------------------------------------------------------ plumbing
    @property
    def embedder(self) -> feat.TextEmbedder:
        return self._embedder or feat.default_embedder()

    @contextlib.contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """One transaction; SQLite writers lock up front (BEGIN IMMEDIATE) to avoid upgrade deadlocks."""
        with self._sessions() as s:
            if write and self.engine.dialect.name == "sqlite":
                s.connection().exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> PromptBank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def setting(self, key: str, default: str | None = None) -> str | None:
        with self._sessions() as s:
            row = s.get(SettingRow, key)
            return row.value if row is not None else default

    def sweep_orphans(self, min_age_s: float = ORPHAN_AGE_S, full: bool = False) -> int:
        """Delete tensor files that no entry refers to (left by interrupted writes); returns how many.

        See :meth:`TensorFiles.sweep`: only the files named by journals older than ``min_age_s`` are
        checked, or every file with ``full=True``.
        """
        return self.files.sweep(self._known_files, min_age_s, full)

    def _known_files(self, rels: builtins.list[str]) -> set[str]:
        """Those of ``rels`` that an entry's row names."""
        known: set[str] = set()
        with self._sessions() as s:
            for k in range(0, len(rels), 900):  # stay under SQLite's bound-parameter limit
                q = select(EntryRow.tensor_file).where(EntryRow.tensor_file.in_(rels[k : k + 900]))
                known.update(s.scalars(q))
        return known

    # ------------------------------------------------------------------ writes
    def add(
        self,
        tensor: torch.Tensor,
        *,
        model: str,
        task_description: str,
        labels: Sequence[str],
        accuracy: float | None = None,
        steps: int | None = None,
        owner: str = PUBLIC,
        features: Mapping[str, Any] | None = None,
        source_job: str | None = None,
        task_name: str = "",
        sample_texts: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Store one tuned prompt and index it; returns its entry id.

        ``features`` may carry precomputed ``task_vec`` / ``prompt_vec`` (numpy or lists); what is missing
        is computed here (the task vector from the description, labels and ``sample_texts``).
        """
        f = dict(features or {})
        ne = NewEntry(
            tensor=tensor,
            model=model,
            task_description=task_description,
            labels=list(labels),
            accuracy=accuracy,
            steps=steps,
            owner=owner,
            task_name=task_name,
            source_job=source_job,
            sample_texts=sample_texts,
            task_vec=None if f.get("task_vec") is None else np.asarray(f["task_vec"], dtype=np.float32),
            prompt_vec=None if f.get("prompt_vec") is None else np.asarray(f["prompt_vec"], dtype=np.float32),
            extra=dict(extra or {}),
        )
        return self.add_many([ne])[0]

    def add_many(self, items: Sequence[NewEntry], *, reindex: bool = True) -> list[str]:
        """Add several entries in one transaction (all or none).  Used by ``bank build`` and benchmarks."""
        prepared = []
        for ne in items:
            t = ne.checked_tensor()
            tv = ne.task_vec
            if tv is None:
                tv = feat.task_vector(ne.task_description, ne.labels, ne.sample_texts, self.embedder)
            pv = ne.prompt_vec if ne.prompt_vec is not None else feat.prompt_vector(t)
            if tv.shape != (feat.TASK_DIM,):
                raise BankError(f"task_vec must have {feat.TASK_DIM} values, got {tv.shape}")
            if pv.shape != (t.shape[1],):
                raise BankError(f"prompt_vec must have embed_dim={t.shape[1]} values, got {pv.shape}")
            prepared.append((ne, t, tv.astype(np.float32), pv.astype(np.float32)))

        with self._lock:
            written: list[Path] = []
            ids: list[str] = []
            new_ids = [uuid.uuid4().hex for _ in prepared]
            journal = self.files.journal([self.files.rel_for(e) for e in new_ids])
            try:
                with self.session(write=True) as s:
                    widths: dict[str, int] = {}
                    for ne, t, _, _ in prepared:
                        if widths.setdefault(ne.model, int(t.shape[1])) != int(t.shape[1]):
                            raise ModelMismatchError(
                                f"prompts of model {ne.model!r} with embed_dim {widths[ne.model]} and "
                                f"{int(t.shape[1])} in one batch"
                            )
                    for model, width in widths.items():
                        self._check_model_width(s, model, width)
                    rows: list[dict[str, Any]] = []
                    for eid, (ne, t, tv, pv) in zip(new_ids, prepared, strict=True):
                        rel, sha = self.files.write(eid, t, ne.model, fsync=len(prepared) <= BULK)
                        written.append(self.files.path(rel))
                        rows.append(
                            dict(
                                id=eid,
                                model=ne.model,
                                embed_dim=int(t.shape[1]),
                                num_tokens=int(t.shape[0]),
                                task_name=ne.task_name,
                                task_description=ne.task_description,
                                labels_json=json.dumps(list(ne.labels)),
                                accuracy=ne.accuracy,
                                steps=ne.steps,
                                created_at=ne.created_at if ne.created_at is not None else time.time(),
                                owner=ne.owner,
                                source_job=ne.source_job,
                                tensor_file=rel,
                                tensor_sha256=sha,
                                task_vec=vec_to_blob(tv),
                                prompt_vec=vec_to_blob(pv),
                                extra_json=json.dumps(dict(ne.extra), default=str),
                            )
                        )
                        ids.append(eid)
                    if len(prepared) > BULK:
                        os.sync()  # one flush of all files of a bulk insert, still before the commit
                    if rows:  # one executemany (Core insert): ORM objects cost more than the files here
                        s.execute(insert(EntryRow), rows)
                    s.flush()
                    if reindex:
                        for model in sorted({ne.model for ne, *_ in prepared}):
                            idx.on_insert(
                                s,
                                model,
                                [i for i, (ne, *_r) in zip(ids, prepared, strict=True) if ne.model == model],
                            )
            except BaseException:
                for p in written:
                    p.unlink(missing_ok=True)
                raise
            finally:
                journal.unlink(missing_ok=True)
        return ids

    @staticmethod
    def _check_model_width(s: Session, model: str, width: int) -> None:
        other = s.scalars(
            select(EntryRow.embed_dim).where(EntryRow.model == model, EntryRow.embed_dim != width).limit(1)
        ).first()
        if other is not None:
            raise ModelMismatchError(
                f"prompt has embed_dim={width} but the bank's prompts of model {model!r} "
                f"have embed_dim={other}"
            )

    def remove(self, entry_id: str) -> Entry:
        """Delete an entry and its tensor (row first: no reader ever finds an entry without a file)."""
        with self._lock:
            with self.session(write=True) as s:
                row = s.get(EntryRow, entry_id)
                if row is None:
                    raise EntryNotFoundError(f"no bank entry with id {entry_id!r}")
                entry = Entry.from_row(row)
                rel = row.tensor_file
                journal = self.files.journal([rel])
                s.delete(row)
                s.flush()
                idx.on_remove(s, entry)
            self.files.path(rel).unlink(missing_ok=True)
            journal.unlink(missing_ok=True)
        return entry

    def reindex(self, model: str | None = None) -> dict[str, int]:
        """Re-cluster (all models or one) from scratch; returns clusters per model."""
        out = {}
        with self._lock:
            with self.session(write=True) as s:
                for m in [model] if model else self.models():
                    out[m] = idx.recluster(s, m)
        return out

    # ------------------------------------------------------------------ reads
    def get(self, entry_id: str) -> Entry:
        with self._sessions() as s:
            row = s.get(EntryRow, entry_id)
            if row is None:
                raise EntryNotFoundError(f"no bank entry with id {entry_id!r}")
            return Entry.from_row(row)

    def list(
        self,
        *,
        model: str | None = None,
        owner: str | None = None,
        tenant: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[Entry]:
        """Entries, newest first.  ``owner`` filters exactly; ``tenant`` shows public + that tenant's own."""
        q = select(EntryRow).order_by(EntryRow.created_at.desc(), EntryRow.id)
        if model is not None:
            q = q.where(EntryRow.model == model)
        if owner is not None:
            q = q.where(EntryRow.owner == owner)
        if tenant is not None:
            q = q.where(EntryRow.owner.in_([PUBLIC, tenant]))
        if offset:
            q = q.offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self._sessions() as s:
            return [Entry.from_row(r) for r in s.scalars(q).all()]

    def count(self, model: str | None = None) -> int:
        q = select(func.count()).select_from(EntryRow)
        if model is not None:
            q = q.where(EntryRow.model == model)
        with self._sessions() as s:
            return int(s.scalar(q) or 0)

    def models(self) -> builtins.list[str]:
        with self._sessions() as s:
            return sorted(s.scalars(select(EntryRow.model).distinct()).all())

    def embed_dim_of(self, model: str) -> int | None:
        with self._sessions() as s:
            return s.scalars(select(EntryRow.embed_dim).where(EntryRow.model == model).limit(1)).first()

    def load_tensor(self, entry_id: str) -> torch.Tensor:
        """The prompt of an entry; a missing, unreadable or altered file raises :class:`CorruptEntryError`."""
        with self._sessions() as s:
            row = s.get(EntryRow, entry_id)
            if row is None:
                raise EntryNotFoundError(f"no bank entry with id {entry_id!r}")
            rel, sha, shape = row.tensor_file, row.tensor_sha256, (row.num_tokens, row.embed_dim)
        return self.files.load(entry_id, rel, sha, shape)

    def verify(self) -> builtins.list[str]:
        """Check every entry's tensor; return one line per problem (empty: the bank is sound)."""
        problems = []
        for e in self.list():
            try:
                self.load_tensor(e.id)
            except CorruptEntryError as err:
                problems.append(str(err))
        return problems

    def vectors(self, ids: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if not ids:
            return {}
        with self._sessions() as s:
            rows = s.execute(
                select(EntryRow.id, EntryRow.task_vec, EntryRow.prompt_vec).where(EntryRow.id.in_(list(ids)))
            ).all()
        return {r[0]: (blob_to_vec(r[1]), blob_to_vec(r[2])) for r in rows}
