#!/usr/bin/env bash
# pg-profile.sh - where chronicle's time goes on PostgreSQL in the
# status-app workload: a throwaway cluster (scripts/pg-test.sh, TCP on
# 127.0.0.1, durable defaults) with pg_stat_statements, chronicle serving
# examples/status-app on it, TEAM_COUNT teams, then for each endpoint one
# bounded wrk phase (as in bench/status-app.sh) during which
#   - pg_stat_statements counts calls and execution time per statement,
#   - chronicle's group-commit histogram (/metrics) is read before and after,
#   - perf (when it works here) samples chronicle for the middle of the phase
#     (`perf record -F 499 -g`), reported by thread and by library.
# Prints it all; keeps perf data and the tables in OUT
# (default build/pg-profile/<UTC time>).
#
# Knobs: CHRONICLE_BIN (./build/chronicle), DURATION (10s), CONNECTIONS (32),
# THREADS (2), TEAM_COUNT (1000), OUT.
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/deps.sh bench
. bench/lib.sh

status_app_knobs pg-profile.sh
[ "${DURATION%s}" -ge 4 ] || { echo "pg-profile.sh: DURATION must be 4s..60s" >&2; exit 2; }
export API_SECRET=${API_SECRET:-bench-secret}
OUT=${OUT:-build/pg-profile/$(date -u +%Y%m%dT%H%M%SZ)}

bench_init pg-profile.sh
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ -x "$BIN" ] || die "$BIN not found; run 'make build' first"

pg_dir=$tmp/pg
bench_cleanup_extra() { [ -f "$pg_dir/port" ] && scripts/pg-test.sh stop "$pg_dir" >/dev/null; }
pg_url=$(PG_TEST_LISTEN=127.0.0.1 PG_TEST_PRELOAD=pg_stat_statements scripts/pg-test.sh start "$pg_dir") ||
    die "PostgreSQL did not start"
db_url=${pg_url%/postgres}/profile
psql -X -q -v ON_ERROR_STOP=1 "$pg_url" -c "CREATE DATABASE profile"
sql() { psql -X -q -v ON_ERROR_STOP=1 "$db_url" "$@"; }
sql -c "CREATE EXTENSION pg_stat_statements"

BENCH_DATABASE=$db_url BENCH_API_SECRET=$API_SECRET start_chronicle --app examples/status-app/app.json
auth=(-H "Authorization: Bearer $API_SECRET")
batches() { curl -sf "${auth[@]}" "$base/metrics" | grep '^chronicle_store_commit_batch_size' || true; }

perf_ok=false
if command -v perf >/dev/null && perf record -q -o "$tmp/probe.data" -- true >/dev/null 2>&1; then
    perf_ok=true
fi

export TEAM_PREFIX=profile-$$
echo "== registering $TEAM_COUNT teams" >&2
seq 0 $((TEAM_COUNT - 1)) | timeout 300 xargs -P 8 -I{} curl -s -o /dev/null "${auth[@]}" \
    -H 'Content-Type: application/json' -X POST \
    -d "{\"team_id\":\"$TEAM_PREFIX-{}\",\"name\":\"Team {}\",\"slack_channel\":\"#team-{}\"}" \
    "$base/commands/register-team"

secs=${DURATION%s}
{
    echo "chronicle on PostgreSQL, profile: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(machine)"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION; $TEAM_COUNT teams; perf: $perf_ok"
} | tee "$OUT/profile.txt"
for phase in submit team updates; do
    case $phase in
        submit) script=submit_update.lua path=/commands/submit-update ;;
        team) script=get_team.lua path=/api/teams/x ;;
        updates) script=get_plain.lua path='/api/updates?limit=50' ;;
    esac
    sql -Atc "SELECT pg_stat_statements_reset()" >/dev/null
    before=$(batches)
    perf_pid=
    if $perf_ok; then
        (sleep 1 && exec timeout 90 perf record -q -F 499 -g -p "$chronicle_pid" \
            -o "$OUT/perf-$phase.data" -- sleep $((secs - 2))) >/dev/null 2>&1 &
        perf_pid=$!
    fi
    run_wrk "$phase" "$WRK_DIR/$script" "$base$path"
    [ -n "$perf_pid" ] && { wait "$perf_pid" || true; }
    {
        echo
        echo "== $phase: $base$path: $(field "$phase" rps) requests/s, p99 $(field "$phase" p99_ms) ms"
        echo "-- group commits during the phase (chronicle_store_commit_batch_size, before -> after)"
        paste -d' ' <(echo "$before") <(batches | awk '{ print "->", $2 }')
        echo "-- pg_stat_statements, by calls"
        sql -c "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms,
                       round(mean_exec_time::numeric, 3) AS mean_ms, rows,
                       left(regexp_replace(query, '\s+', ' ', 'g'), 120) AS query
                FROM pg_stat_statements WHERE query NOT LIKE 'NOTIFY%'
                ORDER BY calls DESC, total_exec_time DESC LIMIT 15"
        if [ -s "$OUT/perf-$phase.data" ]; then
            echo "-- perf: chronicle's samples by thread and library"
            perf report -i "$OUT/perf-$phase.data" --stdio --no-children -g none --sort comm,dso \
                2>/dev/null | grep -E '^# Samples|^ +[0-9]' | head -14
        fi
    } | tee -a "$OUT/profile.txt"
done
echo
echo "kept in $OUT"
