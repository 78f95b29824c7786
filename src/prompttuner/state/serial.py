"""How numbers, times and quotes are written into the JSON columns and responses.

One copy for the writers of job rows: the API (a quote at creation) and the controller (the quote at
admission).  JSON has no infinity, so an unbounded finish or cost is written as null.  Nothing here
raises on a stored value: a number that is not finite, or a time that no calendar date can show, is
written as null.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from prompttuner.core.types import Quote

# the epoch seconds an ISO time can show: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z
MIN_ISO_EPOCH = dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp()
MAX_ISO_EPOCH = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()


def finite(x: float | None) -> float | None:
    """``x``, or None when it is None, not a number, infinite or NaN (JSON has neither)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return x if math.isfinite(x) else None


def iso_time(t: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC, or None (also for a time outside the years 1 to 9999)."""
    t = finite(t)
    if t is None or not MIN_ISO_EPOCH <= t <= MAX_ISO_EPOCH:
        return None
    try:
        return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=t)).isoformat()
    except (OverflowError, ValueError):
        return None


def json_safe(o: Any) -> Any:
    """``o`` with every float that is not finite replaced by None, in dicts and lists at any depth."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: json_safe(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [json_safe(v) for v in o]
    return o


def quote_json(q: Quote, *, with_iso: bool = False) -> dict[str, Any]:
    """A quote as JSON; ``with_iso`` adds ``finish_iso`` (the API's answer to a new job)."""
    finish = finite(q.finish_time)
    out: dict[str, Any] = {"finish_time": finish}
    if with_iso:
        out["finish_iso"] = iso_time(finish)
    out.update(
        cost=finite(q.cost),
        gpus=q.gpus,
        feasible=q.feasible,
        tightest_deadline=finite(q.tightest_deadline),
    )
    return out
