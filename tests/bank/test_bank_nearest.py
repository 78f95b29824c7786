"""Layer 0 (the entries nearest the job in task space) and the task-similarity tie-break of the ranking."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from bank_helpers import FAMILIES, family_probe, fill, make_prompt
from sqlalchemy import select as sql_select

from prompttuner.bank import ProbeScore, cold_init_wins
from prompttuner.bank import features as feat
from prompttuner.bank.race import Candidate
from prompttuner.bank.select import Budget, JobQuery, rank_key, select
from prompttuner.bank.store import PromptBank
from prompttuner.bank.tables import EntryRow, blob_to_vec


def query(family: str, **kw: object) -> JobQuery:
    desc, labels, texts = TWEETS if family == "tweets" else FAMILIES[family]
    return JobQuery(model="toy", description=desc, labels=labels, sample_texts=texts, **kw)  # type: ignore[arg-type]


def similarities(bank: PromptBank, job: JobQuery, tenant: str = "public") -> dict[str, float]:
    """Every visible entry's task similarity to ``job``, computed here from the stored task vectors."""
    v = feat.task_vector(job.description, job.labels, job.sample_texts, bank.embedder)
    with bank.session() as s:
        rows = s.execute(sql_select(EntryRow.id, EntryRow.owner, EntryRow.task_vec)).all()
    return {r[0]: float(blob_to_vec(r[2]) @ v) for r in rows if r[1] in ("public", tenant)}


TWEETS = ("Classify the emotion of a tweet.", ["joy", "anger"], ["so happy today", "this makes me furious"])


def add_twin(bank: PromptBank, *, owner: str = "public", seed: int = 500) -> str:
    """An entry of a task none of the families has (the job's: same description, labels and texts) whose
    prompt is the topic family's: the index clusters it with that family, so only its task vector says
    it is the job's."""
    desc, labels, texts = TWEETS
    return bank.add(
        make_prompt("topic", seed),
        model="toy",
        task_description=desc,
        labels=labels,
        task_name="tweets",
        sample_texts=texts,
        owner=owner,
    )


def test_layer0_probes_the_nearest_visible_entries_of_the_whole_bank(bank: PromptBank) -> None:
    fill(bank, per_family=3)
    private = add_twin(bank, owner="acme", seed=501)
    job = query("tweets", tenant="other")
    sims = similarities(bank, job, tenant="other")
    assert private not in sims
    budget = Budget(rep_probes=1, member_probes=0, expand_clusters=1, nearest=2)
    sel = select(bank, job, family_probe("topic"), budget=budget)
    layer0 = [p for p in sel.probes if p.layer == 0]
    reps = {p.entry_id for p in sel.probes if p.layer == 1}
    expected = [e for e in sorted(sims, key=lambda e: -sims[e]) if e not in reps][:2]
    assert [p.entry_id for p in layer0] == expected
    assert all(p.task_similarity == pytest.approx(sims[p.entry_id], abs=1e-5) for p in sel.probes)
    assert len(sel.probes) == budget.rep_probes + budget.nearest
    # without layer 0 the same budget probes the representative only
    sel = select(
        bank, job, family_probe("topic"), budget=Budget(rep_probes=1, member_probes=0, expand_clusters=1)
    )
    assert [p.layer for p in sel.probes] == [1]


def test_similarity_breaks_accuracy_ties_for_the_twin(bank: PromptBank) -> None:
    """The repeat of an earlier task whose prompt clusters with another family: with layer 0 it is probed,
    and when the probe cannot tell the candidates apart by accuracy its task similarity chooses it (the
    loss, which favours another family here, chooses otherwise)."""
    fill(bank, per_family=4)
    twin = add_twin(bank)
    job = query("tweets")
    loss_of = family_probe("sentiment")  # the loss favours another family: only a tie-break

    def probe(prompts: Sequence[torch.Tensor]) -> list[ProbeScore]:
        return [ProbeScore(loss=x, accuracy=0.5) for x in loss_of(prompts)]

    base = Budget(rep_probes=1, member_probes=1, expand_clusters=1)
    sims = similarities(bank, job)
    assert max(sims, key=lambda e: sims[e]) == twin
    near = select(
        bank, job, probe, budget=Budget(**{**base.__dict__, "nearest": 1, "rank_by": "accuracy+similarity"})
    )
    assert twin in {p.entry_id for p in near.probes}  # a representative, or else layer 0's
    assert near.entry.id == twin
    by_loss = select(bank, job, probe, budget=Budget(**{**base.__dict__, "nearest": 1}))
    probed = {p.entry_id: p.loss for p in by_loss.probes if p.loss is not None}
    assert by_loss.entry.id == min(probed, key=lambda e: probed[e])  # the former rule: loss breaks the tie


def test_similarity_tie_break_ranks_entries_before_the_cold_init(bank: PromptBank) -> None:
    fill(bank, per_family=2)
    job = query("topic")

    def probe(prompts: Sequence[torch.Tensor]) -> list[ProbeScore]:
        # every prompt the same accuracy; the baseline (all zeros) the lowest loss
        return [ProbeScore(loss=1.0 if bool(p.abs().sum() > 0) else 0.5, accuracy=0.5) for p in prompts]

    cold = {"text": torch.zeros(4, 32)}
    sel = select(bank, job, probe, budget=Budget(rank_by="accuracy"), baselines=cold)
    assert cold_init_wins(sel) is not None  # tie on accuracy, the lower loss: the text init
    sel = select(bank, job, probe, budget=Budget(rank_by="accuracy+similarity"), baselines=cold)
    assert cold_init_wins(sel) is None  # tie on accuracy: any entry's similarity beats none


def test_rank_key_orders() -> None:
    a = ProbeScore(loss=2.0, accuracy=0.75)
    b = ProbeScore(loss=1.0, accuracy=0.75)
    assert rank_key(b) < rank_key(a)  # accuracy tie: the loss
    by = "accuracy+similarity"
    assert rank_key(a, by, 0.9) < rank_key(b, by, 0.5) < rank_key(b, by, None)
    assert rank_key(ProbeScore(loss=9.0, accuracy=1.0), by, None) < rank_key(b, by, 0.99)  # accuracy first
    assert rank_key(ProbeScore(loss=1.0, accuracy=math.nan), by, 0.9) == (1.0,)  # a loss-only probe
    with pytest.raises(ValueError, match="unknown rank"):
        rank_key(a, "similarity")
    t = torch.zeros(1)
    cands = [
        Candidate("text", "text", t, ProbeScore(0.1, 0.5)),
        Candidate("blend", "warm", t, ProbeScore(0.5, 0.5), similarity=0.6),
        Candidate("entry:x", "warm", t, ProbeScore(0.9, 0.5), similarity=0.8),
        Candidate("random", "random", t),
    ]
    assert [c.name for c in sorted(cands, key=lambda c: c.key(by))] == ["entry:x", "blend", "text", "random"]
    assert [c.name for c in sorted(cands, key=lambda c: c.key("accuracy"))] == [
        "text",
        "blend",
        "entry:x",
        "random",
    ]
