//! Unit tests of key derivation, Qt's directories and the string form (some against real
//! Qt 6 through PyQt6, skipped loudly without it).
use super::qt_dirs::*;
use super::*;

#[test]
fn clean_path_matches_qdir() {
    // What Qt 6.11's QDir::cleanPath prints (PyQt6)
    let pinned = [
        ("/tmp/", "/tmp"),
        ("//tmp//x/./y/../z", "/tmp/x/z"),
        ("/..", "/.."),
        ("/tmp/../..", "/.."),
        ("/a/./../../b/./c/..", "/../b"),
        ("/tmp/...", "/tmp/..."),
        ("///", "/"),
        ("a/../..", ".."),
        ("a/b/../..", "."),
        ("./", "."),
        ("", ""),
    ];
    for (path, qt) in pinned {
        assert_eq!(clean_path(path), qt, "cleanPath({path:?})");
    }
}

#[test]
fn clean_paths_are_recognised_like_qfilesystementry() {
    for clean in ["/", "/tmp", "/tmp/", "/tmp/...", "/a/.b/..c"] {
        assert!(is_clean(clean), "{clean:?}");
    }
    for unclean in ["//", "/tmp//", "//tmp", "/tmp/.", "/tmp/..", "/./tmp", "/a/../b"] {
        assert!(!is_clean(unclean), "{unclean:?}");
    }
}

#[test]
fn temp_dir_follows_tmpdir_like_qt() {
    // What Qt 6.11 prints for QStandardPaths::writableLocation(TempLocation) with
    // TMPDIR set to the first value and /work as the working directory (PyQt6).
    let pinned = [
        (None, "/tmp"),
        (Some(""), "/tmp"),
        (Some("/tmp"), "/tmp"),
        (Some("/tmp/"), "/tmp"),
        (Some("/tmp//"), "/tmp/"),
        (Some("/tmp///"), "/tmp/"),
        (Some("//tmp"), "/tmp"),
        (Some("/tmp/./"), "/tmp"),
        (Some("/tmp/."), "/tmp"),
        (Some("/tmp/.."), "/"),
        (Some("/tmp/../tmp//"), "/tmp/"),
        (Some("/tmp/..//"), "//"),
        (Some("/tmp/a/../../.."), "/.."),
        (Some("/"), "/"),
        (Some("//"), "/"),
        (Some("rel"), "/work/rel"),
        (Some("rel/"), "/work/rel"),
        (Some("rel//"), "/work/rel/"),
        (Some("./rel/../x"), "/work/x"),
        (Some("."), "/work"),
        (Some("./"), "/work"),
        (Some(".."), "/"),
        // neither checked for existence nor resolved
        (Some("/nonexistent-qshm"), "/nonexistent-qshm"),
        (Some("/tmp/link-to-dir"), "/tmp/link-to-dir"),
    ];
    for (tmpdir, qt) in pinned {
        let ours = temp_dir_from(tmpdir, || Some("/work".to_owned()));
        assert_eq!(ours, qt, "TMPDIR={tmpdir:?}");
    }
    // working directory "/"
    assert_eq!(temp_dir_from(Some("."), || Some("/".to_owned())), "/");
    assert_eq!(temp_dir_from(Some("x"), || Some("/".to_owned())), "/x");
    // working directory removed: Qt 6.11 prints "x" and ""
    assert_eq!(temp_dir_from(Some("rel/../x/"), || None), "x");
    assert_eq!(temp_dir_from(Some("."), || None), "");
}

#[test]
fn tmpdir_that_is_not_utf8_is_decoded_like_qt() {
    use std::os::unix::ffi::OsStrExt;
    let raw = std::ffi::OsStr::from_bytes(b"/tmp/a\xffb");
    // Qt 6.11 prints '/tmp/a\ufffdb'
    assert_eq!(decode_env(raw), "/tmp/a\u{fffd}b");
}

/// A directory for one test, removed with everything in it when dropped.
struct TestDir(std::path::PathBuf);

impl TestDir {
    fn new(tag: &str) -> TestDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("qshm-keytest-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        TestDir(dir)
    }

