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
#        bench/status-app.sh --postgres chronicle on PostgreSQL next to the peer
#                                       implementations: runs bench/peers.sh
# Knobs: CHRONICLE_BIN (./build/chronicle), DURATION (10s), CONNECTIONS (32),
# THREADS (2), TEAM_COUNT (1000). Installs only through scripts/deps.sh bench.
set -euo pipefail

cd "$(dirname "$0")/.."
[ "${1:-}" = --postgres ] && exec bench/peers.sh
scripts/deps.sh bench
. bench/lib.sh

status_app_knobs status-app.sh

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
curl -sf "$base/ready" >/dev/null || die "server not ready at $base"

status_app_workload chronicle "$base"

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
    printf '%-36s %12s %9s %9s %9s %9s\n' "$label" "$(field chronicle.$k rps)" "$(field chronicle.$k p50_ms)" \
        "$(field chronicle.$k p99_ms)" "$(field chronicle.$k non2xx)" "$(field chronicle.$k socket_errors)"
done
bad=$(($(field chronicle.submit non2xx) + $(field chronicle.team non2xx) + $(field chronicle.updates non2xx)))
echo
echo "non-2xx responses in total: $bad (must be 0)"
awk -v s="$(field chronicle.submit rps)" -v t="$(field chronicle.team rps)" -v u="$(field chronicle.updates rps)" \
    -v p1="$(field chronicle.submit p99_ms)" -v p2="$(field chronicle.team p99_ms)" -v p3="$(field chronicle.updates p99_ms)" 'BEGIN {
    printf "goal submit-update >= 20000/s: %s\n", (s >= 20000) ? "met" : "NOT met"
    printf "goal get team >= 40000/s: %s\n", (t >= 40000) ? "met" : "NOT met"
    printf "goal recent updates >= 10000/s: %s\n", (u >= 10000) ? "met" : "NOT met"
    printf "goal p99 <= 10 ms for all: %s\n", (p1 <= 10 && p2 <= 10 && p3 <= 10) ? "met" : "NOT met"
}'
[ "$bad" -eq 0 ]
