#!/usr/bin/env bash
# pg-test.sh - a throwaway PostgreSQL cluster for the test suites.
#
#   scripts/pg-test.sh start DIR          fresh cluster in DIR, started; prints its URL
#   scripts/pg-test.sh stop DIR           stops the cluster of DIR (by its recorded PID)
#   scripts/pg-test.sh url DIR            prints the URL of the cluster of DIR
#   scripts/pg-test.sh pause DIR          stops the server of DIR (by its PID), keeping the cluster
#   scripts/pg-test.sh resume DIR         starts the paused server of DIR again (same data, port, socket)
#   scripts/pg-test.sh run DIR -- CMD...  start, run CMD, stop (always); exits with CMD's status
#
# The cluster listens on no TCP address (unless PG_TEST_LISTEN): only on a
# Unix socket in a directory of its own, under a private port number, so
# several clusters (ctest -j) and any system PostgreSQL never meet.
# Authentication is `trust` for the superuser `postgres`. synchronous_commit
# is always on (a commit returns once its WAL is written). fsync is on unless
# PG_TEST_FSYNC=off: the CTest entries turn it off, because no test crashes
# the machine, the only failure fsync guards against (a killed client, or a
# killed or stopped server, loses nothing the kernel already holds), while
# on a shared virtual disk the WAL flush of every commit was most of the
# store suite's time. Keep it on for anything measured (benchmarks).
#
# DIR (created if missing) holds the state of one cluster:
#   DIR/home   the cluster's home: DIR itself, or a directory under /tmp when
#              DIR is too deep for a socket path or, as root, not reachable by
#              the cluster's user (e.g. a checkout under /root)
#   HOME/data  the data directory (PGDATA); HOME/log the server log;
#              HOME/.s.PGSQL.PORT the socket
#   DIR/port   the port number; DIR/pid the postmaster's PID
#   DIR/log    a copy of the server log when HOME is not DIR
#
# `start` always begins with an empty cluster: a server still running from an
# earlier start of the same DIR (a killed test run) is stopped first, by the
# PID that start recorded. `stop` stops only that PID: pg_ctl stop -m fast,
# and if that fails, SIGQUIT then SIGKILL to that PID alone; it keeps the data
# directory, unless HOME is under /tmp. `run` removes the data directory after
# a passing CMD (set PG_TEST_KEEP=1 to keep it) and keeps it after a failing
# one, for a look at the server log.
#
# initdb refuses to run as root, so as root the cluster belongs to a system
# user `chronicle-test` (created if missing) and every server command runs
# through `runuser -u chronicle-test --`.
#
# start and url print the cluster's URL,
#   postgres://postgres@/postgres?host=HOME&port=PORT
# and run gives CMD it in CHRONICLE_TEST_STORE_URL and CHRONICLE_PG_URL, with
# CHRONICLE_PSQL the psql of the same PostgreSQL version. For tests that take
# the database away (an outage), run also exports CHRONICLE_PG_TEST (this
# script) and CHRONICLE_PG_DIR (DIR): `$CHRONICLE_PG_TEST pause $CHRONICLE_PG_DIR`
# stops the server as `stop` does (pg_ctl stop -m fast, then signals to the
# recorded PID alone) but keeps the cluster; `resume` starts it again with
# pg_ctl and records the new PID, which the final stop of `run` then uses.
# CHRONICLE_PG_DATA (the data directory) and CHRONICLE_PG_CTL (pg_ctl) are
# exported too, for a look; as root the server's commands must run as the
# cluster's user, which pause and resume take care of.
#
# Environment: PG_BINDIR (default: the newest /usr/lib/postgresql/*/bin),
# PG_TEST_KEEP=1 (run keeps the data directory), PG_TEST_FSYNC=on|off (the
# server's fsync setting at start; default on), PG_TEST_LISTEN=127.0.0.1
# (start also listens on that address, same port, and the URL is
# postgres://postgres@127.0.0.1:PORT/postgres: for benchmarks whose clients
# should talk TCP, as bench/peers.sh does), PG_TEST_PRELOAD=LIBS (start sets
# shared_preload_libraries, e.g. pg_stat_statements for bench/pg-profile.sh).
set -euo pipefail
shopt -s inherit_errexit # errors inside $(...) count too

