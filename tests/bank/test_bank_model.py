"""The bank on the real bundled LLM: the batched probe equals the engine's loss, and the bank's warm start
(``bank_init``, what ``tune --init bank:DIR`` calls) becomes the trainer's init; the service's warm start
is ``bank.warm_start`` (the race)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from prompttuner.bank import Budget, PromptBank, bank_init, select_init
from prompttuner.bank.probe import LLMProbe, probe_sample
from prompttuner.config import shared_data
from prompttuner.tuning import (
    PromptTrainer,
    RandomInit,
    TextInit,
    TuningConfig,
    resolve_init,
    training_split,
)

pytestmark = pytest.mark.model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def loaded():  # type: ignore[no-untyped-def]
    from prompttuner.tuning import load_model

    torch.set_num_threads(1)
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def task():  # type: ignore[no-untyped-def]
    from prompttuner.tuning import load_task

    return load_task(shared_data() / "tasks" / "sst2")


def test_batched_probe_matches_engine_loss(loaded, task) -> None:  # type: ignore[no-untyped-def]
    from prompttuner.tuning import prompt_loss

    rows = probe_sample(task.train, Budget(sample_rows=4, max_words=12))
    assert sorted({r.label for r in rows}) == ["negative", "positive"]  # stratified
    prompts = [resolve_init(RandomInit(), loaded, task, num_virtual_tokens=4, seed=s) for s in (0, 1)]
    probe = LLMProbe(loaded, rows, task.labels, max_length=24)
    got = [sc.loss for sc in probe(prompts)]
    want = [prompt_loss(loaded, p, rows, task.labels, max_length=24) for p in prompts]
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
    # one forward pass gives the accuracy too: the engine's accuracy on the same rows
    from prompttuner.tuning import evaluate_accuracy

    accs = [sc.accuracy for sc in probe.scores(prompts)]
    want_acc = [evaluate_accuracy(loaded, p, rows, probe.verbalizer, max_length=24) for p in prompts]
    assert accs == pytest.approx(want_acc)


def test_select_init_probes_every_entry_and_the_text_init_and_ranks_by_accuracy(
    loaded, task, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    bank = PromptBank(tmp_path / "bank")
    text = resolve_init(TextInit(), loaded, task, num_virtual_tokens=4)
    rand = resolve_init(RandomInit(), loaded, task, num_virtual_tokens=4, seed=3)
    noise = torch.randn(text.shape, generator=torch.Generator().manual_seed(0))
    ids = [
        bank.add(t, model=loaded.name, task_description=d, labels=["negative", "positive"], task_name=d)
        for t, d in ((text + 0.05 * noise, "sentiment text"), (rand, "random words"))
    ]
    with pytest.raises(Exception, match="embed_dim"):
        bank.add(torch.zeros(4, 7), model=loaded.name, task_description="x", labels=["a"])
    bank.close()
    _, info = select_init(tmp_path / "bank", loaded, task, num_tokens=4)
    assert info["entry"]["id"] in ids
    assert info["probe_evaluations"] == 3  # a bank of two: both probed, and the job's own text init
    assert set(info["baseline_scores"]) == {"text"}
    # the real probe measures accuracy and loss; the choice ranks by accuracy, then loss
    assert all(p["accuracy"] is not None for p in info["probes"])
    best = min(info["probes"], key=lambda p: (-p["accuracy"], p["loss"]))
    assert (info["entry"]["id"], info["accuracy"], info["loss"]) == (
        best["entry_id"],
        best["accuracy"],
        best["loss"],
    )


def test_an_entry_that_does_not_beat_the_jobs_text_init_gives_a_cold_start(
    loaded, task, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The bank's only entry is the job's own text init: it scores exactly as the text init does, so it
    does not beat it (a tie keeps the job's own instruction), and the trainer starts cold from the text
    init at the cold lr, recording the fallback."""
    text = resolve_init(TextInit(), loaded, task, num_virtual_tokens=4)
    with PromptBank(tmp_path / "bank") as bank:
        entry = bank.add(text, model=loaded.name, task_description="own", labels=task.labels, task_name="own")
    cfg = TuningConfig(num_virtual_tokens=4, max_length=48, eval_size=16, target_accuracy=0.9)
    init = bank_init(str(tmp_path / "bank"), loaded, task, cfg)
    probed = {p["entry_id"]: p for p in init.info["probes"]}[entry]
    own = init.info["baseline_scores"]["text"]
    assert (probed["accuracy"], probed["loss"]) == (own["accuracy"], own["loss"])
    assert init.info["fallback"] == "text" and init.kind == "text" and init.lr == pytest.approx(0.03)
    trainer = PromptTrainer(loaded, task, dataclasses.replace(cfg, init=init))
    assert trainer.kind == "text" and trainer.lr == pytest.approx(0.03)
    assert torch.equal(trainer.prompt(), text)
    meta = trainer.metadata()
    assert meta["init"] == f"bank:{tmp_path / 'bank'}" and meta["bank_fallback"] == "text"
    assert meta["bank_entry"] == entry and meta["lr"] == pytest.approx(0.03)


