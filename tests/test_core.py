import math

import pytest

from prompttuner.core import ModelProfile
from prompttuner.scheduler import make_policy


def test_step_time_shrinks_with_replicas_but_pays_sync() -> None:
    p = ModelProfile("m", 0.1, 1, {"a100": 10.0}, {"a100": 1.0}, max_replicas=8, sync_overhead_s=0.01)
    assert p.step_time("a100", 1) == pytest.approx(1.0)
    assert p.step_time("a100", 4) == pytest.approx(0.25 + 0.02)
    assert p.throughput("a100", 16) == 0.0  # beyond max_replicas
    assert math.isinf(p.step_time("a100", 0))


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        make_policy("nope")


def test_json_safe_replaces_only_non_finite_floats_at_any_depth() -> None:
    from prompttuner.core.types import json_safe

    x = {"a": float("nan"), "b": [1.5, float("inf"), {"c": -float("inf"), "d": "nan"}], "e": 0}
    assert json_safe(x) == {"a": None, "b": [1.5, None, {"c": None, "d": "nan"}], "e": 0}


def test_one_evaluation_schedule_for_the_workers_and_the_trainer() -> None:
    """``core.slo.eval_due``: a start at step 0 and every ``eval_every`` steps, the end of the budget; a
    race's winner at step 2 waits for step 5; ``eval_every`` 0 evaluates only at the end."""
    from prompttuner.core.slo import eval_due

    assert [s for s in range(13) if eval_due(s, 5, 12)] == [0, 5, 10, 12]
    assert not eval_due(2, 5, 50) and eval_due(5, 5, 50)
    assert [s for s in range(13) if eval_due(s, 0, 12)] == [12]
