//! The real-Qt peer (PyQt6 driving `interop/qt_peer.py`): found through `QSHM_QT_PEER`
//! (a Python with PyQt6), else installed by `interop/setup.sh` into `target/qt-venv`
//! (cached; the first test binary that needs it installs it, one install at a time under
//! a file lock, so no test skips because the install comes later). Without it, Qt tests
//! are reported as ignored with a loud `SKIP` line, or fail when `QSHM_REQUIRE_QT` is set
//! (CI sets it).

use std::path::{Path, PathBuf};
use std::process::Command;

use qshm::KeyType;

use super::{Peer, kind_name};

/// Set (to the reason) when a pass of the suite runs without real Qt: the unprivileged
/// user of [`super::again`] cannot use the Python that has it.
pub(crate) const NO_QT_ENV: &str = "QSHM_NO_QT";

/// A Python that `user` may run and that imports PyQt6 from the venv of `venv_python`:
/// that Python itself, or (when it lives where `user` cannot go, as a pyenv under `/root`
/// does) the system's `python3` with the venv's `site-packages` as `PYTHONPATH`, returned
/// beside it.
pub(crate) fn python_for_user(
    venv_python: &Path,
    user: &super::TempUser,
) -> Option<(PathBuf, Option<PathBuf>)> {
    use std::os::unix::process::CommandExt;
    let imports = |python: &Path, site: Option<&Path>| {
        let mut cmd = Command::new(python);
        cmd.args(["-c", "import PyQt6.QtCore"])
            .current_dir("/")
            .uid(user.uid)
            .gid(user.gid);
        if let Some(site) = site {
            cmd.env("PYTHONPATH", site);
        }
        cmd.output().is_ok_and(|out| out.status.success())
    };
    if imports(venv_python, None) {
        return Some((venv_python.to_owned(), None));
    }
    let venv = venv_python.parent()?.parent()?;
    let lib = std::fs::read_dir(venv.join("lib")).ok()?.flatten().next()?.path();
    let site = lib.join("site-packages");
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|python| imports(python, Some(&site)))
        .map(|python| (python, Some(site)))
}

/// A Python that can import PyQt6, or None (after a loud SKIP line); a panic instead
/// when `QSHM_REQUIRE_QT` is set.
pub(crate) fn find_qt_python() -> Option<PathBuf> {
    if let Ok(why) = std::env::var(NO_QT_ENV) {
        eprintln!("\n*** SKIP: Qt interop tests: {why} ***\n");
        return None;
    }
    if let Ok(py) = std::env::var("QSHM_QT_PEER") {
        return Some(PathBuf::from(py));
    }
    let setup = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/setup.sh");
    let why = match run_setup(setup) {
        Ok((true, stdout, _)) => match stdout.lines().last() {
            Some(line) => return Some(PathBuf::from(line.trim())),
            None => format!("{setup} printed no Python"),
        },
        Ok((false, _, stderr)) => stderr.trim().to_owned(),
        Err(e) => format!("cannot run {setup}: {e}"),
    };
    if std::env::var_os("QSHM_REQUIRE_QT").is_some() {
        panic!("QSHM_REQUIRE_QT is set but PyQt6 is unavailable: {why}");
    }
    eprintln!("\n*** SKIP: Qt interop tests: PyQt6 unavailable ({why}) ***\n");
    None
}

/// A Python with the Qt binding `flavor` of `interop/setup.sh` (`pyqt6`, `pyqt5`,
/// `pyside6`): the one in environment variable `env_var` if set, else the venv
/// `setup.sh` installs (cached under `target/`). `Err` says why there is none; the caller
/// prints the loud SKIP line.
pub(crate) fn find_qt_binding(flavor: &str, env_var: &str) -> Result<PathBuf, String> {
    if let Ok(why) = std::env::var(NO_QT_ENV) {
        return Err(why);
    }
    if let Ok(py) = std::env::var(env_var) {
        return Ok(PathBuf::from(py));
    }
    let setup = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/setup.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(setup).arg(flavor);
    match run_setup_command(&mut cmd) {
        Ok((true, stdout, _)) => stdout
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| format!("{setup} {flavor} printed no python")),
        Ok((false, _, stderr)) => Err(stderr.trim().to_owned()),
        Err(e) => Err(format!("cannot run {setup} {flavor}: {e}")),
    }
}

/// Run `setup.sh`: its `qshm: ...` note goes to our stderr as it comes (it must be seen
/// before the download); the rest of its stderr is kept for the SKIP line.
pub(crate) fn run_setup(setup: &str) -> std::io::Result<(bool, String, String)> {
    run_setup_command(Command::new("bash").arg(setup))
}

/// [`run_setup`] of a prepared command (`bash setup.sh [flavor]`).
fn run_setup_command(cmd: &mut Command) -> std::io::Result<(bool, String, String)> {
    use std::io::{BufRead, BufReader, Read};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut stderr = String::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let line = line?;
            if line.starts_with("qshm: ") {
                eprintln!("{line}");
            } else {
                stderr.push_str(&line);
                stderr.push('\n');
            }
        }
    }
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout)?;
    }
    Ok((child.wait()?.success(), stdout, stderr))
}

pub(crate) fn qt_peer(python: &PathBuf, action: &str, key: &str, kind: KeyType, extra: &[&str]) -> Peer {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/qt_peer.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg(action)
        .args(["--key", key, "--type", kind_name(kind)])
        .args(extra);
    Peer::spawn_command(&mut cmd)
}
