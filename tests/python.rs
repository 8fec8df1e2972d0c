//! The Python package (`python/`, PyO3): built and installed into a test virtual
//! environment, then its pytest suite (`python/tests`) run against the qshm CLI and a real
//! Qt 6 process, as part of `cargo test --all`.
//!
//! * The venv is `target/py-venv` (maturin, pytest, numpy from PyPI; one `qshm: installing`
//!   line before the download; reused once it has them). `QSHM_PYTHON` names the Python
//!   to make it with (default `python3`, at least 3.9).
//! * The package is installed with `pip install ./python` (maturin through pip, no build
//!   isolation: the venv's maturin, no download), built in `target/python` (dev profile).
//! * pytest runs in a private IPC and mount namespace with its own `/dev/shm` and `TMPDIR`
//!   when root (as CI is), so its leftover checks see only its own objects.
//! * The crate's own Rust unit tests (`cargo test` in `python/`) run as a second trial.
//! * Without Python, a venv or PyPI, the suite is reported as ignored with a loud `SKIP`
//!   line, never passed silently; without Qt (PyQt6) its Qt tests are skipped, loudly too.
//!   A build failure or a failing test fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use libtest_mimic::{Arguments, Failed, Trial};

const NAME: &str = "python::pytest_suite";
const UNIT: &str = "python::crate_unit_tests";
const DEPS: [&str; 3] = ["maturin>=1.9,<2", "pytest", "numpy"];

fn main() {
    let args = Arguments::from_args();
    let trials = match test_venv() {
        Ok(python) => {
            let qt = support::qt::find_qt_python();
            vec![
                Trial::test(NAME, move || run_suite(&python, qt.as_deref())),
                Trial::test(UNIT, run_unit_tests),
            ]
        }
        Err(why) => {
            eprintln!("\n*** SKIP: Python package tests: {why} ***\n");
            vec![
                Trial::test(NAME, || Ok(())).with_ignored_flag(true),
                Trial::test(UNIT, || Ok(())).with_ignored_flag(true),
            ]
        }
    };
    libtest_mimic::run(&args, trials).exit();
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The target directory this test binary was built in (`target/<profile>/deps/..`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return root().join(dir);
    }
    root().join("target")
}

