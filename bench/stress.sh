#!/usr/bin/env bash
# Long randomized stress runs of qshm's multi-process tests, in a fresh private IPC and
# mount namespace (its own System V tables, its own /dev/shm and TMPDIR), so they never
# meet another process's segments. CI runs short fixed-seed slices of the same tests.
#
#   sudo bash bench/stress.sh            # full run (about 20-30 minutes on 2 cores)
#   sudo bash bench/stress.sh --quick    # a few minutes
#   QSHM_SEED=N bash bench/stress.sh     # replay a seed (printed at the start)
#
# Prints one line per run and a table: trials / kills / leaks / hangs / double winners /
# wrong counts (two holders of one lock). Exit status 0 only if every figure that must be
# 0 is 0.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
[ "${1:-}" = "--quick" ] && quick=1
if [ "$(id -u)" != 0 ]; then
    echo "bench/stress.sh needs root (unshare -im, mount)" >&2
    exit 2
fi

if [ -z "${QSHM_STRESS_INSIDE:-}" ]; then
    cargo build --tests --quiet
    export QSHM_STRESS_INSIDE=1
    exec unshare -im --propagation private bash "$0" "$@"
fi

# a private /dev/shm and temporary directory (System V key files live in TMPDIR)
mount -t tmpfs -o size=2g qshm-stress /dev/shm
tmp=$(mktemp -d)
mount -t tmpfs -o size=64m qshm-stress-tmp "$tmp"
export TMPDIR="$tmp"

log=$(mktemp)
seed=${QSHM_SEED:-$(date +%s)}
export QSHM_SEED=$seed
if [ -n "$quick" ]; then
    trials=100 races=50 kills=40 loop_ms=10000
else
    trials=1000 races=1000 kills=240 loop_ms=60000
fi
echo "qshm stress run: seed $seed, $trials crash trials per backend and lock mode, $races racing-create rounds, $kills kills per lock, ${loop_ms} ms loops"
echo "namespace: private IPC (ipcs sees $(ipcs -m | grep -c '^0x' || true) segments), /dev/shm and TMPDIR on fresh tmpfs"

status=0
run() { # test-binary filter [VAR=value ...]
    local bin=$1 filter=$2
    shift 2
    if ! env "$@" cargo test --quiet --test "$bin" -- --exact "$filter" >"$log" 2>&1; then
        status=1
        echo "FAILED: $bin $filter $*"
        grep -E "^----|left|hung|failed|ERROR" "$log" | head -20 || true
    fi
    grep -E "^(crash trials|racing creates|kills in tight loops|create-or-attach loop)" "$log" || true
}

for kind in systemv posix; do
    for mode in qt fast; do
        run crash crash_trials_leave_nothing_and_never_hang QSHM_TRIALS=$trials QSHM_KIND=$kind QSHM_MODE=$mode
    done
    run crash "$kind::racing_creates_have_exactly_one_winner" QSHM_RACES=$((races / 2))
done
run crash posix::qt::lock_recovers_from_kills_in_tight_loops QSHM_KILLS=$kills
run crash systemv::qt::lock_recovers_from_kills_in_tight_loops QSHM_KILLS=$kills
run crash posix::fast::lock_recovers_from_kills_in_tight_loops QSHM_KILLS=$kills
for kind in systemv posix; do
    for mode in qt fast; do
        run hardening "$kind::$mode::create_or_attach_loop_of_4_processes_never_splits" QSHM_LOOP_MS=$loop_ms
    done
done

rm -f "$log"
# nothing of qshm may be left in the private namespace
left_shm=$(ipcs -m | grep -c '^0x' || true)
left_sem=$(ipcs -s | grep -c '^0x' || true)
left_files=$(find /dev/shm "$tmp" -mindepth 1 | wc -l)
echo "left in the namespace: $left_shm System V segments, $left_sem semaphore sets, $left_files files in /dev/shm and TMPDIR"
find /dev/shm "$tmp" -mindepth 1 | head -5
[ "$left_shm" = 0 ] && [ "$left_sem" = 0 ] && [ "$left_files" = 0 ] || status=1
echo "stress run: $([ $status = 0 ] && echo passed || echo FAILED) (seed $seed)"
exit $status
