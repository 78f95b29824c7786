"""A job's start, chosen the way the service chooses it: selection, a blend, a short race, a learning rate.

:func:`warm_start` turns a job (a loaded model, its task, its :class:`~prompttuner.tuning.TuningConfig`)
into a trainer ready to go on:

1. **Selection** (``select.py``, the budget :data:`~prompttuner.bank.select.NEAR`): the bank's
   candidates (cluster representatives, members and the entry nearest the job in task space) and the
   job's text init, probed on a few of the job's training rows, the survivors on more.
2. **Blend**: the probe-weighted mean of the two best entries, probed on the same rows; a candidate like
   any other (kept when it scores best).
3. **Race** (successive halving): unless the best start already meets the target on the probe rows, or
   (with ``RaceSettings.separate_z`` set; off by default) the probe already separates it from both cold
   inits (its per-row loss lower than the text init's and random init's, each by more than ``separate_z``
   standard errors of the paired differences on the same rows: :func:`separated`), or (with
   ``RaceSettings.check_first``, on by default) the best start already meets it on the job's validation
   rows at step 0 (the evaluation every job makes of its start, made before the race instead of after), the
   ``RaceSettings.candidates`` starts race: the best bank start (or the blend), the job's text init, its
   random init, then the next best, in that order -- by default two, so the best bank start against the
   text init, and text against random where the bank offers none.  Each trains ``RaceSettings.steps``
   steps (the same batches: one seed), is probed again, and the better half goes on, until one is left.
   Every race step is one of the job's steps (:attr:`WarmStart.extra_steps` counts the losers'; the
   winner's are in its trainer).
4. **Learning rate** from how well the start fits: a fraction ``f`` of the way from chance to the target
   on the probe rows gives ``lr = cold * (warm / cold) ** f`` (a start at the target keeps the warm rate,
   one no better than chance the cold rate) -- the continuous form of the former two-level rule.
5. **Fallback** (:func:`train_from_start`; ``RaceSettings.fallback_at``, off by default, measured at 5): a
   job whose start (a bank prompt, the blend or its text init) is, at its first evaluation at or after that
   step, more than ``fallback_rows`` (2) validation rows below its target starts again from random init
   with the steps it has left; the dropped steps are the job's.  The service does the same in its
   dispatcher (``JobPayload.bank_fallback_at``).
6. **The start's evaluation**: with a target, a chosen start at an evaluation step
   (``PromptTrainer.eval_due``: step 0, i.e. every start that did not race) is evaluated on the job's
   validation rows before it trains -- the first evaluation ``PromptTrainer.train_to_target`` makes, kept
   in the trainer so it is not made twice; the check's, when the check chose the start
   (:attr:`WarmStart.start_accuracy`).  A start already at the target ends the job there:
   ``train_to_target`` stops at once, and the service finishes the job without a training step
   (``runtime.dispatch``; before, the service ignored the evaluation and trained to its next one).  A
   race's winner (at step 2) is first evaluated at the next evaluation step, as the service's workers do
   (before, ``train_to_target`` evaluated it at step 2: on 9 of 262 raced stream jobs it was at the target
   there, and every raced job paid that evaluation).  ``validation``: the rows the job's target is judged
   on when they are not the trainer's own held-out rows (the service's jobs with a validation file; the
   service judges the target on them, while ``train_to_target`` reads the trainer's own rows).

No validation row is ever probed: every probe reads the trainer's training split; ``check_first`` reads the
validation rows for the one start the probe ranks first, as the job's own first evaluation would.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from prompttuner.bank.select import NEAR, Budget, ProbeScore, rank_key
from prompttuner.core.slo import fallback_check_step, lag_threshold, lags_target


@dataclass(frozen=True)
class RaceSettings:
    # starts in the race, in this order: the best from the bank (or the blend), the text init, random init.
    # Two by default (one round, the loser's 2 steps): against three (two rounds, 6 steps of the losers),
    # with the same selection and check, it took fewer steps on novel tasks (11 won / 19 tied / 2 lost) and
    # on the stream's order 0 (15 / 13 / 4), not on order 1 (11 / 7 / 14): on the stream the two are not told
    # apart (26 / 20 / 18, benchmarks/results/bank_stream_race2/); the random init races only where the
    # bank offers nothing
    candidates: int = 2
    steps: int = 2  # steps per round, per start
    blend: bool = True  # offer the blend of the two best entries as a candidate
    skip_at_target: bool = True  # no race when the best start meets the target on the probe rows
    # with ``skip_at_target``: a start at the target on the probe rows skips the race as it is (True, the
    # default), or only when the check (made for it, ``check_first`` or not) confirms it on the validation
    # rows at step 0 (False).  The probe's rows are balanced over labels and few (10), the target is on
    # the validation rows' distribution: on the stream (bank_stream_evalsched/) 9 of 20 starts at the
    # target on the probe were below it on the validation rows at step 0 (and trained from there with the
    # warm lr, 5-50 steps).  False measured on order 1 (bank_stream_trustprobe/): 0 won / 29 tied / 3 lost
    # (781 -> 787 steps): the refuted starts raced and kept the bank start at the warm lr; off
    trust_probe: bool = True
    # no race when the probe separates the best bank start from both cold inits by this many standard
    # errors of the per-row loss differences (None: race whenever the best start is below the target).
    # Off by default: on the novel-task phase at 2.0 it fired for 3 of 32 jobs (2 fewer steps, 1 worse)
    # and added a step of selection (benchmarks/results/bank_stream_sep/): not measured better
    separate_z: float | None = None
    # before a race, evaluate the best start on the job's validation rows at step 0, as the job's own
    # first evaluation does (``PromptTrainer.train_to_target``; the trainer keeps the result, so it is not
    # evaluated twice): at the target there, no race. Only the start the probe ranks first is evaluated,
    # so the validation rows choose nothing among the candidates; they only end the job before its race.
    # On by default (with NEAR and the race of two: benchmarks/results/bank_stream_race2/); alone on
    # bank.CHEAP it had no effect (benchmarks/results/bank_stream_cheapcheck/)
    check_first: bool = True
    # the fallback: a job whose start (a bank prompt, a blend or its text init) is, at its first evaluation
    # at or after ``fallback_at`` of its own steps, more than ``fallback_rows`` validation rows below the
    # target starts again from random init (``train_from_start``); the abandoned start's steps are the
    # job's.  None: off, the default.  On by default from 2026-12-07 to 2026-12-08 (on the stream's order 1,
    # live, fewer steps in all than without it); off again by the criterion its order-0 run was planned
    # with (benchmarks/results/bank_stream_fallback/README.md): over both orders on one CPU it took 1,285
    # steps, the race of two 1,284; in the simulator its live pairs gave fewer violations in every seed,
    # a difference the stream's resampling does not separate from zero.  Setting it: 5 (and 2 rows).  The
    # service's jobs: JobPayload.bank_fallback_at
    fallback_at: int | None = None
    fallback_rows: int = 2

    @staticmethod
    def of(x: RaceSettings | dict[str, Any] | None) -> RaceSettings:
        if x is None:
            return RaceSettings()
        if isinstance(x, RaceSettings):
            return x
        return RaceSettings(**x)


@dataclass
class Candidate:
    name: str  # "entry:<task>/<id>", "blend", "text", "random"
    kind: str  # "warm" (a bank prompt or blend), "text", "random"
    tensor: torch.Tensor
    score: ProbeScore | None = None
    entry_id: str | None = None
    race: list[dict[str, float]] = field(default_factory=list)  # probe after each round
    # the entry's task similarity to the job (a blend: the lower of its two; None: a cold init), which
    # breaks accuracy ties under ``Budget.rank_by == "accuracy+similarity"``
    similarity: float | None = None

    def key(self, by: str) -> tuple[float, ...]:
        return rank_key(self.score, by, self.similarity) if self.score else (math.inf,)

    def brief(self) -> dict[str, Any]:
        sc = self.score
        return {
            "name": self.name,
            "kind": self.kind,
            **({"entry_id": self.entry_id} if self.entry_id else {}),
            **({"accuracy": sc.accuracy, "loss": sc.loss} if sc else {}),
            **({"similarity": self.similarity} if self.similarity is not None else {}),
            **({"race": self.race} if self.race else {}),
        }


@dataclass
class WarmStart:
    trainer: Any  # the PromptTrainer to go on with (its step count includes its race steps)
    chosen: Candidate
    extra_steps: int  # steps the race's losers took: the job's steps too
    candidates: list[Candidate]
    info: dict[str, Any]

    @property
    def start_accuracy(self) -> float | None:
        """The chosen start's accuracy on the job's validation rows before its first training step (None:
        not evaluated there: the job has no target, or its start is a race's winner, between two evaluation
        steps)."""
        ev = self.info.get("start_eval")
        return None if ev is None else float(ev["val_accuracy"])

    def summary(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.name,
            "kind": self.chosen.kind,
            "lr": self.trainer.lr,
            "raced": bool(self.info.get("raced")),
            "extra_steps": self.extra_steps,
            "candidates": [c.brief() for c in self.candidates],
            **{k: v for k, v in self.info.items() if k not in ("selection",)},
        }


def falls_back(
    rs: RaceSettings, kind: str, steps: int, accuracy: float, target: float | None, rows: int
) -> bool:
    """Whether a job that started from a ``kind`` start and is at ``accuracy`` on its ``rows`` validation
    rows after ``steps`` steps starts again from random init (``RaceSettings.fallback_at``)."""
    if rs.fallback_at is None or target is None or kind == "random" or steps < rs.fallback_at:
        return False
    return lags_target(accuracy, target, rows, rs.fallback_rows)


def meets(accuracy: float, target: float) -> bool:
    """``accuracy`` (a fraction of probe rows, computed in float32: 7/10 is 0.69999998) at or above
    ``target``, up to that rounding."""
    return accuracy >= target - 1e-6


def separated(best: torch.Tensor, others: torch.Tensor, z: float) -> tuple[bool, list[float]]:
    """Whether the probe tells ``best`` apart: its per-row losses (``[rows]``) lower than those of every
    start in ``others`` (``[k, rows]``, the same rows) by more than ``z`` standard errors of the paired
    differences; and the t statistics (mean difference over its standard error, one per other start)."""
    d = others.double() - best.double()[None, :]
    n = d.shape[1]
    if n < 2:
        return False, [0.0] * d.shape[0]
    mean, se = d.mean(dim=1), d.std(dim=1, unbiased=True) / math.sqrt(n)
    t = [float(m / s) if s > 0 else (math.inf if m > 0 else 0.0) for m, s in zip(mean, se, strict=True)]
    return all(x > z for x in t), t


def fit_lr(score: ProbeScore | None, target: float | None, labels: int, cold: float, warm: float) -> float:
    """``cold * (warm / cold) ** f``, ``f`` the fraction of the way from chance (``1 / labels``: the probe
    sample is balanced over labels) to ``target`` that ``score``'s accuracy covers, clipped to [0, 1]."""
    if score is None or target is None or score.accuracy != score.accuracy:
        return cold
    chance = 1.0 / max(1, labels)
    if target <= chance:
        return warm
    f = min(1.0, max(0.0, (score.accuracy - chance) / (target - chance)))
    return cold * (warm / cold) ** f


