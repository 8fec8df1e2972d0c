#!/usr/bin/env bash
# The Python package's rows for bench/compare.sh: installs the package (maturin, release
# build in target/python) into the given Python's environment, then prints the rows of
# bench_python.py (lock+unlock against posix_ipc and PyQt6, a 1 MiB read against
# multiprocessing.shared_memory). A package that cannot be built is a `# SKIP` row.
#   bash python/bench/rows.sh PYTHON [--quick] [--markdown]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="$1"
shift
bin="$(dirname "$py")"
if ! "$py" -m pip install --quiet --disable-pip-version-check "maturin>=1.9,<2" >&2; then
    echo "# SKIP Python package: maturin could not be installed"
    exit 0
fi
if ! PATH="$bin:$PATH" CARGO_TARGET_DIR="$root/target/python" "$py" -m pip install --quiet \
    --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall "$root/python" >&2; then
    echo "# SKIP Python package: pip install ./python failed"
    exit 0
fi
exec "$py" "$here/bench_python.py" "$@"
