#!/usr/bin/env bash
# qshm against its peers, in one run: prints one table of ratios and writes bench/RESULTS.md.
#   bash bench/compare.sh           full run (a few minutes on 2 cores)
#   bash bench/compare.sh --quick   short smoke run
# Python peers (posix_ipc, PyQt6 = real Qt 6) go into bench/.deps (git-ignored).
set -euo pipefail
cd "$(dirname "$0")"
quick="${1:-}"
deps=.deps
mkdir -p "$deps"
py=""
if command -v python3 >/dev/null 2>&1; then
    if [ ! -x "$deps/venv/bin/python" ]; then
        python3 -m venv "$deps/venv" || true
    fi
    if [ -x "$deps/venv/bin/python" ]; then
        py="$deps/venv/bin/python"
        "$py" -m pip install --quiet --disable-pip-version-check posix_ipc PyQt6 >"$deps/pip.log" 2>&1 \
            || echo "*** SKIP: some Python peers could not be installed (see bench/$deps/pip.log) ***"
    fi
else
    echo "*** SKIP: no python3: Python and Qt peers are not measured ***"
fi

cargo build --release --quiet
rows="$deps/rows.tsv"
./target/release/qshm-bench measure $quick >"$rows"
if [ -n "$py" ]; then
    "$py" py/peers.py $quick >>"$rows" || echo "# python peers failed" >>"$rows"
    "$py" py/report.py "$rows" RESULTS.md
else
    echo "# Python peers: no python3" >>"$rows"
    python3 py/report.py "$rows" RESULTS.md 2>/dev/null || cat "$rows"
fi
