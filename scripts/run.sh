#!/usr/bin/env bash
# run.sh — what `make run` does after building: start the controller with
# the local provider and the simulated interviewer against the private
# PostgreSQL, after printing a development token and the URLs.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

mkdir -p .data
if [ ! -s .data/jwt-secret ]; then
	head -c 32 /dev/urandom | base64 | tr -d '\n=' >.data/jwt-secret
fi
export JWT_SECRET="$(cat .data/jwt-secret)"
export DATABASE_URL="${DATABASE_URL:-$(scripts/pg.sh url)}"
export LISTEN_ADDR="${LISTEN_ADDR:-127.0.0.1:8080}"
export PROVIDER=local REALTIME="${REALTIME:-simulated}"
export DEMO="${DEMO:-true}" # the demo page at /demo/
export WEBHOOK_ALLOW_PRIVATE="${WEBHOOK_ALLOW_PRIVATE:-true}" # local receivers over http
export SESSIONVM_BIN="$ROOT/bin/sessionvm"

TENANT="${TENANT:-$(cat .data/dev-tenant 2>/dev/null || true)}"
if [ -z "$TENANT" ]; then
	TENANT="$(cat /proc/sys/kernel/random/uuid)"
	echo "$TENANT" >.data/dev-tenant
fi
TOKEN="$(bin/controller token -tenant "$TENANT" -role admin -ttl 720h)"
echo "$TOKEN" >.data/dev-token
PORT="${LISTEN_ADDR##*:}"

cat <<MSG

  Interview control plane (local provider, simulated interviewer)
  demo page  http://127.0.0.1:$PORT/demo/   (paste the dev token below into it)
  API        http://127.0.0.1:$PORT/v1
  health     http://127.0.0.1:$PORT/healthz   readiness http://127.0.0.1:$PORT/readyz
  metrics    http://127.0.0.1:$PORT/metrics
  database   $DATABASE_URL
  tenant     $TENANT
  dev token  (admin, 30 days; also in .data/dev-token)
$TOKEN

  Try:  export TOKEN=\$(cat .data/dev-token)   then follow the README walkthrough.
  Webhooks: \`make webhook-receiver\` in another terminal registers a local receiver and prints each event.
  Stop: Ctrl-C (the session VMs end with the controller); make pg-stop stops PostgreSQL.

MSG
exec bin/controller serve