/// The venv's python, made and filled if needed; `Err`: why the suite cannot run here.
fn test_venv() -> Result<PathBuf, String> {
    let venv = target_dir().join("py-venv");
    let python = venv.join("bin").join("python");
    let ready = || {
        Command::new(&python)
            .args(["-c", "import maturin, pytest, numpy"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return Ok(python);
    }
    let base = std::env::var("QSHM_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let version = Command::new(&base)
        .args(["-c", "import sys; print(sys.version_info >= (3, 9))"])
        .output()
        .map_err(|e| format!("no {base} on this machine ({e})"))?;
    if String::from_utf8_lossy(&version.stdout).trim() != "True" {
        return Err(format!("{base} is not Python 3.9 or later"));
    }
    eprintln!(
        "qshm: installing {} into {} for the Python package tests (a download of about 30 MB)",
        DEPS.join(", "),
        venv.display()
    );
    let log = venv.with_extension("log");
    let logged = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        let _ = std::fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat());
        if out.status.success() {
            Ok(())
        } else {
            let last = String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .to_owned();
            Err(format!("{what} failed: {last}; full log: {}", log.display()))
        }
    };
    logged(
        Command::new(&base).args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    logged(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(DEPS),
        "pip install (PyPI)",
    )?;
    if ready() {
        Ok(python)
    } else {
        Err(format!(
            "the venv cannot import maturin, pytest and numpy; see {}",
            log.display()
        ))
    }
}

/// Build the CLI and the package, then run pytest; its output goes to ours.
fn run_suite(python: &Path, qt: Option<&Path>) -> Result<(), Failed> {
    let cli = build_cli()?;
    install_package(python)?;
    if qt.is_none() {
        eprintln!(
            "\n*** SKIP: Python package tests with real Qt 6: PyQt6 unavailable (pytest skips them) ***\n"
        );
    }
    let tmp = target_dir().join("py-tmp").join(std::process::id().to_string());
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot make {}: {e}", tmp.display()))?;
    let mut cmd = if private_namespace_works() {
        // own System V tables (-i), own /dev/shm (-m and a tmpfs): leftovers are ours alone
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-im",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /dev/shm && exec \"$@\"",
            "sh",
        ]);
        cmd.arg(python);
        cmd
    } else {
        eprintln!("(Python package tests: not root, so not in a private namespace)");
        Command::new(python)
    };
    cmd.args([
        "-m",
        "pytest",
        "python/tests",
        "-p",
        "no:cacheprovider",
        "-rs",
        "-q",
    ])
    .current_dir(root()) // not python/: its source package would shadow the installed one
    .env("QSHM_CLI", &cli)
    .env("QSHM_PYTEST_STRICT", "1")
    .env("TMPDIR", &tmp)
    .env("PYTHONDONTWRITEBYTECODE", "1");
    match qt {
        Some(qt) => cmd.env("QSHM_QT_PEER", qt),
        None => cmd.env_remove("QSHM_QT_PEER"),
    };
    let started = Instant::now();
    let status = cmd.status().map_err(|e| format!("cannot run pytest: {e}"))?;
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("(pytest ran {:.1} s)", started.elapsed().as_secs_f64());
    match status.code() {
        Some(0) => Ok(()),
        Some(5) => Err("pytest collected no tests".into()),
        _ => Err(format!("pytest failed ({status}); its output is above").into()),
    }
}

/// `cargo test` in `python/`, built in its own target directory (shared with CI's lint of
/// the crate): maturin's builds set other PyO3 variables, which would rebuild PyO3 each time.
fn run_unit_tests() -> Result<(), Failed> {
    let status = Command::new(env!("CARGO"))
        .args(["test", "--quiet", "--manifest-path", "python/Cargo.toml"])
        .current_dir(root())
        .env("CARGO_TARGET_DIR", target_dir().join("python-unit"))
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo test in python/ failed ({status})").into())
    }
}

/// True when `unshare -im` with a tmpfs on /dev/shm works (root).
fn private_namespace_works() -> bool {
    Command::new("unshare")
        .args(["-im", "sh", "-c", "mount -t tmpfs tmpfs /dev/shm"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `qshm` binary, built as `cargo test --all` builds it (a no-op when it did).
fn build_cli() -> Result<PathBuf, Failed> {
    let release =
        std::env::current_exe().is_ok_and(|exe| exe.components().any(|c| c.as_os_str() == "release"));
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "-p", "qshm-cli", "--bin", "qshm"])
        .current_dir(root());
    if release {
        cargo.arg("--release");
    }
    let status = cargo.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("cargo build -p qshm-cli failed".into());
    }
    Ok(target_dir()
        .join(if release { "release" } else { "debug" })
        .join("qshm"))
}

/// `pip install ./python` into the venv: maturin builds the extension (dev profile, in
/// `target/python`, so later runs rebuild only what changed).
fn install_package(python: &Path) -> Result<(), Failed> {
    let started = Instant::now();
    let bin = python.parent().unwrap_or(Path::new("."));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    let out = Command::new(python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args([
            "--no-build-isolation",
            "--no-deps",
            "--force-reinstall",
            "./python",
        ])
        .current_dir(root())
        .env("PATH", std::env::join_paths(paths).map_err(|e| e.to_string())?)
        .env("CARGO_TARGET_DIR", target_dir().join("python"))
        .env("MATURIN_PEP517_ARGS", "--profile dev")
        .output()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pip install ./python (maturin) failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    eprintln!(
        "(the qshm Python package built and installed in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
