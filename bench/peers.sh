#!/usr/bin/env bash
# peers.sh - the status-app workload (bench/status-app.sh) against chronicle
# on PostgreSQL and, in the same run and on the same PostgreSQL, against the
# peer implementations of the same API in ../shared/peers (a Go net/http +
# lib/pq service and an Emmett Node.js service). Prints requests/s and p99
# per endpoint and system, the medians over RUNS runs and chronicle's ratio
# to each peer. Also reached as `bench/status-app.sh --postgres`.
#
#   1. one throwaway PostgreSQL cluster (scripts/pg-test.sh with
#      PG_TEST_LISTEN=127.0.0.1: TCP on loopback, fsync=on,
#      synchronous_commit=on, otherwise PostgreSQL's defaults), stopped and
#      deleted at the end;
#   2. builds the peers into build/peers/ (the peers' code stays where it
#      is: the Go peer is compiled from PEERS_DIR/go-baseline, the Emmett
#      peer's three files are copied to build/peers/emmett and its npm
#      packages installed there with `npm ci` from its package-lock.json);
#   3. RUNS times, for each system in SYSTEMS (the order rotates from run to
#      run so that drift in the machine's load does not always hit the same
#      one): a fresh database of its own, start it, register TEAM_COUNT
#      teams, wrk on submit-update, get team and list updates (the same Lua
#      scripts, connections and duration for all), check the list returns
#      50 updates, stop it by PID.
#
# Knobs: CHRONICLE_BIN (./build/chronicle), PEERS_DIR (../shared/peers),
# SYSTEMS ("chronicle go-baseline emmett"; add chronicle-sqlite for
# chronicle on SQLite, its default store, in the same run as a yardstick
# of how the machine's load hits it), RUNS (3), DURATION (10s),
# CONNECTIONS (32), THREADS (2), TEAM_COUNT (1000), OUT (directory for the
# raw results; default build/bench-peers/<UTC time>). Needs root or sudo
# only to install missing Debian packages (scripts/deps.sh bench).
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/deps.sh bench
. bench/lib.sh

status_app_knobs peers.sh
PEERS_DIR=${PEERS_DIR:-../shared/peers}
SYSTEMS=${SYSTEMS:-chronicle go-baseline emmett}
RUNS=${RUNS:-3}
export API_SECRET=${API_SECRET:-bench-secret}
OUT=${OUT:-build/bench-peers/$(date -u +%Y%m%dT%H%M%SZ)}
case $RUNS in
    [1-9]) ;;
    *) echo "peers.sh: RUNS must be 1..9" >&2; exit 2 ;;
esac

bench_init peers.sh
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ -x "$BIN" ] || die "$BIN not found; run 'make build' first"
for s in $SYSTEMS; do
    case $s in
        chronicle | chronicle-sqlite | go-baseline | emmett) ;;
        *) die "unknown system '$s' in SYSTEMS (chronicle, chronicle-sqlite, go-baseline, emmett)" ;;
    esac
    if [ "${s#chronicle}" = "$s" ] && [ ! -d "$PEERS_DIR/$s" ]; then
        die "no $PEERS_DIR/$s: set PEERS_DIR to the peers' directory (or leave $s out of SYSTEMS)"
    fi
done
PEERS_DIR=$(cd "$PEERS_DIR" 2>/dev/null && pwd || echo "$PEERS_DIR")
[ -f "$PEERS_DIR/bench/cpusplit.py" ] && export BENCH_CPUSPLIT=$PEERS_DIR/bench/cpusplit.py

# ---- the peers, built under build/peers (nothing is written to PEERS_DIR)
peer_build=$PWD/build/peers
build_peers() {
    mkdir -p "$peer_build"
    if [[ " $SYSTEMS " == *" go-baseline "* ]]; then
        echo "== building go-baseline into $peer_build/statusapp-go" >&2
        (cd "$PEERS_DIR/go-baseline" && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= \
            GOCACHE="$peer_build/gocache" go build -trimpath -o "$peer_build/statusapp-go" .) ||
            die "go build of $PEERS_DIR/go-baseline failed"
    fi
    if [[ " $SYSTEMS " == *" emmett "* ]]; then
        local e=$peer_build/emmett node_version
        node_version=$(node --version)
        if ! printf '%s\n' "${node_version#v}" | awk -F. '{ exit !($1 > 20 || ($1 == 20 && $2 >= 19)) }'; then
            echo "peers.sh: warning: Emmett 0.42 asks for Node >= 20.19 (package-lock engines); this is $node_version" >&2
        fi
        mkdir -p "$e"
        if ! cmp -s "$PEERS_DIR/emmett/package-lock.json" "$e/package-lock.json" || [ ! -d "$e/node_modules" ]; then
            cp "$PEERS_DIR/emmett/package.json" "$PEERS_DIR/emmett/package-lock.json" "$e/"
            echo "== npm ci in $e" >&2
            (cd "$e" && timeout 600 npm ci --no-audit --no-fund >"$tmp/npm.log" 2>&1) ||
                die "npm ci failed (log: $(tail -n 5 "$tmp/npm.log"))"
        fi
        cp "$PEERS_DIR/emmett/server.js" "$e/server.js"
    fi
}
build_peers

