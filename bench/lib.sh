# lib.sh - shared pieces of the benchmark scripts (sourced, not run):
# starting chronicle on an ephemeral port with a fresh database, stopping
# what we started by PID, and running bounded wrk phases whose done() hook
# (bench/wrk/report.lua) prints one RESULT line.
# Callers set BIN, THREADS, CONNECTIONS, DURATION and call bench_init first.

bench_init() { # name: creates $tmp, installs the cleanup trap
    BENCH_NAME=$1
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/chronicle-bench.XXXXXX")
    chronicle_pid=
    extra_pids=
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    declare -gA R C
}

stop_pid() { # pid signal: signal one process we started and reap it (KILL after 15 s)
    if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
        kill "-$2" "$1" 2>/dev/null || true
        local deadline=$((SECONDS + 15))
        while kill -0 "$1" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        kill -KILL "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}

bench_cleanup() {
    local rc=$?
    stop_pid "$chronicle_pid" TERM
    for p in $extra_pids; do stop_pid "$p" TERM; done
    if declare -F bench_cleanup_extra >/dev/null; then bench_cleanup_extra || true; fi
    rm -rf "$tmp"
    exit "$rc"
}

die() {
    echo "$BENCH_NAME: $*" >&2
    for f in "$tmp"/*.log "$tmp"/nginx/error.log; do
        [ -s "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_chronicle ARGS...: serves on 127.0.0.1:0 with a fresh database in
# $tmp (or BENCH_DATABASE, a database URL); sets chronicle_pid and base
# (http://127.0.0.1:PORT). The caller's environment is cleared of
# chronicle's variables except API_SECRET when BENCH_API_SECRET is set.
start_chronicle() {
    env -u API_SECRET -u DATABASE_URL -u PORT -u SQLITE_SYNCHRONOUS -u MAX_BODY_BYTES \
        -u LOG_LEVEL -u APP ${BENCH_API_SECRET:+API_SECRET=$BENCH_API_SECRET} \
        "$BIN" serve --listen 127.0.0.1:0 --database "${BENCH_DATABASE:-sqlite:$tmp/bench.db}" \
        --log-level warn "$@" 2>"$tmp/chronicle.log" &
    chronicle_pid=$!
    local port=
    for _ in $(seq 1 300); do
        port=$(grep -E '"msg": ?"listening"' "$tmp/chronicle.log" 2>/dev/null |
            grep -oE '"port": ?[0-9]+' | grep -oE '[0-9]+$' | head -n 1 || true)
        [ -n "$port" ] && break
        kill -0 "$chronicle_pid" 2>/dev/null || die "chronicle exited during start"
        sleep 0.1
    done
    [ -n "$port" ] || die "chronicle did not log 'listening' within 30 s"
    base="http://127.0.0.1:$port"
}

# run_wrk KEY SCRIPT URL [HEADER]: one bounded wrk phase, its RESULT line in R[KEY].
# With BENCH_CPUSPLIT (a cpusplit.py: per-process CPU over a window), the
# CPU split of the phase's middle (from 1 s in, DURATION-2 s long) goes to
# stderr and into C[KEY].
run_wrk() {
    local out cpu_pid= secs=${DURATION%s}
    echo "== wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $3" >&2
    if [ -n "${BENCH_CPUSPLIT:-}" ] && [ "$secs" -ge 4 ]; then
        (sleep 1 && exec timeout 90 python3 "$BENCH_CPUSPLIT" $((secs - 2)) "$1") \
            >"$tmp/cpu.$1" 2>/dev/null &
        cpu_pid=$!
    fi
    out=$(timeout 120 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency --timeout 5s \
        ${4:+-H "$4"} -s "$2" "$3") || die "wrk failed on $3"
    echo "$out" >&2
    R[$1]=$(echo "$out" | grep '^RESULT ' || die "no RESULT line from wrk on $3")
    if [ -n "$cpu_pid" ]; then
        wait "$cpu_pid" || true
        C[$1]=$(head -c 400 "$tmp/cpu.$1" | tr '\n' ' ')
        echo "cpu: ${C[$1]}" >&2
    fi
}

field() { # key name: one value of a RESULT line
    echo "${R[$1]}" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

machine() {
    echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -r)"
}

# status_app_knobs NAME: the status-app scripts' knobs with their defaults
# (CHRONICLE_BIN as BIN, DURATION, CONNECTIONS, THREADS, TEAM_COUNT) and
# WRK_DIR; exits 2 when DURATION is not 1s..60s.
status_app_knobs() {
    BIN=${CHRONICLE_BIN:-./build/chronicle}
    DURATION=${DURATION:-10s}
    CONNECTIONS=${CONNECTIONS:-32}
    THREADS=${THREADS:-2}
    export TEAM_COUNT=${TEAM_COUNT:-1000}
    export WRK_DIR=$PWD/bench/wrk
    case $DURATION in
        [1-9]s | [1-5][0-9]s | 60s) ;;
        *) echo "$1: DURATION must be 1s..60s" >&2; exit 2 ;;
    esac
}

# status_app_workload KEY BASE: the status-app workload against the server
# at BASE (chronicle or a peer with the same API): registers TEAM_COUNT teams
# (curl, 8 in parallel), then one wrk phase per endpoint, whose RESULT lines
# land in R[KEY.submit], R[KEY.team], R[KEY.updates]; finally checks that
# GET /api/updates?limit=50 returns 50 updates. Uses API_SECRET when set.
status_app_workload() {
    local key=$1 base=$2 auth=() registered n
    [ -n "${API_SECRET:-}" ] && auth=(-H "Authorization: Bearer $API_SECRET")
    export TEAM_PREFIX=bench-$(date +%s)-$$-$key
    echo "== $key: registering $TEAM_COUNT teams at $base" >&2
    seq 0 $((TEAM_COUNT - 1)) | timeout 300 xargs -P 8 -I{} curl -s -o /dev/null -w '%{http_code}\n' \
        --max-time 10 "${auth[@]}" -H 'Content-Type: application/json' -X POST \
        -d "{\"team_id\":\"$TEAM_PREFIX-{}\",\"name\":\"Team {}\",\"slack_channel\":\"#team-{}\",\"poll_schedule\":\"0 9 * * 1-5\"}" \
        "$base/commands/register-team" >"$tmp/register.codes" || true
    registered=$(grep -c '^201$' "$tmp/register.codes" || true)
    [ "$registered" -eq "$TEAM_COUNT" ] || die "$key: only $registered of $TEAM_COUNT teams registered"
    run_wrk "$key.submit" "$WRK_DIR/submit_update.lua" "$base/commands/submit-update"
    run_wrk "$key.team" "$WRK_DIR/get_team.lua" "$base/api/teams/x"
    run_wrk "$key.updates" "$WRK_DIR/get_plain.lua" "$base/api/updates?limit=50"
    n=$(curl -s --max-time 10 "${auth[@]}" "$base/api/updates?limit=50" | grep -o '"update_id"' | wc -l)
    [ "$n" -eq 50 ] || die "$key: GET /api/updates?limit=50 returned $n updates, not 50"
}
