#!/usr/bin/env bash
# status-app.sh - the status-app workload against chronicle serving
# examples/status-app: register TEAM_COUNT teams, then wrk (bounded,
# 127.0.0.1 only) for DURATION each on
#   1. POST /commands/submit-update   (random team; durable, synchronous=FULL)
#   2. GET  /api/teams/{random id}
#   3. GET  /api/updates?limit=50
# and print requests/s, p50, p99 and non-2xx (which must be 0).
#
# Usage: bench/status-app.sh            start chronicle on a fresh database
#        bench/status-app.sh URL        use a server already running at URL
#                                       (loopback only; API_SECRET if it needs one)
# Knobs: CHRONICLE_BIN (./build/chronicle), DURATION (10s), CONNECTIONS (32),
# THREADS (2), TEAM_COUNT (1000). Installs only through scripts/deps.sh bench.
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/deps.sh bench
. bench/lib.sh

BIN=${CHRONICLE_BIN:-./build/chronicle}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
export TEAM_COUNT=${TEAM_COUNT:-1000}
export TEAM_PREFIX=bench-$(date +%s)-$$
export WRK_DIR=$PWD/bench/wrk
case $DURATION in
    [1-9]s | [1-5][0-9]s | 60s) ;;
    *) echo "status-app.sh: DURATION must be 1s..60s" >&2; exit 2 ;;
esac

bench_init status-app.sh
if [ $# -ge 1 ]; then
    base=${1%/}
    case $base in
        http://127.0.0.1:* | http://localhost:*) ;;
        *) die "refusing to load a non-loopback target: $base" ;;
    esac
else
    [ -x "$BIN" ] || die "$BIN not found; run 'make build' first"
    export API_SECRET=${API_SECRET:-bench-secret}
    BENCH_API_SECRET=$API_SECRET start_chronicle --app examples/status-app/app.json
fi
auth=()
[ -n "${API_SECRET:-}" ] && auth=(-H "Authorization: Bearer $API_SECRET")
curl -sf "${auth[@]}" "$base/ready" >/dev/null || die "server not ready at $base"

echo "== registering $TEAM_COUNT teams" >&2
seq 0 $((TEAM_COUNT - 1)) | timeout 300 xargs -P 8 -I{} curl -s -o /dev/null -w '%{http_code}\n' \
    "${auth[@]}" -H 'Content-Type: application/json' -X POST \
    -d "{\"team_id\":\"$TEAM_PREFIX-{}\",\"name\":\"Team {}\",\"slack_channel\":\"#team-{}\",\"poll_schedule\":\"0 9 * * 1-5\"}" \
    "$base/commands/register-team" >"$tmp/register.codes" || true
registered=$(grep -c '^201$' "$tmp/register.codes" || true)
[ "$registered" -eq "$TEAM_COUNT" ] || die "only $registered of $TEAM_COUNT teams registered"

run_wrk submit "$WRK_DIR/submit_update.lua" "$base/commands/submit-update"
run_wrk team "$WRK_DIR/get_team.lua" "$base/api/teams/x"
run_wrk updates "$WRK_DIR/get_plain.lua" "$base/api/updates?limit=50"

echo
echo "chronicle status-app benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(machine)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency; $TEAM_COUNT teams; SQLite synchronous=FULL (default)"
echo
printf '%-36s %12s %9s %9s %9s %9s\n' endpoint requests/s p50_ms p99_ms non-2xx sock_err
for k in submit team updates; do
    case $k in
        submit) label="POST /commands/submit-update" ;;
        team) label="GET /api/teams/{random id}" ;;
        updates) label="GET /api/updates?limit=50" ;;
    esac
    printf '%-36s %12s %9s %9s %9s %9s\n' "$label" "$(field $k rps)" "$(field $k p50_ms)" \
        "$(field $k p99_ms)" "$(field $k non2xx)" "$(field $k socket_errors)"
done
bad=$(($(field submit non2xx) + $(field team non2xx) + $(field updates non2xx)))
echo
echo "non-2xx responses in total: $bad (must be 0)"
awk -v s="$(field submit rps)" -v t="$(field team rps)" -v u="$(field updates rps)" \
    -v p1="$(field submit p99_ms)" -v p2="$(field team p99_ms)" -v p3="$(field updates p99_ms)" 'BEGIN {
    printf "goal submit-update >= 20000/s: %s\n", (s >= 20000) ? "met" : "NOT met"
    printf "goal get team >= 40000/s: %s\n", (t >= 40000) ? "met" : "NOT met"
    printf "goal recent updates >= 10000/s: %s\n", (u >= 10000) ? "met" : "NOT met"
    printf "goal p99 <= 10 ms for all: %s\n", (p1 <= 10 && p2 <= 10 && p3 <= 10) ? "met" : "NOT met"
}'
[ "$bad" -eq 0 ]
