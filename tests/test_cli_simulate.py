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
    assert set(summ["_versus_prompttuner"]) == {"infless", "reserved"}
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
    res = runner.invoke(app, ["simulate", "--init", "bank", "--bank-pairing", "guess"])
    assert res.exit_code == 2 and "--bank-pairing must be rank or independent" in res.output
    res = runner.invoke(app, ["simulate", "--init", "bank", "--bank-deadline", "late"])
    assert res.exit_code == 2 and "--bank-deadline must be random or own" in res.output


def test_bank_pairing_changes_only_bank_jobs() -> None:
    """The two pairings give bank-init jobs other work (so other results) and random-init jobs the same."""

    def run(*extra: str) -> dict:
        args = ["simulate", "--jobs", "80", "--gpus", "a100:16", "--policies", "reserved", "--json"]
        res = runner.invoke(app, [*args, *extra])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)["reserved"]

    assert run("--bank-pairing", "independent") == run()
    assert run("--init", "bank", "--bank-pairing", "independent") != run("--init", "bank")


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


def test_trace_format_is_read_from_the_file_or_refused(tmp_path: Path) -> None:
    from prompttuner.sim.workload import trace_kind

    itp = tmp_path / "itp.csv"
    itp.write_text(
        "job_id,submission_time,duration,num_gpu\n" + "".join(f"j{i},{i * 7},10,1\n" for i in range(40))
    )
    azure = tmp_path / "azure.csv"
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,1,1\n")
    ef = tmp_path / "ef.csv"
    ef.write_text("job_id,submission_time,num_iteration,model_name,deadline,batch_size,num_gpu,duration\n")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert trace_kind(itp) == "itp" and trace_kind(azure) == "azure"
    args = ["simulate", "--jobs", "30", "--gpus", "a100:16", "--policies", "edf", "--json", "--trace"]
    res = runner.invoke(app, [*args, str(itp)])  # the default --workload poisson does not ignore it
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["_workload"]["arrivals"] == "itp"
    res = runner.invoke(app, [*args, str(ef)])
    assert res.exit_code == 2 and "--elasticflow-trace" in " ".join(res.output.split())
    res = runner.invoke(app, [*args, str(other)])
    assert res.exit_code == 2 and "cannot tell the arrival format" in " ".join(res.output.split())
    res = runner.invoke(app, [*args, str(itp), "--workload", "azure"])
    assert res.exit_code == 2 and "is a itp" in " ".join(res.output.split())
    res = runner.invoke(app, ["simulate", "--prediction", "lognormal:-1"])
    assert res.exit_code == 2 and "lognormal:SIGMA" in res.output


def test_a_violation_ratio_needs_ten_violating_jobs_on_both_sides() -> None:
    from prompttuner.sim.runner import versus

    def m(rate: float, declined: int, missed: int, cost: float) -> dict[str, float]:
        return {
            "slo_violation_rate": rate,
            "declined": declined,
            "missed": missed,
            "unfinished": 0,
            "cost": cost,
            "cost_per_met_job": cost / 100,
        }

    v = versus(
        {"prompttuner": m(0.02, 1, 1, 100.0), "infless": m(0.3, 0, 30, 130.0), "x": m(0.5, 25, 25, 90.0)}
    )
    assert v["infless"]["violation_ratio"] is None
    assert v["infless"]["violation_ratio_text"] == "n/a (30 vs 2 jobs)"
    assert v["infless"]["violation_pp"] == pytest.approx(28.0)
    assert v["infless"]["cost_ratio"] == pytest.approx(1.3)
    v = versus({"prompttuner": m(0.1, 5, 7, 100.0), "x": m(0.5, 25, 25, 90.0)})
    assert v["x"]["violation_ratio"] == pytest.approx(50 / 12) and v["x"]["violation_ratio_text"] == "4.17x"