    fn path(&self, rel: &str) -> String {
        self.0.join(rel).to_str().unwrap().to_owned()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Python that imports PyQt6: `QSHM_QT_PEER`, else the venv `interop/setup.sh` makes
/// (it installs PyQt6 at the first call, one install at a time under a file lock, so the
/// first `cargo test` installs it before these tests run, rather than skipping them).
/// Without one: a loud SKIP line and `None`, or a failure when `QSHM_REQUIRE_QT` is set
/// (CI sets it).
pub(super) fn qt_python(test: &str) -> Option<std::path::PathBuf> {
    static PYTHON: std::sync::OnceLock<Result<std::path::PathBuf, String>> = std::sync::OnceLock::new();
    match PYTHON.get_or_init(find_or_install_qt_python) {
        Ok(python) => Some(python.clone()),
        Err(why) if std::env::var_os("QSHM_REQUIRE_QT").is_some() => {
            panic!("{test}: QSHM_REQUIRE_QT is set but there is no Python with PyQt6: {why}")
        }
        Err(why) => {
            skip(&format!("{test}: no Python with PyQt6: {why}"));
            None
        }
    }
}

fn find_or_install_qt_python() -> Result<std::path::PathBuf, String> {
    use std::process::{Command, Stdio};
    let imports_qt = |python: &std::path::Path| {
        Command::new(python)
            .args(["-c", "import PyQt6.QtCore"])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if let Some(python) = std::env::var_os("QSHM_QT_PEER").map(std::path::PathBuf::from) {
        return if imports_qt(&python) {
            Ok(python)
        } else {
            Err(format!(
                "QSHM_QT_PEER={} cannot import PyQt6.QtCore",
                python.display()
            ))
        };
    }
    let setup = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/setup.sh");
    if !std::path::Path::new(setup).exists() {
        return Err("interop/setup.sh is not here (a packaged crate?): set QSHM_QT_PEER".to_owned());
    }
    // its one-line note before the download and its SKIP reason go to our stderr
    let out = Command::new("bash")
        .arg(setup)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {setup}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last().map(str::trim) {
        Some(python) if out.status.success() && imports_qt(python.as_ref()) => Ok(python.into()),
        _ => Err(format!(
            "{setup} could not install it (its reason is printed above)"
        )),
    }
}

/// Prints a SKIP line straight to stderr, past libtest's output capture, so that it
/// shows even when the test passes.
fn skip(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIP: {what} ***\n");
}

/// One environment for [`qt_locations`]: variables to set (`None`: unset) and the
/// working directory.
struct QtEnv {
    vars: Vec<(&'static str, Option<String>)>,
    cwd: String,
}

/// `QStandardPaths::writableLocation(location)` as real Qt prints it in each
/// environment, in one child process (Qt reads the variables and the working
/// directory at every call; this process's environment is not touched).
fn qt_locations(python: &std::path::Path, location: &str, envs: &[QtEnv]) -> Vec<String> {
    use std::io::Write;
    const SCRIPT: &str = r#"
import json, os, sys
from PyQt6.QtCore import QStandardPaths
where = getattr(QStandardPaths.StandardLocation, sys.argv[1])
out = []
for env in json.load(sys.stdin):
    for name, value in env["vars"]:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    os.chdir(env["cwd"])
    out.append(QStandardPaths.writableLocation(where))
print(json.dumps(out))
"#;
    let input: Vec<serde_json::Value> = envs
        .iter()
        .map(|e| serde_json::json!({ "vars": e.vars, "cwd": e.cwd }))
        .collect();
    let mut child = std::process::Command::new(python)
        .args(["-c", SCRIPT, location])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(&input).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed.len(), envs.len());
    printed
}

#[test]
fn temp_dir_matches_real_qt() {
    let Some(python) = qt_python("temp_dir_matches_real_qt") else {
        return;
    };
    let dir = TestDir::new("temp");
    std::fs::create_dir(dir.path("real")).unwrap();
    std::os::unix::fs::symlink(dir.path("real"), dir.path("link")).unwrap();
    let root = dir.path("");
    let root = root.trim_end_matches('/');
    let tmpdirs: Vec<Option<String>> = [
        None,
        Some(String::new()),
        Some("/tmp".to_owned()),
        Some(format!("{root}/link")),
        Some(format!("{root}/link/")),
        Some(format!("{root}/link//")),
        Some(format!("{root}/./real/../link")),
        Some(format!("{root}//real")),
        Some(format!("{root}/missing")),
        Some(format!("{root}/real/../..//")),
        Some("link".to_owned()),
        Some("./link/../real//".to_owned()),
        Some(".".to_owned()),
        Some("..".to_owned()),
        Some("/".to_owned()),
    ]
    .into();
    let envs: Vec<QtEnv> = tmpdirs
        .iter()
        .map(|t| QtEnv {
            vars: vec![("TMPDIR", t.clone())],
            cwd: dir.path("real"),
        })
        .collect();
    let qt = qt_locations(&python, "TempLocation", &envs);
    for (tmpdir, qt) in tmpdirs.iter().zip(qt) {
        let ours = temp_dir_from(tmpdir.as_deref(), || Some(dir.path("real")));
        assert_eq!(ours, qt, "TMPDIR={tmpdir:?}");
    }
}

#[test]
fn posix_legacy_keys_are_pinned_to_qt() {
    // Values printed by Qt 6.11 (PyQt6): QSharedMemory.legacyNativeKey(key, PosixRealtime)
    let pinned = [
        (
            "market",
            "/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3",
        ),
        (
            "a",
            "/qipc_sharedmemory_a86f7e437faa5a7fce15d1ddcb9eaeaea377667b8",
        ),
        (
            "a/b",
            "/qipc_sharedmemory_ab3ec69c85a4ff96830024afeef2d4e512181c8f7b",
        ),
        (
            "héllo wörld",
            "/qipc_sharedmemory_hllowrld24e9f5c07847ff8a2a9fa77456655792f5bc7f9f",
        ),
    ];
    for (legacy, native) in pinned {
        let k = legacy_platform_safe_key(legacy, IpcType::SharedMemory, KeyType::PosixRealtime);
        assert_eq!(k.native(), native, "key {legacy:?}");
        assert_eq!(k.legacy_key(), Some(legacy));
    }
}

#[test]
fn system_v_key_in_a_missing_directory_is_a_key_error_naming_it() {
    use crate::{AccessMode, SemaphoreMode, SharedMemory, SystemSemaphore};
    let dir = TestDir::new("missing");
    let missing = dir.path("missing");
    let key = NativeIpcKey::new(format!("{missing}/qipc_x"), KeyType::SystemV);
    let mut shm = SharedMemory::with_native_key(key.clone());
    let sem = SystemSemaphore::with_native_key(key.clone(), 1, SemaphoreMode::Create).map(drop);
    for result in [
        shm.create(4096, AccessMode::ReadWrite),
        shm.attach(AccessMode::ReadOnly),
        sem,
    ] {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), SharedMemoryError::KeyError, "{err}");
        let want = format!("{missing}, the directory of the System V key file, does not exist");
        assert!(err.to_string().contains(&want), "{err}");
    }
    // a file where the directory should be
    std::fs::write(&missing, b"").unwrap();
    let err = shm.create(4096, AccessMode::ReadWrite).unwrap_err();
    assert_eq!(err.kind(), SharedMemoryError::KeyError, "{err}");
    assert!(
        err.to_string().contains(&format!(
            "{missing}, the directory of the System V key file, is not a directory"
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path("")).unwrap().count(),
        1,
        "nothing else made"
    );
}

#[test]
fn legacy_key_in_a_missing_temp_dir_fails_naming_it() {
    use crate::{AccessMode, SharedMemory};
    let dir = TestDir::new("missingtmp");
    let missing = dir.path("missing");
    let key = legacy_key_in("market", IpcType::SharedMemory, KeyType::SystemV, || {
        missing.clone()
    });
    // Qt's string: the directory is used as it is
    assert_eq!(
        key.native(),
        format!("{missing}/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3")
    );
    let err = SharedMemory::with_native_key(key)
        .create(4096, AccessMode::ReadWrite)
        .unwrap_err();
    assert_eq!(err.kind(), SharedMemoryError::KeyError);
    assert_eq!(
        err.to_string(),
        format!(
            "create \"market\": {missing}, the directory of the System V key file, does not \
                 exist (Qt's temporary directory: $TMPDIR, else /tmp); Qt 5 would put its key file in / instead, \
                 which qshm refuses (No such file or directory (os error 2))"
        )
    );
}

#[test]
fn legacy_key_in_a_relative_temp_dir_keeps_qts_string_but_is_unusable() {
    use crate::{AccessMode, SharedMemory};
    // Qt 6.11 gives "" for TMPDIR=. and "x" for TMPDIR=x when the working directory
    // is gone; its key files would then land in / or in the working directory.
    for temp in ["", ".", "x"] {
        let key = legacy_key_in("market", IpcType::SharedMemory, KeyType::SystemV, || {
            temp.to_owned()
        });
        assert_eq!(
            key.native(),
            format!("{temp}/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3")
        );
        let mut shm = SharedMemory::with_native_key(key);
        for result in [
            shm.create(4096, AccessMode::ReadWrite),
            shm.attach(AccessMode::ReadWrite),
        ] {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), SharedMemoryError::KeyError);
            assert!(err.to_string().contains("is not an absolute path"), "{err}");
        }
    }
    let posix = legacy_key_in("market", IpcType::SharedMemory, KeyType::PosixRealtime, || {
        unreachable!("POSIX keys need no directory")
    });
    assert!(posix.check_usable().is_ok());
}

