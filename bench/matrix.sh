#!/usr/bin/env bash
# The whole mixed-order matrix (tests/matrix.rs: both families, both key types, both lock
# modes), split into shards that run at once, each in a private IPC and mount namespace of
# its own (its own System V tables, /dev/shm and TMPDIR): the orders wait on processes far
# more than they compute, so on 2 cores 3 shards finish the matrix in about a third of the
# time of one run. Each shard runs every n-th order of every trial (QSHM_MATRIX_SHARD).
#
#   sudo bash bench/matrix.sh            # every order, 3 shards
#   sudo bash bench/matrix.sh 4          # every order, 4 shards
#   QSHM_MATRIX=300 bash bench/matrix.sh # 300 orders per trial (every n-th), split alike
#   QSHM_MATRIX_FILTER=forks_and_removals bash bench/matrix.sh   # one family (trial names)
#
# Prints each trial's count line per shard, progress lines, and every order qshm broke as it
# is found; a shard's whole output is kept in target/matrix-shard-N.log. Exit status 0 only
# if every shard passed and left nothing in its namespace. Runs as root (its actors include
# another user, made and removed by the test).
set -euo pipefail
cd "$(dirname "$0")/.."

shards=${1:-3}
case "$shards" in '' | *[!0-9]* | 0)
    echo "usage: bench/matrix.sh [SHARDS]" >&2
    exit 2
    ;;
esac
if [ "$(id -u)" != 0 ]; then
    echo "bench/matrix.sh needs root (unshare -im, mount, a second user)" >&2
    exit 2
fi

if [ -n "${QSHM_MATRIX_SHARD_INSIDE:-}" ]; then
    # one shard, inside its namespaces: a private /dev/shm and TMPDIR (key files live there)
    mount -t tmpfs -o size=1g qshm-matrix /dev/shm
    tmp=$(mktemp -d)
    mount -t tmpfs -o size=64m qshm-matrix-tmp "$tmp"
    export TMPDIR="$tmp"
    status=0
    "$QSHM_MATRIX_BINARY" "${QSHM_MATRIX_FILTER:-generated_orders}" --test-threads 1 || status=$?
    source bench/left.sh
    left_in_namespace "shard $QSHM_MATRIX_SHARD left in its namespace" "$tmp" || status=1
    exit $status
fi

# build once, then run the test binary itself in every shard (no cargo lock between them)
binary=$(cargo test --no-run --quiet --test matrix --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [ ! -x "$binary" ]; then
    echo "bench/matrix.sh: could not build the matrix test binary" >&2
    exit 1
fi
# the Qt actor (PyQt6): installed once here, not by every shard at once
if [ -z "${QSHM_QT_PEER:-}" ]; then
    if peer=$(bash interop/setup.sh pyqt6 | tail -n 1); then
        export QSHM_QT_PEER="$peer"
    else
        echo "*** SKIP: no PyQt6: the Qt-compatible trials of the mixed family are ignored ***"
    fi
fi
export QSHM_MATRIX="${QSHM_MATRIX:-all}" QSHM_MATRIX_BINARY="$binary" QSHM_MATRIX_SHARD_INSIDE=1
# once, as root, with another user among the actors (not the whole suite again as a user)
export QSHM_SUITE_AGAIN=stress-root-only
echo "matrix: QSHM_MATRIX=$QSHM_MATRIX, $shards shards, each in a private IPC and mount namespace ($binary)"
started=$SECONDS
pids=()
for index in $(seq 0 $((shards - 1))); do
    log="target/matrix-shard-$index.log"
    QSHM_MATRIX_SHARD="$index/$shards" unshare -im --propagation private bash "$0" "$shards" >"$log" 2>&1 &
    pids+=("$!")
done
status=0
for index in "${!pids[@]}"; do
    if ! wait "${pids[$index]}"; then
        status=1
        echo "shard $index/$shards FAILED (whole output: target/matrix-shard-$index.log)"
    fi
done
for index in "${!pids[@]}"; do
    grep -oE "(matrix \(.*|  broken by qshm.*|shard .* left.*)" "target/matrix-shard-$index.log" || true
done
echo "matrix: $(
    [ $status = 0 ] && echo passed || echo FAILED
) in $((SECONDS - started)) s with $shards shards"
exit $status
