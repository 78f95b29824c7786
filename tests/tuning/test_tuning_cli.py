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
