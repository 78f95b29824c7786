#!/usr/bin/env bash
# Set up (if needed) and run every check CI runs: lint, types, the default test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy src/prompttuner
.venv/bin/python -m pytest -q "$@"
