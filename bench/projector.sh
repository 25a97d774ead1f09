#!/usr/bin/env bash
# projector.sh - the asynchronous projector's catch-up rate (split databases).
#
#   bench/projector.sh [EVENTS [PER_ENTITY]]   (defaults 100000 and 10)
#
# Starts a throwaway PostgreSQL cluster (scripts/pg-test.sh) under a
# temporary directory, creates an events database and a projection database,
# lets chronicle create its schema in both (one `serve` start, stopped), then
# writes EVENTS events straight into events.events with SQL, PER_ENTITY per
# entity (one CounterCreated, then CounterChanged) of tests/split/app.json:
# the backlog is prepared, not measured. Then starts `chronicle serve --role
# worker` with PROJECTION_DB_URL and measures from the projector's "projector
# resumes" log line to the checkpoint row's updated_at when it reaches the
# head: events / that time = events/s. Prints one RESULT line.
#
# Environment: CHRONICLE_BIN (default build/chronicle).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
BIN=${CHRONICLE_BIN:-$root/build/chronicle}
EVENTS=${1:-100000}
PER=${2:-10}
[ -x "$BIN" ] || { echo "projector.sh: no binary at $BIN" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/chronicle-bench-projector.XXXXXX")
pid=
cleanup() {
    local rc=$?
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" 2>/dev/null || true
    fi
    "$root/scripts/pg-test.sh" stop "$tmp/pg" >/dev/null 2>&1 || true
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

url=$("$root/scripts/pg-test.sh" start "$tmp/pg")
psql_bin=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -name psql -path '*/bin/*' | sort -V | tail -n 1)
sql() { "$psql_bin" "$1" -qAtX -v ON_ERROR_STOP=1 -c "$2"; }
sql "$url" "CREATE DATABASE bench_ev" >/dev/null
sql "$url" "CREATE DATABASE bench_pj" >/dev/null
ev=${url/@\/postgres\?/@/bench_ev?}
pj=${url/@\/postgres\?/@/bench_pj?}
app=$root/tests/split/app.json

# Wait (deadline) for a log line containing $2 in file $1.
wait_log() {
    local deadline=$((SECONDS + ${3:-60}))
    until grep -q "$2" "$1" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "projector.sh: no '$2' in $1" >&2; tail "$1" >&2; exit 1; }
        sleep 0.05
    done
}

# 1. Schemas: one API start on both databases, stopped.
env -u ROLE DATABASE_URL="$ev" PROJECTION_DB_URL="$pj" "$BIN" serve --listen 127.0.0.1:0 \
    --app "$app" --role api 2>"$tmp/setup.log" &
pid=$!
wait_log "$tmp/setup.log" '"listening"'
kill -TERM "$pid"; wait "$pid" || true; pid=

# 2. The backlog: EVENTS events, 10 per counter, in position order.
per=$PER
n_keys=$(( (EVENTS + per - 1) / per ))
sql "$ev" "
INSERT INTO events.events (id, type, aggregate_id, data, timestamp, metadata, version, position)
SELECT gen_random_uuid()::text,
       CASE WHEN v = 1 THEN 'CounterCreated' ELSE 'CounterChanged' END,
       'counters-k' || k,
       CASE WHEN v = 1 THEN jsonb_build_object('name', 'k' || k, 'n', 0)
            ELSE jsonb_build_object('n', v, 'note', 'w' || v) END,
       now(), '{}'::jsonb, v, (k - 1) * $per + v
FROM generate_series(1, $n_keys) k, generate_series(1, $per) v
WHERE (k - 1) * $per + v <= $EVENTS;
UPDATE events.head SET position = $EVENTS;" >/dev/null

# 3. The projector catches up.
env -u ROLE DATABASE_URL="$ev" PROJECTION_DB_URL="$pj" "$BIN" serve --listen 127.0.0.1:0 \
    --app "$app" --role worker 2>"$tmp/worker.log" &
pid=$!
wait_log "$tmp/worker.log" '"projector resumes"'
deadline=$((SECONDS + 1800))
until [ "$(sql "$pj" "SELECT position FROM projections.chronicle_projector")" = "$EVENTS" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "projector.sh: no catch-up" >&2; exit 1; }
    sleep 0.2
done
end_us=$(sql "$pj" "SELECT updated_at FROM projections.chronicle_projector")
start_ts=$(grep '"projector resumes"' "$tmp/worker.log" | head -n 1 | sed 's/.*"ts":"\([^"]*\)".*/\1/')
start_us=$(python3 -c "import datetime,sys; print(int(datetime.datetime.strptime(sys.argv[1], '%Y-%m-%dT%H:%M:%S.%fZ').replace(tzinfo=datetime.timezone.utc).timestamp()*1e6))" "$start_ts")
rows=$(sql "$pj" "SELECT count(*) FROM projections.counters")
[ "$rows" = "$n_keys" ] || { echo "projector.sh: $rows rows, expected $n_keys" >&2; exit 1; }
python3 - "$EVENTS" "$start_us" "$end_us" "$rows" <<'EOF'
import sys
events, start, end, rows = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
secs = (end - start) / 1e6
print(f"RESULT projector events={events} rows={rows} events_per_row={events / rows:g} seconds={secs:.2f} events_per_s={events / secs:,.0f}")
EOF
