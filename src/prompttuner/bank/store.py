"""The Prompt Bank's store: tensors on disk (safetensors), metadata in SQL (SQLAlchemy).

Layout of a bank folder (copy the folder and you have copied the bank)::

    <bank>/bank.sqlite                    entries, clusters, settings
    <bank>/tensors/<ab>/<id>.safetensors  one prompt per entry ([num_virtual_tokens, embed_dim])

A SQL URL (``sqlite:///...`` or ``postgresql://...``) also works; the tensors then live in ``tensor_dir``.

Atomicity, both ways:
- *no entry without its tensor*: the tensor is written to a temporary file, fsynced and renamed to its
  final name *before* the row's transaction commits; if the commit fails the file is removed again.
- *no tensor without its entry*: a crash between rename and commit (or, on delete, between commit and
  unlink) can leave a file with no row.  Each write names its files in a small journal first and removes
  the journal when done; a bank that is opened sweeps the files of journals older than ``ORPHAN_AGE_S``
  (old enough that no live writer in another process is between rename and commit) that have no row.
Every tensor's SHA-256 is kept with its row, so a corrupt or swapped file is detected on load.

Concurrency: SQLite runs in WAL mode with a busy timeout, every write is one short transaction, and the
index's in-place updates (assigning a new entry to a cluster) happen in the same transaction as the insert,
so threads and processes can add and search at the same time.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from sqlalchemy import (
    Float,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from prompttuner.bank import features as feat
from prompttuner.bank.errors import BankError, CorruptEntryError, EntryNotFoundError, ModelMismatchError

ORPHAN_AGE_S = 600.0
PUBLIC = "public"
TENSOR_KEY = "prompt"
BULK = 8  # above this many entries in one add_many, files are flushed together (os.sync) not one by one


class Base(DeclarativeBase):
    pass


class EntryRow(Base):
    __tablename__ = "bank_entries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    embed_dim: Mapped[int] = mapped_column(Integer)
    num_tokens: Mapped[int] = mapped_column(Integer)
    task_name: Mapped[str] = mapped_column(String(200), default="")
    task_description: Mapped[str] = mapped_column(Text, default="")
    labels_json: Mapped[str] = mapped_column(Text, default="[]")
    accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    owner: Mapped[str] = mapped_column(String(200), default=PUBLIC, index=True)
    source_job: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tensor_file: Mapped[str] = mapped_column(String(300))
    tensor_sha256: Mapped[str] = mapped_column(String(64))
    task_vec: Mapped[bytes] = mapped_column(LargeBinary)
    prompt_vec: Mapped[bytes] = mapped_column(LargeBinary)
    cluster_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    extra_json: Mapped[str] = mapped_column(Text, default="{}")


class ClusterRow(Base):
    __tablename__ = "bank_clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    centroid: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer, default=0)
    rep_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class SettingRow(Base):
    __tablename__ = "bank_settings"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def vec_to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype=np.float32).tobytes()


def blob_to_vec(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.float32)


@dataclass(frozen=True)
class Entry:
    """One prompt in the bank, as callers see it (the tensor is loaded separately, on demand)."""

    id: str
    model: str
    embed_dim: int
    num_tokens: int
    task_name: str
    task_description: str
    labels: tuple[str, ...]
    accuracy: float | None
    steps: int | None
    created_at: float
    owner: str
    source_job: str | None
    cluster_id: int | None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["labels"] = list(self.labels)
        d["extra"] = dict(self.extra)
        return d

    @staticmethod
    def from_row(r: EntryRow) -> Entry:
        return Entry(
            id=r.id,
            model=r.model,
            embed_dim=r.embed_dim,
            num_tokens=r.num_tokens,
            task_name=r.task_name,
            task_description=r.task_description,
            labels=tuple(json.loads(r.labels_json)),
            accuracy=r.accuracy,
            steps=r.steps,
            created_at=r.created_at,
            owner=r.owner,
            source_job=r.source_job,
            cluster_id=r.cluster_id,
            extra=json.loads(r.extra_json or "{}"),
        )


@dataclass
class NewEntry:
    """Everything :meth:`PromptBank.add_many` needs for one entry (``add`` builds one of these)."""

    tensor: torch.Tensor
    model: str
    task_description: str
    labels: Sequence[str]
    accuracy: float | None = None
    steps: int | None = None
    owner: str = PUBLIC
    task_name: str = ""
    source_job: str | None = None
    sample_texts: Sequence[str] = ()
    task_vec: np.ndarray | None = None
    prompt_vec: np.ndarray | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    created_at: float | None = None


def _is_url(s: str) -> bool:
    return "://" in s


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
        self.tensor_dir.mkdir(parents=True, exist_ok=True)
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

    def _tensor_path(self, rel: str) -> Path:
        return self.tensor_dir / rel

    @staticmethod
    def _rel_for(entry_id: str) -> str:
        return f"{entry_id[:2]}/{entry_id}.safetensors"

    def _journal(self, rels: Sequence[str]) -> Path:
        """Name the files a write is about to create or delete, before touching them (see sweep_orphans)."""
        j = self.tensor_dir / f".journal-{uuid.uuid4().hex}.json"
        j.write_text(json.dumps(list(rels)))
        return j

    def sweep_orphans(self, min_age_s: float = ORPHAN_AGE_S, full: bool = False) -> int:
        """Delete tensor files that no entry refers to; returns how many.

        Every write first lists its files in a journal and removes the journal when it is done, so a
        journal that outlived ``min_age_s`` marks an interrupted write: only its files are checked (cost
        O(files of interrupted writes), not O(bank)).  ``full=True`` checks every file in the bank.
        """
        now = time.time()
        rels: set[str] = set()
        journals = [
            j for j in self.tensor_dir.glob(".journal-*.json") if now - j.stat().st_mtime >= min_age_s
        ]
        for j in journals:
            try:
                rels.update(json.loads(j.read_text()))
            except (OSError, ValueError):
                pass
        if full:
            rels.update(
                f"{p.parent.name}/{p.name}"
                for p in self.tensor_dir.glob("*/*")
                if p.is_file() and now - p.stat().st_mtime >= min_age_s
            )
        removed = 0
        if rels:
            known: set[str] = set()
            todo = sorted(rels)
            with self._sessions() as s:
                for k in range(0, len(todo), 900):  # stay under SQLite's bound-parameter limit
                    q = select(EntryRow.tensor_file).where(EntryRow.tensor_file.in_(todo[k : k + 900]))
                    known.update(s.scalars(q))
            for rel in rels:
                p = self._tensor_path(rel)
                if rel not in known and p.exists():
                    p.unlink()
                    removed += 1
        for folder in {self._tensor_path(r).parent for r in rels} | (
            set(self.tensor_dir.glob("*/")) if full else set()
        ):
            for tmp in folder.glob(".tmp-*"):
                if now - tmp.stat().st_mtime >= min_age_s:
                    tmp.unlink(missing_ok=True)
                    removed += 1
        for j in journals:
            j.unlink(missing_ok=True)
        return removed

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

    def _validate(self, ne: NewEntry) -> torch.Tensor:
        t = ne.tensor
        if not isinstance(t, torch.Tensor):
            raise BankError(f"a prompt must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim == 3 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
            raise BankError(
                f"a prompt is a [num_virtual_tokens, embed_dim] tensor, got shape {tuple(t.shape)}"
            )
        if not torch.isfinite(t).all():
            raise BankError("the prompt holds NaN or infinite values; refusing to store it")
        if not ne.model:
            raise BankError("an entry needs the name of its base model")
        if ne.owner is None or not str(ne.owner):
            raise BankError("owner must be 'public' or a tenant name")
        return t.detach().to("cpu").contiguous()

    def add_many(self, items: Sequence[NewEntry], *, reindex: bool = True) -> list[str]:
        """Add several entries in one transaction (all or none).  Used by ``bank build`` and benchmarks."""
        from prompttuner.bank import index as idx

        prepared = []
        for ne in items:
            t = self._validate(ne)
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
            journal = self._journal([self._rel_for(e) for e in new_ids])
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
                    made: set[Path] = set()
                    for eid, (ne, t, tv, pv) in zip(new_ids, prepared, strict=True):
                        rel = self._rel_for(eid)
                        final = self._tensor_path(rel)
                        if final.parent not in made:
                            final.parent.mkdir(parents=True, exist_ok=True)
                            made.add(final.parent)
                        tmp = final.parent / f".tmp-{eid}-{os.getpid()}"
                        blob = save_bytes({TENSOR_KEY: t}, metadata={"model": ne.model, "entry_id": eid})
                        sha = hashlib.sha256(blob).hexdigest()
                        with open(tmp, "wb") as fh:
                            fh.write(blob)
                            if len(prepared) <= BULK:
                                fh.flush()
                                os.fsync(fh.fileno())
                        os.replace(tmp, final)
                        written.append(final)
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
                for p in written[-1].parent.glob(".tmp-*") if written else []:
                    if str(os.getpid()) in p.name:
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
        from prompttuner.bank import index as idx

        with self._lock:
            with self.session(write=True) as s:
                row = s.get(EntryRow, entry_id)
                if row is None:
                    raise EntryNotFoundError(f"no bank entry with id {entry_id!r}")
                entry = Entry.from_row(row)
                rel = row.tensor_file
                journal = self._journal([rel])
                s.delete(row)
                s.flush()
                idx.on_remove(s, entry)
            self._tensor_path(rel).unlink(missing_ok=True)
            journal.unlink(missing_ok=True)
        return entry

    def reindex(self, model: str | None = None) -> dict[str, int]:
        """Re-cluster (all models or one) from scratch; returns clusters per model."""
        from prompttuner.bank import index as idx

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
        path = self._tensor_path(rel)
        if not path.is_file():
            raise CorruptEntryError(f"tensor file of bank entry {entry_id} is missing: {path}")
        if _sha256_file(path) != sha:
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

    # ------------------------------------------------------------------ search
    def search(self, job: Any, probe: Any = None, **kwargs: Any) -> Any:
        """Choose a start prompt for a job; see :func:`prompttuner.bank.select.select`."""
        from prompttuner.bank.select import select as _select

        return _select(self, job, probe, **kwargs)

    def search_task(self, loaded: Any, task: Any, **kwargs: Any) -> Any:
        """Choose for an engine ``Task`` on a loaded model (runs the probes); see ``select_for_task``."""
        from prompttuner.bank import select_for_task

        return select_for_task(self, loaded, task, **kwargs)


def delete_all(bank: PromptBank) -> None:
    """Empty a bank (tests and benchmarks)."""
    with bank.session(write=True) as s:
        s.execute(delete(EntryRow))
        s.execute(delete(ClusterRow))
