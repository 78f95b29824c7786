"""Selection: which bank prompt should a new job start from?

Under a fixed probe budget (so the cost does not grow with the bank):

1. *Features*: embed the job (description, label words, a sample of its training texts).
2. *Layer 1*: rank the model's clusters by the similarity of their centroid's task part to the job (a
   cheap prior, no LLM); take the representatives of the top ``rep_probes`` clusters.
3. *Probe*: the job's own sample of training rows, with the job's own label words, under each
   representative (one forward pass each, no gradient), scored by accuracy and loss.  This is the signal
   that predicts transfer; a prompt tuned for other label words is still a candidate because it carries an
   instruction, while the job keeps its labels.
4. *Layer 2*: within the ``expand_clusters`` clusters whose representatives did best, probe the
   ``member_probes`` members most similar to the job.
   With ``Budget.nearest`` > 0, also the entries nearest the job in task space across the whole bank
   ("layer 0", whatever their cluster): the repeat of an earlier task finds that task's prompt.
5. Choose the best by probe accuracy, loss breaking ties (``Budget.rank_by``;
   ``benchmarks/results/bank_signals.md`` shows why accuracy) -- or, with ``accuracy+similarity``, the
   entry's task similarity first, then loss; predict the steps to target (``predict.py``).

The index part reads k centroids and the members of the expanded clusters only: O(sqrt(n)) rows; layer 0
(off unless ``Budget.nearest``) reads every task vector of the model's entries: O(n).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from sqlalchemy import select as sql_select

from prompttuner.bank import features as feat
from prompttuner.bank import index as idx
from prompttuner.bank.entries import Entry
from prompttuner.bank.errors import CorruptEntryError, ModelMismatchError, NoCandidatesError
from prompttuner.bank.predict import StepsPredictor
from prompttuner.bank.store import PromptBank
from prompttuner.bank.tables import PUBLIC, EntryRow, blob_to_vec


@dataclass(frozen=True)
class ProbeScore:
    """How one prompt does on the job's probe sample: label-word cross-entropy and accuracy."""

    loss: float
    accuracy: float


ProbeFn = Callable[[Sequence[torch.Tensor]], Sequence["ProbeScore | float"]]
"""The job's probe sample under each prompt: a :class:`ProbeScore`, or a bare loss (lower is better)."""


def _score(x: ProbeScore | float) -> ProbeScore:
    return x if isinstance(x, ProbeScore) else ProbeScore(loss=float(x), accuracy=float("nan"))


def merge_scores(a: ProbeScore, na: int, b: ProbeScore, nb: int) -> ProbeScore:
    """The score over ``na + nb`` rows from the scores of two disjoint parts of them."""
    w = na + nb
    return ProbeScore(loss=(a.loss * na + b.loss * nb) / w, accuracy=(a.accuracy * na + b.accuracy * nb) / w)


RANKS = ("accuracy", "loss", "accuracy+similarity")


def rank_key(score: ProbeScore, by: str = "accuracy", similarity: float | None = None) -> tuple[float, ...]:
    """Sort key of a probe score, best first: ``accuracy`` (then loss to break ties, which are common on a
    few rows), ``loss`` alone, or ``accuracy+similarity``: accuracy, then the task similarity of the
    prompt's entry to the job (``similarity``; None, e.g. the job's own cold inits, ranks after every
    entry), then loss.  A score without an accuracy ranks by its loss."""
    if by not in RANKS:
        raise ValueError(f"unknown rank {by!r}: use one of {', '.join(RANKS)}")
    if by == "loss" or score.accuracy != score.accuracy:  # NaN: the probe gave a loss only
        return (score.loss,)
    if by == "accuracy+similarity":
        return (-score.accuracy, math.inf if similarity is None else -similarity, score.loss)
    return (-score.accuracy, score.loss)


