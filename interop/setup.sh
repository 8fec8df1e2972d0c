#!/usr/bin/env bash
# Install a real Qt (Python bindings, from PyPI) into a local virtual environment for the
# interop tests:
#   bash interop/setup.sh [pyqt6|pyqt5|pyside6]     (default: pyqt6)
#   pyqt6    PyQt6 (Qt 6.11)                    venv ${QSHM_QT_VENV:-<repo>/target/qt-venv}
#   pyqt5    PyQt5 5.15.11 (Qt 5.15)            venv ${QSHM_QT5_VENV:-<repo>/target/qt5-venv}
#   pyside6  PySide6-Essentials 6.12.0 (Qt 6.12) venv ${QSHM_QT612_VENV:-<repo>/target/qt612-venv}
# Prints the venv's python (absolute path) as the LAST line of stdout and exits 0; on
# failure prints a loud `SKIP: <binding> could not be installed (...)` line on stderr and
# exits 1. Idempotent: a venv that already imports the binding's QtCore is reused at once.
# Before downloading, says so in one `qshm: installing ...` line on stderr.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
flavor="${1:-pyqt6}"
case "$flavor" in
    pyqt6)
        venv="${QSHM_QT_VENV:-$root/target/qt-venv}"
        module=PyQt6 spec=PyQt6 peer_var=QSHM_QT_PEER what="PyQt6 (real Qt 6 for the Qt interop tests, a download of about 300 MB)" ;;
    pyqt5)
        venv="${QSHM_QT5_VENV:-$root/target/qt5-venv}"
        module=PyQt5 spec="PyQt5==5.15.11" peer_var=QSHM_QT5_PEER what="PyQt5 5.15.11 (real Qt 5.15 for tests/qt_versions.rs, a download of about 70 MB)" ;;
    pyside6)
        venv="${QSHM_QT612_VENV:-$root/target/qt612-venv}"
        module=PySide6 spec="PySide6-Essentials==6.12.0" peer_var=QSHM_QT612_PEER what="PySide6-Essentials 6.12.0 (real Qt 6.12 for tests/qt_versions.rs, a download of about 100 MB)" ;;
    *)
        echo "usage: bash interop/setup.sh [pyqt6|pyqt5|pyside6]" >&2
        exit 2 ;;
esac
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
py="$venv/bin/python"
log="$venv.log"

ready() { [ -x "$py" ] && "$py" -c "import $module.QtCore" >/dev/null 2>&1; }
skip() {
    echo "SKIP: $module could not be installed ($1)" >&2
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
echo "qshm: installing $what into $venv; $peer_var=/path/to/python uses a Python that has it" >&2
if ! python3 -m venv "$venv" >"$log" 2>&1; then
    skip "python3 -m venv $venv failed: $(tail -n 1 "$log" 2>/dev/null)"
fi
if ! "$py" -m pip install --quiet --disable-pip-version-check "$spec" >>"$log" 2>&1; then
    skip "pip install $spec failed: $(tail -n 1 "$log"); full log: $log"
fi
if ! "$py" -c "import $module.QtCore" >>"$log" 2>&1; then
    skip "import $module.QtCore failed: $(tail -n 1 "$log"); full log: $log"
fi
echo "$py"
