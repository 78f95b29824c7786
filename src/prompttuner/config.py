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