/// True in the child process [`run_child`] starts for test `name`.
fn in_child(name: &str) -> bool {
    std::env::var("QSHM_KEYTEST_CHILD").is_ok_and(|n| n == name)
}

/// Runs test `name` (full path) of this test binary again in a child process with
/// `vars` set (this process's environment is never changed) and returns what it
/// printed after `child: ` on each line (libtest may print before it on a line).
fn run_child(name: &str, vars: &[(&str, &str)]) -> Vec<String> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("QSHM_KEYTEST_CHILD", name)
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.split_once("child: ").map(|(_, line)| line))
        .map(str::to_owned)
        .collect()
}

#[test]
fn missing_tmpdir_gives_key_errors_end_to_end() {
    use crate::{AccessMode, SemaphoreMode, SharedMemory, SystemSemaphore};
    const NAME: &str = "key::tests::missing_tmpdir_gives_key_errors_end_to_end";
    if in_child(NAME) {
        let mut shm = SharedMemory::new("qshm-keytest-e2e");
        println!("child: {}", shm.native_key());
        let sem = SystemSemaphore::new("qshm-keytest-e2e", 1, SemaphoreMode::Create).map(drop);
        for result in [
            shm.create(4096, AccessMode::ReadWrite),
            shm.attach(AccessMode::ReadWrite),
            sem,
        ] {
            match result {
                Ok(()) => println!("child: ok"),
                Err(e) => println!("child: {:?}: {e}", e.kind()),
            }
        }
        return;
    }
    let dir = TestDir::new("e2e");
    let missing = dir.path("missing");
    let lines = run_child(NAME, &[("TMPDIR", &missing)]);
    assert_eq!(lines.len(), 4, "{lines:?}");
    // TMPDIR reaches the derivation as it reaches Qt's
    let expected = legacy_key_in(
        "qshm-keytest-e2e",
        IpcType::SharedMemory,
        KeyType::SystemV,
        || missing.clone(),
    );
    assert_eq!(lines[0], expected.native());
    for line in &lines[1..] {
        assert!(line.starts_with("KeyError: "), "{line}");
        assert!(
            line.contains(&format!(
                "{missing}, the directory of the System V key file, does not exist"
            )),
            "{line}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path("")).unwrap().count(),
        0,
        "nothing made"
    );
}

/// What is at `path`, for comparing side effects: `missing`, `link`, `file` or
/// `dir <mode> uid <uid>`.
fn describe(path: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Err(_) => "missing".to_owned(),
        Ok(m) if m.file_type().is_symlink() => "link".to_owned(),
        Ok(m) if m.is_dir() => format!("dir {:04o} uid {}", m.mode() & 0o7777, m.uid()),
        Ok(_) => "file".to_owned(),
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn make_dir(path: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn runtime_dir_is_made_0700_when_missing() {
    let dir = TestDir::new("rtmake");
    let xdg = dir.path("run");
    let got = runtime_dir_from(Some(&xdg), euid(), || unreachable!("XDG_RUNTIME_DIR is usable"));
    assert_eq!(got, Ok(xdg.clone()));
    assert_eq!(describe(&xdg), format!("dir 0700 uid {}", euid()));
    // again: now it exists and passes the checks
    assert_eq!(
        runtime_dir_from(Some(&xdg), euid(), || unreachable!()),
        Ok(xdg.clone())
    );
    // a trailing slash stays in Qt's string
    let slash = format!("{xdg}/");
    assert_eq!(
        runtime_dir_from(Some(&slash), euid(), || unreachable!()),
        Ok(slash)
    );
    // the sticky bit is not part of Qt's permissions
    make_dir(&dir.path("sticky"), 0o1700);
    let sticky = dir.path("sticky");
    assert_eq!(
        runtime_dir_from(Some(&sticky), euid(), || unreachable!()),
        Ok(sticky)
    );
}

#[test]
fn unusable_xdg_runtime_dir_falls_back_and_is_left_alone() {
    let dir = TestDir::new("rtbad");
    make_dir(&dir.path("real"), 0o700);
    make_dir(&dir.path("open"), 0o755);
    make_dir(&dir.path("noexec"), 0o600);
    std::os::unix::fs::symlink(dir.path("real"), dir.path("link")).unwrap();
    std::os::unix::fs::symlink(dir.path("nowhere"), dir.path("broken")).unwrap();
    std::fs::write(dir.path("file"), b"").unwrap();
    let cases = [
        ("open", "has permissions 0755, not 0700"),
        ("noexec", "has permissions 0600, not 0700"),
        ("link", "is a symbolic link"),
        ("broken", "is a symbolic link"),
        ("file", "is not a directory"),
        ("missing/sub", "cannot be created"),
    ];
    for (name, why) in cases {
        let xdg = dir.path(name);
        let before = describe(&xdg);
        let fallback = dir.path(&format!("fallback-{}", name.replace('/', "-")));
        let got = runtime_dir_from(Some(&xdg), euid(), || fallback.clone());
        assert_eq!(got, Ok(fallback.clone()), "{name}");
        assert_eq!(describe(&fallback), format!("dir 0700 uid {}", euid()), "{name}");
        assert_eq!(describe(&xdg), before, "{name} must not be changed");
        // why, as the error says when the fallback fails too
        let got = runtime_dir_from(Some(&xdg), euid(), || dir.path("missing/fallback"));
        let err = got.unwrap_err();
        assert!(err.contains(&format!("XDG_RUNTIME_DIR {xdg} {why}")), "{err}");
        assert!(
            err.contains(&format!(
                "the fallback {} cannot be created",
                dir.path("missing/fallback")
            )),
            "{err}"
        );
    }
    // owned by someone else (simulated: another uid asks)
    let real = dir.path("real");
    let err = check_runtime_dir(&real, euid() + 1).unwrap_err();
    assert_eq!(
        err,
        format!("{real} is owned by UID {}, not {}", euid(), euid() + 1)
    );
}

#[test]
fn unset_empty_or_relative_xdg_runtime_dir_uses_the_fallback() {
    let dir = TestDir::new("rtunset");
    for (i, xdg) in [None, Some(""), Some("relative")].into_iter().enumerate() {
        let fallback = dir.path(&format!("runtime-{i}"));
        assert_eq!(
            runtime_dir_from(xdg, euid(), || fallback.clone()),
            Ok(fallback.clone())
        );
        assert_eq!(describe(&fallback), format!("dir 0700 uid {}", euid()));
    }
    assert_eq!(describe(&dir.path("relative")), "missing");
    // a fallback that exists but is wrong is not repaired: no directory at all
    make_dir(&dir.path("open"), 0o755);
    let err = runtime_dir_from(None, euid(), || dir.path("open")).unwrap_err();
    assert_eq!(
        err,
        format!(
            "no usable Qt runtime directory: XDG_RUNTIME_DIR is not set to an absolute path; \
                 the fallback {} has permissions 0755, not 0700",
            dir.path("open")
        )
    );
    assert_eq!(describe(&dir.path("open")), format!("dir 0755 uid {}", euid()));
}

#[test]
fn no_usable_runtime_dir_keeps_qts_key_but_fails_when_used() {
    use crate::{AccessMode, SharedMemory};
    let why = || Err("no usable Qt runtime directory: because".to_owned());
    let key = platform_safe_key_in("qshm-keytest-nort", KeyType::SystemV, why);
    // Qt 6.11 prints "/k" for platformSafeKey("k", SystemV) when it has no runtime directory
    assert_eq!(key.native(), "/qshm-keytest-nort");
    let mut shm = SharedMemory::with_native_key(key);
    for result in [
        shm.create(4096, AccessMode::ReadWrite),
        shm.attach(AccessMode::ReadWrite),
    ] {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), SharedMemoryError::KeyError);
        assert_eq!(
            err.to_string()[err.operation().len()..],
            *r#" "/qshm-keytest-nort": no usable Qt runtime directory: because"#
        );
    }
    assert_eq!(describe("/qshm-keytest-nort"), "missing");
    // keys that need no runtime directory never ask for it
    let never = || -> std::result::Result<String, String> { unreachable!() };
    assert_eq!(
        platform_safe_key_in("/abs", KeyType::SystemV, never).native(),
        "/abs"
    );
    assert_eq!(
        platform_safe_key_in("k", KeyType::PosixRealtime, never).native(),
        "/k"
    );
    assert!(platform_safe_key_in("", KeyType::SystemV, never).is_empty());
}

#[test]
fn runtime_dir_matches_real_qt() {
    let Some(python) = qt_python("runtime_dir_matches_real_qt") else {
        return;
    };
    let user = crate::os::user_name(euid()).unwrap_or_default();
    // (what XDG_RUNTIME_DIR is, whether TMPDIR exists, what the fallback is)
    #[derive(Clone, Copy)]
    enum Made {
        Nothing,
        Dir(u32),
        Link,
        Broken,
        File,
        Foreign,
    }
    #[derive(Clone, Copy)]
    enum Xdg {
        Unset,
        Empty,
        Relative,
        At(Made),
        Slash(Made),
        MissingParent,
    }
    let mut cases = vec![
        (Xdg::Unset, true, Made::Nothing),
        (Xdg::Unset, true, Made::Dir(0o700)),
        (Xdg::Empty, true, Made::Nothing),
        (Xdg::Relative, true, Made::Nothing),
        (Xdg::At(Made::Nothing), true, Made::Nothing),
        (Xdg::At(Made::Dir(0o700)), true, Made::Nothing),
        (Xdg::At(Made::Dir(0o1700)), true, Made::Nothing),
        (Xdg::At(Made::Dir(0o755)), true, Made::Nothing),
        (Xdg::At(Made::Dir(0o600)), true, Made::Nothing),
        (Xdg::At(Made::Link), true, Made::Nothing),
        (Xdg::At(Made::Broken), true, Made::Nothing),
        (Xdg::At(Made::File), true, Made::Nothing),
        (Xdg::Slash(Made::Dir(0o700)), true, Made::Nothing),
        (Xdg::Slash(Made::Link), true, Made::Nothing),
        (Xdg::Slash(Made::Broken), true, Made::Nothing),
        (Xdg::MissingParent, true, Made::Nothing),
        (Xdg::Unset, false, Made::Nothing),
        (Xdg::At(Made::Dir(0o755)), false, Made::Nothing),
        (Xdg::Unset, true, Made::Dir(0o755)),
        (Xdg::Unset, true, Made::Link),
        (Xdg::Unset, true, Made::File),
    ];
    if euid() == 0 {
        cases.push((Xdg::At(Made::Foreign), true, Made::Nothing));
        cases.push((Xdg::Unset, true, Made::Foreign));
    } else {
        skip("runtime_dir_matches_real_qt: directories of another owner need root");
    }
    let make = |path: &str, what: Made, case: &str| match what {
        Made::Nothing => {}
        Made::Dir(mode) => make_dir(path, mode),
        Made::Link => {
            make_dir(&format!("{case}/target"), 0o700);
            std::os::unix::fs::symlink(format!("{case}/target"), path).unwrap();
        }
        Made::Broken => std::os::unix::fs::symlink(format!("{case}/nowhere"), path).unwrap(),
        Made::File => std::fs::write(path, b"").unwrap(),
        Made::Foreign => {
            make_dir(path, 0o700);
            std::os::unix::fs::chown(path, Some(65534), None).unwrap();
        }
    };
    // Builds every case afresh under `base`; returns the environments and, per
    // case, the paths whose state is compared.
    let build = |base: &str| -> (Vec<QtEnv>, Vec<[String; 2]>) {
        let _ = std::fs::remove_dir_all(base);
        make_dir(base, 0o755);
        let mut envs = Vec::new();
        let mut watched = Vec::new();
        for (i, &(xdg, tmp_exists, fallback)) in cases.iter().enumerate() {
            let case = format!("{base}/c{i}");
            make_dir(&case, 0o755);
            let tmp = format!("{case}/tmp");
            if tmp_exists {
                make_dir(&tmp, 0o755);
            }
            let fallback_path = format!("{tmp}/runtime-{user}");
            make(&fallback_path, fallback, &case);
            let xdg_path = format!("{case}/xdg");
            let xdg_value = match xdg {
                Xdg::Unset => None,
                Xdg::Empty => Some(String::new()),
                Xdg::Relative => Some("xdg".to_owned()),
                Xdg::At(made) => {
                    make(&xdg_path, made, &case);
                    Some(xdg_path.clone())
                }
                Xdg::Slash(made) => {
                    make(&xdg_path, made, &case);
                    Some(format!("{xdg_path}/"))
                }
                Xdg::MissingParent => Some(format!("{case}/missing/xdg")),
            };
            envs.push(QtEnv {
                vars: vec![("XDG_RUNTIME_DIR", xdg_value), ("TMPDIR", Some(tmp))],
                cwd: case,
            });
            watched.push([xdg_path, fallback_path]);
        }
        (envs, watched)
    };
    // Qt first, then qshm on the same paths built again
    let root = TestDir::new("rtqt");
    let base = root.path("cases");
    let (envs, watched) = build(&base);
    let qt = qt_locations(&python, "RuntimeLocation", &envs);
    let qt_after: Vec<Vec<String>> = watched
        .iter()
        .map(|w| w.iter().map(|p| describe(p)).collect())
        .collect();
    let (envs, watched) = build(&base);
    for (i, env) in envs.iter().enumerate() {
        let xdg = env.vars[0].1.as_deref();
        let tmpdir = env.vars[1].1.clone();
        let ours = runtime_dir_from(xdg, euid(), || {
            format!("{}/runtime-{user}", temp_dir_from(tmpdir.as_deref(), || None))
        });
        let after: Vec<String> = watched[i].iter().map(|p| describe(p)).collect();
        let label = format!("case {i}: XDG_RUNTIME_DIR={xdg:?} TMPDIR={tmpdir:?}");
        match ours {
            Ok(dir) => assert_eq!(dir, qt[i], "{label}"),
            Err(why) => assert_eq!(qt[i], "", "{label}: ours failed: {why}"),
        }
        assert_eq!(after, qt_after[i], "{label}: side effects");
    }
}

#[test]
fn missing_runtime_dir_is_made_and_create_works_end_to_end() {
    use crate::{AccessMode, SharedMemory};
    const NAME: &str = "key::tests::missing_runtime_dir_is_made_and_create_works_end_to_end";
    if in_child(NAME) {
        let key = SharedMemory::platform_safe_key("qshm-keytest-rt", KeyType::SystemV);
        println!("child: {}", key.native());
        let mut shm = SharedMemory::with_native_key(key);
        match shm.create(4096, AccessMode::ReadWrite) {
            Ok(()) => println!("child: created {} bytes", shm.size()),
            Err(e) => println!("child: {:?}: {e}", e.kind()),
        }
        return;
    }
    let dir = TestDir::new("rte2e");
    let run = dir.path("run");
    let lines = run_child(NAME, &[("XDG_RUNTIME_DIR", &run)]);
    assert_eq!(lines[0], format!("{run}/qshm-keytest-rt"));
    assert!(lines[1].starts_with("created "), "{lines:?}");
    assert_eq!(describe(&run), format!("dir 0700 uid {}", euid()));
    // the child's segment and key file went with it
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0);

    // XDG_RUNTIME_DIR unset and no <temp>/runtime-<user> yet: Qt makes the fallback
    let tmp = dir.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let lines = run_child(NAME, &[("XDG_RUNTIME_DIR", ""), ("TMPDIR", &tmp)]);
    let user = crate::os::user_name(euid()).unwrap_or_default();
    let fallback = format!("{tmp}/runtime-{user}");
    assert_eq!(lines[0], format!("{fallback}/qshm-keytest-rt"));
    assert!(lines[1].starts_with("created "), "{lines:?}");
    assert_eq!(describe(&fallback), format!("dir 0700 uid {}", euid()));

    // no usable directory at all: Qt's "/<key>", a KeyError, nothing made in /
    let missing = dir.path("missing");
    let lines = run_child(NAME, &[("XDG_RUNTIME_DIR", ""), ("TMPDIR", &missing)]);
    assert_eq!(lines[0], "/qshm-keytest-rt");
    assert!(lines[1].starts_with("KeyError: "), "{lines:?}");
    let why = format!("the fallback {missing}/runtime-");
    assert!(lines[1].contains(&why), "{lines:?}");
    assert_eq!(describe("/qshm-keytest-rt"), "missing");
    assert_eq!(describe(&missing), "missing");
}

