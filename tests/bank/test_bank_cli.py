"""The ``prompttuner bank`` commands that need no LLM: add, list, rm, verify, and their error messages."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from bank_helpers import make_prompt
from typer.testing import CliRunner

from prompttuner.cli import app
from prompttuner.tuning import save_prompt

runner = CliRunner()


def _prompt_file(tmp_path: Path, name: str, t: torch.Tensor, **meta: object) -> Path:
    base = {"model": "toy", "labels": ["negative", "positive"], "description": "Sentiment of reviews."}
    base.update(meta)
    return save_prompt(tmp_path / name, t, base)


def test_add_list_verify_rm(tmp_path: Path) -> None:
    bank = tmp_path / "bank"
    f = _prompt_file(tmp_path, "p1", make_prompt("sentiment", 1), steps=40, accuracy=0.8, task="sst2")
    r = runner.invoke(app, ["bank", "add", "--bank", str(bank), "--prompt", str(f), "--json"])
    assert r.exit_code == 0, r.output
    entry = json.loads(r.stdout)
    assert (entry["model"], entry["task"], entry["steps"], entry["labels"]) == (
        "toy",
        "sst2",
        40,
        ["negative", "positive"],
    )
    r = runner.invoke(app, ["bank", "list", "--bank", str(bank), "--json"])
    assert r.exit_code == 0 and [e["id"] for e in json.loads(r.stdout)["entries"]] == [entry["id"]]
    r = runner.invoke(app, ["bank", "verify", "--bank", str(bank)])
    assert r.exit_code == 0
    r = runner.invoke(app, ["bank", "rm", "--bank", str(bank), entry["id"]])
    assert r.exit_code == 0
    r = runner.invoke(app, ["bank", "list", "--bank", str(bank), "--json"])
    assert json.loads(r.stdout)["count"] == 0


def test_clear_errors(tmp_path: Path) -> None:
    bank = tmp_path / "bank"
    r = runner.invoke(app, ["bank", "list", "--bank", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "no Prompt Bank" in r.output
    f = _prompt_file(tmp_path, "p1", make_prompt("topic", 2))
    assert runner.invoke(app, ["bank", "add", "--bank", str(bank), "--prompt", str(f)]).exit_code == 0
    wide = _prompt_file(tmp_path, "p2", torch.zeros(4, 48))  # same model name, other embedding width
    r = runner.invoke(app, ["bank", "add", "--bank", str(bank), "--prompt", str(wide)])
    assert r.exit_code == 2 and "embed_dim" in r.output
    r = runner.invoke(app, ["bank", "rm", "--bank", str(bank), "nope"])
    assert r.exit_code == 2 and "no bank entry" in r.output
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a tensor")
    r = runner.invoke(app, ["bank", "add", "--bank", str(bank), "--prompt", str(bad), "--model", "toy"])
    assert r.exit_code == 2 and "safetensors" in r.output
    # a tensor file damaged inside the bank: verify names it and fails
    victim = next((bank / "tensors").rglob("*.safetensors"))
    victim.write_bytes(victim.read_bytes()[:-8] + b"corrupt!")
    r = runner.invoke(app, ["bank", "verify", "--bank", str(bank)])
    assert r.exit_code == 1 and "checksum" in r.output
