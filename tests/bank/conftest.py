"""Fixtures for Prompt Bank tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prompttuner.bank import features
from prompttuner.bank.store import PromptBank


@pytest.fixture(autouse=True)
def _hashing_embedder() -> Iterator[None]:
    """No sentence-embedding model in unit tests: the lexical embedder has the same interface."""
    features.set_default_embedder(features.HashingEmbedder())
    yield
    features.set_default_embedder(None)


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[PromptBank]:
    b = PromptBank(tmp_path / "bank")
    yield b
    b.close()