#[test]
fn every_legacy_derivation_keeps_qts_pinned_values() {
    use crate::{SharedMemory, SystemSemaphore};
    // (key, letters + SHA-1) as Qt 6.11 derives them (PyQt6, TMPDIR unset):
    // QSharedMemory/QSystemSemaphore.legacyNativeKey(key, SystemV / PosixRealtime)
    let pinned = [
        ("market", "market5c9f73af73334ffe350c60ec076e5744db0ecda3"),
        ("a", "a86f7e437faa5a7fce15d1ddcb9eaeaea377667b8"),
        ("a/b", "ab3ec69c85a4ff96830024afeef2d4e512181c8f7b"),
        ("xxx", "xxxb60d121b438a380c343d5ec3c2037564b82ffef3"),
        ("héllo wörld", "hllowrld24e9f5c07847ff8a2a9fa77456655792f5bc7f9f"),
        ("Qt 6: ключ/😀", "Qtba816c08f3d84f166bc4a6f93e27f0b9ca0c8d6e"),
    ];
    let types = [
        (IpcType::SharedMemory, "qipc_sharedmemory_"),
        (IpcType::SystemSemaphore, "qipc_systemsem_"),
    ];
    for (key, tail) in pinned {
        for (ipc, prefix) in types {
            let posix = format!("/{prefix}{tail}");
            let sysv = format!("/tmp/{prefix}{tail}");
            let k = legacy_key_in(key, ipc, KeyType::PosixRealtime, || unreachable!());
            assert_eq!(k.native(), posix);
            assert_eq!(k.to_string(), format!("posix:{posix}?legacyKey={key}"));
            let k = legacy_key_in(key, ipc, KeyType::SystemV, || "/tmp".to_owned());
            assert_eq!(k.native(), sysv);
            assert_eq!(k.to_string(), format!("systemv:{sysv}?legacyKey={key}"));
            assert_eq!(k.legacy_key(), Some(key));
            assert!(k.check_usable().is_ok());
            // the public entry points, with this process's temporary directory
            let public = match ipc {
                IpcType::SharedMemory => [
                    SharedMemory::legacy_native_key(key, KeyType::PosixRealtime),
                    SharedMemory::legacy_native_key(key, KeyType::SystemV),
                ],
                IpcType::SystemSemaphore => [
                    SystemSemaphore::legacy_native_key(key, KeyType::PosixRealtime),
                    SystemSemaphore::legacy_native_key(key, KeyType::SystemV),
                ],
            };
            assert_eq!(public[0].native(), posix);
            assert_eq!(public[1].native(), format!("{}/{prefix}{tail}", qt_temp_dir()));
        }
    }
    // the empty key derives an empty key of the asked type, without a directory
    for (ipc, _) in types {
        for kind in [KeyType::SystemV, KeyType::PosixRealtime] {
            let k = legacy_key_in("", ipc, kind, || unreachable!());
            assert!(k.is_empty() && k.kind() == kind && k.legacy_key().is_none());
        }
    }
}