def blend(tensors: list[torch.Tensor], scores: list[ProbeScore], labels: int) -> torch.Tensor:
    """The mean of ``tensors`` weighted by how far above chance each one's probe accuracy is (equal
    weights when none is)."""
    chance = 1.0 / max(1, labels)
    w = [max(0.0, s.accuracy - chance) if s.accuracy == s.accuracy else 0.0 for s in scores]
    if sum(w) <= 0:
        w = [1.0] * len(tensors)
    tot = sum(w)
    return sum((wi / tot) * t.float() for wi, t in zip(w, tensors, strict=True))  # type: ignore[return-value]


def _select(
    bank_dir: str | Path, loaded: Any, task: Any, config: Any, b: Budget, probe: Any, train: Any, tenant: str
) -> Any:
    from prompttuner.bank import PromptBank, select_for_task

    with PromptBank(Path(bank_dir), create=False) as bank:
        return select_for_task(
            bank,
            loaded,
            task,
            tenant=tenant,
            budget=b,
            num_tokens=config.num_virtual_tokens,
            max_length=config.max_length,
            cold_init="text",
            examples=train,
            probe=probe,
        )


def warm_start(
    bank_dir: str | Path | None,
    loaded: Any,
    task: Any,
    config: Any,
    *,
    race: RaceSettings | dict[str, Any] | None = None,
    budget: Budget | None = None,
    tenant: str | None = None,
    validation: list[Any] | None = None,
) -> WarmStart:
    """The start of ``task``'s job from the bank at ``bank_dir`` (None: no bank, the race is between the
    job's text and random inits), as a trainer that goes on from there, its start evaluated on the job's
    validation rows (``validation``; None: the trainer's own held-out rows) when the job has a target."""
    from prompttuner.bank import PUBLIC, NoCandidatesError, PromptBank
    from prompttuner.bank.probe import make_probe
    from prompttuner.tuning import (
        DEFAULT_LR,
        PromptTrainer,
        TensorInit,
        default_lr,
        parse_init,
        resolve_init,
        training_split,
    )

    rs = RaceSettings.of(race)
    b = budget or NEAR
    target = config.target_accuracy
    labels = len(task.labels)
    n = config.num_virtual_tokens
    c0, w0 = time.process_time(), time.perf_counter()
    train, _ = training_split(task, config.eval_size)
    probe = make_probe(loaded, task, b, max_length=config.max_length, examples=train)
    text_t = resolve_init(parse_init("text"), loaded, task, num_virtual_tokens=n, seed=config.seed)
    rand_t = resolve_init(parse_init("random"), loaded, task, num_virtual_tokens=n, seed=config.seed)
    cands: list[Candidate] = []
    info: dict[str, Any] = {}
    sel = None
    if bank_dir is not None:
        try:
            sel = _select(bank_dir, loaded, task, config, b, probe, train, tenant or PUBLIC)
        except NoCandidatesError as e:  # nothing of this model / tenant / length: the cold inits race
            info["no_candidates"] = str(e)
    if sel is not None:
        with PromptBank(Path(bank_dir), create=False) as bank:  # type: ignore[arg-type]
            info["selection"] = sel.to_dict()
            most = max((p.rows or 0) for p in sel.probes if p.loss is not None)
            top = sorted(
                (p for p in sel.probes if p.loss is not None and (p.rows or 0) == most),
                key=lambda p: rank_key(p.score(), b.rank_by, p.task_similarity),
            )
            for p in top:
                cands.append(
                    Candidate(
                        f"entry:{p.task_name}/{p.entry_id[:8]}",
                        "warm",
                        bank.load_tensor(p.entry_id).float(),
                        p.score(),
                        p.entry_id,
                        similarity=p.task_similarity,
                    )
                )
        tb = sel.info.get("baseline_scores", {}).get("text")
        text_score = ProbeScore(**tb) if tb and sel.info["baseline_rows"].get("text") == most else None
        if rs.blend and len(cands) >= 2:
            bt = blend([c.tensor for c in cands[:2]], [c.score for c in cands[:2]], labels)  # type: ignore[misc]
            sims = [c.similarity for c in cands[:2]]
            low = None if None in sims else min(sims)  # type: ignore[type-var]
            cands.insert(0, Candidate("blend", "warm", bt, probe([bt])[0], similarity=low))
    else:
        text_score = None
    # the cold inits always enter the race, so they are not probed again here (text keeps the score it
    # had when it survived the race over rows)
    cold = [Candidate("text", "text", text_t, text_score), Candidate("random", "random", rand_t)]
    cands += cold
    cands.sort(key=lambda c: c.key(b.rank_by))
    info["select_cpu_s"] = time.process_time() - c0
    info["select_wall_s"] = time.perf_counter() - w0
    warm_lr = default_lr("warm")

    def trainer_for(c: Candidate) -> Any:
        lr = fit_lr(c.score, target, labels, DEFAULT_LR, warm_lr) if c.kind == "warm" else DEFAULT_LR
        init = TensorInit(c.tensor, lr=lr, kind=c.kind, meta={"start": c.name})
        return PromptTrainer(loaded, task, replace(config, init=init))

    def finish(tr: Any, chosen: Candidate, extra: int, known: float | None = None) -> WarmStart:
        """The start, evaluated as the job's first evaluation where it is due (``known``: the check's, of
        this trainer at step 0)."""
        if target is not None and (known is not None or tr.eval_due()):
            e0 = time.process_time()
            acc = known if known is not None else evaluate_on(tr, validation)
            info["start_eval"] = {
                "step": int(tr.step_count),
                "val_accuracy": acc,
                "rows": len(tr.val if validation is None else validation),
                "cpu_s": time.process_time() - e0,
            }
        return WarmStart(tr, chosen, extra, cands, info)

    best = cands[0]
    at_target = (
        best.kind == "warm"
        and target is not None
        and best.score is not None
        and meets(best.score.accuracy, target)
    )
    confirm = at_target and rs.skip_at_target and not rs.trust_probe  # the check decides (below)
    if (at_target and rs.skip_at_target and not confirm) or rs.candidates <= 1:
        info["raced"] = False
        info["no_race"] = "at the target on the probe" if at_target and rs.skip_at_target else "not asked"
        return finish(trainer_for(best), best, 0)
    if best.kind == "warm" and not confirm and rs.separate_z is not None and hasattr(probe, "row_losses"):
        rl = probe.row_losses([best.tensor, text_t, rand_t])
        apart, t = separated(rl[0], rl[1:], rs.separate_z)
        info["separation"] = {"z": rs.separate_z, "rows": int(rl.shape[1]), "t_text": t[0], "t_random": t[1]}
        info["select_cpu_s"] = time.process_time() - c0
        info["select_wall_s"] = time.perf_counter() - w0
        if apart:
            info["raced"] = False
            info["no_race"] = f"the probe separates it (t {min(t):.1f} > {rs.separate_z:g})"
            return finish(trainer_for(best), best, 0)

    first = None  # the best start's trainer, when it was checked on the validation rows
    if (rs.check_first or confirm) and target is not None:
        k0 = time.process_time()
        first = trainer_for(best)
        acc = evaluate_on(first, validation)
        info["first_check"] = {"start": best.name, "val_accuracy": acc, "cpu_s": time.process_time() - k0}
        info["select_cpu_s"] = time.process_time() - c0
        info["select_wall_s"] = time.perf_counter() - w0
        if acc >= target:  # the stopping rule of train_to_target, which will read the kept accuracy
            info["raced"] = False
            info["no_race"] = "at the target on the validation rows at step 0"
            return finish(first, best, 0, known=acc)

    # the race: the best bank start (if any), the text init and random init, then the next best
    entrants: list[Candidate] = []
    for c in [next((c for c in cands if c.kind == "warm"), None)] + cold + cands:
        if c is not None and c not in entrants and len(entrants) < rs.candidates:
            entrants.append(c)
    alive = [(c, first if c is best and first is not None else trainer_for(c)) for c in entrants]
    extra = 0
    c1 = time.process_time()
    while len(alive) > 1:
        for _, tr in alive:
            for _ in range(rs.steps):
                tr.step()
        scores = probe([tr.prompt() for _, tr in alive])
        for (c, _), sc in zip(alive, scores, strict=True):
            c.race.append({"steps": float(alive[0][1].step_count), "accuracy": sc.accuracy, "loss": sc.loss})
        ranked = sorted(zip(alive, scores, strict=True), key=lambda x: rank_key(x[1], b.rank_by))
        keep = max(1, math.ceil(len(alive) / 2))
        extra += sum(tr.step_count for (_, tr), _ in ranked[keep:])
        alive = [x for x, _ in ranked[:keep]]
    info["raced"] = True
    info["race_cpu_s"] = time.process_time() - c1
    winner, tr = alive[0]
    return finish(tr, winner, extra)


