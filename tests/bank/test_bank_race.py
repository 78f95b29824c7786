"""The cheaper selection (a race over rows), the blend, the learning rate from the fit, and the race
among starts (``bank.warm_start``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from bank_helpers import FAMILIES, fill, make_prompt

from prompttuner.bank import ProbeScore, PromptBank
from prompttuner.bank.race import blend, fit_lr
from prompttuner.bank.select import Budget, JobQuery, select


class RowsProbe:
    """A probe over ``rows`` rows whose per-row verdicts are known: a prompt is right on a row when its
    distance to the ``family``'s centre is below that row's threshold, so the first rows favour other
    prompts than the whole sample does; it counts the (prompt, row) pairs it scores."""

    def __init__(self, family: str, thresholds: Sequence[float], log: list[int] | None = None) -> None:
        self.centre = make_prompt(family, 0, noise=0.0)
        self.thresholds = list(thresholds)
        self.log = [] if log is None else log

    @property
    def rows(self) -> int:
        return len(self.thresholds)

    def split(self, first: int) -> tuple[RowsProbe, RowsProbe | None]:
        a, b = self.thresholds[:first], self.thresholds[first:]
        return RowsProbe.__new__(RowsProbe)._init(self, a), (
            RowsProbe.__new__(RowsProbe)._init(self, b) if b else None
        )

    def _init(self, parent: RowsProbe, th: list[float]) -> RowsProbe:
        self.centre, self.thresholds, self.log = parent.centre, th, parent.log
        return self

    def __call__(self, prompts: Sequence[torch.Tensor]) -> list[ProbeScore]:
        out = []
        for p in prompts:
            d = float(((p.float() - self.centre) ** 2).mean().sqrt())
            right = [d < t for t in self.thresholds]
            self.log.append(len(self.thresholds))
            out.append(ProbeScore(loss=d, accuracy=sum(right) / len(right)))
        return out


def query(family: str) -> JobQuery:
    desc, labels, texts = FAMILIES[family]
    return JobQuery(model="toy", description=desc, labels=labels, sample_texts=texts)


def test_race_over_rows_scores_survivors_on_every_row_and_costs_fewer_pairs(bank: PromptBank) -> None:
    fill(bank, per_family=4)
    th = [0.5, 0.5, 0.5, 0.5, 0.35, 0.35, 0.35, 0.35, 0.3, 0.3]
    full_log: list[int] = []
    full = select(
        bank, query("topic"), RowsProbe("topic", th, full_log), budget=Budget(rep_probes=3, member_probes=3)
    )
    race_log: list[int] = []
    b = Budget(rep_probes=3, member_probes=3, first_rows=4, survivors=2)
    raced = select(bank, query("topic"), RowsProbe("topic", th, race_log), budget=b)
    assert sum(race_log) < sum(full_log)  # fewer (prompt, row) pairs
    assert raced.info["rows"] == {"first": 4, "rest": 6}
    on_all = [p for p in raced.probes if p.rows == 10]
    assert len(on_all) == 2  # exactly the survivors were scored on the rest
    assert all(p.rows == 4 for p in raced.probes if p not in on_all and p.loss is not None)
    # the choice is among the survivors, by their score over all 10 rows, which is the full probe's score
    assert raced.entry.id in {p.entry_id for p in on_all}
    full_scores = {p.entry_id: p.accuracy for p in full.probes}
    for p in on_all:
        assert p.accuracy == pytest.approx(full_scores[p.entry_id])
    # and it is the best prompt of the full selection whenever that one survived the first rows
    if full.entry.id in {p.entry_id for p in on_all}:
        assert raced.entry.id == full.entry.id


def test_a_baseline_that_falls_out_of_the_first_rows_is_reported_with_its_rows(bank: PromptBank) -> None:
    fill(bank, per_family=3)
    far = make_prompt("sentiment", 99)
    b = Budget(rep_probes=2, member_probes=2, first_rows=4, survivors=1)
    sel = select(bank, query("topic"), RowsProbe("topic", [0.5] * 8), budget=b, baselines={"text": far})
    assert sel.info["baseline_rows"]["text"] == 4  # lost on the first rows: not scored on the rest
    assert max(p.rows or 0 for p in sel.probes) == 8


@pytest.mark.parametrize(
    ("accuracy", "want"),
    [(0.5, 0.03), (0.3, 0.03), (0.75, 0.003), (0.9, 0.003), (0.625, 0.03 * 0.1**0.5)],
)
def test_learning_rate_follows_how_far_the_start_is_from_chance_to_the_target(
    accuracy: float, want: float
) -> None:
    got = fit_lr(ProbeScore(loss=1.0, accuracy=accuracy), 0.75, 2, 0.03, 0.003)
    assert got == pytest.approx(want)
    assert fit_lr(None, 0.75, 2, 0.03, 0.003) == 0.03  # unknown fit: the cold rate
    assert fit_lr(ProbeScore(1.0, 0.2), 0.2, 5, 0.03, 0.003) == 0.003  # target at chance


def test_blend_weights_by_accuracy_above_chance() -> None:
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    got = blend([a, b], [ProbeScore(1.0, 0.75), ProbeScore(1.0, 1.0)], labels=2)
    assert torch.allclose(got, torch.full((2, 3), 2 / 3))
    even = blend([a, b], [ProbeScore(1.0, 0.5), ProbeScore(1.0, 0.25)], labels=2)
    assert torch.allclose(even, torch.full((2, 3), 0.5))
    assert not math.isnan(float(even.sum()))


def test_a_start_at_the_target_meets_it_despite_float32_rounding() -> None:
    import torch

    from prompttuner.bank.race import meets

    seven_of_ten = float((torch.arange(10) < 7).float().mean())  # 0.69999998
    assert seven_of_ten < 0.7 and meets(seven_of_ten, 0.7)
    assert not meets(0.6, 0.7) and not meets(float((torch.arange(64) < 44).float().mean()), 0.7)


def test_the_probe_separates_a_start_only_when_its_per_row_losses_are_lower_beyond_the_noise() -> None:
    """Paired per-row differences: lower on every row by a steady margin separates; the same mean gap
    carried by two rows of ten does not (its standard error is large); a tie never does."""
    from prompttuner.bank.race import separated

    best = torch.full((10,), 0.5)
    steady = torch.stack([best + 0.3 + 0.01 * torch.arange(10), best + 0.4])
    apart, t = separated(best, steady, 2.0)
    assert apart and all(x > 2.0 for x in t)
    lumpy = best.clone()
    lumpy[:2] += 1.5  # mean gap 0.3 from two rows
    apart, t = separated(best, torch.stack([best + 0.4, lumpy]), 2.0)
    assert not apart and t[0] > 2.0 and 0.0 < t[1] < 2.0
    assert separated(best, best[None, :].clone(), 2.0) == (False, [0.0])
    worse_start = best + 0.3
    assert not separated(worse_start, torch.stack([best]), 2.0)[0]  # the others lower: never
    assert not separated(best[:1], (best + 1.0)[None, :1], 2.0)[0]  # one row: no spread, no claim


def test_the_fallback_fires_only_for_a_start_below_the_target_by_more_than_its_rows_at_its_step() -> None:
    from prompttuner.bank.race import RaceSettings, falls_back

    rs = RaceSettings(fallback_at=5, fallback_rows=2)
    # 64 rows, target 0.5: the threshold is 30 / 64 = 0.46875
    assert falls_back(rs, "warm", 5, 29 / 64, 0.5, 64)
    assert not falls_back(rs, "warm", 5, 30 / 64, 0.5, 64)  # exactly 2 rows below: not more than 2
    assert falls_back(rs, "text", 10, 0.0, 0.5, 64)  # the text init falls back too
    assert not falls_back(rs, "random", 5, 0.0, 0.5, 64)  # random init has nowhere to fall back to
    assert not falls_back(rs, "warm", 4, 0.0, 0.5, 64)  # before its step
    assert not falls_back(rs, "warm", 5, 0.0, None, 64)  # no target, nothing to lag behind
    assert not falls_back(RaceSettings(fallback_at=None), "warm", 5, 0.0, 0.5, 64)  # off
    assert RaceSettings().fallback_at is None and RaceSettings().fallback_rows == 2  # the defaults: off


def test_the_fallbacks_check_is_the_first_evaluation_at_or_after_its_step() -> None:
    from prompttuner.core.slo import fallback_check_step, lag_threshold

    assert [fallback_check_step(5, e) for e in (5, 4, 2, 1)] == [5, 8, 6, 5]
    assert fallback_check_step(3, 2) == 4 and fallback_check_step(1, 0) == 1  # eval_every 0: every step
    assert lag_threshold(0.5, 64, 2) == 0.5 - 2 / 64 and lag_threshold(0.5, 0, 1) == -0.5