#[test]
fn legacy_derivations_match_real_qt() {
    let Some(python) = qt_python("legacy_derivations_match_real_qt") else {
        return;
    };
    let dir = TestDir::new("legacy");
    let keys = [
        "market",
        "a/b c:é%&=+#?",
        "tab\there",
        "日本語のキー",
        "MiXeD-Case_123",
        "😀 emoji",
        &"long".repeat(80),
    ];
    const SCRIPT: &str = r#"
import json, sys
from PyQt6.QtCore import QSharedMemory, QSystemSemaphore, QNativeIpcKey
T = QNativeIpcKey.Type
out = []
for key in json.loads(sys.argv[1]):
    for cls in (QSharedMemory, QSystemSemaphore):
        for t in (T.SystemV, T.PosixRealtime):
            k = cls.legacyNativeKey(key, t)
            out.append([k.nativeKey(), k.toString()])
print(json.dumps(out))
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", SCRIPT, &serde_json::to_string(&keys).unwrap()])
        .env("TMPDIR", dir.path(""))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let qt: Vec<(String, String)> = serde_json::from_slice(&out.stdout).unwrap();
    let temp = temp_dir_from(Some(&dir.path("")), || None);
    let mut qt = qt.into_iter();
    for key in keys {
        for ipc in [IpcType::SharedMemory, IpcType::SystemSemaphore] {
            for kind in [KeyType::SystemV, KeyType::PosixRealtime] {
                let ours = legacy_key_in(key, ipc, kind, || temp.clone());
                let (native, string) = qt.next().unwrap();
                assert_eq!(ours.native(), native, "{key:?} {ipc:?} {kind:?}");
                assert_eq!(ours.to_string(), string, "{key:?} {ipc:?} {kind:?}");
            }
        }
    }
}