@dataclass(frozen=True)
class Budget:
    """The fixed probe budget of one selection: at most ``rep_probes + member_probes`` prompts probed.

    The defaults come from ``benchmarks/bank_signals.py`` (leave one task out of the 16 shared tasks,
    ``benchmarks/results/bank_signals.md``): 5 of the 16 tasks have an entry that meets their target with
    no tuning; ranking every entry by probe *accuracy* on 16 of the job's rows finds it on all 5 (by the
    loss of 4 rows, the former signal: 2); through the index, 4 representatives + 4 members of the 2 best
    clusters keep 4 of them (3 + 2 members of 1 cluster: 3; the former budget and signal: 1).  The price on
    a CPU: a probe is one forward pass per (prompt, row) pair, ~0.2 CPU-s at 48 tokens for smollm2-135m on
    this project's 2-core machine, so 8 entries + the job's text init x 16 rows is 144 sequences, ~31 CPU-s
    (``bank_latency_default_budget.json``; about 12 tuning steps); on a GPU they cost well under a second.
    Lower ``sample_rows`` or cut texts (``max_words``) to trade selection quality for time.
    """

    rep_probes: int = 4
    member_probes: int = 4
    expand_clusters: int = 2
    sample_rows: int = 16  # rows of the job's training data in the probe sample (round-robin over labels)
    max_words: int | None = None  # cut probe texts to this many words (None: the engine's max_length only)
    seed: int = 0
    rank_by: str = "accuracy"  # how probed prompts are ranked: one of RANKS (rank_key)
    # entries probed because their task vector is the nearest to the job's in the whole bank (of the
    # model), whatever their cluster: a scan of the entries' task vectors, O(n); off by default (with it,
    # the stream's repeats probed their task's entry 28 of 28 times, but the steps did not measurably
    # fall: benchmarks/results/bank_stream_near/)
    nearest: int = 0
    # a race over rows: every candidate is probed on the first ``first_rows`` rows of the sample, and only
    # the ``survivors`` best go on to the rest (None: every candidate on every row, the former rule)
    first_rows: int | None = None
    survivors: int = 3


CHEAP = Budget(rep_probes=3, member_probes=3, sample_rows=10, first_rows=4, survivors=3)
"""The budget of ``bank.warm_start`` (issue 12: selection within ~3 steps of time): 3 representatives,
3 members and the text init, each on 4 rows (28 sequences); the 3 best on 6 rows more (18); with the
blend's 10, 56 sequences instead of the 144 of :class:`Budget`'s defaults."""

NEAR = replace(CHEAP, member_probes=2, nearest=1, rank_by="accuracy+similarity")
"""The budget of ``bank.warm_start`` (the service's): :data:`CHEAP` with one of its 3 member probes given
to layer 0 (the entry nearest the job in task space) and probe-accuracy ties broken by task similarity;
the same number of probes.  With ``RaceSettings``' defaults (the check of the best start, a race of two)
it was measured better than :data:`CHEAP` with the former race of three
(``benchmarks/results/bank_stream_race2/``); alone it was not (``benchmarks/results/bank_stream_near/``)."""


@dataclass(frozen=True)
class JobQuery:
    """What selection needs to know about a job."""

    model: str
    description: str
    labels: Sequence[str]
    sample_texts: Sequence[str] = ()
    embed_dim: int | None = None
    tenant: str = PUBLIC
    max_steps: int | None = None
    num_tokens: int | None = None  # only prompts of this many virtual tokens (the job's config)


@dataclass
class ProbeRecord:
    entry_id: str
    layer: int
    cluster_id: int | None
    similarity: float
    loss: float | None
    task_name: str
    error: str | None = None
    accuracy: float | None = None  # on the probe sample (None: the probe gave a loss only)
    rows: int | None = None  # how many rows of the sample it was scored on (the race over rows)
    # the entry's own task vector . the job's (``similarity`` is the cluster's for a representative)
    task_similarity: float | None = None

    def score(self) -> ProbeScore:
        acc = float("nan") if self.accuracy is None else self.accuracy
        return ProbeScore(loss=float("inf") if self.loss is None else self.loss, accuracy=acc)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Selection:
    entry: Entry
    tensor: torch.Tensor
    loss: float
    predicted_steps: float
    probes: list[ProbeRecord]
    timings: dict[str, float]
    clusters: int
    candidates: int
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry.to_dict(),
            "loss": self.loss,
            "predicted_steps": self.predicted_steps,
            "probes": [p.to_dict() for p in self.probes],
            "timings_s": self.timings,
            "clusters": self.clusters,
            "candidates": self.candidates,
            **self.info,
        }


