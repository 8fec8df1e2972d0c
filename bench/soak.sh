#!/usr/bin/env bash
# Soak: the crash trials of tests/crash.rs, 1000 of them (override with QSHM_TRIALS), plus the
# races. Prints "crash trials: N trials, L leaked, H hung, K processes killed (seed S)".
# Replay a failing run with QSHM_SEED=S.
set -euo pipefail
cd "$(dirname "$0")/.."
QSHM_TRIALS="${QSHM_TRIALS:-1000}" cargo test --release --test crash -- --nocapture --test-threads 1 2>&1 \
    | grep -E "crash trials:|cycles|test result|FAILED|panicked|leaked|hung"