#[test]
fn system_v_legacy_keys_are_pinned_to_qt() {
    // Qt 6.11 (PyQt6), TMPDIR unset, prints /tmp/<name>; the directory part follows
    // the temp dir (tested above), the name part is pinned.
    let tmp = qt_temp_dir();
    let k = legacy_platform_safe_key("market", IpcType::SharedMemory, KeyType::SystemV);
    let name = "qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3";
    assert_eq!(k.native(), format!("{tmp}/{name}"));
    assert_eq!(k.to_string(), format!("systemv:{tmp}/{name}?legacyKey=market"));
    let k = legacy_platform_safe_key("a/b", IpcType::SharedMemory, KeyType::SystemV);
    assert_eq!(
        k.native(),
        format!("{tmp}/qipc_sharedmemory_ab3ec69c85a4ff96830024afeef2d4e512181c8f7b")
    );
}

#[test]
fn empty_key_gives_empty_native_key() {
    for kind in [KeyType::SystemV, KeyType::PosixRealtime] {
        let k = legacy_platform_safe_key("", IpcType::SharedMemory, kind);
        assert!(k.is_empty());
        assert_eq!(k.kind(), kind);
    }
}

#[test]
fn very_long_key_keeps_all_letters() {
    let key = "x".repeat(300);
    let k = legacy_platform_safe_key(&key, IpcType::SharedMemory, KeyType::PosixRealtime);
    assert_eq!(k.native().len(), 1 + 18 + 300 + 40);
    assert!(k.native().starts_with("/qipc_sharedmemory_xxxx"));
}