def _visible(owner: str, tenant: str) -> bool:
    return owner == PUBLIC or owner == tenant


def _eligible(owner: str, num_tokens: int, job: JobQuery) -> bool:
    return _visible(owner, job.tenant) and (job.num_tokens is None or num_tokens == job.num_tokens)


def select(
    bank: PromptBank,
    job: JobQuery,
    probe: ProbeFn | None,
    *,
    budget: Budget | None = None,
    predictor: StepsPredictor | None = None,
    job_vec: np.ndarray | None = None,
    baselines: dict[str, torch.Tensor] | None = None,
) -> Selection:
    """Choose the start prompt for ``job``.  With ``probe=None`` the choice uses features only (no LLM).

    ``baselines`` (e.g. the job's own text init) are probed in the same batch as the representatives;
    their scores come back in ``info["baseline_scores"]`` (``{"loss": .., "accuracy": ..}``), so a caller
    can keep its cold init when no entry of the bank beats it.
    """
    b = budget or Budget()
    timings: dict[str, float] = {}
    warm = getattr(bank.embedder, "warm", None)
    if job_vec is None and callable(warm):  # a cold process loads the sentence model once: not selection
        timings["embedder_load_s"] = float(warm())
    t0 = time.perf_counter()

    # -- features
    if job_vec is None:
        job_vec = feat.task_vector(job.description, job.labels, job.sample_texts, bank.embedder)
    t1 = time.perf_counter()
    timings["features_s"] = t1 - t0

    # -- layer 1: clusters of this model
    with bank.session() as s:
        clusters = idx.clusters_of(s, job.model)
        if not clusters:
            n = bank.count(job.model)
            if n == 0:
                held = bank.models()
                raise NoCandidatesError(
                    f"the bank holds no prompt of model {job.model!r}"
                    + (f" (it holds prompts of: {', '.join(held)})" if held else " (it is empty)")
                )
    if not clusters:  # entries added without indexing: build the index once
        bank.reindex(job.model)
        with bank.session() as s:
            clusters = idx.clusters_of(s, job.model)
    dim = bank.embed_dim_of(job.model)
    if job.embed_dim is not None and dim is not None and dim != job.embed_dim:
        raise ModelMismatchError(
            f"the bank's prompts of {job.model!r} have embed_dim={dim}, the job's model has {job.embed_dim}"
        )
    cent = np.stack([c.centroid[: feat.TASK_DIM] for c in clusters])
    cent = cent / np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-8)
    csim = cent @ job_vec
    order = np.argsort(-csim)

    probes: list[ProbeRecord] = []
    probe_s = 0.0
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, Entry] = {}

    def members(cluster_ids: list[int]) -> list[tuple[str, int | None, str, np.ndarray]]:
        with bank.session() as s:
            rows = s.execute(
                sql_select(
                    EntryRow.id, EntryRow.cluster_id, EntryRow.owner, EntryRow.task_vec, EntryRow.num_tokens
                ).where(EntryRow.cluster_id.in_(cluster_ids))  # cluster ids are unique across models
            ).all()
        return [(r[0], r[1], r[2], blob_to_vec(r[3])) for r in rows if _eligible(r[2], r[4], job)]

    base_names = list(baselines or {}) if probe is not None else []
    base_scores: dict[str, ProbeScore] = {}
    base_rows: dict[str, int] = {}
    # the race over rows: the first rows for every candidate, the rest for the survivors
    head: ProbeFn | None = probe
    tail: ProbeFn | None = None
    n_head = n_tail = int(getattr(probe, "rows", 0) or 0)
    if probe is not None and b.first_rows is not None and hasattr(probe, "split"):
        head, tail = probe.split(b.first_rows)
        n_head = int(getattr(head, "rows", 0))
        n_tail = int(getattr(tail, "rows", 0)) if tail is not None else 0

    def run(batch: list[ProbeRecord], extra: Sequence[str] = ()) -> None:
        nonlocal probe_s
        ok: list[ProbeRecord] = []
        for rec in batch:
            try:
                tensors[rec.entry_id] = bank.load_tensor(rec.entry_id)
                entries[rec.entry_id] = bank.get(rec.entry_id)
                ok.append(rec)
            except CorruptEntryError as e:  # one broken entry must not fail the job: skip and report it
                rec.error = str(e)
        if head is not None and (ok or extra):
            tp = time.perf_counter()
            batch_tensors = [tensors[r.entry_id] for r in ok] + [(baselines or {})[n] for n in extra]
            got = [_score(x) for x in head(batch_tensors)]
            probe_s += time.perf_counter() - tp
            for r, sc in zip(ok, got[: len(ok)], strict=True):
                r.loss = sc.loss
                r.accuracy = None if sc.accuracy != sc.accuracy else sc.accuracy
                r.rows = n_head or None
            base_scores.update(zip(extra, got[len(ok) :], strict=True))
            base_rows.update((n, n_head) for n in extra)
        elif ok:  # features only: the similarity stands in for the loss
            for r in ok:
                r.loss = -r.similarity
        probes.extend(batch)

    # representatives of the most similar clusters (a private rep is replaced by a visible member)
    ti = time.perf_counter()
    layer1: list[ProbeRecord] = []
    with bank.session() as s:
        rep_info = {
            r[0]: (r[1], r[2], float(blob_to_vec(r[3]) @ job_vec))
            for r in s.execute(
                sql_select(EntryRow.id, EntryRow.owner, EntryRow.num_tokens, EntryRow.task_vec).where(
                    EntryRow.id.in_([c.rep_id for c in clusters if c.rep_id])
                )
            ).all()
        }
    # a cluster whose representative is another tenant's private prompt (or has another number of virtual
    # tokens) is represented by its eligible member most similar to the job; look at no more than a few
    # clusters beyond the budget for that
    for j in order[: 4 * max(1, b.rep_probes)]:
        if len(layer1) >= b.rep_probes:
            break
        c = clusters[int(j)]
        if c.rep_id and c.rep_id in rep_info and _eligible(*rep_info[c.rep_id][:2], job):
            sim = rep_info[c.rep_id][2]
            layer1.append(ProbeRecord(c.rep_id, 1, c.id, float(csim[j]), None, "", task_similarity=sim))
            continue
        ms = members([c.id])
        if ms:
            top = max(ms, key=lambda m: float(m[3] @ job_vec))
            sim = float(top[3] @ job_vec)
            layer1.append(ProbeRecord(top[0], 1, c.id, float(csim[j]), None, "", task_similarity=sim))
    timings["index_s"] = time.perf_counter() - ti
    run(layer1, base_names)

    # layer 2: members of the best clusters
    ti = time.perf_counter()

    def key(r: ProbeRecord) -> tuple[float, ...]:
        return rank_key(r.score(), b.rank_by, r.task_similarity)

    scored = sorted((r for r in layer1 if r.loss is not None), key=key)
    expand = [r.cluster_id for r in scored[: b.expand_clusters] if r.cluster_id is not None]
    layer2: list[ProbeRecord] = []
    probed = {r.entry_id for r in probes}
    if b.nearest > 0:  # layer 0: the entries nearest the job in task space, whatever their cluster
        near = sorted(members([c.id for c in clusters]), key=lambda m: -float(m[3] @ job_vec))
        for m in [m for m in near if m[0] not in probed][: b.nearest]:
            sim = float(m[3] @ job_vec)
            layer2.append(ProbeRecord(m[0], 0, m[1], sim, None, "", task_similarity=sim))
            probed.add(m[0])
    if expand and b.member_probes > 0:
        ms = [m for m in members(expand) if m[0] not in probed]
        per = {
            cid: sorted((m for m in ms if m[1] == cid), key=lambda m: -float(m[3] @ job_vec))
            for cid in expand
        }
        cap = len(layer2) + b.member_probes
        while len(layer2) < cap and any(per.values()):
            for cid in expand:
                if per[cid] and len(layer2) < cap:
                    m = per[cid].pop(0)
                    sim = float(m[3] @ job_vec)
                    layer2.append(ProbeRecord(m[0], 2, cid, sim, None, "", task_similarity=sim))
    timings["index_s"] += time.perf_counter() - ti
    run(layer2)

    if tail is not None and n_tail > 0:  # the survivors of the first rows are scored on the rest
        tp = time.perf_counter()
        pool: list[tuple[tuple[float, ...], ProbeRecord | str]] = [
            (key(r), r) for r in probes if r.loss is not None
        ]
        pool += [(rank_key(sc, b.rank_by), name) for name, sc in base_scores.items()]
        pool.sort(key=lambda x: x[0])
        surv = [x[1] for x in pool[: max(1, b.survivors)]]
        got = [
            _score(x)
            for x in tail(
                [tensors[x.entry_id] if isinstance(x, ProbeRecord) else (baselines or {})[x] for x in surv]
            )
        ]
        for x, sc in zip(surv, got, strict=True):
            if isinstance(x, ProbeRecord):
                merged = merge_scores(x.score(), n_head, sc, n_tail)
                x.loss, x.accuracy, x.rows = merged.loss, merged.accuracy, n_head + n_tail
            else:
                base_scores[x] = merge_scores(base_scores[x], n_head, sc, n_tail)
                base_rows[x] = n_head + n_tail
        probe_s += time.perf_counter() - tp

    done = [r for r in probes if r.loss is not None]
    if not done:
        errors = "; ".join(r.error or "" for r in probes)
        raise NoCandidatesError(
            f"no usable prompt of model {job.model!r} for tenant {job.tenant!r}"
            + (f" with {job.num_tokens} virtual tokens" if job.num_tokens is not None else "")
            + (f": {errors}" if errors else "")
        )
    for r in probes:
        if r.entry_id in entries:
            r.task_name = entries[r.entry_id].task_name
    most = max((r.rows or 0) for r in done)  # the choice is among the candidates scored on the most rows
    best = min((r for r in done if (r.rows or 0) == most), key=key)
    pred = predictor or StepsPredictor()
    steps = pred.predict(
        best.loss if probe is not None else float("nan"),  # type: ignore[arg-type]
        [entries[best.entry_id].steps] + [entries[r.entry_id].steps for r in done],
        job.max_steps,
    )
    timings["probes_s"] = probe_s
    timings["total_s"] = time.perf_counter() - t0
    return Selection(
        entry=entries[best.entry_id],
        tensor=tensors[best.entry_id],
        loss=float(best.loss),  # type: ignore[arg-type]
        predicted_steps=steps,
        probes=probes,
        timings=timings,
        clusters=len(clusters),
        candidates=sum(c.size for c in clusters),
        info={
            "probe_evaluations": (len(done) + len(base_scores)) if probe is not None else 0,
            "rank_by": b.rank_by,
            "rows": {"first": n_head, "rest": n_tail} if tail is not None else {"all": n_head},
            **({"accuracy": best.accuracy} if best.accuracy is not None else {}),
            **(
                {
                    "baseline_scores": {k: dict(v.__dict__) for k, v in base_scores.items()},
                    "baseline_rows": base_rows,
                }
                if base_scores
                else {}
            ),
        },
    )