def test_bank_init_starts_from_the_chosen_entry(loaded, task, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """When no cold init wins, the start is the entry's own tensor, with the lr of the rule."""
    import prompttuner.bank as pb

    rand = resolve_init(RandomInit(), loaded, task, num_virtual_tokens=4, seed=3)
    with PromptBank(tmp_path / "bank") as bank:
        entry = bank.add(rand, model=loaded.name, task_description="r", labels=task.labels, task_name="r")
    monkeypatch.setattr(pb, "cold_init_wins", lambda sel: None)  # whatever the text init scores
    cfg = TuningConfig(num_virtual_tokens=4, max_length=48, eval_size=16)
    init = bank_init(tmp_path / "bank", loaded, task, cfg, tenant="acme")
    assert init.kind == "warm" and torch.equal(init.tensor, rand) and "fallback" not in init.info
    assert init.lr == pytest.approx(0.003)  # no target: a warm start keeps the warm lr
    assert init.meta["bank_entry"] == entry and init.meta["bank_probe_accuracy"] == init.info["accuracy"]
    assert init.meta["bank_entry_task"] == "r" and init.meta["bank_fallback"] is None
    above = dataclasses.replace(cfg, target_accuracy=init.info["accuracy"])  # met: keeps the warm lr
    assert bank_init(tmp_path / "bank", loaded, task, above).lr == pytest.approx(0.003)
    below = dataclasses.replace(cfg, target_accuracy=init.info["accuracy"] + 0.01)  # missed: moves
    assert bank_init(tmp_path / "bank", loaded, task, below).lr == pytest.approx(0.03)


def test_bank_init_asks_on_the_training_split_and_the_lr_follows_the_answer(
    loaded, task, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """An entry is a warm start (10x lower lr) unless its probe accuracy misses the job's target; the
    fallback to the job's text init is a cold start; the probes read the trainer's training split only,
    at the job's max_length, for the job's tenant."""
    import prompttuner.bank as pb

    cfg = TuningConfig(num_virtual_tokens=4, max_length=32, eval_size=16, seed=3)
    entry = torch.full((4, loaded.embed_dim), 0.25)
    seen: list[dict] = []
    answers = [
        (entry, {"entry": {"id": "e1", "task_name": "mr"}, "accuracy": 0.4}),
        (entry, {"entry": {"id": "e1", "task_name": "mr"}, "accuracy": 0.9}),
        ("text", {"entry": {"id": "e1", "task_name": "mr"}, "accuracy": 0.9, "fallback": "text"}),
    ]

    def fake_select_init(bank_dir, model, t, **kw):  # type: ignore[no-untyped-def]
        seen.append({"bank_dir": bank_dir, **kw})
        return answers.pop(0)

    monkeypatch.setattr(pb, "select_init", fake_select_init)
    target = dataclasses.replace(cfg, target_accuracy=0.8)
    below, above, fallback = (bank_init("/x", loaded, task, target, tenant="acme") for _ in range(3))
    assert (below.kind, below.lr, above.kind, above.lr) == ("warm", 0.03, "warm", pytest.approx(0.003))
    assert fallback.kind == "text" and fallback.lr == 0.03
    assert torch.equal(below.tensor, entry)
    assert torch.equal(fallback.tensor, resolve_init(TextInit(), loaded, task, num_virtual_tokens=4))
    assert below.meta == {
        "init": "bank:/x",
        "bank_entry": "e1",
        "bank_entry_task": "mr",
        "bank_fallback": None,
        "bank_probe_accuracy": 0.4,
    }
    train, val = training_split(task, cfg.eval_size)
    for kw in seen:
        assert kw["bank_dir"] == "/x" and kw["tenant"] == "acme" and kw["num_tokens"] == 4
        assert kw["examples"] == train and not any(v in kw["examples"] for v in val)
        assert kw["max_length"] == 32
    trainer = PromptTrainer(loaded, task, dataclasses.replace(target, init=below))
    assert trainer.lr == 0.03 and trainer.metadata()["bank_probe_accuracy"] == 0.4
    assert trainer.train == train and trainer.val == val  # the rows the bank read are the trainer's


def test_service_warm_start_is_the_banks_warm_start_and_names_the_race(loaded, task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The service's warm start (RealEngine.warm_start) is ``bank.warm_start``: below the target the best
    entry races the job's text and random inits (the reply names the chosen start, the candidates, the
    winner's race steps in its state and the losers' beside them); at the target the entry is taken as it
    is (no race, warm lr, the bank's predicted steps); only the tenant's own and public entries count."""
    from prompttuner.bank import PUBLIC
    from prompttuner.runtime.engine import JobPayload
    from prompttuner.runtime.real_engine import RealEngine

    with PromptBank(tmp_path / "bank") as bank:
        ids = {}
        for s, owner in ((11, PUBLIC), (12, "acme"), (13, "globex")):
            t = resolve_init(RandomInit(), loaded, task, num_virtual_tokens=4, seed=s)
            ids[owner] = bank.add(
                t, model=loaded.name, task_description="r", labels=task.labels, task_name=f"r{s}", owner=owner
            )
    engine = RealEngine()

    def job(target: float) -> JobPayload:
        return JobPayload(
            job_id=f"j{target}",
            model=loaded.name,
            train_path=str(shared_data() / "tasks" / "sst2" / "train.jsonl"),
            test_path=None,
            labels=tuple(task.labels),
            max_steps=20,
            target_accuracy=target,
            num_virtual_tokens=4,
            batch_size=2,
            max_length=24,
            max_eval=8,
            bank_dir=str(tmp_path / "bank"),
            tenant="acme",
        )

    hard = engine.warm_start(loaded, job(1.01))  # no start meets it: they race
    # the default race of two: one round of 2 steps, the loser's 2 steps the job's too
    assert hard["raced"] and hard["steps_done"] == 2 and hard["race_steps"] == 2
    assert hard["first_check"]["start"] == hard["candidates"][0]["name"]  # checked first, below 1.01
    names = [c["name"] for c in hard["candidates"]]
    assert {"text", "random"} <= set(names) and not any(ids["globex"][:8] in n for n in names)
    assert hard["chosen"] in names
    assert hard["init"] in ("text", "random") or hard["init"].startswith("bank:")
    if hard["kind"] != "warm":
        assert hard["predicted_steps"] is None  # a cold winner plans with the population's prediction
    sess = engine.open(loaded, job(1.01), hard["state"])
    assert sess.steps_done == hard["steps_done"]  # the job goes on from the winner's race steps
    # the winner, between two evaluation steps, is first evaluated at the next (as the workers do)
    assert hard["start_accuracy"] is None and hard["start_eval"] is None
    easy = engine.warm_start(loaded, job(0.0))  # every start meets it: the best entry, as it is
    assert not easy["raced"] and easy["race_steps"] == 0 and easy["steps_done"] == 0
    assert easy["no_race"] == "at the target on the probe" and hard["no_race"] is None
    assert easy["kind"] == "warm" and easy["lr"] == pytest.approx(0.003) and easy["predicted_steps"] > 0
    assert easy["init"].startswith("bank:") and easy["probe_accuracy"] is not None
    # evaluated at its start, on the rows the service judges the target on: the job is done there
    assert easy["start_eval"]["step"] == 0 and easy["start_eval"]["rows"] == 8
    easy_sess = engine.open(loaded, job(0.0), easy["state"])
    assert easy["start_accuracy"] == pytest.approx(easy_sess.evaluate()) and easy_sess.val_rows == 8


def test_warm_start_races_the_best_entry_against_the_cold_inits_and_counts_every_step(
    loaded, task, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Below the target: the best start, the text init and random init train the same steps, the better
    half goes on; the losers' steps are the job's too.  At the target: no race, the entry at the warm lr.
    With no bank: text against random."""
    from prompttuner.bank import RaceSettings, warm_start

    cfg = TuningConfig(num_virtual_tokens=4, max_length=24, eval_size=8, batch_size=2, seed=5)
    with PromptBank(tmp_path / "bank") as bank:
        for s in (11, 12):
            t = resolve_init(RandomInit(), loaded, task, num_virtual_tokens=4, seed=s)
            bank.add(t, model=loaded.name, task_description="r", labels=task.labels, task_name=f"r{s}")
    race = RaceSettings(candidates=3, steps=1)
    hard = dataclasses.replace(cfg, target_accuracy=1.01)  # no start meets it: they race
    ws = warm_start(tmp_path / "bank", loaded, task, hard, race=race)
    assert ws.info["raced"] and ws.trainer.step_count == 2  # 1 step in each of the 2 rounds
    entrants = [c for c in ws.candidates if c.race]
    assert {c.kind for c in entrants} >= {"text", "random"} and len(entrants) == 3
    assert ws.extra_steps == 1 + 2  # the first round's loser (1 step), the second's (2 steps)
    assert ws.chosen in entrants and len(ws.chosen.race) == 2
    assert {c.name for c in ws.candidates} >= {"blend", "text", "random"}
    _, val = training_split(task, cfg.eval_size)
    assert ws.trainer.val == val  # the trainer's own validation rows, never probed
    easy = dataclasses.replace(cfg, target_accuracy=0.0)  # every start meets it: the best entry, warm
    ws2 = warm_start(tmp_path / "bank", loaded, task, easy, race=race)
    assert not ws2.info["raced"] and ws2.extra_steps == 0 and ws2.trainer.step_count == 0
    assert ws2.chosen.kind == "warm" and ws2.trainer.lr == pytest.approx(0.003)
    cold = warm_start(None, loaded, task, hard, race=race)
    assert cold.info["raced"] and {c.kind for c in cold.candidates} == {"text", "random"}
    assert cold.extra_steps == 1 and cold.trainer.step_count == 1 and cold.trainer.lr == pytest.approx(0.03)
    assert ws.summary()["extra_steps"] == 3 and ws.summary()["chosen"] == ws.chosen.name
    with PromptBank(tmp_path / "other") as bank:  # only prompts of another length: nothing to select
        t8 = resolve_init(RandomInit(), loaded, task, num_virtual_tokens=8, seed=1)
        bank.add(t8, model=loaded.name, task_description="r", labels=task.labels, task_name="r8")
    none = warm_start(tmp_path / "other", loaded, task, hard, race=race)
    assert "no_candidates" in none.info and {c.kind for c in none.candidates} == {"text", "random"}


def test_bank_search_race_shows_the_race_and_the_chosen_start(loaded, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from prompttuner.cli import app
    from prompttuner.config import REPO_DATA
    from prompttuner.tuning import load_task

    folder = REPO_DATA / "demo_tasks" / "sst2"
    small = load_task(folder)
    with PromptBank(tmp_path / "bank") as bank:
        for s in (1, 2):
            t = resolve_init(RandomInit(), loaded, small, num_virtual_tokens=4, seed=s)
            bank.add(t, model=loaded.name, task_description="r", labels=small.labels, task_name=f"r{s}")
    args = ["bank", "search", "--task", str(folder), "--bank", str(tmp_path / "bank"), "--race"]
    args += ["--target", "1.01", "--race-steps", "1", "--tokens", "4", "--max-length", "24"]
    out = CliRunner().invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    raced = [c for c in got["candidates"] if c.get("race")]
    # the default race of two: the best bank start (a blend or an entry) against the text init, one round
    assert got["raced"] and sorted(c["kind"] for c in raced) == ["text", "warm"]
    assert got["chosen"] in {c["name"] for c in raced} and got["extra_steps"] == 1
    assert got["first_check"]["start"] == got["candidates"][0]["name"]  # checked first by default
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0 and "chosen:" in text.output and "race steps of the losers 1" in text.output
    # layer 0 and the similarity tie-break: every bank candidate carries its task similarity
    out = CliRunner().invoke(app, [*args, "--nearest", "1", "--rank-by", "accuracy+similarity", "--json"])
    assert out.exit_code == 0, out.output
    warm = [c for c in json.loads(out.stdout)["candidates"] if c["name"].startswith("entry:")]
    assert warm and all(-1.0 <= c["similarity"] <= 1.0 for c in warm)
    # --no-check-first: no evaluation on the validation rows before the race
    out = CliRunner().invoke(app, [*args, "--no-check-first", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["raced"] and "first_check" not in json.loads(out.stdout)
    bad = CliRunner().invoke(app, [*args, "--rank-by", "similarity"])
    assert bad.exit_code != 0 and "unknown --rank-by" in bad.output


def test_bank_build_seeds_several_prompts_per_task_and_states_the_cost(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from prompttuner.bank import PromptBank
    from prompttuner.cli import app
    from prompttuner.config import REPO_DATA

    folder = REPO_DATA / "demo_tasks" / "sst2"
    args = ["bank", "build", "--tasks", str(folder), "--bank", str(tmp_path / "b"), "--seeds", "0,1"]
    args += ["--subsets", "2", "--max-steps", "1", "--tokens", "4", "--max-length", "24", "--batch-size", "2"]
    out = CliRunner().invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    runs = got["seeding"]["runs"]
    assert sorted((r["seed"], r["part"]) for r in runs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert got["seeding"]["steps"] == 4 and got["seeding"]["cpu_s"] > 0
    with PromptBank(tmp_path / "b", create=False) as bank:
        entries = bank.list()
        assert len(entries) == 4  # no target: every run is kept
        assert sorted((e.extra["seed"], e.extra["part"]) for e in entries) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        tensors = {tuple(bank.load_tensor(e.id).flatten()[:4].tolist()) for e in entries}
        assert len(tensors) == 4  # four different prompts
    bad = CliRunner().invoke(
        app, ["bank", "build", "--tasks", str(folder), "--bank", str(tmp_path / "c"), "--seeds", "x"]
    )
    assert bad.exit_code != 0 and "--seeds" in bad.output


class _SeparatingProbe:
    """A probe that knows one bank entry: lower loss than any other start on every row (``steady``) or
    on two rows of ten only (not steady); accuracy 0.6 for the entry, 0.5 for the rest."""

    def __init__(self, entry: torch.Tensor, steady: bool, rows: int = 10) -> None:
        self.entry, self.steady, self.n = entry, steady, rows

    @property
    def rows(self) -> int:
        return self.n

    def split(self, first: int):  # type: ignore[no-untyped-def]
        rest = self.n - first
        return _SeparatingProbe(self.entry, self.steady, first), (
            _SeparatingProbe(self.entry, self.steady, rest) if rest > 0 else None
        )

    def _is_entry(self, p: torch.Tensor) -> bool:
        return p.shape == self.entry.shape and torch.allclose(p.float(), self.entry.float())

    def row_losses(self, prompts):  # type: ignore[no-untyped-def]
        out = []
        for p in prompts:
            r = torch.full((self.n,), 1.0) + 0.01 * torch.arange(self.n)
            if self._is_entry(p):
                r = r - 0.5 if self.steady else torch.cat([r[:2] - 2.5, r[2:]])
            out.append(r)
        return torch.stack(out)

    def __call__(self, prompts):  # type: ignore[no-untyped-def]
        from prompttuner.bank import ProbeScore

        return [
            ProbeScore(loss=float(r.mean()), accuracy=0.6 if self._is_entry(p) else 0.5)
            for p, r in zip(prompts, self.row_losses(prompts), strict=True)
        ]


def test_warm_start_skips_the_race_only_where_the_probe_separates_the_bank_start(
    loaded, task, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Below the target, a bank start whose per-row probe loss is lower than both cold inits' beyond the
    noise (``separate_z`` standard errors) is taken without a race (its separation recorded); the same
    mean gap from two rows of ten races as before; ``separate_z=None`` always races."""
    import prompttuner.bank.probe as pp
    from prompttuner.bank import RaceSettings, warm_start

    cfg = TuningConfig(num_virtual_tokens=4, max_length=24, eval_size=8, batch_size=2, seed=5)
    hard = dataclasses.replace(cfg, target_accuracy=1.01)
    t = resolve_init(RandomInit(), loaded, task, num_virtual_tokens=4, seed=11)
    with PromptBank(tmp_path / "bank") as bank:
        bank.add(t, model=loaded.name, task_description="r", labels=task.labels, task_name="r11")
    race = RaceSettings(candidates=3, steps=1, blend=False, separate_z=2.0)
    for steady in (True, False):
        monkeypatch.setattr(pp, "make_probe", lambda *a, s=steady, **k: _SeparatingProbe(t, s))
        ws = warm_start(tmp_path / "bank", loaded, task, hard, race=race)
        sep = ws.info["separation"]
        assert sep["rows"] == 10 and sep["z"] == 2.0
        if steady:
            assert ws.chosen.kind == "warm" and not ws.info["raced"]
            assert ws.extra_steps == 0 and ws.trainer.step_count == 0
            assert sep["t_text"] > 2.0 and sep["t_random"] > 2.0
            assert ws.info["no_race"].startswith("the probe separates it")
        else:
            assert ws.info["raced"] and ws.extra_steps == 1 + 2 and sep["t_text"] < 2.0
    monkeypatch.setattr(pp, "make_probe", lambda *a, **k: _SeparatingProbe(t, True))
    always = warm_start(tmp_path / "bank", loaded, task, hard, race=RaceSettings(steps=1, separate_z=None))
    assert always.info["raced"] and "separation" not in always.info


def test_check_first_ends_the_job_before_its_race_only_at_the_target_on_the_validation_rows(
    loaded, task, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """``check_first``: the start the probe ranks first is evaluated on the job's validation rows at step 0;
    at the target there, no race and the job's first evaluation reads the kept accuracy (the rows are not
    evaluated twice); below it, the same race as without the check, the checked trainer one of its
    entrants.  Without the check (and the probe's own skip off) the same job races."""
    import prompttuner.tuning.trainer as tr
    from prompttuner.bank import RaceSettings, warm_start

    cfg = TuningConfig(num_virtual_tokens=4, max_length=24, eval_size=8, batch_size=2, seed=5)
    with PromptBank(tmp_path / "bank") as bank:
        for s in (11, 12):
            t = resolve_init(RandomInit(), loaded, task, num_virtual_tokens=4, seed=s)
            bank.add(t, model=loaded.name, task_description="r", labels=task.labels, task_name=f"r{s}")
    easy = dataclasses.replace(cfg, target_accuracy=0.0)
    plain = RaceSettings(candidates=3, steps=1, skip_at_target=False, check_first=False)
    assert warm_start(tmp_path / "bank", loaded, task, easy, race=plain).info["raced"]
    check = dataclasses.replace(plain, check_first=True)
    ws = warm_start(tmp_path / "bank", loaded, task, easy, race=check)
    first = ws.info["first_check"]
    assert not ws.info["raced"] and ws.extra_steps == 0 and ws.trainer.step_count == 0
    assert first["start"] == ws.chosen.name == ws.candidates[0].name
    assert ws.info["no_race"] == "at the target on the validation rows at step 0"
    calls: list[int] = []
    real = tr.evaluate_accuracy
    monkeypatch.setattr(tr, "evaluate_accuracy", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert ws.start_accuracy == first["val_accuracy"]  # the check's evaluation is the start's
    res = ws.trainer.train_to_target()
    assert res.reached and res.steps == 0 and res.accuracy == first["val_accuracy"] and not calls
    ws.trainer.step()  # the prompt changed: evaluated anew
    ws.trainer.evaluate()
    assert len(calls) == 1
    hard = dataclasses.replace(cfg, target_accuracy=1.01)
    raced = warm_start(tmp_path / "bank", loaded, task, hard, race=check)
    assert raced.info["raced"] and raced.extra_steps == 1 + 2 and raced.trainer.step_count == 2
    assert raced.info["first_check"]["val_accuracy"] < 1.01
    # the race's winner (step 2) is not evaluated there: its first evaluation is at the next due step
    assert raced.start_accuracy is None and "start_eval" not in raced.info
    n = len(calls)
    raced.trainer.config.max_steps = 5
    res2 = raced.trainer.train_to_target()
    assert [p.step for p in res2.curve] == [5] and len(calls) == n + 1
    rows = list(task.test[:6])  # the rows a job with its own validation file is judged on
    import prompttuner.bank.race as race_mod

    seen: list[object] = []
    real_on = race_mod.evaluate_on
    monkeypatch.setattr(race_mod, "evaluate_on", lambda tr, val: seen.append(val) or real_on(tr, val))
    n = len(calls)
    other = warm_start(tmp_path / "bank", loaded, task, easy, race=check, validation=rows)
    assert seen == [rows] and len(calls) == n + 1  # one evaluation, on them: the check's is the start's
    assert other.info["start_eval"]["rows"] == 6
    assert other.start_accuracy == pytest.approx(other.trainer.evaluate(rows))
    monkeypatch.setattr(race_mod, "evaluate_on", real_on)
    assert warm_start(None, loaded, task, cfg, race=check).start_accuracy is None  # no target

    # trust_probe False: a start at the target on the probe rows races unless the check confirms it there
    probe_skip = RaceSettings(candidates=2, steps=1, check_first=True)
    trusted = warm_start(tmp_path / "bank", loaded, task, easy, race=probe_skip)
    assert trusted.info["no_race"] == "at the target on the probe" and "first_check" not in trusted.info
    confirm = dataclasses.replace(probe_skip, trust_probe=False)
    confirmed = warm_start(tmp_path / "bank", loaded, task, easy, race=confirm)
    assert confirmed.info["no_race"] == "at the target on the validation rows at step 0"
    assert confirmed.start_accuracy == confirmed.info["first_check"]["val_accuracy"]
    monkeypatch.setattr(race_mod, "evaluate_on", lambda tr, val: -1.0)  # the validation rows say below
    refuted = warm_start(tmp_path / "bank", loaded, task, easy, race=confirm)
    assert refuted.info["raced"] and refuted.extra_steps == 1 and refuted.trainer.step_count == 1
    assert not warm_start(tmp_path / "bank", loaded, task, easy, race=probe_skip).info["raced"]


def test_a_start_that_lags_at_the_fallback_step_trains_again_from_random_init(
    loaded, task, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """``RaceSettings.fallback_at``: below the target by more than ``fallback_rows`` rows at the check, the
    job goes on from random init exactly as its own random-init run would, the abandoned steps counted; not
    below it, the start trains on as it would have without the check."""
    import torch

    from prompttuner.bank import RaceSettings, train_from_start, warm_start

    cfg = TuningConfig(
        num_virtual_tokens=4, max_length=24, eval_size=8, batch_size=2, seed=5, eval_every=2, max_steps=6
    )
    with PromptBank(tmp_path / "bank") as bank:
        t = resolve_init(RandomInit(), loaded, task, num_virtual_tokens=4, seed=11)
        bank.add(t, model=loaded.name, task_description="r", labels=task.labels, task_name="r11")
    hard = dataclasses.replace(cfg, target_accuracy=1.01)  # nothing reaches it: the budget is spent

    def start(race: RaceSettings):  # type: ignore[no-untyped-def]
        return warm_start(tmp_path / "bank", loaded, task, hard, race=race)

    back = RaceSettings(candidates=1, fallback_at=3, fallback_rows=0)
    ws = start(back)
    assert ws.chosen.kind != "random" and ws.trainer.step_count == 0
    done = train_from_start(ws, back)
    assert done.fallback is not None and done.fallback["taken"] and done.fallback["step"] == 4  # eval >= 3
    assert done.fallback_steps == 4 and done.result.steps == 6 and not done.result.reached
    assert done.trainer.kind == "random" and done.trainer.step_count == 2  # the 2 steps left of 6
    alone = PromptTrainer(loaded, task, dataclasses.replace(hard, max_steps=2))  # its own random-init run
    alone.train_to_target()
    assert torch.equal(done.trainer.prompt(), alone.prompt())
    assert [p.step for p in done.result.curve] == [0, 2, 4]  # the abandoned start's evaluations
    assert [p.step for p in done.result.extra["after_fallback"]] == [0, 2]

    on = RaceSettings(candidates=1, fallback_at=3, fallback_rows=1000)  # never that far below: no fallback
    kept = train_from_start(start(on), on)
    assert kept.fallback is not None and not kept.fallback["taken"] and kept.fallback_steps == 0
    plain = start(RaceSettings(candidates=1, fallback_at=None))
    res = plain.trainer.train_to_target()
    assert kept.result.steps == res.steps == 6 and torch.equal(kept.trainer.prompt(), plain.trainer.prompt())
    assert [(p.step, p.val_accuracy) for p in kept.result.curve] == [
        (p.step, p.val_accuracy) for p in res.curve
    ]
    no = RaceSettings(candidates=1, fallback_at=None)
    off = train_from_start(start(no), no)
    assert off.fallback is None and torch.equal(off.trainer.prompt(), plain.trainer.prompt())
