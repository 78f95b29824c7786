#!/usr/bin/env bash
# The headless browser of the dashboard test (tests/test_dashboard.py): Debian's chromium and
# chromium-driver, installed when /usr/bin/chromium or /usr/bin/chromedriver is missing.
#   bash scripts/browser.sh install    quiet and idempotent; needs root and apt-get (exit 2 without them)
#   bash scripts/browser.sh check      exit 0 when both programs are there and answer --version
# The test drives them with Selenium, offline (SE_OFFLINE=true): nothing downloads a browser or a driver.
set -euo pipefail
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}

die() { echo "browser.sh: $*" >&2; exit 2; }

check() {
  [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ] || return 1
  "$CHROMEDRIVER" --version >/dev/null 2>&1 || return 1
}

install() {
  check && return 0
  [ "$(id -u)" = 0 ] || die "chromium is not installed and we are not root: run 'apt-get install chromium chromium-driver'"
  command -v apt-get >/dev/null || die "chromium is not installed and there is no apt-get to install it"
  local log
  log=$(mktemp)
  echo "browser.sh: installing Debian's chromium and chromium-driver (apt-get)..." >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    rm -f "$log"
    die "apt-get install chromium chromium-driver failed"
  fi
  rm -f "$log"
  check || die "chromium-driver installed but $CHROMEDRIVER does not run"
}

case "${1:-}" in
  install) install ;;
  check) check ;;
  *) die "usage: browser.sh install|check" ;;
esac
