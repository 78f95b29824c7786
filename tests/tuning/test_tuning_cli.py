"""``prompttuner tune`` and ``predict`` end to end on a tiny slice; user errors are clean messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prompttuner.cli import app

runner = CliRunner()


def _flat(text: str) -> str:
    """Rich wraps long lines to the terminal width; compare messages with whitespace collapsed."""
    return " ".join(text.split())


@pytest.mark.model
def test_tune_then_predict(tiny_task_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "tune",
        "--model",
        "smollm2-135m",
        "--task",
        str(tiny_task_dir),
        "--out",
        str(out),
        "--steps",
        "2",
        "--eval-every",
        "1",
        "--eval-size",
        "4",
        "--batch-size",
        "4",
        "--virtual-tokens",
        "4",
        "--max-length",
        "32",
        "--seed",
        "1",
        "--json",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["steps"] == 2 and [p["step"] for p in doc["curve"]] == [0, 1, 2]
    assert (out / "prompt.safetensors").is_file()
    assert json.loads((out / "curve.json").read_text())["steps"] == 2
    res = runner.invoke(
        app, ["predict", "--prompt", str(out), "--text", "a wonderful film", "--text", "awful", "--json"]
    )
    assert res.exit_code == 0, res.output
    preds = json.loads(res.stdout)["predictions"]
    assert [p["text"] for p in preds] == ["a wonderful film", "awful"]
    assert {p["label"] for p in preds} <= {"negative", "positive"}


@pytest.mark.model
def test_bad_task_file_is_a_clean_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": "a"}\n{"text": "y"}\n')
    res = runner.invoke(app, ["tune", "--task", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "line 2: missing field 'label'" in _flat(res.output) and "Traceback" not in res.output


def test_unknown_model_and_corrupt_prompt_are_clean_errors(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        ["tune", "--model", str(tmp_path / "nope"), "--task", str(tmp_path), "--out", str(tmp_path / "o")],
    )
    assert res.exit_code == 2 and "not found; tried" in _flat(res.output)
    (tmp_path / "prompt.safetensors").write_bytes(b"junk")
    res = runner.invoke(app, ["predict", "--prompt", str(tmp_path), "--text", "hi"])
    assert res.exit_code == 2 and "not a readable safetensors file" in _flat(res.output)


@pytest.mark.model
def test_tune_from_a_bank_and_bad_inits(loaded: object, tiny_task_dir: Path, tmp_path: Path) -> None:
    """``--init bank:DIR`` asks the bank before the trainer exists (here its one entry is the job's own
    text init, which it does not beat: a cold start from the text init, recorded as the bank's fallback);
    an unknown init or a missing bank is a clean error."""
    from prompttuner.bank import PromptBank
    from prompttuner.tuning import TextInit, load_prompt, load_task, resolve_init

    task = load_task(tiny_task_dir)
    text = resolve_init(TextInit(), loaded, task, num_virtual_tokens=4)  # type: ignore[arg-type]
    with PromptBank(tmp_path / "bank") as bank:
        bank.add(text, model="smollm2-135m", task_description="own", labels=task.labels, task_name="own")
    base = ["tune", "--task", str(tiny_task_dir), "--steps", "1", "--eval-size", "4", "--batch-size", "4"]
    base += ["--virtual-tokens", "4", "--max-length", "32", "--json"]
    out = tmp_path / "run"
    res = runner.invoke(app, [*base, "--out", str(out), "--init", f"bank:{tmp_path / 'bank'}"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["init"] == f"bank:{tmp_path / 'bank'}"
    meta = load_prompt(out)[1]
    assert meta["bank_fallback"] == "text" and meta["lr"] == pytest.approx(0.03)
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "o2"), "--init", "nonsense"])
    assert res.exit_code == 2 and "unknown init 'nonsense'" in _flat(res.output) and "bank:DIR" in res.output
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "o3"), "--init", f"bank:{tmp_path / 'none'}"])
    assert res.exit_code == 2 and "no Prompt Bank at" in _flat(res.output) and "Traceback" not in res.output
