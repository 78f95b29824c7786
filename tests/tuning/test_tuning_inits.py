"""Init values without a model: the command-line forms, and that tuning/ knows nothing of the layers above."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import prompttuner.tuning
from prompttuner.tuning import FileInit, RandomInit, TextInit, TuningConfig, parse_init


def test_parse_init_reads_the_command_line_forms_and_spec_gives_them_back(tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.safetensors"
    prompt.write_bytes(b"")
    cases = {
        "random": RandomInit(),
        "text": TextInit(),
        "text:Is it positive?": TextInit("Is it positive?"),
        str(prompt): FileInit(str(prompt)),
    }
    for spec, init in cases.items():
        assert parse_init(spec) == init and init.spec == spec
    assert TuningConfig().init == RandomInit()
    assert [parse_init(s).kind for s in cases] == ["random", "text", "text", "warm"]


@pytest.mark.parametrize("spec", ["nonsense", "bank:/some/bank", "bank", "tensor"])
def test_parse_init_refuses_what_it_does_not_know(spec: str) -> None:
    """The bank's form is the CLI's to resolve through the bank (tuning knows no bank)."""
    with pytest.raises(ValueError, match="unknown init"):
        parse_init(spec)


def test_tuning_imports_nothing_above_it() -> None:
    """Layers point down (cli/api > service > runtime|sim > state > scheduler > bank > tuning > core): no
    module of tuning/, the trainer included, imports the Prompt Bank or any other layer above it, not even
    inside a function (the trainer's former ``from prompttuner import bank`` hook fails this)."""
    allowed = {"tuning", "core", "config"}  # config: paths and settings, a leaf that imports no layer
    root = Path(prompttuner.tuning.__file__).parent
    found: list[str] = []
    for f in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "prompttuner" and (len(parts) < 2 or parts[1] not in allowed):
                    found.append(f"{f.name}:{node.lineno} imports {name}")
    assert (root / "trainer.py").is_file() and found == []
