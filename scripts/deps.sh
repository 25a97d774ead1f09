#!/bin/sh
# deps.sh - install the Debian packages chronicle needs, only those missing.
# Usage: scripts/deps.sh run|test. Idempotent: checks with dpkg -s first and
# runs apt-get update only when something must be installed.
set -eu
run_pkgs="build-essential cmake pkg-config libjansson-dev libsqlite3-dev libsodium-dev libmicrohttpd-dev libpq-dev libcurl4-openssl-dev libjwt-dev sqlite3"
test_pkgs="$run_pkgs libcmocka-dev python3 python3-pytest python3-requests postgresql"
case "${1:-run}" in
    run) pkgs=$run_pkgs ;;
    test) pkgs=$test_pkgs ;;
    bench)
        # Go, lib/pq and Node for the peers bench/peers.sh compares with;
        # npm only where no npm comes with the installed nodejs.
        pkgs="$test_pkgs wrk nginx-light golang-go golang-github-lib-pq-dev nodejs"
        command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
        ;;
    *) echo "usage: $0 run|test|bench" >&2; exit 2 ;;
esac
missing=""
for p in $pkgs; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
