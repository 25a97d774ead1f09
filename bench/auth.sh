#!/usr/bin/env bash
# auth.sh - what a bearer JWT costs on a read: GET /v1/streams/bench-read (a
# 10-event stream) with a named API key vs the same GET with a valid HS256
# JWT, against one server that accepts both (API_KEYS_FILE and JWT_SECRET).
# The JWT is verified once and then answered from the verified-token cache
# (docs/security.md); the goal is <= 10% less throughput than the API key.
#
# Runs wrk (bounded: -d per phase, 127.0.0.1 only) ROUNDS times alternating
# key, jwt (so drift on a shared machine hits both alike), reports each
# phase and the medians, and checks that every response was 2xx and that the
# cache answered all but the first request of the JWT phases.
#
# Knobs (environment): CHRONICLE_BIN (default ./build/chronicle),
# DURATION (10s), CONNECTIONS (64), THREADS (2), ROUNDS (3). Not for CI.
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/deps.sh bench

BIN=${CHRONICLE_BIN:-./build/chronicle}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
WRK_DIR=$PWD/bench/wrk

[ -x "$BIN" ] || { echo "auth.sh: $BIN not found; run 'make build' first" >&2; exit 1; }
case $DURATION in
    [1-9]s | [1-5][0-9]s | 60s) ;;
    *) echo "auth.sh: DURATION must be 1s..60s" >&2; exit 2 ;;
esac

. bench/lib.sh
bench_init auth.sh

key=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
secret=$(head -c 32 /dev/urandom | base64 | tr -d '=')
printf '{"keys":[{"name":"bench","key_env":"BENCH_KEY"}]}' >"$tmp/keys.json"
BENCH_KEY=$key API_KEYS_FILE=$tmp/keys.json JWT_SECRET=$secret start_chronicle

# An HS256 token valid for an hour, built with the standard library only.
token=$(JWT_SECRET=$secret python3 -c '
import base64, hashlib, hmac, json, os, time
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
seg = lambda o: b(json.dumps(o, separators=(",", ":")).encode())
now = int(time.time())
s = seg({"alg": "HS256", "typ": "JWT"}) + "." + seg({"sub": "bench-user", "roles": ["reader"], "iat": now, "exp": now + 3600})
print(s + "." + b(hmac.new(os.environ["JWT_SECRET"].encode(), s.encode(), hashlib.sha256).digest()))')

auth_key="Authorization: Bearer $key"
auth_jwt="Authorization: Bearer $token"
padding=$(head -c 172 /dev/zero | tr '\0' 'x')
events=
for i in $(seq 1 10); do
    events="$events${events:+,}{\"type\":\"BenchRead\",\"data\":{\"i\":$i,\"padding\":\"$padding\"}}"
done
curl -sf -o /dev/null -X POST -H "$auth_key" -H 'Content-Type: application/json' \
    --data "{\"expected_version\":\"no_stream\",\"events\":[$events]}" "$base/v1/streams/bench-read" ||
    die "could not create the 10-event stream"
for h in "$auth_key" "$auth_jwt"; do
    curl -sf -o /dev/null -H "$h" "$base/v1/streams/bench-read" || die "a credential was refused"
done
metric() { curl -sf -H "$auth_key" "$base/metrics" | sed -n "s/^$1 //p"; }
misses_before=$(metric chronicle_jwt_cache_misses_total)

url="$base/v1/streams/bench-read"
for r in $(seq 1 "$ROUNDS"); do
    run_wrk "key$r" "$WRK_DIR/report.lua" "$url" "$auth_key"
    run_wrk "jwt$r" "$WRK_DIR/report.lua" "$url" "$auth_jwt"
done
misses_after=$(metric chronicle_jwt_cache_misses_total)
hits=$(metric chronicle_jwt_cache_hits_total)

echo
echo "chronicle auth benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(machine), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, GET /v1/streams/bench-read (10 events), $ROUNDS rounds"
echo
printf '%-28s %12s %9s %9s %9s %9s\n' phase requests/s p50_ms p99_ms non-2xx sock_err
bad=0
for r in $(seq 1 "$ROUNDS"); do
    for k in key jwt; do
        label="round $r, $([ $k = key ] && echo 'API key' || echo 'HS256 JWT')"
        printf '%-28s %12s %9s %9s %9s %9s\n' "$label" "$(field $k$r rps)" "$(field $k$r p50_ms)" \
            "$(field $k$r p99_ms)" "$(field $k$r non2xx)" "$(field $k$r socket_errors)"
        bad=$((bad + $(field $k$r non2xx)))
    done
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
key_med=$(for r in $(seq 1 "$ROUNDS"); do field "key$r" rps; done | median)
jwt_med=$(for r in $(seq 1 "$ROUNDS"); do field "jwt$r" rps; done | median)
echo
echo "JWT verifications during the runs: $((misses_after - misses_before)) (cache hits so far: $hits)"
[ "$bad" -eq 0 ] || echo "WARNING: $bad non-2xx responses"
awk -v k="$key_med" -v j="$jwt_med" 'BEGIN {
    cost = (k > 0) ? 100 * (k - j) / k : 0
    printf "median requests/s: API key %.0f, JWT %.0f; JWT cost %.1f%%\n", k, j, cost
    printf "goal JWT GET costs <= 10%% throughput: %s\n", (cost <= 10) ? "met" : "NOT met"
}'
