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
    declare -gA R
}

stop_pid() { # pid signal: signal one process we started and reap it
    if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
        kill "-$2" "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}

bench_cleanup() {
    local rc=$?
    stop_pid "$chronicle_pid" TERM
    for p in $extra_pids; do stop_pid "$p" TERM; done
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
# $tmp; sets chronicle_pid and base (http://127.0.0.1:PORT). The caller's
# environment is cleared of chronicle's variables except API_SECRET when
# BENCH_API_SECRET is set.
start_chronicle() {
    env -u API_SECRET -u DATABASE_URL -u PORT -u SQLITE_SYNCHRONOUS -u MAX_BODY_BYTES \
        -u LOG_LEVEL -u APP ${BENCH_API_SECRET:+API_SECRET=$BENCH_API_SECRET} \
        "$BIN" serve --listen 127.0.0.1:0 --database "sqlite:$tmp/bench.db" --log-level warn "$@" \
        2>"$tmp/chronicle.log" &
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

run_wrk() { # key script url [header]: one bounded wrk phase, its RESULT line in R[key]
    local out
    echo "== wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $3" >&2
    out=$(timeout 120 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency --timeout 5s \
        ${4:+-H "$4"} -s "$2" "$3") || die "wrk failed on $3"
    echo "$out" >&2
    R[$1]=$(echo "$out" | grep '^RESULT ' || die "no RESULT line from wrk on $3")
}

field() { # key name: one value of a RESULT line
    echo "${R[$1]}" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

machine() {
    echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -r)"
}
