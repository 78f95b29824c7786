"""Task loading and validation: every problem is one TaskDataError naming the file, line and problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tuning_helpers import write_jsonl

from prompttuner.config import shared_data
from prompttuner.tuning import TaskDataError, load_task


class WordTokenizer:
    """Counts whitespace words as tokens: enough to test the context-length check without a model."""

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, Any]:
        return {"input_ids": [list(range(len(t.split()))) for t in texts]}


def _rows(n: int = 4) -> list[dict[str, str]]:
    return [{"text": f"text {i}", "label": "a" if i % 2 else "b"} for i in range(n)]


def test_shared_task_folder_loads_with_meta_labels() -> None:
    task = load_task(shared_data() / "tasks" / "rte")
    assert task.name == "rte"
    assert task.labels == ["entailment", "not_entailment"]
    assert len(task.train) == 2000 and len(task.test) == 277
    assert task.train[0].text_a and task.train[0].text_b
    assert task.description  # generated when meta has none


def test_single_jsonl_file_is_split_deterministically(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "mine.jsonl", _rows(40))
    a, b = load_task(f), load_task(f)
    assert [e.text for e in a.test] == [e.text for e in b.test]
    assert len(a.test) == 8 and len(a.train) == 32
    assert not {e.text for e in a.test} & {e.text for e in a.train}
    assert a.labels == ["b", "a"]  # order of first appearance


def test_csv_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.csv"
    f.write_text("text,label\n" + "".join(f'"hello, {i}",{"x" if i % 2 else "y"}\n' for i in range(10)))
    task = load_task(f, labels=["x", "y"])
    assert task.labels == ["x", "y"]
    assert len(task.train) + len(task.test) == 10
    assert task.train[0].text.startswith("hello, ")


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (b"", None, "file is empty"),
        (b'{"text": "x", "label": "a"}\n{"text": "y"}\n', 2, "missing field 'label'"),
        (b'{"label": "a"}\n', 1, "missing field 'text'"),
        (b'{"text": "x", "label": "a"}\n{"text": "y", "label": "a"\n', 2, "not valid JSON"),
        (b'{"text": "x", "label": "a"}\n{"text": "\xff\xfe", "label": "a"}\n', 2, "not valid UTF-8"),
        (b'{"text": "", "label": "a"}\n', 1, "field 'text' is empty"),
        (b'["x", "a"]\n', 1, "expected an object"),
    ],
)
def test_malformed_rows(tmp_path: Path, content: bytes, line: int | None, problem: str) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_bytes(content)
    with pytest.raises(TaskDataError) as info:
        load_task(f)
    msg = str(info.value)
    assert str(f) in msg and problem in msg
    if line is not None:
        assert f"line {line}" in msg


def test_label_not_in_label_list(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "t" / "train.jsonl", _rows(6) + [{"text": "z", "label": "c"}])
    (tmp_path / "t" / "meta.json").write_text(json.dumps({"labels": ["a", "b"]}))
    with pytest.raises(TaskDataError, match=r"train.jsonl, line 7: label 'c' is not one of"):
        load_task(tmp_path / "t")


def test_too_few_examples_per_label(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "few.jsonl",
        [{"text": f"t{i}", "label": "a"} for i in range(10)] + [{"text": "u", "label": "b"}],
    )
    with pytest.raises(TaskDataError, match=r"too few training examples per label.*'b': 1"):
        load_task(f, min_per_label=2)


def test_text_longer_than_context(tmp_path: Path) -> None:
    rows = _rows(6) + [{"text": "word " * 50, "label": "a"}]
    f = write_jsonl(tmp_path / "long" / "train.jsonl", rows)
    with pytest.raises(
        TaskDataError, match=r"line 7: text is 50 tokens, longer than the model's context \(20\)"
    ):
        load_task(f.parent, tokenizer=WordTokenizer(), max_length=20)
    assert load_task(f.parent, tokenizer=WordTokenizer(), max_length=64).train  # fits: no error


def test_missing_folder_and_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(TaskDataError, match="no such file or folder"):
        load_task(tmp_path / "nope")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(TaskDataError, match="no train.jsonl"):
        load_task(tmp_path / "empty_dir")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(TaskDataError, match="unsupported file type"):
        load_task(tmp_path / "x.txt")