#[test]
fn semaphore_keys_use_their_own_prefix() {
    let k = legacy_platform_safe_key("market", IpcType::SystemSemaphore, KeyType::PosixRealtime);
    assert_eq!(
        k.native(),
        "/qipc_systemsem_market5c9f73af73334ffe350c60ec076e5744db0ecda3"
    );
}

#[test]
fn string_form_round_trips() {
    let keys = [
        NativeIpcKey::new("/tmp/a b%c?d#e", KeyType::SystemV),
        NativeIpcKey::new("//x", KeyType::PosixRealtime),
        NativeIpcKey::new("/plain", KeyType::PosixRealtime),
        legacy_platform_safe_key("a/b c:é%&=+#", IpcType::SharedMemory, KeyType::SystemV),
        legacy_platform_safe_key("market", IpcType::SharedMemory, KeyType::PosixRealtime),
    ];
    for k in keys {
        let text = k.to_string();
        let back: NativeIpcKey = text.parse().unwrap();
        assert_eq!(back, k, "via {text:?}");
    }
}

#[test]
fn string_form_matches_qt_for_plain_keys() {
    let k = legacy_platform_safe_key("market", IpcType::SharedMemory, KeyType::PosixRealtime);
    assert_eq!(
        k.to_string(),
        "posix:/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3?legacyKey=market"
    );
}

