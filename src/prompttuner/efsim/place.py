"""Node placement of the ElasticFlow compatibility mode (our own implementation).

ElasticFlow's simulator re-places every running job at each handled event, from an empty cluster: jobs in
decreasing GPU count, each into a *node set* (one node for up to a node's GPUs, ``ceil(n / per_node)``
whole nodes above that).  Partly used node sets are filed under a power-of-two class of their free GPUs
and kept sorted by load; a job first tries the set at the head of its own class, then the heads of larger
classes, then takes fresh nodes (lowest ids first).

Placement matters for one thing only: the scaling overhead.  A job whose exact GPU set (the contiguous
ranks it occupies) was already used by some job since the last periodic restart pays only the base
overhead; otherwise it also pays the communicator set-up ``2 * (log2(n) + 1)`` seconds.  :func:`place`
returns each job's ``(first rank, n)``, the key of that cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prompttuner.efsim.inputs import Job

CLASSES: tuple[int, ...] = (1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 88, 128, 256)
_DESC = tuple(sorted(CLASSES, reverse=True))


@dataclass(eq=False)
class _NodeSet:
    nodes: list[int]
    capacity: int
    util: int
    jobs: list[Job] = field(default_factory=list)


class PlacementError(RuntimeError):
    pass


def _free_class(free: int) -> int:
    for k in _DESC:
        if k <= free and free % k == 0:
            return k
    raise PlacementError(f"no class for {free} free GPUs")


def place(jobs: list[Job], nodes: int, per_node: int) -> dict[Job, tuple[int, int]]:
    """Place ``jobs`` (already in placement order) and return ``job -> (first rank, GPUs)``."""
    free_nodes = list(range(nodes))
    groups: dict[int, list[_NodeSet]] = {k: [] for k in CLASSES}
    sets: list[_NodeSet] = []

    def by_util(lst: list[_NodeSet]) -> None:
        lst.sort(key=lambda s: s.util)

    def file_after_fill(ns: _NodeSet, own: list[_NodeSet]) -> None:
        free = len(ns.nodes) * per_node - ns.util
        if free > 0:
            k = _free_class(free)
            groups[k].append(ns)
            by_util(own)
            by_util(groups[k])
        else:
            own.append(ns)
            by_util(own)

    for job in jobs:
        n = job.num_gpu
        if n not in groups:
            raise PlacementError(f"job {job.idx}: {n} GPUs is not a placeable size")
        own = groups[n]
        if own:
            ns = own.pop(0)
            if ns.util + n <= ns.capacity:
                ns.util += n
                ns.jobs.append(job)
                file_after_fill(ns, own)
                continue
            own.append(ns)
        placed = False
        for k in _DESC:
            if k <= n:
                break
            other = groups[k]
            if not other:
                continue
            ns = other.pop(0)
            if ns.util + n <= ns.capacity:
                ns.util += n
                ns.jobs.append(job)
                file_after_fill(ns, own)
                placed = True
                break
            other.append(ns)
        if placed:
            continue
        need = math.ceil(n / per_node)
        if need > len(free_nodes):
            raise PlacementError(f"job {job.idx}: no room for {n} GPUs")
        ns = _NodeSet(nodes=[free_nodes.pop(0) for _ in range(need)], capacity=need * per_node, util=n)
        ns.jobs.append(job)
        sets.append(ns)
        file_after_fill(ns, own)

    ranks: dict[Job, tuple[int, int]] = {}
    for ns in sets:
        offset = per_node * ns.nodes[0]
        for job in ns.jobs:
            ranks[job] = (offset, job.num_gpu)
            offset += job.num_gpu
    return ranks
