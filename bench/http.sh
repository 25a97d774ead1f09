#!/usr/bin/env bash
# http.sh - HTTP throughput and latency of `chronicle serve`, with nginx
# serving a static file on the same machine in the same run as the ceiling.
#
# Runs wrk (bounded: -d10s per target, 127.0.0.1 only) against:
#   1. POST /v1/streams/{stream}: one event per request, unique ids, durable
#      default (SQLite synchronous=FULL), 64 streams per wrk thread
#   2. GET  /v1/streams/bench-read: a 10-event stream
#   3. GET  of a 200-byte JSON file from nginx (the ceiling)
# and prints requests/s, p50, p99 and error counts, the GET/nginx ratio and
# the issue's goals. Installs only through scripts/deps.sh bench (wrk,
# nginx-light); builds nothing: expects ./build/chronicle (make build).
#
# Knobs (environment): CHRONICLE_BIN (default ./build/chronicle),
# DURATION (10s), CONNECTIONS (64), THREADS (2). Not for CI: it measures.
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/deps.sh bench

BIN=${CHRONICLE_BIN:-./build/chronicle}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WRK_DIR=$PWD/bench/wrk

if [ ! -x "$BIN" ]; then
    echo "http.sh: $BIN not found; run 'make build' first" >&2
    exit 1
fi
case $DURATION in
    [1-9]s | [1-5][0-9]s | 60s) ;;
    *) echo "http.sh: DURATION must be 1s..60s" >&2; exit 2 ;;
esac

. bench/lib.sh
bench_init http.sh

json_field() { # url key: one top-level member of a JSON response
    curl -sf "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

# ---- chronicle: fresh database, defaults (synchronous=FULL), ephemeral port
start_chronicle

# ---- nginx: generated config, everything under $tmp, not daemonised
nginx_port=$(free_port)
mkdir -p "$tmp/www" "$tmp/nginx"
padding=$(head -c 172 /dev/zero | tr '\0' 'x')
printf '{"status":"ok","padding":"%s"}' "$padding" >"$tmp/www/static.json"
[ "$(wc -c <"$tmp/www/static.json")" -eq 200 ] || die "static file is not 200 bytes"
user_line=
if [ "$(id -u)" -eq 0 ]; then
    user_line="user $(id -un) $(id -gn);" # workers must read $tmp (mode 0700)
fi
cat >"$tmp/nginx/nginx.conf" <<EOF
$user_line
worker_processes auto;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    types { application/json json; }
    default_type application/octet-stream;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$nginx_port;
        root $tmp/www;
    }
}
EOF
nginx -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" &
nginx_pid=$!
extra_pids=$nginx_pid
nginx_url="http://127.0.0.1:$nginx_port/static.json"
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "$nginx_url" && break
    kill -0 "$nginx_pid" 2>/dev/null || die "nginx exited during start"
    sleep 0.1
done
curl -sf -o /dev/null "$nginx_url" || die "nginx does not answer on $nginx_url"

# ---- the 10-event stream read by the GET benchmark
events=
for i in $(seq 1 10); do
    events="$events${events:+,}{\"type\":\"BenchRead\",\"data\":{\"i\":$i,\"padding\":\"$padding\"}}"
done
curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' \
    --data "{\"expected_version\":\"no_stream\",\"events\":[$events]}" "$base/v1/streams/bench-read" ||
    die "could not create the 10-event stream"
read_version=$(json_field "$base/v1/streams/bench-read" version) || die "cannot read bench-read"
[ "$read_version" = 10 ] || die "bench-read has version '$read_version', expected 10"

# ---- measurements
head_before=$(json_field "$base/internal/health/store" head_position) || die "no head_position"
run_wrk append "$WRK_DIR/append.lua" "$base/v1/streams/bench"
head_after=$(json_field "$base/internal/health/store" head_position) || die "no head_position"
run_wrk get "$WRK_DIR/report.lua" "$base/v1/streams/bench-read"
run_wrk nginx "$WRK_DIR/report.lua" "$nginx_url"

# ---- report
echo
echo "chronicle HTTP benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(machine)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency; chronicle $BIN, SQLite synchronous=FULL (default)"
echo
printf '%-36s %12s %9s %9s %9s %9s\n' target requests/s p50_ms p99_ms non-2xx sock_err
for k in append get nginx; do
    case $k in
        append) label="POST /v1/streams/{s} (1 event)" ;;
        get) label="GET /v1/streams/bench-read (10 ev)" ;;
        nginx) label="nginx GET 200-byte JSON (ceiling)" ;;
    esac
    printf '%-36s %12s %9s %9s %9s %9s\n' "$label" "$(field $k rps)" "$(field $k p50_ms)" \
        "$(field $k p99_ms)" "$(field $k non2xx)" "$(field $k socket_errors)"
done
echo
acked=$(($(field append requests) - $(field append non2xx)))
echo "events appended during the POST run: $((head_after - head_before)) (wrk counted $acked non-error responses;" \
    "requests still in flight when wrk stops are written but not counted)"
awk -v a="$(field append rps)" -v p99="$(field append p99_ms)" -v g="$(field get rps)" \
    -v n="$(field nginx rps)" 'BEGIN {
        ratio = (n > 0) ? 100 * g / n : 0
        append_goal = (a >= 30000 && p99 <= 10) ? "met" : "NOT met"
        get_goal = (ratio >= 50) ? "met" : "NOT met"
        printf "GET / nginx ratio: %.1f%%\n", ratio
        printf "goal appends >= 30000/s durable with p99 <= 10 ms: %s\n", append_goal
        printf "goal GET >= 50%% of the nginx ceiling: %s\n", get_goal
    }'