proptest::proptest! {
    #[test]
    fn any_key_derives_and_round_trips(key in "\\PC{0,80}", posix in proptest::bool::ANY) {
        let kind = if posix { KeyType::PosixRealtime } else { KeyType::SystemV };
        let k = legacy_platform_safe_key(&key, IpcType::SharedMemory, kind);
        if key.is_empty() {
            proptest::prop_assert!(k.is_empty());
        } else {
            let name = k.native().rsplit('/').next().unwrap();
            proptest::prop_assert!(name.starts_with("qipc_sharedmemory_"));
            proptest::prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            let back: NativeIpcKey = k.to_string().parse().unwrap();
            proptest::prop_assert_eq!(back, k);
        }
    }

    #[test]
    fn any_native_string_round_trips(native in "\\PC{0,60}", posix in proptest::bool::ANY) {
        let kind = if posix { KeyType::PosixRealtime } else { KeyType::SystemV };
        let k = NativeIpcKey::new(native, kind);
        let back: NativeIpcKey = k.to_string().parse().unwrap();
        proptest::prop_assert_eq!(back, k);
    }

    #[test]
    fn parsing_garbage_never_panics(text in "\\PC{0,60}") {
        let _ = text.parse::<NativeIpcKey>();
    }
}

#[test]
fn string_forms_match_qt_escaping() {
    // What Qt 6.11's QNativeIpcKey::toString() prints (PyQt6)
    let k = NativeIpcKey::new("/tmp/a b%c?d#e", KeyType::SystemV);
    assert_eq!(k.to_string(), "systemv:/tmp/a b%25c%3Fd%23e");
    assert_eq!(
        NativeIpcKey::new("//x", KeyType::PosixRealtime).to_string(),
        "posix:/%2Fx"
    );
    let k = legacy_platform_safe_key("a/b c:é%", IpcType::SharedMemory, KeyType::PosixRealtime);
    assert_eq!(
        k.to_string(),
        "posix:/qipc_sharedmemory_abc8cd40d65376172d4221f778233c4d8329103da1c?legacyKey=a/b c:é%25"
    );
    let mut k = NativeIpcKey::new("/x", KeyType::PosixRealtime);
    k.legacy = Some("q?&=#+%20".to_owned());
    assert_eq!(k.to_string(), "posix:/x?legacyKey=q?%26%3D%23+%2520");
    assert_eq!(
        "SYSTEMV:/tmp/x".parse::<NativeIpcKey>().unwrap().kind(),
        KeyType::SystemV
    );
}

#[test]
fn an_empty_legacy_key_round_trips_as_none() {
    // found by fuzz/fuzz_targets/native_key_parser (fuzz/regressions/native_key_parser)
    for text in [
        "posix:?legacyKey",
        "posix:/x?legacyKey=",
        "systemv:/tmp/x?legacyKey=",
    ] {
        let key: NativeIpcKey = text.parse().unwrap();
        assert_eq!(key.legacy_key(), None, "{text}");
        let back: NativeIpcKey = key.to_string().parse().unwrap();
        assert_eq!(back, key, "{text}");
    }
}

#[test]
fn bad_string_forms_are_key_errors() {
    // each is an invalid QNativeIpcKey for Qt 6.11 too (see string_form_tests.rs)
    for text in [
        "",
        "nokind",
        "windows:x",
        "posix://host/x",
        "posix:/a?x=1",
        "posix:/x?&legacyKey=y",
    ] {
        let err = text.parse::<NativeIpcKey>().unwrap_err();
        assert_eq!(err.kind(), SharedMemoryError::KeyError, "{text:?}");
    }
}
