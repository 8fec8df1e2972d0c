#!/usr/bin/env bash
# qshm against its peers and the hardware floors, in one run: writes bench/RESULTS.md and
# the charts in bench/charts/, and ends with the performance targets, met or missed.
#   bash bench/compare.sh           full run (about 5 minutes on 2 cores)
#   bash bench/compare.sh --quick   short run: smaller ranges, fewer repetitions
# Python peers (posix_ipc, PyQt6 = real Qt 6) and matplotlib for the charts go into
# bench/.deps/venv (git-ignored).
set -euo pipefail
cd "$(dirname "$0")"
quick="${1:-}"
start=$(date +%s)
deps=.deps
mkdir -p "$deps"
py=""
if command -v python3 >/dev/null 2>&1; then
    if [ ! -x "$deps/venv/bin/python" ]; then
        python3 -m venv "$deps/venv" || true
    fi
    if [ -x "$deps/venv/bin/python" ]; then
        py="$deps/venv/bin/python"
        "$py" -m pip install --quiet --disable-pip-version-check posix_ipc PyQt6 matplotlib >"$deps/pip.log" 2>&1 \
            || echo "*** SKIP: some Python peers or matplotlib could not be installed (see bench/$deps/pip.log) ***"
    fi
else
    echo "*** SKIP: no python3: Python and Qt peers are not measured, no report ***"
fi

# iceoryx2 (a frame-channel peer) where its build can find libclang (bindgen needs it)
features=()
if ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so'; then  # not libclang-cpp alone
    features=(--features iceoryx2)
else
    echo "*** SKIP: no libclang: iceoryx2 is not measured as a frame-channel peer ***"
fi
if ! cargo build --release --quiet "${features[@]}"; then
    if [ ${#features[@]} -gt 0 ]; then
        echo "*** SKIP: the iceoryx2 peer did not build (bindgen needs libclang and its headers, e.g. Debian's libclang-dev): measured without it ***"
        features=()
        cargo build --release --quiet
    else
        exit 1
    fi
fi
rows="$deps/rows.tsv"
measure_start=$(date +%s)
./target/release/qshm-bench measure $quick >"$rows"
if [ -n "$py" ]; then
    "$py" py/peers.py $quick >>"$rows" || echo "# python peers failed" >>"$rows"
    # the qshm Python package (python/bench): built into this venv, then its rows
    bash ../python/bench/rows.sh "$(pwd)/$py" $quick >>"$rows" || echo "# python package bench failed" >>"$rows"
fi
seconds=$(($(date +%s) - measure_start))
echo "measured in ${seconds} s (whole script so far: $(($(date +%s) - start)) s)"
if [ -n "$py" ]; then
    "$py" py/report.py "$rows" RESULTS.md $quick --seconds "$seconds"
else
    cat "$rows"
fi
