"""``prompttuner simulate``: the comparison table/JSON, output folder, and the ElasticFlow trace mode."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prompttuner.cli import app

runner = CliRunner()


def test_simulate_json_and_outputs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "simulate",
            "--jobs",
            "60",
            "--gpus",
            "a100:32",
            "--policies",
            "prompttuner,infless,reserved",
            "--out",
            str(out),
            "--json",
            "--sweep-slo",
            "1,2",
        ],
    )
    assert res.exit_code == 0, res.output
    summ = json.loads(res.stdout)
    for name in ("prompttuner", "infless", "reserved"):
        assert 0 <= summ[name]["slo_violation_rate"] <= 1 and summ[name]["cost_gpu_hours"] > 0
    assert set(summ["_ratios_to_prompttuner"]) == {"infless", "reserved"}
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["prompttuner"]["jobs"] == 60
    assert len((out / "jobs_infless.jsonl").read_text().splitlines()) == 60
    for png in ("gpus_over_time.png", "finish_vs_deadline_cdf.png", "sweep_slo_tightness.png"):
        assert (out / png).stat().st_size > 1000


def test_simulate_rejects_bad_input() -> None:
    res = runner.invoke(app, ["simulate", "--policies", "nope"])
    assert res.exit_code == 2 and "unknown policy" in res.output
    res = runner.invoke(app, ["simulate", "--workload", "/no/such/file.json"])
    assert res.exit_code == 2


def test_elasticflow_trace_mode_calls_the_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_run_trace(
        path: str, cluster: str = "n8g8", slot: int = 240, policy: str = "elasticflow"
    ) -> dict:
        calls.append((path, cluster, slot, policy))
        return {"ddl_satis_ratio": 0.5, "jobs": 3}

    fake = types.ModuleType("prompttuner.efsim")
    fake.run_trace = fake_run_trace  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prompttuner.efsim", fake)
    trace = tmp_path / "t.csv"
    trace.write_text("job_id,submission_time\n")
    res = runner.invoke(
        app,
        ["simulate", "--elasticflow-trace", str(trace), "--cluster", "n16g8", "--policy", "edf", "--json"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ddl_satis_ratio"] == 0.5
    assert calls == [(str(trace), "n16g8", 240, "edf")]


def test_simulate_model_mix_and_mixed_gpu_types(tmp_path: Path) -> None:
    out = tmp_path / "mix"
    res = runner.invoke(
        app,
        [
            "simulate",
            "--jobs",
            "40",
            "--models",
            "qwen2.5-0.5b:2,llama-3.1-8b:1",
            "--gpus",
            "a100:16,h100:16",
            "--policies",
            "prompttuner,infless",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (out / "jobs_prompttuner.jsonl").read_text().splitlines()]
    assert {r["model"] for r in rows} <= {"qwen2.5-0.5b", "llama-3.1-8b"}
    assert json.loads(res.stdout)["prompttuner"]["unfinished"] == 0
    bad = runner.invoke(app, ["simulate", "--models", "gpt-9:1"])
    assert bad.exit_code == 2 and "unknown base LLM" in bad.output
