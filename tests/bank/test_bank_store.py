"""The store: round trips, persistence, copying, atomic writes, bad input."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import torch
from bank_helpers import FAMILIES, fill, make_prompt

from prompttuner.bank import index as idx
from prompttuner.bank.errors import BankError, CorruptEntryError, EntryNotFoundError, ModelMismatchError
from prompttuner.bank.store import PromptBank
from prompttuner.bank.tables import EntryRow


def _files(bank: PromptBank) -> list[Path]:
    return sorted(p for p in bank.tensor_dir.rglob("*") if p.is_file())


def test_add_get_load_list_remove(bank: PromptBank) -> None:
    t = make_prompt("sentiment", 1)
    eid = bank.add(
        t,
        model="toy",
        task_description="Sentiment of reviews.",
        labels=["bad", "good"],
        accuracy=0.9,
        steps=120,
        owner="acme",
        source_job="job-1",
        task_name="sst2",
    )
    e = bank.get(eid)
    assert (e.model, e.embed_dim, e.num_tokens, e.labels, e.owner, e.source_job) == (
        "toy",
        t.shape[1],
        t.shape[0],
        ("bad", "good"),
        "acme",
        "job-1",
    )
    assert e.accuracy == pytest.approx(0.9) and e.steps == 120 and e.cluster_id is not None
    assert torch.equal(bank.load_tensor(eid), t)
    assert [x.id for x in bank.list()] == [eid]
    assert bank.list(tenant="other") == [] and len(bank.list(tenant="acme")) == 1
    assert len(_files(bank)) == 1
    bank.remove(eid)
    assert bank.list() == [] and _files(bank) == []
    with pytest.raises(EntryNotFoundError):
        bank.get(eid)
    with pytest.raises(EntryNotFoundError):
        bank.remove(eid)


def test_persistence_and_copy_as_folder(tmp_path: Path) -> None:
    b = PromptBank(tmp_path / "a")
    ids = fill(b)
    tensors = {i: b.load_tensor(i) for i in ids}
    clusters = {e.id: e.cluster_id for e in b.list()}
    b.close()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for folder in ("a", "b"):
        c = PromptBank(tmp_path / folder, create=False)
        assert {e.id: e.cluster_id for e in c.list()} == clusters
        for i, t in tensors.items():
            assert torch.equal(c.load_tensor(i), t)
        assert c.verify() == []
        c.close()


def test_open_missing_bank_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BankError, match="no Prompt Bank"):
        PromptBank(tmp_path / "nope", create=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BankError, match="not a Prompt Bank"):
        PromptBank(tmp_path / "empty", create=False)
    with pytest.raises(BankError, match="tensor_dir"):
        PromptBank("sqlite:///" + str(tmp_path / "x.db"))


def test_database_url_with_tensor_dir(tmp_path: Path) -> None:
    b = PromptBank(f"sqlite:///{tmp_path / 'meta.db'}", tensor_dir=tmp_path / "t")
    eid = b.add(make_prompt("topic", 3), model="toy", task_description="d", labels=["a", "b"])
    assert torch.equal(b.load_tensor(eid), make_prompt("topic", 3))
    assert len(list((tmp_path / "t").rglob("*.safetensors"))) == 1


def test_failed_insert_leaves_neither_row_nor_file(bank: PromptBank, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(bank, per_family=1)
    before_files, before_n = _files(bank), bank.count()

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("crash while indexing")

    monkeypatch.setattr(idx, "on_insert", boom)
    with pytest.raises(RuntimeError):
        bank.add(make_prompt("topic", 99), model="toy", task_description="d", labels=["x"])
    assert bank.count() == before_n and _files(bank) == before_files


def test_interrupted_write_is_swept_but_entries_kept(bank: PromptBank) -> None:
    """A writer that died between rename and commit left a journal naming its file: the sweep removes it."""
    ids = fill(bank, per_family=1)
    orphan = bank.tensor_dir / "zz" / "zz0000.safetensors"
    orphan.parent.mkdir()
    orphan.write_bytes(b"left by a crash")
    tmp = bank.tensor_dir / "zz" / ".tmp-abc-1"
    tmp.write_bytes(b"half written")
    kept = next(iter(ids))
    with bank.session() as s:
        kept_rel = s.get(EntryRow, kept).tensor_file  # type: ignore[union-attr]
    bank.files.journal(["zz/zz0000.safetensors", kept_rel])  # the dead writer's journal
    assert bank.sweep_orphans(min_age_s=3600) == 0  # too young: maybe a live writer is committing it
    assert orphan.exists()
    assert bank.sweep_orphans(min_age_s=0) == 2
    assert not orphan.exists() and not tmp.exists() and not list(bank.tensor_dir.glob(".journal-*"))
    assert bank.verify() == [] and bank.count() == len(ids)
    # a stray file without any journal is found by a full scan
    orphan.write_bytes(b"stray")
    assert bank.sweep_orphans(min_age_s=0) == 0 and orphan.exists()
    assert bank.sweep_orphans(min_age_s=0, full=True) == 1 and not orphan.exists()
    assert bank.verify() == []


def test_writes_leave_no_journal(bank: PromptBank) -> None:
    eid = bank.add(make_prompt("topic", 5), model="toy", task_description="d", labels=["a"])
    bank.remove(eid)
    assert not list(bank.tensor_dir.glob(".journal-*"))


def test_corrupt_and_missing_tensor_files_are_reported(bank: PromptBank) -> None:
    ids = list(fill(bank, per_family=1))
    with bank.session() as s:
        files = {r.id: r.tensor_file for r in s.query(EntryRow).all()}
    (bank.tensor_dir / files[ids[0]]).write_bytes(b"\x00garbage")
    (bank.tensor_dir / files[ids[1]]).unlink()
    with pytest.raises(CorruptEntryError, match="checksum"):
        bank.load_tensor(ids[0])
    with pytest.raises(CorruptEntryError, match="missing"):
        bank.load_tensor(ids[1])
    assert len(bank.verify()) == 2


def test_bad_prompts_are_refused(bank: PromptBank) -> None:
    bank.add(torch.zeros(4, 32), model="toy", task_description="d", labels=["a"])
    with pytest.raises(ModelMismatchError, match="embed_dim"):
        bank.add(torch.zeros(4, 48), model="toy", task_description="d", labels=["a"])
    with pytest.raises(BankError, match="tokens, embed_dim"):
        bank.add(torch.zeros(32), model="toy", task_description="d", labels=["a"])
    with pytest.raises(BankError, match="NaN"):
        bank.add(torch.full((4, 32), float("nan")), model="toy", task_description="d", labels=["a"])
    with pytest.raises(BankError, match="base model"):
        bank.add(torch.zeros(4, 32), model="", task_description="d", labels=["a"])
    # another model with another width is fine: models are kept apart
    bank.add(torch.zeros(4, 48), model="other", task_description="d", labels=["a"])
    assert bank.models() == ["other", "toy"] and bank.count() == 2 and len(_files(bank)) == 2


def test_concurrent_adds_from_threads(bank: PromptBank) -> None:
    desc, labels, _ = FAMILIES["topic"]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for j in range(5):
                bank.add(make_prompt("topic", 100 * k + j), model="toy", task_description=desc, labels=labels)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and bank.count() == 20 and len(_files(bank)) == 20 and bank.verify() == []
    with bank.session() as s:
        clusters = idx.clusters_of(s, "toy")
    assert sum(c.size for c in clusters) == 20


def _add_in_process(folder: str, k: int) -> None:
    from prompttuner.bank import features

    features.set_default_embedder(features.HashingEmbedder())
    b = PromptBank(folder)
    for j in range(4):
        b.add(make_prompt("topic", 1000 * k + j), model="toy", task_description="news", labels=["a", "b"])
    b.close()


def test_concurrent_adds_from_processes(tmp_path: Path) -> None:
    import multiprocessing as mp

    folder = str(tmp_path / "shared")
    PromptBank(folder).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_add_in_process, args=(folder, k)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    b = PromptBank(folder)
    assert b.count() == 8 and b.verify() == [] and len(_files(b)) == 8
    b.close()