readonly PG_USER_NAME=chronicle-test
SCRIPT=$(realpath "$0")
readonly SCRIPT
readonly STOP_DEADLINE=60 # seconds for a server to exit once told to

die() {
    echo "pg-test: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start DIR | stop DIR | url DIR | pause DIR | resume DIR | run DIR -- CMD [ARG...]" >&2
    exit 2
}

# Sets BINDIR to the PostgreSQL server binaries.
find_bindir() {
    if [ -n "${PG_BINDIR:-}" ]; then
        BINDIR=$PG_BINDIR
    else
        BINDIR=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
            sort -V | tail -n 1)
    fi
    if [ -z "$BINDIR" ] || [ ! -x "$BINDIR/initdb" ] || [ ! -x "$BINDIR/pg_ctl" ]; then
        die "no PostgreSQL server binaries in ${BINDIR:-/usr/lib/postgresql/*/bin} (install the Debian package postgresql: scripts/deps.sh test)"
    fi
}

is_root() {
    [ "$(id -u)" -eq 0 ]
}

# Creates the system user the cluster runs as when run as root. Several
# starts may race here (ctest -j): useradd fails while another holds
# /etc/passwd's lock, so retry until the user exists or a deadline passes.
ensure_user() {
    local deadline=$((SECONDS + 30)) err
    until id -u "$PG_USER_NAME" >/dev/null 2>&1; do
        err=$(useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER_NAME" 2>&1) && continue
        id -u "$PG_USER_NAME" >/dev/null 2>&1 && break
        [ "$SECONDS" -lt "$deadline" ] || die "cannot create user $PG_USER_NAME: $err"
    done
}

# Runs a command as the cluster's user (as root) or as ourselves, from the
# cluster's home so that an unreadable working directory cannot matter.
as_pg() {
    if is_root; then
        (cd "$HOME_DIR" && runuser -u "$PG_USER_NAME" -- "$@")
    else
        (cd "$HOME_DIR" && "$@")
    fi
}

# Percent-encodes a string for a URI query value (a path stays readable).
uri_encode() {
    local s=$1 out="" c i
    local LC_ALL=C
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case "$c" in
            [A-Za-z0-9/._~-]) out+=$c ;;
            *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    printf '%s' "$out"
}

# Sets STATE (absolute DIR), HOME_DIR, PORT from DIR's state files.
load_state() {
    STATE=$(cd "$1" 2>/dev/null && pwd) || die "$1: no such directory"
    if [ ! -f "$STATE/home" ] || [ ! -f "$STATE/port" ]; then
        die "$STATE holds no cluster (run: $0 start $1)"
    fi
    HOME_DIR=$(cat "$STATE/home")
    PORT=$(cat "$STATE/port")
}

cluster_url() {
    if [ -s "$STATE/listen" ]; then
        printf 'postgres://postgres@%s:%s/postgres\n' "$(cat "$STATE/listen")" "$PORT"
        return
    fi
    printf 'postgres://postgres@/postgres?host=%s&port=%s\n' "$(uri_encode "$HOME_DIR")" "$PORT"
}

# A TCP port nothing listens on now. The server never listens on TCP, so the
# number only names the socket; a free one also keeps clients that default to
# localhost from reaching some other server by mistake.
pick_port() {
    local p
    if p=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null); then
        printf '%s\n' "$p"
    else
        printf '%s\n' $((20000 + RANDOM % 40000))
    fi
}

# True when $1 is the PID of a live postgres server whose data directory is
# $2 (a recorded PID may have been reused by an unrelated process since; the
# postmaster's working directory is its data directory).
is_our_postmaster() {
    local pid=$1 data=$2 exe cwd
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 1
    [[ "$exe" == */postgres ]] && [ "$cwd" = "$(realpath -m "$data")" ]
}

# Waits until PID has exited, up to a deadline; false when it has not.
wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        # Poll: the server is not our child, so there is nothing to wait on.
        sleep 0.05
    done
}

