#!/usr/bin/env bash
# A private PostgreSQL server for the tests and for trying the service on PostgreSQL (Debian's packages).
#   bash scripts/postgres.sh install         install Debian's `postgresql` when its programs are missing
#                                            (quiet, idempotent; needs root and apt-get)
#   bash scripts/postgres.sh start DIR PORT  a new cluster in DIR (made if missing), on 127.0.0.1:PORT only;
#                                            prints its SQLAlchemy URL (superuser `postgres`, a random
#                                            password kept in DIR/password)
#   bash scripts/postgres.sh stop DIR        stop that cluster (DIR and its data stay; delete it yourself)
# PostgreSQL refuses to run as root: as root the cluster runs as the `postgres` user, who owns DIR.
# The cluster is tuned for tests, not for keeping data: fsync is off.
# PG_LIBDIR (default /usr/lib/postgresql) is where Debian keeps each version's programs (VERSION/bin).
set -euo pipefail
PG_LIBDIR=${PG_LIBDIR:-/usr/lib/postgresql}

die() { echo "postgres.sh: $*" >&2; exit 2; }

# The folder of the newest PostgreSQL's programs (Debian keeps them off PATH), or initdb's on PATH.
pg_bin() {
  local d
  for d in $(ls -d "$PG_LIBDIR"/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/pg_isready" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

# Run a PostgreSQL program as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" = 0 ]; then "$(runuser_bin)" -u postgres -- "$@"; else "$@"; fi
}

runuser_bin() {  # util-linux's runuser, also where root's PATH lacks the sbin folders
  command -v runuser 2>/dev/null || { [ -x /usr/sbin/runuser ] && echo /usr/sbin/runuser; } || echo /sbin/runuser
}

install() {
  pg_bin >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed and we are not root: run 'apt-get install postgresql'"
  command -v apt-get >/dev/null || die "PostgreSQL is not installed and there is no apt-get to install it"
  local log
  log=$(mktemp)
  echo "postgres.sh: installing Debian's postgresql package (apt-get)..." >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      postgresql; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    # a package script can fail (starting the system's own cluster, say) with the programs in place
    pg_bin >/dev/null || { rm -f "$log"; die "apt-get install postgresql failed"; }
    echo "postgres.sh: apt-get reported an error, but the PostgreSQL programs are installed" >&2
  fi
  rm -f "$log"
  pg_bin >/dev/null || die "postgresql installed but initdb was not found under $PG_LIBDIR"
}

start() {
  local dir=${1:?usage: postgres.sh start DIR PORT} port=${2:?usage: postgres.sh start DIR PORT} bin
  bin=$(pg_bin) || die "PostgreSQL is not installed (bash scripts/postgres.sh install)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    "$(runuser_bin)" -u postgres -- test -w "$dir" \
      || die "the postgres user cannot reach $dir (its parent folders need o+x): choose a folder under /tmp"
  fi
  chmod 700 "$dir"
  if [ ! -s "$dir/data/PG_VERSION" ]; then
    (umask 077 && od -An -N18 -tx1 /dev/urandom | tr -d ' \n' >"$dir/password")
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/password"; fi
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$dir/password" --auth-local=trust \
      --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 \
      || { tail -n 30 "$dir/initdb.log" >&2; die "initdb failed"; }
  fi
  # -W: do not wait here; pg_isready below is the one bounded wait
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -W -o "-c listen_addresses=127.0.0.1 -p $port \
    -k '$dir' -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start \
    >/dev/null || { tail -n 30 "$dir/server.log" >&2 2>/dev/null; die "pg_ctl start failed"; }
  local i
  for i in $(seq 1 300); do  # up to about 30 s
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 && break
    if [ "$i" = 300 ]; then tail -n 30 "$dir/server.log" >&2; die "the server did not accept connections"; fi
    sleep 0.1
  done
  echo "postgresql+psycopg://postgres:$(cat "$dir/password")@127.0.0.1:$port/postgres"
}

stop() {
  local dir=${1:?usage: postgres.sh stop DIR} bin
  bin=$(pg_bin) || die "PostgreSQL is not installed"
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
}

case "${1:-}" in
  install) install ;;
  start) start "${@:2}" ;;
  stop) stop "${@:2}" ;;
  *) die "usage: postgres.sh install | start DIR PORT | stop DIR" ;;
esac
