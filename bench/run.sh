#!/usr/bin/env bash
# Side-by-side comparison of the grid with Redis, a replicated Redis (a primary and 2
# replicas, writes acknowledged with WAIT) and a 3-member etcd cluster, then the memory,
# idle and failover rows (method: shared/BENCHMARKING.md). Installs the peers from Debian
# packages if missing, builds release binaries, and runs `grid-bench compare` with this
# script's arguments, then (in a full run) `grid-bench raft-core` into
# bench/results/raft-core.md, `grid-bench durable` (files under /var/tmp) into
# bench/results/durable.md, `grid-bench large-session` into
# bench/results/large-session.md and `grid-bench codec` into bench/results/codec.md.
#
#   bench/run.sh --quick      # short run
#   bench/run.sh              # full run
#
# grid-bench kills the servers it started when it ends normally. If it is interrupted or
# dies, the trap below stops it, kills its child processes, and kills any redis-server or
# etcd whose command line carries its markers (redis-bench-<pid>- in Redis' process title,
# etcd-bench-<pid>- in etcd's data directory), then removes etcd's tmpfs data. Nothing
# else is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Debian's etcd-server package installs the server as /usr/bin/etcd.
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
if ((${#missing[@]} > 0)); then
    sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then sudo=(sudo); fi
    echo "installing ${missing[*]}" >&2
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
echo "redis-server $(redis-server --version | grep -o 'v=[^ ]*'), $(etcd --version | head -n 1)" >&2

cargo build --release -p grid-node -p bench

bench_pid=""

# Kills the redis-server and etcd processes whose command line contains $1.
kill_marked() {
    local pid comm
    for pid in $(pgrep -f -- "$1" || true); do
        comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
        case "$comm" in
        redis-server | etcd) kill -KILL "$pid" 2>/dev/null || true ;;
        esac
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$bench_pid" ]]; then
        if kill -0 "$bench_pid" 2>/dev/null; then
            # Its children, listed before it goes: they outlive a killed parent.
            local children pid comm
            children=$(pgrep -P "$bench_pid" || true)
            kill -TERM "$bench_pid" 2>/dev/null || true
            for _ in $(seq 50); do
                kill -0 "$bench_pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$bench_pid" 2>/dev/null || true
            for pid in $children; do
                comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
                case "$comm" in
                redis-server | etcd | grid-node) kill -KILL "$pid" 2>/dev/null || true ;;
                esac
            done
        fi
        kill_marked "redis-bench-$bench_pid-"
        kill_marked "etcd-bench-$bench_pid-"
        rm -rf "/dev/shm/etcd-bench-$bench_pid-"*
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# In the background so that the traps run as soon as a signal arrives, not after
# grid-bench ends; `wait` passes its exit status on.
"${CARGO_TARGET_DIR:-target}/release/grid-bench" compare "$@" &
bench_pid=$!
wait "$bench_pid"

# openraft's core alone, the grid's 0.9 against 0.10 (one process, no sockets, no peers):
# the measurement behind the grid's openraft version. Not in a quick run.
if [[ " $* " != *" --quick "* ]]; then
    "${CARGO_TARGET_DIR:-target}/release/grid-bench" raft-core > bench/results/raft-core.md
    # The grid with --data-dir beside Redis with its append-only file, on one file system.
    "${CARGO_TARGET_DIR:-target}/release/grid-bench" durable --dir /var/tmp > bench/results/durable.md
    # A 256 KB session changed by 100 bytes per request: whole write-back, per-item, and a
    # replicated Redis session store; and the codecs the session items were chosen from.
    "${CARGO_TARGET_DIR:-target}/release/grid-bench" large-session > bench/results/large-session.md
    "${CARGO_TARGET_DIR:-target}/release/grid-bench" codec > bench/results/codec.md
fi
