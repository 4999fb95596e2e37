#!/usr/bin/env bash
# Fuzzes the HTTP API from its own served OpenAPI spec with schemathesis (property-based):
# every operation, generated valid and invalid inputs, as an org admin. Fails on any 5xx or
# response that does not match the spec. Usage: scripts/fuzz-api.sh [max-examples]
# schemathesis keeps its crash cache in .schemathesis/ (and Hypothesis its examples in .hypothesis/)
# under the directory it runs in: that is FUZZ_CACHE, outside the repository; run `st replay` there.
set -euo pipefail
cd "$(dirname "$0")/.."

EXAMPLES="${1:-100}"
VENV="${SCHEMATHESIS_VENV:-/tmp/st-venv}"
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q schemathesis
fi

PROFILE="${FUZZ_PROFILE:-release}"
if [ "$PROFILE" = release ]; then cargo build --release --bin reap3r; else cargo build --bin reap3r; fi
BIN="${CARGO_TARGET_DIR:-$PWD/target}/$([ "$PROFILE" = release ] && echo release || echo debug)/reap3r"
FUZZ_CACHE="${FUZZ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reap3r-fuzz}"
mkdir -p "$FUZZ_CACHE"
DATA="$(mktemp -d)"
PORT="${FUZZ_PORT:-18080}"
export REAP3R_DATA_DIR="$DATA" REAP3R_HTTP_ADDR="127.0.0.1:$PORT" REAP3R_QUIC_ADDR="127.0.0.1:0"
# An admin from the CLI, then a token from the API, as an operator would.
printf 'fuzz-password-long-enough' | "$BIN" user create --email fuzz@example.com --role org_admin --password-stdin >/dev/null
"$BIN" serve >"$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/api/health" >/dev/null && break; sleep 0.1; done
TOKEN=$(curl -fs -X POST "http://127.0.0.1:$PORT/api/auth/login" -H 'content-type: application/json' \
  -d '{"email":"fuzz@example.com","password":"fuzz-password-long-enough"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# logout and session/user revocation would end the fuzzer's own session mid-run.
STATUS=0
(cd "$FUZZ_CACHE" && "$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/api/openapi.json" \
  --url "http://127.0.0.1:$PORT" \
  -H "Authorization: Bearer $TOKEN" \
  --checks all \
  --exclude-path /api/auth/logout \
  --exclude-path-regex 'revoke-all|suspend|/api/admin/sessions/' \
  --max-examples "$EXAMPLES" \
  --seed 1) || STATUS=$?
if grep -q ' 5[0-9][0-9] ' "$DATA/serve.log"; then echo "server logged a 5xx" >&2; exit 1; fi
exit $STATUS
