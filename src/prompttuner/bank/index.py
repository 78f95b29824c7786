"""The two-layer index: clusters of entries (layer 1) and the members of each cluster (layer 2).

Clusters are k-means over :func:`features.index_vector` (task embedding + prompt fingerprint), one set of
clusters per base model, since only prompts of the job's model are ever candidates.  Each cluster keeps its
centroid, its size and a *representative*: the member nearest the centroid, the prompt that selection
probes first for the whole cluster.

Maintenance is incremental: a new entry joins its nearest cluster (running-mean centroid update, same
transaction as the insert); the whole model is re-clustered when its entry count has grown by
``REGROW_FACTOR`` since the last clustering (and always while it is small, where it costs nothing), so k
keeps tracking ``sqrt(n)``.  Everything lives in the bank's SQL tables, so the index persists with the
bank and a copied bank folder carries its index along.

Costs at selection time: reading k centroids plus the members of the few clusters expanded, i.e.
O(sqrt(n)) rows for k ~ sqrt(n), never a scan of the whole bank.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from prompttuner.bank import features as feat
from prompttuner.bank.entries import Entry
from prompttuner.bank.tables import ClusterRow, EntryRow, SettingRow, blob_to_vec, vec_to_blob

SMALL_BANK = 64  # re-cluster on every insert up to this size (k-means on 64 points is instant)
REGROW_FACTOR = 1.5
MAX_K = 1024
FIT_SAMPLE = 20_000  # k-means is fitted on at most this many points, then all are assigned


def choose_k(n: int) -> int:
    """About sqrt(n) clusters (n=15 -> 4, 1k -> 32, 10k -> 100, 100k -> 316): balances both layers."""
    if n <= 0:
        return 0
    return max(1, min(MAX_K, n, round(math.sqrt(n))))


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 30) -> np.ndarray:
    """Plain k-means with k-means++ seeding on (a sample of) ``x``; returns the ``[k, d]`` centroids."""
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    if n > FIT_SAMPLE:
        x = x[rng.choice(n, FIT_SAMPLE, replace=False)]
        n = FIT_SAMPLE
    k = min(k, n)
    x = x.astype(np.float32)
    sq = (x * x).sum(1)
    cent = np.empty((k, x.shape[1]), dtype=np.float32)
    cent[0] = x[rng.integers(n)]
    d2 = np.maximum(sq - 2 * x @ cent[0] + cent[0] @ cent[0], 0)
    for j in range(1, k):
        total = d2.sum()
        i = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        cent[j] = x[i]
        d2 = np.minimum(d2, np.maximum(sq - 2 * x @ cent[j] + cent[j] @ cent[j], 0))
    assign = np.full(n, -1)
    for _ in range(iters):
        dist = sq[:, None] - 2 * x @ cent.T + (cent * cent).sum(1)[None, :]
        new = dist.argmin(1)
        if np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = x[assign == j]
            if len(members):
                cent[j] = members.mean(0)
            else:  # re-seed an empty cluster at the point farthest from its centroid
                cent[j] = x[int(dist[np.arange(n), assign].argmax())]
    return cent


def nearest(x: np.ndarray, cent: np.ndarray) -> np.ndarray:
    dist = (x * x).sum(1)[:, None] - 2 * x @ cent.T + (cent * cent).sum(1)[None, :]
    return dist.argmin(1)


def _setting_key(model: str) -> str:
    return f"clustered_at:{model}"


def _model_vectors(s: Session, model: str, ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    q = select(EntryRow.id, EntryRow.task_vec, EntryRow.prompt_vec).where(EntryRow.model == model)
    if ids is not None:
        q = q.where(EntryRow.id.in_(ids))
    # in content order, not id order: ids are random, and k-means (seeded) depends on the order of its
    # points, so two banks with the same prompts must cluster (and so select) the same way
    rows = sorted(s.execute(q).all(), key=lambda r: (hashlib.sha1(r[1] + r[2]).digest(), r[0]))
    if not rows:
        return [], np.zeros((0, 0), dtype=np.float32)
    x = np.stack([feat.index_vector(blob_to_vec(r[1]), blob_to_vec(r[2])) for r in rows])
    return [r[0] for r in rows], x


def recluster(s: Session, model: str, seed: int = 0) -> int:
    """Rebuild the clusters of one model from all its entries; returns the number of clusters."""
    ids, x = _model_vectors(s, model)
    s.execute(delete(ClusterRow).where(ClusterRow.model == model))
    n = len(ids)
    _set(s, _setting_key(model), str(n))
    if n == 0:
        return 0
    cent = kmeans(x, choose_k(n), seed=seed)
    assign = nearest(x, cent)
    dist = ((x - cent[assign]) ** 2).sum(1)
    cluster_ids: list[int | None] = []
    for j in range(cent.shape[0]):
        members = np.flatnonzero(assign == j)
        if len(members) == 0:
            cluster_ids.append(None)
            continue
        centroid = x[members].mean(0)
        rep = ids[int(members[dist[members].argmin()])]
        row = ClusterRow(model=model, centroid=vec_to_blob(centroid), size=len(members), rep_id=rep)
        s.add(row)
        s.flush()
        cluster_ids.append(row.id)
    s.execute(
        update(EntryRow),
        [{"id": ids[i], "cluster_id": cluster_ids[int(assign[i])]} for i in range(n)],
    )
    return sum(c is not None for c in cluster_ids)


def _set(s: Session, key: str, value: str) -> None:
    row = s.get(SettingRow, key)
    if row is None:
        s.add(SettingRow(key=key, value=value))
    else:
        row.value = value


def on_insert(s: Session, model: str, new_ids: list[str]) -> None:
    """Index freshly inserted entries: join nearest clusters, or re-cluster when the bank has grown enough."""
    n = int(s.scalar(select(func.count()).select_from(EntryRow).where(EntryRow.model == model)) or 0)
    last_row = s.get(SettingRow, _setting_key(model))
    last = int(last_row.value) if last_row is not None else 0
    clusters = s.scalars(select(ClusterRow).where(ClusterRow.model == model)).all()
    if not clusters or n <= SMALL_BANK or n >= REGROW_FACTOR * max(last, 1):
        recluster(s, model)
        return
    cent = np.stack([blob_to_vec(c.centroid) for c in clusters])
    ids, x = _model_vectors(s, model, new_ids)
    assign = nearest(x, cent)
    for i, eid in enumerate(ids):
        c = clusters[int(assign[i])]
        c.size += 1
        new_cent = cent[assign[i]] + (x[i] - cent[assign[i]]) / c.size
        cent[assign[i]] = new_cent
        c.centroid = vec_to_blob(new_cent)
        if c.rep_id is None:
            c.rep_id = eid
        s.execute(update(EntryRow).where(EntryRow.id == eid).values(cluster_id=c.id))


def on_remove(s: Session, entry: Entry) -> None:
    """Keep the index consistent after a delete: shrink the cluster, pick a new representative if needed."""
    if entry.cluster_id is None:
        return
    c = s.get(ClusterRow, entry.cluster_id)
    if c is None:
        return
    c.size -= 1
    if c.size <= 0:
        s.delete(c)
        return
    if c.rep_id == entry.id:
        member_ids = list(s.scalars(select(EntryRow.id).where(EntryRow.cluster_id == c.id)).all())
        ids, x = _model_vectors(s, entry.model, member_ids)
        cent = blob_to_vec(c.centroid)
        c.rep_id = ids[int(((x - cent) ** 2).sum(1).argmin())] if ids else None


@dataclass(frozen=True)
class ClusterInfo:
    id: int
    size: int
    rep_id: str | None
    centroid: np.ndarray


def clusters_of(s: Session, model: str) -> list[ClusterInfo]:
    rows = s.execute(
        select(ClusterRow.id, ClusterRow.size, ClusterRow.rep_id, ClusterRow.centroid).where(
            ClusterRow.model == model
        )
    ).all()
    return [ClusterInfo(r[0], r[1], r[2], blob_to_vec(r[3])) for r in rows]