# Stops the server recorded in STATE, if it still runs. Only ever signals
# that PID (pg_ctl stop signals the same PID, from DATA/postmaster.pid).
stop_server() {
    local data="$HOME_DIR/data" pid=""
    if [ -f "$STATE/pid" ]; then
        pid=$(cat "$STATE/pid")
    fi
    if [ -z "$pid" ] && [ -f "$data/postmaster.pid" ]; then
        pid=$(head -n 1 "$data/postmaster.pid")
    fi
    if is_our_postmaster "$pid" "$data"; then
        if ! as_pg "$BINDIR/pg_ctl" stop -D "$data" -m fast -w -t "$STOP_DEADLINE" >/dev/null; then
            echo "pg-test: pg_ctl stop failed; sending SIGQUIT to $pid" >&2
            kill -QUIT "$pid" 2>/dev/null || true
            if ! wait_gone "$pid" "$STOP_DEADLINE"; then
                echo "pg-test: $pid still running; sending SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
                wait_gone "$pid" 10 || die "postmaster $pid does not exit"
            fi
        fi
        # pg_ctl -w returns once postmaster.pid is gone; the process itself
        # may need a moment more.
        wait_gone "$pid" "$STOP_DEADLINE" || die "postmaster $pid does not exit"
    fi
    rm -f "$STATE/pid"
    if [ "$HOME_DIR" != "$STATE" ] && [ -f "$HOME_DIR/log" ]; then
        cp "$HOME_DIR/log" "$STATE/log"
    fi
}

# Removes the cluster's files (the server must be stopped).
remove_cluster() {
    if [ "$HOME_DIR" != "$STATE" ]; then
        rm -rf -- "$HOME_DIR"
    else
        rm -rf -- "$HOME_DIR/data"
    fi
}

cmd_start() {
    local dir=$1 socket fsync=${PG_TEST_FSYNC:-on}
    case "$fsync" in
        on | off) ;;
        *) die "PG_TEST_FSYNC=$fsync: expected on or off" ;;
    esac
    find_bindir
    mkdir -p -- "$dir"
    STATE=$(cd "$dir" && pwd)

    # Whatever an earlier start of this DIR left behind goes first.
    if [ -f "$STATE/home" ] && [ -f "$STATE/port" ]; then
        load_state "$STATE"
        stop_server
        remove_cluster
    fi
    rm -f -- "$STATE/home" "$STATE/port" "$STATE/pid" "$STATE/log" "$STATE/listen"
    case ${PG_TEST_LISTEN:-} in
        '' | 127.0.0.1) ;;
        *) die "PG_TEST_LISTEN may only be 127.0.0.1" ;;
    esac
    [[ "${PG_TEST_PRELOAD:-}" =~ ^[a-z_,]*$ ]] || die "PG_TEST_PRELOAD: library names, comma-separated"

    if is_root; then
        ensure_user
    fi
    PORT=$(pick_port)
    HOME_DIR=$STATE
    socket="$HOME_DIR/.s.PGSQL.$PORT"
    # The socket path must fit in sun_path (107 bytes) and go unquoted into
    # postgresql.conf; and as root, the cluster's user must reach DIR.
    if [ "${#socket}" -gt 100 ] || [[ ! "$HOME_DIR" =~ ^[A-Za-z0-9/._+-]+$ ]]; then
        HOME_DIR=""
    elif is_root; then
        chown "$PG_USER_NAME:" "$STATE"
        runuser -u "$PG_USER_NAME" -- test -w "$STATE" -a -x "$STATE" 2>/dev/null || HOME_DIR=""
    fi
    if [ -z "$HOME_DIR" ]; then
        HOME_DIR=$(mktemp -d /tmp/chronicle-pg.XXXXXX)
        if is_root; then
            chown "$PG_USER_NAME:" "$HOME_DIR"
        fi
    fi
    printf '%s\n' "$HOME_DIR" >"$STATE/home"
    printf '%s\n' "$PORT" >"$STATE/port"
    if [ -n "${PG_TEST_LISTEN:-}" ]; then
        printf '%s\n' "$PG_TEST_LISTEN" >"$STATE/listen"
    fi

    if ! as_pg "$BINDIR/initdb" -D "$HOME_DIR/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 \
        >"$STATE/initdb.log" 2>&1; then
        cat "$STATE/initdb.log" >&2
        die "initdb failed"
    fi
    # In postgresql.conf rather than on pg_ctl's command line, so that a
    # hand-run `pg_ctl start -D HOME/data` gets the same server.
    cat >>"$HOME_DIR/data/postgresql.conf" <<EOF