# ---- PostgreSQL: one throwaway cluster for the whole run
pg_dir=$tmp/pg
bench_cleanup_extra() { [ -f "$pg_dir/port" ] && scripts/pg-test.sh stop "$pg_dir" >/dev/null; }
pg_url=$(PG_TEST_LISTEN=127.0.0.1 scripts/pg-test.sh start "$pg_dir") || die "PostgreSQL did not start"
pg_base=${pg_url%/postgres}
psql_admin() { psql -X -q -v ON_ERROR_STOP=1 "$pg_url" "$@"; }
pg_version=$(psql_admin -Atc 'SHOW server_version')
pg_settings=$(psql_admin -Atc "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
    WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method', 'shared_buffers')")

fresh_database() { # name: drop and create it, then a checkpoint so every system starts alike
    psql_admin -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" -c CHECKPOINT
}

wait_http() { # url pid: poll until the URL answers 200, the process dies or 30 s pass
    local deadline=$((SECONDS + 30))
    until curl -sf -o /dev/null --max-time 2 "$1"; do
        kill -0 "$2" 2>/dev/null || return 1
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

server_pid=
start_system() { # system db: sets base and server_pid
    local db_url=$pg_base/$2 port log=$tmp/$1.log
    case $1 in
        chronicle | chronicle-sqlite)
            rm -f "$tmp/bench.db" "$tmp/bench.db-wal" "$tmp/bench.db-shm"
            local database=
            [ "$1" = chronicle ] && database=$db_url
            BENCH_DATABASE=$database BENCH_API_SECRET=$API_SECRET start_chronicle \
                --app examples/status-app/app.json
            server_pid=$chronicle_pid
            wait_http "$base/ready" "$server_pid" || die "chronicle not ready"
            return
            ;;
    esac
    port=$(free_port)
    base=http://127.0.0.1:$port
    case $1 in
        go-baseline)
            env PORT="$port" API_SECRET="$API_SECRET" DATABASE_URL="$db_url?sslmode=disable" \
                "$peer_build/statusapp-go" >"$log" 2>&1 &
            ;;
        emmett)
            env PORT="$port" API_SECRET="$API_SECRET" DATABASE_URL="$db_url?sslmode=disable" \
                node "$peer_build/emmett/server.js" >"$log" 2>&1 &
            ;;
    esac
    server_pid=$!
    extra_pids="$extra_pids $server_pid"
    wait_http "$base/health" "$server_pid" || die "$1 did not answer /health within 30 s"
}

stop_system() {
    stop_pid "$server_pid" TERM
    [ "$server_pid" = "$chronicle_pid" ] && chronicle_pid=
    extra_pids=${extra_pids// $server_pid/}
    server_pid=
}

# ---- the runs
results=$OUT/results.tsv
printf 'run\tsystem\tendpoint\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\tloadavg_before\tcpu\n' >"$results"
read -r -a order <<<"$SYSTEMS"
{
    echo "started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(machine)"
    echo "PostgreSQL $pg_version ($pg_settings), scripts/pg-test.sh, TCP 127.0.0.1"
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency; $TEAM_COUNT teams; RUNS=$RUNS; SYSTEMS=$SYSTEMS"
    echo "chronicle $BIN ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')); peers from $PEERS_DIR"
} >"$OUT/run.txt"
for run in $(seq 1 "$RUNS"); do
    for s in "${order[@]}"; do
        db=bench_${s//-/_}
        [ "$s" = chronicle-sqlite ] || fresh_database "$db" >/dev/null
        load=$(cut -d' ' -f1-3 /proc/loadavg)
        echo "== run $run: $s (load average $load)" >&2
        start_system "$s" "$db"
        status_app_workload "$s" "$base"
        stop_system
        for k in submit team updates; do
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$s" "$k" "$(field "$s.$k" rps)" \
                "$(field "$s.$k" p50_ms)" "$(field "$s.$k" p99_ms)" "$(field "$s.$k" non2xx)" \
                "$(field "$s.$k" socket_errors)" "$load" "${C[$s.$k]:-}" >>"$results"
        done
    done
    order=("${order[@]:1}" "${order[0]}") # rotate
done
echo "finished $(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$OUT/run.txt"

# ---- the report
echo
cat "$OUT/run.txt"
echo
python3 bench/peers_report.py "$results" | tee "$OUT/report.txt"
echo
echo "raw results: $OUT"
# A peer may answer 409 when its optimistic-concurrency retries run out
# (two writers on one team's stream; rare with 1,000 teams): reported, not
# fatal. chronicle must answer every request with a 2xx.
awk -F'\t' 'NR > 1 && ($7 != 0 || $8 != 0) { printf "note: run %s %s %s: %s non-2xx, %s socket errors\n", $1, $2, $3, $7, $8 }' "$results"
awk -F'\t' 'NR > 1 && $2 == "chronicle" && ($7 != 0 || $8 != 0) { bad = 1 } END { exit bad }' "$results" ||
    die "chronicle answered non-2xx or had socket errors (see $results)"
