#!/usr/bin/env bash
# pg.sh — private PostgreSQL clusters for development and tests, built from
# the machine's own binaries and listening on loopback only. There are two,
# so that neither changes the other:
#
#   dev    ./.data/pg       `make run`'s database, with PostgreSQL's durable
#                           defaults (fsync, synchronous_commit and
#                           full_page_writes on)
#   test   ./.data/pg-test  `make test`'s and `make bench`'s, with durability
#                           turned off (fsync, synchronous_commit and
#                           full_page_writes off): fast, and lost on a crash
#
#   scripts/pg.sh [--test] start   start (or reuse) the cluster; prints nothing else
#   scripts/pg.sh [--test] stop    stop it
#   scripts/pg.sh [--test] status  exit 0 when it is running
#   scripts/pg.sh [--test] url     print the DATABASE_URL of its database
#
# --test, or PG_CLUSTER=test in the environment (the Makefile sets it for the
# tests, so that what they run picks the same cluster), selects the test
# cluster; the default is dev.
#
# Ports: 54329 (dev) and 54339 (test) by default. When that port is taken —
# another checkout's cluster, any other process — start takes the next free
# one, and the port a cluster last started on is remembered in
# .data/pg.port (.data/pg-test.port), so url, stop and status find it and
# the URL stays the same from one start to the next. PGPORT overrides the
# port. Missing server binaries are installed by scripts/deps.sh postgres
# (as root, Debian's postgresql). initdb refuses to run as root, so when
# root the clusters belong to the "postgres" system user.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CLUSTER="${PG_CLUSTER:-dev}"
if [ "${1:-}" = --test ]; then CLUSTER=test; shift; fi
case "$CLUSTER" in
dev) NAME=pg DEFAULT_PORT=54329 ;;
test) NAME=pg-test DEFAULT_PORT=54339 ;;
*) echo "pg.sh: PG_CLUSTER=$CLUSTER: want dev or test" >&2; exit 2 ;;
esac
DATA="$ROOT/.data/$NAME"
PORTFILE="$ROOT/.data/$NAME.port"
DB="${PGDATABASE_NAME:-interviews}"

# Server settings. The dev cluster keeps PostgreSQL's durable defaults; only
# the test cluster trades durability for speed, explicitly.
SETTINGS="-c listen_addresses=127.0.0.1 -c max_connections=300"
INITDB_FLAGS=""
if [ "$CLUSTER" = test ]; then
	SETTINGS="$SETTINGS -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
	INITDB_FLAGS="--no-sync"
fi

find_bin() {
	local d
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
	done
	return 1
}

PGBIN="$(find_bin || true)"
if [ -z "$PGBIN" ]; then
	"$ROOT/scripts/deps.sh" postgres
	PGBIN="$(find_bin)"
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
		DATA="/tmp/interviews-$NAME-$(echo "$ROOT" | md5sum | cut -c1-8)"
	fi
fi

running() { [ -f "$DATA/PG_VERSION" ] && as "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

# port prints the cluster's port: PGPORT, else the port the running server
# listens on (line 4 of postmaster.pid), else the remembered one, else the
# default.
port() {
	local p=""
	if [ -n "${PGPORT:-}" ]; then echo "$PGPORT"; return; fi
	if running; then p="$(sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true)"; fi
	if [ -z "$p" ] && [ -s "$PORTFILE" ]; then p="$(cat "$PORTFILE")"; fi
	echo "${p:-$DEFAULT_PORT}"
}

# port_free reports whether nothing accepts connections on 127.0.0.1:$1.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

url() { echo "postgres://postgres@127.0.0.1:$(port)/$DB?sslmode=disable"; }

psql_c() { as "$PGBIN/psql" -h 127.0.0.1 -p "$(port)" -U postgres -tAc "$1" postgres; }

# launch starts the server on a free port, from the remembered (or default)
# one upwards, and remembers it. A port taken between the check and the
# bind (another checkout starting at the same moment) moves it on to the
# next one. PGPORT is used as given.
launch() {
	local p tries=0 size
	p="$(port)"
	while :; do
		if [ -z "${PGPORT:-}" ]; then
			local first="$p"
			until port_free "$p"; do
				p=$((p + 1))
				if [ "$p" -ge $((first + 100)) ]; then echo "pg.sh: no free port in $first..$p" >&2; exit 1; fi
			done
		fi
		size="$(stat -c %s "$DATA/server.log" 2>/dev/null || echo 0)"
		if as "$PGBIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start -o "-p $p -k $DATA $SETTINGS" >/dev/null; then
			echo "$p" >"$PORTFILE"
			return 0
		fi
		tries=$((tries + 1))
		if [ -z "${PGPORT:-}" ] && [ "$tries" -lt 5 ] && tail -c +"$((size + 1))" "$DATA/server.log" | grep -q "already in use"; then
			p=$((p + 1))
			continue
		fi
		tail -n 20 "$DATA/server.log" >&2
		if [ -n "${PGPORT:-}" ] && ! port_free "$p"; then echo "pg.sh: PGPORT=$p is taken" >&2; fi
		exit 1
	done
}

start() {
	mkdir -p "$ROOT/.data"
	if [ ! -f "$DATA/PG_VERSION" ]; then
		mkdir -p "$DATA"
		if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$DATA"; fi
		chmod 700 "$DATA"
		# trust is acceptable: the cluster listens on loopback and a private socket directory only.
		as "$PGBIN/initdb" -D "$DATA" -U postgres -A trust $INITDB_FLAGS -E UTF8 >"$ROOT/.data/initdb-$NAME.log" 2>&1 ||
			{ cat "$ROOT/.data/initdb-$NAME.log" >&2; exit 1; }
	fi
	if running && [ "$CLUSTER" = dev ] && [ "$(psql_c 'SHOW fsync' 2>/dev/null || true)" = off ]; then
		# Started by an older pg.sh, which ran the dev cluster without durability.
		echo "pg.sh: the dev cluster runs with fsync off; restarting it with the durable defaults" >&2
		as "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
	fi
	if running; then
		port >"$PORTFILE"
	else
		launch
	fi
	if ! psql_c "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1; then
		as "$PGBIN/createdb" -h 127.0.0.1 -p "$(port)" -U postgres "$DB"
	fi
}

stop() {
	if running; then
		as "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
	fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) running ;;
url) url ;;
*) echo "usage: $0 [--test] start|stop|status|url" >&2; exit 2 ;;
esac