# scripts/pg-test.sh: a private, socket-only test server
listen_addresses = '${PG_TEST_LISTEN:-}'
port = $PORT
unix_socket_directories = '$HOME_DIR'
fsync = $fsync
synchronous_commit = on
max_connections = 200
shared_buffers = 128MB
shared_preload_libraries = '${PG_TEST_PRELOAD:-}'
EOF
    if ! as_pg "$BINDIR/pg_ctl" start -w -t 60 -D "$HOME_DIR/data" -l "$HOME_DIR/log" >/dev/null; then
        cat "$HOME_DIR/log" >&2 || true
        die "pg_ctl start failed (server log above)"
    fi
    head -n 1 "$HOME_DIR/data/postmaster.pid" >"$STATE/pid"
    cluster_url
}

cmd_stop() {
    find_bindir
    load_state "$1"
    stop_server
    # A home outside DIR (under /tmp) goes with its server; its log is in DIR.
    if [ "$HOME_DIR" != "$STATE" ]; then
        remove_cluster
    fi
}

cmd_pause() {
    find_bindir
    load_state "$1"
    stop_server
}

cmd_resume() {
    local data
    find_bindir
    load_state "$1"
    data="$HOME_DIR/data"
    [ -d "$data" ] || die "$STATE: the cluster's data directory is gone"
    if [ -f "$STATE/pid" ] && is_our_postmaster "$(cat "$STATE/pid")" "$data"; then
        die "$STATE: the server is running (pid $(cat "$STATE/pid"))"
    fi
    if ! as_pg "$BINDIR/pg_ctl" start -w -t 60 -D "$data" -l "$HOME_DIR/log" >/dev/null; then
        tail -n 20 "$HOME_DIR/log" >&2 || true
        die "pg_ctl start failed (server log above)"
    fi
    head -n 1 "$data/postmaster.pid" >"$STATE/pid"
}

cmd_url() {
    load_state "$1"
    cluster_url
}

cmd_run() {
    local dir=$1 url status
    shift
    [ "${1:-}" = "--" ] || usage
    shift
    [ $# -gt 0 ] || usage
    find_bindir
    # Whatever happens from here on (a failed start, a signal), the server
    # of DIR is stopped on the way out.
    trap '(cmd_stop "$dir") || true' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    url=$(cmd_start "$dir")
    load_state "$dir"
    status=0
    CHRONICLE_TEST_STORE_URL=$url CHRONICLE_PG_URL=$url CHRONICLE_PSQL="$BINDIR/psql" \
        CHRONICLE_PG_TEST="$SCRIPT" CHRONICLE_PG_DIR="$STATE" \
        CHRONICLE_PG_DATA="$HOME_DIR/data" CHRONICLE_PG_CTL="$BINDIR/pg_ctl" "$@" || status=$?
    stop_server
    trap - EXIT INT TERM
    if [ "$status" -eq 0 ] && [ "${PG_TEST_KEEP:-}" != 1 ]; then
        remove_cluster
    else
        echo "pg-test: cluster kept in $HOME_DIR (server log: $HOME_DIR/log)" >&2
    fi
    return "$status"
}

[ $# -ge 2 ] || usage
case "$1" in
    start) [ $# -eq 2 ] || usage; cmd_start "$2" ;;
    stop) [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
    url) [ $# -eq 2 ] || usage; cmd_url "$2" ;;
    pause) [ $# -eq 2 ] || usage; cmd_pause "$2" ;;
    resume) [ $# -eq 2 ] || usage; cmd_resume "$2" ;;
    run) shift; cmd_run "$@" ;;
    *) usage ;;
esac
