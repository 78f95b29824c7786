"""Selection: the two layers, the fixed probe budget, tenants, bad input, incremental index upkeep."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from bank_helpers import FAMILIES, family_probe, fill, make_prompt
from sqlalchemy import select as sql_select

from prompttuner.bank import index as idx
from prompttuner.bank.entries import NewEntry
from prompttuner.bank.errors import ModelMismatchError, NoCandidatesError
from prompttuner.bank.predict import StepsPredictor
from prompttuner.bank.select import Budget, JobQuery, select
from prompttuner.bank.store import PromptBank
from prompttuner.bank.tables import EntryRow


def query(family: str, **kw: object) -> JobQuery:
    desc, labels, texts = FAMILIES[family]
    return JobQuery(model="toy", description=desc, labels=labels, sample_texts=texts, **kw)  # type: ignore[arg-type]


class CountingProbe:
    def __init__(self, family: str) -> None:
        self.inner = family_probe(family)
        self.calls: list[int] = []

    def __call__(self, prompts: Sequence[torch.Tensor]) -> list[float]:
        self.calls.append(len(prompts))
        return self.inner(prompts)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_selects_a_prompt_of_the_matching_family(bank: PromptBank, family: str) -> None:
    ids = fill(bank, per_family=4)
    probe = CountingProbe(family)
    sel = select(bank, query(family), probe)
    assert ids[sel.entry.id] == family
    # the choice is the lowest loss among the probed prompts, and its tensor is the stored one
    losses = {p.entry_id: p.loss for p in sel.probes if p.loss is not None}
    assert sel.loss == min(losses.values()) == losses[sel.entry.id]
    assert torch.equal(sel.tensor, bank.load_tensor(sel.entry.id))
    assert sel.predicted_steps > 0
    assert {"features_s", "index_s", "probes_s", "total_s"} <= set(sel.timings)


def test_probe_budget_is_fixed_as_the_bank_grows(tmp_path: object) -> None:
    bank = PromptBank(str(tmp_path) + "/big")
    rng = np.random.default_rng(0)
    items = []
    fams = sorted(FAMILIES)
    for i in range(300):
        fam = fams[i % 3]
        desc, labels, texts = FAMILIES[fam]
        items.append(
            NewEntry(
                tensor=make_prompt(fam, 1000 + i, noise=0.5),
                model="toy",
                task_description=desc,
                labels=labels,
                task_name=fam,
                sample_texts=texts[: 1 + int(rng.integers(3))],
            )
        )
    ids = bank.add_many(items)
    with bank.session() as s:
        clusters = idx.clusters_of(s, "toy")
    assert 1 < len(clusters) <= idx.choose_k(300) and sum(c.size for c in clusters) == 300
    budget = Budget(rep_probes=3, member_probes=4, expand_clusters=2)
    probe = CountingProbe("topic")
    sel = select(bank, query("topic"), probe, budget=budget)
    assert sum(probe.calls) <= budget.rep_probes + budget.member_probes
    assert [p.layer for p in sel.probes].count(1) == budget.rep_probes
    assert bank.get(sel.entry.id).task_name == "topic"
    assert len(ids) == 300
    bank.close()


def test_features_only_selection_needs_no_probe(bank: PromptBank) -> None:
    ids = fill(bank, per_family=2)
    sel = select(bank, query("entailment"), None)
    assert ids[sel.entry.id] == "entailment"
    assert sel.info["probe_evaluations"] == 0


def test_private_prompts_are_only_candidates_for_their_tenant(bank: PromptBank) -> None:
    private = fill(bank, per_family=2, owner="acme")
    public_topic = bank.add(make_prompt("sentiment", 77), model="toy", task_description="x", labels=["a"])
    sel = select(bank, query("topic", tenant="other"), family_probe("topic"))
    assert sel.entry.id == public_topic  # the only prompt 'other' may see
    sel = select(bank, query("topic", tenant="acme"), family_probe("topic"))
    assert private.get(sel.entry.id) == "topic"


def test_other_models_are_never_candidates(bank: PromptBank) -> None:
    fill(bank, per_family=1, model="toy")
    bank.add(torch.randn(4, 48), model="wide", task_description="x", labels=["a"])
    with pytest.raises(NoCandidatesError, match="holds prompts of: toy, wide"):
        select(bank, JobQuery(model="other", description="d", labels=["a"]), None)
    with pytest.raises(ModelMismatchError, match="embed_dim"):
        select(bank, query("topic", embed_dim=999), None)
    sel = select(bank, JobQuery(model="wide", description="d", labels=["a"]), None)
    assert sel.entry.model == "wide"


def test_empty_bank_is_a_clear_error(bank: PromptBank) -> None:
    with pytest.raises(NoCandidatesError, match="empty"):
        select(bank, query("topic"), None)


def test_num_tokens_filter(bank: PromptBank) -> None:
    fill(bank, per_family=1)
    long_one = bank.add(torch.randn(8, 32), model="toy", task_description="d", labels=["a"])
    sel = select(bank, query("topic", num_tokens=8), family_probe("topic"))
    assert sel.entry.id == long_one


def test_corrupt_candidate_is_skipped_and_reported(bank: PromptBank) -> None:
    ids = fill(bank, per_family=2)
    topic = [i for i, f in ids.items() if f == "topic"]
    with bank.session() as s:
        rel = s.get(EntryRow, topic[0]).tensor_file  # type: ignore[union-attr]
    (bank.tensor_dir / rel).write_bytes(b"broken")
    sel = select(bank, query("topic"), family_probe("topic"), budget=Budget(rep_probes=6, member_probes=6))
    assert sel.entry.id != topic[0]
    bad = [p for p in sel.probes if p.entry_id == topic[0]]
    assert bad and bad[0].loss is None and "checksum" in (bad[0].error or "")


def test_incremental_insert_then_regrow_recluster(bank: PromptBank, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idx, "SMALL_BANK", 4)
    fill(bank, per_family=2)  # 6 entries: clustered at 6
    with bank.session() as s:
        before = {c.id for c in idx.clusters_of(s, "toy")}
    bank.add(make_prompt("topic", 500), model="toy", task_description="news", labels=["a"])  # 7 < 1.5 * 6
    with bank.session() as s:
        after = idx.clusters_of(s, "toy")
    assert {c.id for c in after} == before and sum(c.size for c in after) == 7
    assert bank.setting("clustered_at:toy") == "6"
    bank.add(make_prompt("topic", 501), model="toy", task_description="news", labels=["a"])
    bank.add(make_prompt("topic", 502), model="toy", task_description="news", labels=["a"])  # 9 >= 9
    assert bank.setting("clustered_at:toy") == "9"
    assert all(e.cluster_id is not None for e in bank.list())


def test_removing_a_representative_picks_a_new_one(bank: PromptBank) -> None:
    fill(bank, per_family=3)
    with bank.session() as s:
        c = max(idx.clusters_of(s, "toy"), key=lambda c: c.size)
    assert c.rep_id is not None
    bank.remove(c.rep_id)
    with bank.session() as s:
        c2 = next(x for x in idx.clusters_of(s, "toy") if x.id == c.id)
    assert c2.size == c.size - 1 and c2.rep_id not in (None, c.rep_id)
    assert bank.get(c2.rep_id).cluster_id == c.id  # type: ignore[arg-type]


def test_kmeans_separates_clear_groups() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(m, 0.05, (30, 5)) for m in (0.0, 3.0, -3.0)]).astype(np.float32)
    cent = idx.kmeans(x, 3)
    labels = idx.nearest(x, cent)
    assert len(set(labels[:30])) == len(set(labels[30:60])) == len(set(labels[60:])) == 1
    assert len(set(labels)) == 3


def test_steps_predictor() -> None:
    p = StepsPredictor({"steps_model": {"kind": "loglinear", "a": 1.0, "b": 2.0}})
    assert p.predict(0.5) == pytest.approx(np.exp(2.0))
    assert p.predict(10.0, max_steps=50) == 50
    q = StepsPredictor({"median_speedup_vs_random": 4.0})
    assert q.predict(float("nan"), [100, 300, 200]) == pytest.approx(50.0)
    assert StepsPredictor({}).predict(float("nan"), []) == pytest.approx(50.0)  # 100 / default 2.0


def test_baselines_are_probed_beside_the_representatives(bank: PromptBank) -> None:
    fill(bank, per_family=3)
    probe = CountingProbe("topic")
    budget = Budget(rep_probes=2, member_probes=2, expand_clusters=1)
    near, far = make_prompt("topic", 4242, noise=0.0), make_prompt("sentiment", 4243)
    sel = select(bank, query("topic"), probe, budget=budget, baselines={"near": near, "far": far})
    # one batch holds the representatives and both baselines; the members come in a second batch
    assert probe.calls[0] == budget.rep_probes + 2
    assert sum(probe.calls) <= budget.rep_probes + budget.member_probes + 2
    losses = {k: v["loss"] for k, v in sel.info["baseline_scores"].items()}
    assert losses == pytest.approx({"near": probe.inner([near])[0], "far": probe.inner([far])[0]})
    assert losses["near"] < losses["far"]
    assert all(p.entry_id for p in sel.probes)  # baselines are not bank entries
    assert sel.info["probe_evaluations"] == sum(probe.calls)
    # features-only selection runs no probe, so no baseline either
    assert "baseline_scores" not in select(bank, query("topic"), None, baselines={"near": near}).info


@pytest.mark.parametrize(
    ("text_accuracy", "text_loss", "fallback"),
    [
        (0.75, 2.0, True),  # a higher probe accuracy wins whatever the loss
        (0.5, 0.5, True),  # same accuracy: the lower loss breaks the tie
        (0.5, 2.0, False),
        (0.25, 0.1, False),  # a lower loss does not beat a higher accuracy
    ],
)
def test_select_init_keeps_the_jobs_text_init_unless_an_entry_beats_it(
    bank: PromptBank, monkeypatch: pytest.MonkeyPatch, text_accuracy: float, text_loss: float, fallback: bool
) -> None:
    import prompttuner.bank as pb

    fill(bank, per_family=2)
    real = select(bank, query("topic"), family_probe("topic"))
    real.loss = 1.0
    real.info["accuracy"] = 0.5
    seen: dict[str, object] = {}

    def fake_select_for_task(b: PromptBank, loaded: object, task: object, **kw: object) -> object:
        seen.update(kw)
        real.info["baseline_scores"] = {"text": {"loss": text_loss, "accuracy": text_accuracy}}
        return real

    monkeypatch.setattr(pb, "select_for_task", fake_select_for_task)
    rows = ["a", "b"]
    chosen, info = pb.select_init(bank.root, object(), object(), num_tokens=4, examples=rows)
    assert seen["cold_init"] == "text" and seen["num_tokens"] == 4 and seen["examples"] is rows
    if fallback:  # the job's own instruction probes at least as well as any entry: cold start from it
        assert chosen == "text" and info["fallback"] == "text"
    else:
        assert torch.equal(chosen, real.tensor.float()) and "fallback" not in info


def test_banks_with_the_same_prompts_cluster_and_select_alike(tmp_path: object) -> None:
    """Entry ids are random; the index must not depend on them (k-means depends on its input order)."""
    outcomes = []
    for k in range(3):
        b = PromptBank(f"{tmp_path}/bank{k}")
        fill(b, per_family=7)
        with b.session() as s:
            clusters = idx.clusters_of(s, "toy")
            members = sorted(
                sorted(b.get(r[0]).task_name + str(b.load_tensor(r[0])[0, 0].item()) for r in rows)
                for rows in (
                    s.execute(sql_select(EntryRow.id).where(EntryRow.cluster_id == c.id)).all()
                    for c in clusters
                )
            )
        sel = select(b, query("topic"), family_probe("topic"), budget=Budget(rep_probes=2, member_probes=2))
        outcomes.append((members, float(sel.tensor.sum())))
        b.close()
    assert outcomes[0] == outcomes[1] == outcomes[2]


@pytest.mark.parametrize(("rank_by", "winner"), [("accuracy", "entailment"), ("loss", "topic")])
def test_probe_accuracy_ranks_before_loss(bank: PromptBank, rank_by: str, winner: str) -> None:
    """A probe that scores both: the accuracy on the job's rows decides, the loss only breaks ties (or
    decides alone with ``rank_by="loss"``); the layer-2 expansion follows the same ranking."""
    from bank_helpers import family_base

    from prompttuner.bank import ProbeScore

    ids = fill(bank, per_family=4)
    loss_of = family_probe("topic")
    near = family_base("entailment")

    def probe(prompts: Sequence[torch.Tensor]) -> list[ProbeScore]:
        # accuracy falls with the distance to the entailment family: 4 rows, so it moves in steps of 1/4
        accs = [round(4 / (1 + float(((p.float().mean(0) - near) ** 2).sum()))) / 4 for p in prompts]
        return [ProbeScore(loss=x, accuracy=min(1.0, a)) for x, a in zip(loss_of(prompts), accs, strict=True)]

    sel = select(bank, query("topic"), probe, budget=Budget(rank_by=rank_by, expand_clusters=1))
    assert ids[sel.entry.id] == winner
    probed = [p for p in sel.probes if p.accuracy is not None]
    assert sel.info["rank_by"] == rank_by
    if rank_by == "accuracy":  # the members probed in layer 2 are of the cluster whose rep ranked first
        assert sel.info["accuracy"] == max(p.accuracy for p in probed)  # type: ignore[type-var]
        assert {ids[p.entry_id] for p in sel.probes if p.layer == 2} == {"entailment"}
