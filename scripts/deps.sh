#!/usr/bin/env bash
# deps.sh — install a tool the build or the tests need, when it is missing.
# Every command is a no-op when the tool is already there, so the Makefile
# runs it before each target that uses the tool.
#
#   scripts/deps.sh cc         a C compiler, for the race detector (cgo)
#   scripts/deps.sh postgres   PostgreSQL's server binaries, for scripts/pg.sh
#   scripts/deps.sh promtool   promtool, from Debian's prometheus package,
#                              without starting the prometheus daemon
#   scripts/deps.sh chromium   Debian's chromium (and fonts-liberation) for
#                              the browser test; $CHROMIUM overrides the path
#   scripts/deps.sh e2e        the browser test's npm packages (npm ci in e2e/,
#                              pinned by e2e/package-lock.json)
#
# Packages come from apt-get, so installing needs root on Debian (or Ubuntu);
# otherwise a missing tool is reported with the command that installs it.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"

die() { echo "deps.sh: $*" >&2; exit 1; }

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

# need_root fails with what to install when this process cannot install it.
need_root() {
	local what="$1" cmd="$2"
	can_apt && return 0
	die "$what is missing. Install it with (as root):
    $cmd
or run this again as root on Debian/Ubuntu, where it installs it."
}

# apt_install installs packages without their recommends (daemons the tests
# do not need), refreshing the package lists once when they are stale. It
# waits for the dpkg lock rather than failing when another install runs.
# A package's postinst would start its daemon through invoke-rc.d (or
# deb-systemd-invoke) unless policy-rc.d forbids it: for the install, a
# policy-rc.d that denies every start is put in place when the machine has
# none. apt-get's output goes to .data/apt.log, shown when it fails.
apt_install() {
	export DEBIAN_FRONTEND=noninteractive
	local policy=/usr/sbin/policy-rc.d ours="" rc=0 log="$ROOT/.data/apt.log"
	local apt=(apt-get -y -q -o DPkg::Lock::Timeout=600)
	mkdir -p "$ROOT/.data"
	echo "deps.sh: installing $* (apt-get, log in .data/apt.log)" >&2
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# put here by scripts/deps.sh for an install only\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		ours=1
	fi
	{ "${apt[@]}" install --no-install-recommends "$@" ||
		{ "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "$@"; }; } >>"$log" 2>&1 || rc=$?
	if [ -n "$ours" ]; then rm -f "$policy"; fi
	if [ "$rc" != 0 ]; then
		tail -n 30 "$log" >&2
		die "apt-get install $* failed"
	fi
}

# promtool checks the alert rules and a live /metrics scrape. It comes with
# Debian's prometheus package, of which only that binary is wanted: the
# daemon is not started (see apt_install), recommends (node-exporter,
# another daemon) are skipped, and anything started anyway is stopped and
# disabled afterwards.
dep_promtool() {
	command -v promtool >/dev/null 2>&1 && return 0
	need_root promtool "apt-get install --no-install-recommends prometheus   (then stop the prometheus service it starts)"
	apt_install prometheus
	if [ -d /run/systemd/system ]; then
		systemctl disable --now prometheus.service >/dev/null 2>&1 || true
	elif [ -x /etc/init.d/prometheus ]; then
		/etc/init.d/prometheus stop >/dev/null 2>&1 || true
	fi
	if pgrep -x prometheus >/dev/null; then
		die "the prometheus daemon is running after the install; only promtool is wanted (stop it)"
	fi
	command -v promtool >/dev/null 2>&1 || die "the prometheus package installed no promtool"
	echo "deps.sh: $(command -v promtool): $(promtool --version 2>&1 | head -1)" >&2
}

# chromium is the browser the e2e test drives (headless; Chromium's
# recommends such as avahi-daemon and upower are daemons it does not need).
dep_chromium() {
	local path="${CHROMIUM:-/usr/bin/chromium}"
	[ -x "$path" ] && return 0
	if [ -n "${CHROMIUM:-}" ]; then die "CHROMIUM=$CHROMIUM is not an executable"; fi
	need_root Chromium "apt-get install --no-install-recommends chromium fonts-liberation"
	apt_install chromium fonts-liberation
	[ -x "$path" ] || die "the chromium package installed no $path"
}

# e2e installs the browser test's npm packages with Node's npm; Debian's
# nodejs and npm are installed first when the machine has no npm.
dep_e2e() {
	local stamp="$ROOT/e2e/node_modules/.package-lock.json"
	# npm ci writes node_modules/.package-lock.json; it is current when newer
	# than the lock file.
	if [ -d "$ROOT/e2e/node_modules/playwright-core" ] && [ "$stamp" -nt "$ROOT/e2e/package-lock.json" ]; then
		return 0
	fi
	if ! command -v npm >/dev/null 2>&1; then
		need_root "npm (Node.js)" "apt-get install --no-install-recommends nodejs npm"
		apt_install nodejs npm
	fi
	(cd "$ROOT/e2e" && npm ci --no-audit --no-fund --loglevel=error) >&2 || die "npm ci in e2e/ failed"
}

# cc is the C compiler that the race detector (cgo) needs.
dep_cc() {
	local cc
	cc="$(go env CC 2>/dev/null || true)"
	command -v "${cc:-gcc}" >/dev/null 2>&1 && return 0
	need_root "a C compiler (${cc:-gcc}, for go test -race)" "apt-get install --no-install-recommends gcc libc6-dev"
	apt_install gcc libc6-dev
}

# postgres installs Debian's PostgreSQL server binaries for scripts/pg.sh,
# without starting the machine-wide cluster the package creates.
dep_postgres() {
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && return 0
	need_root "PostgreSQL's server binaries" "apt-get install --no-install-recommends postgresql"
	apt_install postgresql
}

case "${1:-}" in
cc) dep_cc ;;
postgres) dep_postgres ;;
promtool) dep_promtool ;;
chromium) dep_chromium ;;
e2e) dep_e2e ;;
*) echo "usage: $0 cc|postgres|promtool|chromium|e2e" >&2; exit 2 ;;
esac
