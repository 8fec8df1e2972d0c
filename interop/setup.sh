#!/usr/bin/env bash
# Install PyQt6 (real Qt 6) into a local virtual environment for the interop tests.
# Prints the venv's python as the LAST line of stdout and exits 0; on failure prints a
# loud SKIP line on stderr and exits 1. Idempotent: a ready venv is reused at once.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${QSHM_QT_VENV:-$root/target/qt-venv}"
py="$venv/bin/python"

if [ -x "$py" ] && "$py" -c 'import PyQt6.QtCore' 2>/dev/null; then
    echo "$py"
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "SKIP: PyQt6 could not be installed (no python3 on this machine)" >&2
    exit 1
fi
mkdir -p "$(dirname "$venv")"
if ! python3 -m venv "$venv" >/dev/null 2>"$venv.log"; then
    echo "SKIP: PyQt6 could not be installed (python3 -m venv failed: $(tail -1 "$venv.log"))" >&2
    exit 1
fi
if ! "$py" -m pip install --quiet --disable-pip-version-check PyQt6 >"$venv.log" 2>&1; then
    echo "SKIP: PyQt6 could not be installed (pip: $(tail -1 "$venv.log"))" >&2
    exit 1
fi
if ! "$py" -c 'import PyQt6.QtCore' 2>>"$venv.log"; then
    echo "SKIP: PyQt6 could not be installed (import failed: $(tail -1 "$venv.log"))" >&2
    exit 1
fi
echo "$py"
