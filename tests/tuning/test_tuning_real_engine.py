"""The worker's real engine without a model: how it reads a job's files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from tuning_helpers import write_jsonl

from prompttuner.runtime.engine import JobPayload
from prompttuner.runtime.real_engine import RealEngine


def test_a_job_with_a_validation_file_reads_both_and_leaves_no_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the engine's temporary folders go
    rows = [{"text": f"text {i}", "label": ("negative", "positive")[i % 2]} for i in range(10)]
    train = write_jsonl(tmp_path / "files" / "train.jsonl", rows[:8])
    test = write_jsonl(tmp_path / "files" / "test.jsonl", rows[8:])
    job = JobPayload(
        job_id="job-1",
        model="smollm2-135m",
        train_path=str(train),
        test_path=str(test),
        labels=("negative", "positive"),
        max_steps=1,
    )
    task = RealEngine()._task(job)
    assert [e.text for e in task.train] == [r["text"] for r in rows[:8]]
    assert [e.text for e in task.test] == [r["text"] for r in rows[8:]]
    assert task.name == "job-1" and task.labels == ["negative", "positive"]
    assert list(scratch.glob("pt-job-1-*")) == []  # the folder of links to the two files is gone
    assert train.is_file() and test.is_file()  # and the job's own files are untouched
