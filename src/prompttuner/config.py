"""Where PromptTuner keeps things on disk.

- ``PROMPTTUNER_HOME`` (default ``~/.prompttuner``): all state of the service (database, uploaded data,
  checkpoints, tuned prompts, the default Prompt Bank).  A fresh folder is a fresh service.
- ``PROMPTTUNER_CACHE`` (default ``~/.cache/prompttuner``): derived files that are safe to delete, such as
  the safetensors copy of a GGUF model.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_DATA = Path(__file__).resolve().parent / "data"  # small files bundled with the package


def home() -> Path:
    p = Path(os.environ.get("PROMPTTUNER_HOME", "~/.prompttuner")).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def cache_dir() -> Path:
    p = Path(os.environ.get("PROMPTTUNER_CACHE", "~/.cache/prompttuner")).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def repo_root() -> Path:
    """The checkout this package was imported from (src layout: <root>/src/prompttuner)."""
    return Path(__file__).resolve().parents[2]


def shared_data() -> Path:
    """The shared data folder: ``$PROMPTTUNER_SHARED_DATA`` or ``<repo root>/../shared/data``.

    Benchmarks and tests may read it; the demo and default workloads use copies bundled in ``REPO_DATA``.
    """
    env = os.environ.get("PROMPTTUNER_SHARED_DATA")
    p = Path(env).expanduser() if env else repo_root().parent / "shared" / "data"
    if not p.is_dir():
        raise FileNotFoundError(
            f"shared data folder not found at {p}; set PROMPTTUNER_SHARED_DATA to the folder that holds "
            "tasks/, traces/ and profiles/"
        )
    return p
