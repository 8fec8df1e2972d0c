//! Every multi-process suite runs as the world runs it, not only as root: after its trials
//! pass as the caller, [`run_suite`] runs the whole suite (the same test binary, the same
//! filter) once more as a throw-away unprivileged user, and suites with lifetime cases
//! once more inside a PID namespace of their own. Each pass runs in a private IPC and
//! mount namespace with its own `/dev/shm` and `TMPDIR`, so it sees only its own objects.
//!
//! The passes run after the first one, not beside it, so that no suite runs against a
//! second copy of itself on a 2-core machine. A caller that is not root is already the
//! unprivileged pass: the others need root (for `useradd`, `unshare`, `mount`) and say so.

use std::path::PathBuf;
use std::process::Command;

use libtest_mimic::{Arguments, Trial};

use super::{PrivateDir, TempUser, is_root, qt};

/// Set in the passes [`run_suite`] starts: they run their trials once, as they are.
const AGAIN_ENV: &str = "QSHM_SUITE_AGAIN";

/// The passes a suite gets besides the caller's own.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Passes {
    /// Again as an unprivileged user.
    AsUser,
    /// Again as an unprivileged user, and again as root in a PID namespace of its own
    /// (where `/proc` shows only that namespace's processes): the lifetime cases.
    AsUserAndInPidNamespace,
}

/// Which pass this process is: what a test that behaves differently per pass asks.
pub(crate) fn this_pass() -> Option<String> {
    std::env::var(AGAIN_ENV).ok()
}

/// Run `trials` as `libtest_mimic::run` does, then (as root, in the first pass) the whole
/// suite again in each of `passes`; exit 0 when every pass passed, else 101.
pub(crate) fn run_suite(args: &Arguments, trials: Vec<Trial>, passes: Passes) -> ! {
    if let Some(pass) = this_pass() {
        // SAFETY: geteuid and getpid have no preconditions and cannot fail.
        let (uid, pid) = unsafe { (libc::geteuid(), libc::getpid()) };
        println!("({pass} pass: uid {uid}, pid {pid})");
    }
    let mut failed = libtest_mimic::run(args, trials).has_failed();
    if this_pass().is_none() && !args.list {
        let mut again = vec![Pass::User];
        if passes == Passes::AsUserAndInPidNamespace {
            again.push(Pass::PidNamespace);
        }
        for pass in again {
            failed |= !pass.run(std::env::args_os().skip(1).collect(), Output::Inherited);
        }
    }
    std::process::exit(if failed { 101 } else { 0 })
}

/// For a suite on libtest's own harness (the CLI's): run this test binary again as an
/// unprivileged user with `args` (which must skip the calling test); false when that
/// pass failed. Does nothing (true) inside a pass.
pub(crate) fn whole_binary_as_user(args: &[&str]) -> bool {
    this_pass().is_some() || Pass::User.run(args.iter().map(Into::into).collect(), Output::Captured)
}

/// Where a pass's output goes: to ours as it comes, or kept and shown only if it fails
/// (a pass that runs beside other tests of libtest's harness).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Inherited,
    Captured,
}

#[derive(Clone, Copy)]
enum Pass {
    User,
    PidNamespace,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::User => "unprivileged-user",
            Pass::PidNamespace => "pid-namespace",
        }
    }

    /// Run the suite in this pass; false when it failed (a skipped pass is not a failure,
    /// and says why it was skipped).
    fn run(self, args: Vec<std::ffi::OsString>, output: Output) -> bool {
        let name = self.name();
        if !is_root() {
            eprintln!("\n*** SKIP the {name} pass: it needs root (this run is unprivileged already) ***");
            return true;
        }
        let user = match self {
            Pass::User => match TempUser::create(&format!("the {name} pass")) {
                Some(user) => Some(user),
                None => return true, // TempUser said why
            },
            Pass::PidNamespace => None,
        };
        let tmp = match PrivateDir::new(name) {
            Ok(tmp) => tmp,
            Err(e) => {
                eprintln!("the {name} pass: cannot make a private TMPDIR: {e}");
                return false;
            }
        };
        let exe = std::env::current_exe().expect("test binary path");
        // dash, when not exec'ing its last command, waits for it with waitpid(-1) and so
        // reaps the orphans that a PID namespace's first process inherits
        let mut script = String::from(
            "mount -t tmpfs -o mode=1777 qshm-again-shm /dev/shm \
             && mount -t tmpfs -o mode=1777,size=64m qshm-again-tmp \"$TMPDIR\" && ",
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["-i", "-m", "--propagation", "private"]);
        match &user {
            Some(user) => {
                script.push_str(&format!(
                    "setpriv --reuid={} --regid={} --clear-groups \"$0\" \"$@\"",
                    user.uid, user.gid
                ));
                // Qt's runtime directory is root's; as this user, Qt uses $TMPDIR/runtime-<user>
                cmd.env_remove("XDG_RUNTIME_DIR").env("HOME", &tmp.0);
                let venv_python = std::env::var_os("QSHM_QT_PEER").map_or_else(
                    || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/qt-venv/bin/python")),
                    PathBuf::from,
                );
                // without any Qt here, the pass finds that out as the first one did
                if venv_python.exists() {
                    match qt::python_for_user(&venv_python, user) {
                        Some((python, site)) => {
                            cmd.env("QSHM_QT_PEER", python);
                            if let Some(site) = site {
                                cmd.env("PYTHONPATH", site);
                            }
                        }
                        None => {
                            let why = format!("user {} may run no Python that imports PyQt6", user.name);
                            eprintln!("*** the {name} pass runs without real Qt: {why} ***");
                            cmd.env(qt::NO_QT_ENV, why);
                        }
                    }
                }
            }
            None => {
                cmd.args(["-p", "-f", "--mount-proc"]);
                script.push_str("\"$0\" \"$@\"");
            }
        }
        cmd.args(["sh", "-c", &script])
            .arg(&exe)
            .args(args)
            .env(AGAIN_ENV, name)
            .env("TMPDIR", &tmp.0);
        let who = user
            .as_ref()
            .map_or_else(|| "root".to_owned(), |u| format!("{} (uid {})", u.name, u.uid));
        println!("\n=== the same suite again: {name} pass, as {who}, private /dev/shm and TMPDIR ===");
        let result = match output {
            Output::Inherited => cmd.status().map(|status| (status, String::new())),
            Output::Captured => cmd.output().map(|out| {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                (out.status, text)
            }),
        };
        let (status, text) = match result {
            Ok(done) => done,
            Err(e) => {
                eprintln!("the {name} pass: cannot run unshare: {e}");
                return false;
            }
        };
        if !status.success() {
            eprintln!("{text}");
        } else if let Some(summary) = text.lines().rfind(|l| l.starts_with("test result:")) {
            println!("{summary}");
        }
        println!(
            "=== {name} pass: {}",
            if status.success() { "ok" } else { "FAILED" }
        );
        status.success()
    }
}
