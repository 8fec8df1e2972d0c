#!/usr/bin/env bash
# Install PyQt6 (real Qt 6) into a local virtual environment for the interop tests.
#   venv: ${QSHM_QT_VENV:-<repo>/target/qt-venv}
# Prints the venv's python (absolute path) as the LAST line of stdout and exits 0; on
# failure prints a loud `SKIP: PyQt6 could not be installed (...)` line on stderr and
# exits 1. Idempotent: a venv that already imports PyQt6.QtCore is reused at once. Before
# downloading, says so in one `qshm: installing PyQt6 ...` line on stderr.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${QSHM_QT_VENV:-$root/target/qt-venv}"
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
py="$venv/bin/python"
log="$venv.log"

ready() { [ -x "$py" ] && "$py" -c 'import PyQt6.QtCore' >/dev/null 2>&1; }
skip() {
    echo "SKIP: PyQt6 could not be installed ($1)" >&2
    exit 1
}

if ready; then
    echo "$py"
    exit 0
fi
command -v python3 >/dev/null 2>&1 || skip "no python3 on this machine"
mkdir -p "$(dirname "$venv")" 2>/dev/null || skip "cannot create $(dirname "$venv")"

# Serialize concurrent installs into the same venv (flock is optional).
if command -v flock >/dev/null 2>&1 && exec 9>"$venv.lock"; then
    flock 9
    if ready; then
        echo "$py"
        exit 0
    fi
fi

# Say so once, before the download (silent when the venv is ready: see above).
echo "qshm: installing PyQt6 (real Qt 6 for the Qt interop tests, a download of about 300 MB)" \
    "into $venv; QSHM_QT_PEER=/path/to/python uses a Python that has it" >&2
if ! python3 -m venv "$venv" >"$log" 2>&1; then
    skip "python3 -m venv $venv failed: $(tail -n 1 "$log" 2>/dev/null)"
fi
if ! "$py" -m pip install --quiet --disable-pip-version-check PyQt6 >>"$log" 2>&1; then
    skip "pip install PyQt6 failed: $(tail -n 1 "$log"); full log: $log"
fi
if ! "$py" -c 'import PyQt6.QtCore' >>"$log" 2>&1; then
    skip "import PyQt6.QtCore failed: $(tail -n 1 "$log"); full log: $log"
fi
echo "$py"
