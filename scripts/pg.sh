#!/usr/bin/env bash
# pg.sh — a private PostgreSQL cluster for development and tests, built from
# the machine's own binaries in ./.data/pg and listening on loopback only.
#
#   scripts/pg.sh start   start (or reuse) the cluster; prints nothing else
#   scripts/pg.sh stop    stop it
#   scripts/pg.sh status  exit 0 when it is running
#   scripts/pg.sh url     print the DATABASE_URL of the development database
#
# initdb refuses to run as root, so when root the cluster belongs to the
# "postgres" system user. PGPORT overrides the port (default 54329).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="$ROOT/.data/pg"
PORT="${PGPORT:-54329}"
DB="${PGDATABASE_NAME:-interviews}"

find_bin() {
	local d
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
	done
	return 1
}

PGBIN="$(find_bin || true)"
if [ -z "$PGBIN" ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "pg.sh: PostgreSQL server binaries missing; installing Debian's postgresql" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 ||
			{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
		PGBIN="$(find_bin)"
	else
		echo "pg.sh: no PostgreSQL server binaries under /usr/lib/postgresql; install the postgresql package" >&2
		exit 1
	fi
fi

# as runs a command as the cluster's owner.
as() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# When root, the postgres user must be able to reach the data directory; a
# checkout under a private home directory is not reachable, so fall back to
# a directory of our own under /tmp keyed by the checkout's path.
if [ "$(id -u)" = 0 ]; then
	mkdir -p "$ROOT/.data"
	if ! runuser -u postgres -- test -x "$ROOT/.data"; then
		DATA="/tmp/interviews-pg-$(echo "$ROOT" | md5sum | cut -c1-8)"
	fi
fi

running() { as "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

url() { echo "postgres://postgres@127.0.0.1:$PORT/$DB?sslmode=disable"; }

start() {
	mkdir -p "$ROOT/.data"
	if [ ! -f "$DATA/PG_VERSION" ]; then
		mkdir -p "$DATA"
		if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$DATA"; fi
		chmod 700 "$DATA"
		# trust is acceptable: the cluster listens on loopback and a private socket directory only.
		as "$PGBIN/initdb" -D "$DATA" -U postgres -A trust --no-sync -E UTF8 >"$ROOT/.data/initdb.log" 2>&1 ||
			{ cat "$ROOT/.data/initdb.log" >&2; exit 1; }
	fi
	if ! running; then
		as "$PGBIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start -o \
			"-p $PORT -k $DATA -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null ||
			{ tail -n 20 "$DATA/server.log" >&2; exit 1; }
	fi
	if ! as "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'" postgres | grep -q 1; then
		as "$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
	fi
}

stop() {
	if [ -f "$DATA/PG_VERSION" ] && running; then
		as "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
	fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) running ;;
url) url ;;
*) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
