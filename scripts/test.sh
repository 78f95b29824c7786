#!/usr/bin/env bash
# Set up (if needed) and run every check CI runs: lint, types, import contracts, the default test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the PostgreSQL tests' server (Debian's postgresql): installed here when missing; tests/conftest.py starts
# a private cluster for the session.  Where it cannot be installed those tests are skipped, loudly; in CI
# that is an error.
if ! bash scripts/postgres.sh install; then
  [ "${CI:-}" = true ] && { echo "test.sh: CI needs PostgreSQL for its tests" >&2; exit 1; }
  echo "test.sh: warning: no PostgreSQL; the PostgreSQL tests will be skipped" >&2
fi
# the dashboard test's headless browser (Debian's chromium + chromium-driver, scripts/browser.sh), as above
bash scripts/browser.sh install || { [ "${CI:-}" = true ] && { echo "test.sh: CI needs chromium for the dashboard test" >&2; exit 1; }; echo "test.sh: warning: no chromium; the dashboard's browser tests will be skipped" >&2; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy src/prompttuner
.venv/bin/lint-imports  # the architecture: layers point down, no import cycles (contracts in pyproject.toml)
.venv/bin/python -m pytest -q "$@"