def evaluate_on(trainer: Any, validation: list[Any] | None) -> float:
    """``trainer``'s accuracy on ``validation`` (None: its own held-out rows, the result kept in it)."""
    return float(trainer.evaluate() if validation is None else trainer.evaluate(validation))


@dataclass
class Trained:
    trainer: Any  # the PromptTrainer that ended the job (random init's after a fallback)
    result: Any  # its TrainResult; ``steps`` counts the abandoned start's steps too
    fallback: dict[str, Any] | None  # the check, when one was made: step, accuracy, threshold, taken
    fallback_steps: int = 0  # steps of the abandoned start (its race steps included): the job's too


def train_from_start(
    ws: WarmStart,
    race: RaceSettings | dict[str, Any] | None = None,
    progress: Any = None,
) -> Trained:
    """Train the job from its start ``ws`` to its target, within its trainer's ``max_steps``; with
    ``RaceSettings.fallback_at`` set, check the start at its first evaluation at or after that step and,
    more than ``fallback_rows`` validation rows below the target there, start the job again from random
    init with the steps that are left (the abandoned start's steps stay the job's).  Random init after a
    fallback trains as the job's own random-init run would (the same seed, batches and learning rate), so
    a record of that run says where it would get to."""
    from prompttuner.tuning import PromptTrainer, RandomInit

    rs = RaceSettings.of(race)
    tr = ws.trainer
    cfg = tr.config
    budget = cfg.max_steps
    if rs.fallback_at is None or cfg.target_accuracy is None or ws.chosen.kind == "random":
        return Trained(tr, tr.train_to_target(progress), None)
    at = fallback_check_step(rs.fallback_at, cfg.eval_every)
    if not tr.step_count < at < budget:  # started at or past the check, or no budget after it
        return Trained(tr, tr.train_to_target(progress), None)
    cfg.max_steps = at
    first = tr.train_to_target(progress)
    cfg.max_steps = budget
    if first.reached:
        return Trained(tr, first, None)
    rows = len(tr.val)
    thr = lag_threshold(cfg.target_accuracy, rows, rs.fallback_rows)
    info = {"step": tr.step_count, "accuracy": first.accuracy, "threshold": thr, "rows": rows}
    if not falls_back(rs, ws.chosen.kind, tr.step_count, first.accuracy, cfg.target_accuracy, rows):
        rest = tr.train_to_target(progress)  # its first evaluation is the one just made (kept)
        res = replace(
            rest,
            curve=first.curve + rest.curve[1:],
            best_accuracy=max(first.best_accuracy, rest.best_accuracy),
            wall_s=first.wall_s + rest.wall_s,
        )
        return Trained(tr, res, {**info, "taken": False})
    spent = tr.step_count
    again = replace(cfg, init=RandomInit(), lr=None, max_steps=budget - spent)  # its own random-init run
    fresh = PromptTrainer(tr.loaded, tr.task, again)
    rest = fresh.train_to_target(progress)
    res = replace(
        rest,
        curve=first.curve,
        steps=spent + rest.steps,
        best_accuracy=max(first.best_accuracy, rest.best_accuracy),
        wall_s=first.wall_s + rest.wall_s,
        extra={**rest.extra, "after_fallback": rest.curve},
    )
    return Trained(fresh, res, {**info, "taken": True}, fallback_steps=spent)
