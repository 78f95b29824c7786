"""How numbers, times and quotes are written into the JSON columns and responses.

One copy for the writers of job rows: the API (a quote at creation) and the controller (the quote at
admission).  JSON has no infinity, so an unbounded finish or cost is written as null.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from prompttuner.core.types import Quote


def finite(x: float | None) -> float | None:
    """``x``, or None when it is None, infinite or NaN (JSON has neither)."""
    return x if x is not None and math.isfinite(x) else None


def iso_time(t: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC, or None."""
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat() if t is not None else None


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
