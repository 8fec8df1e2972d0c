//! Interop with real Qt 6: a Qt process (PyQt6, driven by `interop/qt_peer.py`) and qshm
//! share one segment and one lock, for both key types.
//!
//! The Qt peer is found through `QSHM_QT_PEER` (a Python with PyQt6), else
//! `interop/setup.sh` installs PyQt6 into `target/qt-venv` (cached). If that fails the
//! tests are reported as ignored with a loud `SKIP` line, never silently passed.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{AccessMode, KeyType, LockMode, NativeIpcKey, SharedMemory, SharedMemoryError, SystemSemaphore};
use support::qt::{find_qt_python, python_for_user, qt_peer};
use support::*;

const T: Duration = Duration::from_secs(30);

fn main() {
    let args = Arguments::from_args();
    let python = find_qt_python();
    let mut trials = Vec::new();
    let tricky: [&'static str; 2] = ["plain", "a/b c:é%"];
    for kind in KINDS {
        let k = kind_name(kind);
        for (i, base) in tricky.into_iter().enumerate() {
            let py = python.clone();
            trials.push(trial(
                format!("{k}::key{i}::qt_creates_qshm_attaches_and_reads"),
                &py,
                move |py| qt_creates_qshm_reads(py, kind, base),
            ));
            trials.push(trial(
                format!("{k}::key{i}::qshm_creates_qt_attaches_and_reads"),
                &py,
                move |py| qshm_creates_qt_reads(py, kind, base),
            ));
        }
        trials.push(trial(
            format!("{k}::qt_holds_lock_qshm_waits"),
            &python,
            move |py| qt_holds_lock(py, kind),
        ));
        trials.push(trial(
            format!("{k}::qshm_holds_lock_qt_waits"),
            &python,
            move |py| qshm_holds_lock(py, kind),
        ));
        trials.push(trial(
            format!("{k}::qt_leaks_qshm_cleans_up"),
            &python,
            move |py| qt_leaks_qshm_cleans(py, kind),
        ));
        trials.push(trial(
            format!("{k}::qshm_creator_leaves_qt_keeps_the_segment_and_detaches_last"),
            &python,
            move |py| qt_outlives_qshm_creator(py, kind),
        ));
        trials.push(trial(
            format!("{k}::qt_holder_killed_the_lock_is_recovered"),
            &python,
            move |py| qt_holder_killed(py, kind),
        ));
        trials.push(trial(
            format!("{k}::fast_mode_is_refused_next_to_qt"),
            &python,
            move |py| fast_refused_next_to_qt(py, kind),
        ));
        trials.push(trial(
            format!("{k}::qt_of_another_user_locks_a_0666_segment_and_is_refused_a_0644_one"),
            &python,
            move |py| qt_other_user_on_shared_segment(py, kind),
        ));
    }
    trials.push(trial(
        "native_keys_and_string_forms_match_qt".into(),
        &python,
        keys_match_qt,
    ));
    trials.push(Trial::test(
        "setup_announces_the_pyqt6_download_once",
        setup_announces_the_download_once,
    ));
    run_suite(&args, trials, Passes::AsUser);
}

fn trial(
    name: String,
    python: &Option<PathBuf>,
    f: impl FnOnce(&PathBuf) -> Result<(), Failed> + Send + 'static,
) -> Trial {
    match python.clone() {
        Some(py) => Trial::test(name, move || f(&py)),
        None => Trial::test(name, || Ok(())).with_ignored_flag(true),
    }
}

fn check(cond: bool, what: impl Into<String>) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into().into()) }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

fn qt_creates_qshm_reads(py: &PathBuf, kind: KeyType, base: &str) -> Result<(), Failed> {
    let key = format!("{base}{}", unique_key("qtc"));
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut qt = qt_peer(
        py,
        "create",
        &key,
        kind,
        &["--size", "100", "--text", "written by Qt"],
    );
    let ready = qt.expect("READY", T);
    let qt_size: usize = field(&ready, "size").ok_or("no size")?.parse()?;
    let qt_native = field(&ready, "native").ok_or("no native key")?;
    let recorded = sysv_keys(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    check(
        shm.native_key() == qt_native,
        format!("native key: qshm {} vs Qt {qt_native}", shm.native_key()),
    )?;
    shm.attach(AccessMode::ReadWrite)?;
    check(
        shm.size() == qt_size,
        format!("size: qshm {} vs Qt {qt_size}", shm.size()),
    )?;
    {
        let data = shm.lock()?;
        check(
            &data[..13] == b"written by Qt",
            format!("bytes: {:?}", String::from_utf8_lossy(&data[..13])),
        )?;
    }
    // qshm detaches last: it must clean up what Qt would leave.
    qt.send("detach");
    qt.expect("DETACHED", T);
    qt.wait(T);
    shm.detach()?;
    let left = leftovers(&key, kind, &recorded);
    check(
        left.is_empty(),
        format!("left behind after qshm detached last: {left:?}"),
    )
}

fn qshm_creates_qt_reads(py: &PathBuf, kind: KeyType, base: &str) -> Result<(), Failed> {
    let key = format!("{base}{}", unique_key("qsc"));
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    shm.create(100, AccessMode::ReadWrite)?;
    let recorded = sysv_keys(&key, kind);
    shm.lock()?[..15].copy_from_slice(b"written by Rust");
    let mut qt = qt_peer(py, "read", &key, kind, &["--len", "15"]);
    let size: usize = qt.expect("SIZE", T).parse()?;
    check(
        size == 100 && shm.size() == 100,
        format!(
            "Qt's size() {size}, qshm's {}: both must be exactly 100",
            shm.size()
        ),
    )?;
    check(
        qt.expect("DATA", T) == hex(b"written by Rust"),
        "Qt reads the bytes qshm wrote",
    )?;
    check(qt.wait(T).success(), "Qt peer exits cleanly")?;
    shm.detach()?;
    let left = leftovers(&key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

fn qt_holds_lock(py: &PathBuf, kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("qtlock");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    shm.create(64, AccessMode::ReadWrite)?;
    let recorded = sysv_keys(&key, kind);
    let mut qt = qt_peer(py, "hold-lock", &key, kind, &[]);
    qt.expect("LOCKED", T);
    check(
        shm.try_lock()?.is_none(),
        "qshm's Qt-compatible try_lock is busy while Qt holds the lock",
    )?;
    check(
        shm.lock_timeout(Duration::from_millis(300))?.is_none(),
        "and lock_timeout times out",
    )?;
    let start = Instant::now();
    qt.send("release");
    let guard = shm
        .lock_timeout(Duration::from_secs(10))?
        .ok_or("qshm never got the lock after Qt released")?;
    check(
        start.elapsed() < Duration::from_secs(5),
        "qshm got the lock promptly",
    )?;
    check(!guard.previous_owner_died(), "a clean Qt release is not a death")?;
    drop(guard);
    qt.expect("UNLOCKED", T);
    qt.finish();
    shm.detach()?;
    let left = leftovers(&key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

fn qshm_holds_lock(py: &PathBuf, kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("qshmlock");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    shm.create(64, AccessMode::ReadWrite)?;
    let recorded = sysv_keys(&key, kind);
    let guard = shm.lock()?;
    let mut qt = qt_peer(py, "time-lock", &key, kind, &[]);
    // held for 500 ms from when Qt's clock starts (not from its spawn: Python and Qt may
    // take longer than that to start on a busy machine)
    qt.expect("STARTING", T);
    std::thread::sleep(Duration::from_millis(500));
    drop(guard);
    let waited: f64 = qt.expect("LOCKED_AFTER_MS", T).parse()?;
    check(
        waited >= 100.0,
        format!("Qt's lock() returned after {waited} ms although qshm held the lock"),
    )?;
    check(qt.wait(T).success(), "Qt peer exits cleanly")?;
    shm.detach()?;
    let left = leftovers(&key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

/// Qt alone leaks; qshm's next create reclaims what Qt left.
fn qt_leaks_qshm_cleans(py: &PathBuf, kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("leak");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut qt = qt_peer(py, "create", &key, kind, &["--size", "64", "--text", "x"]);
    qt.expect("READY", T);
    let recorded = sysv_keys(&key, kind);
    qt.send("detach");
    qt.expect("DETACHED", T);
    check(qt.wait(T).success(), "Qt peer exits cleanly")?;
    let qt_left = leftovers(&key, kind, &recorded);
    eprintln!(
        "Qt 6 alone left behind for a {} key: {qt_left:?}",
        kind_name(kind)
    );
    if kind == KeyType::PosixRealtime {
        check(!qt_left.is_empty(), "Qt is known to leak POSIX segments on Linux")?;
    }
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    shm.create(64, AccessMode::ReadWrite)?;
    shm.detach()?;
    let left = leftovers(&key, kind, &recorded);
    check(
        left.is_empty(),
        format!("qshm did not clean up after Qt: {left:?}"),
    )
}

/// The qshm creator detaches while Qt stays attached: the segment must survive (a live Qt
/// mapper), keep its data for a later Qt reader, and after Qt detaches last nothing qshm
/// made may stay behind past the next `create` of the key.
fn qt_outlives_qshm_creator(py: &PathBuf, kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("qtlast");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    shm.create(64, AccessMode::ReadWrite)?;
    let recorded = sysv_keys(&key, kind);
    shm.lock()?[..4].copy_from_slice(b"kept");
    let mut qt = qt_peer(py, "hold-attached", &key, kind, &[]);
    qt.expect("ATTACHED", T);
    shm.detach()?;
    let mut reader = qt_peer(py, "read", &key, kind, &["--len", "4"]);
    check(
        reader.expect("DATA", T) == hex(b"kept"),
        "the segment survived its qshm creator while Qt maps it",
    )?;
    check(reader.wait(T).success(), "Qt reader exits cleanly")?;
    qt.send("detach");
    qt.expect("DETACHED", T);
    check(qt.wait(T).success(), "Qt peer exits cleanly")?;
    // Qt detached last: a POSIX segment stays (Qt never unlinks); the next create
    // reclaims it with everything qshm made for it
    let mut next = handle(&key, kind, LockMode::QtCompatible);
    next.create(64, AccessMode::ReadWrite)?;
    check(next.lock()?[..4] == [0; 4], "a new segment, not the old one")?;
    next.detach()?;
    let left = leftovers(&key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

/// A real Qt process holding the lock is killed with SIGKILL. System V: the kernel gives
/// its unit back (SEM_UNDO). POSIX: Qt's semaphore stays taken for good, and qshm sees
/// that no living process could hold it and recovers it, reporting the death.
fn qt_holder_killed(py: &PathBuf, kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("qtkilled");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    shm.create(64, AccessMode::ReadWrite)?;
    let recorded = sysv_keys(&key, kind);
    let mut qt = qt_peer(py, "hold-lock", &key, kind, &[]);
    qt.expect("LOCKED", T);
    check(shm.try_lock()?.is_none(), "Qt holds the lock")?;
    qt.kill9();
    let guard = shm
        .lock_timeout(Duration::from_secs(15))?
        .ok_or("the lock was not recovered after the Qt holder was killed")?;
    if kind == KeyType::PosixRealtime {
        check(guard.previous_owner_died(), "the recovery is reported")?;
    }
    drop(guard);
    check(shm.try_lock()?.is_some(), "and the lock works as before")?;
    shm.detach()?;
    let left = leftovers(&key, kind, &recorded);
    check(left.is_empty(), format!("left behind: {left:?}"))
}

/// `LockMode::Fast` is refused where a Qt process would not see the lock: on a segment Qt
/// made, and on a Fast segment Qt maps.
fn fast_refused_next_to_qt(py: &PathBuf, kind: KeyType) -> Result<(), Failed> {
    let key = unique_key("qtfast");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut qt = qt_peer(py, "create", &key, kind, &["--size", "64"]);
    qt.expect("READY", T);
    let mut fast = handle(&key, kind, LockMode::Fast);
    let err = fast
        .attach(AccessMode::ReadWrite)
        .err()
        .ok_or("Fast mode on a segment Qt created")?;
    check(err.kind() == SharedMemoryError::LockError, format!("{err}"))?;
    qt.send("detach");
    qt.wait(T);
    let _ = SharedMemory::force_remove(&native(&key, kind));

    let key = unique_key("qtfast2");
    cleanup.key(&key, kind);
    let mut made = handle(&key, kind, LockMode::Fast);
    made.create(64, AccessMode::ReadWrite)?;
    let mut qt = qt_peer(py, "hold-attached", &key, kind, &[]);
    qt.expect("ATTACHED", T);
    let mut late = SharedMemory::with_key_type(&key, kind);
    let err = late
        .attach(AccessMode::ReadWrite)
        .err()
        .ok_or("Fast mode went ahead while Qt maps the segment")?;
    check(err.kind() == SharedMemoryError::LockError, format!("{err}"))?;
    check(err.to_string().contains("maps it"), format!("{err}"))?;
    qt.send("detach");
    qt.wait(T);
    Ok(())
}

/// Another user's Qt program and qshm's shared segments. A user who may write the segment
/// (0666) may write its lock too: Qt attaches and reads under the lock. A user who may only
/// read it (0644) may not write the lock (nobody who cannot write the data may change or
/// shrink what its writers map), and Qt cannot attach without opening the lock semaphore
/// for writing: it is refused, exactly as on a Qt-made segment, whose semaphore is 0600.
fn qt_other_user_on_shared_segment(py: &std::path::Path, kind: KeyType) -> Result<(), Failed> {
    let Some(user) = TempUser::create("qt_of_another_user_on_shared_segments") else {
        return Ok(());
    };
    let Some((python, site)) = python_for_user(py, &user) else {
        eprintln!("*** SKIP qt_of_another_user: no Python that user may run imports PyQt6 ***");
        return Ok(());
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/qt_peer.py");
    for (perms, readable) in [(0o666, true), (0o644, false)] {
        let key = unique_key("qtshared");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mut shm = SharedMemory::with_key_type(&key, kind).with_permissions(perms);
        shm.create(64, AccessMode::ReadWrite)?;
        shm.lock()?[..6].copy_from_slice(b"public");
        use std::os::unix::process::CommandExt;
        let out = Command::new(&python)
            .arg(script)
            .args(["read", "--key", &key, "--type", kind_name(kind), "--len", "6"])
            .envs(site.iter().map(|s| ("PYTHONPATH", s)))
            .uid(user.uid)
            .gid(user.gid)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let said = format!(
            "Qt as {} on a {perms:04o} segment: {stdout} {}",
            user.name,
            String::from_utf8_lossy(&out.stderr)
        );
        if readable {
            check(
                out.status.success() && stdout.contains(&format!("DATA {}", hex(b"public"))),
                said,
            )?;
        } else {
            check(said.contains("ERROR PermissionDenied"), said)?;
        }
        shm.detach()?;
    }
    Ok(())
}

fn keys_match_qt(py: &PathBuf) -> Result<(), Failed> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/qt_peer.py");
    for key in [
        "market",
        "a/b c:é%",
        "héllo wörld",
        "q?&=#+%20",
        "!!!",
        &"x".repeat(300),
    ] {
        let out = Command::new(py).arg(script).args(["keys", key]).output()?;
        check(
            out.status.success(),
            format!("qt_peer keys failed: {}", String::from_utf8_lossy(&out.stderr)),
        )?;
        let json = String::from_utf8(out.stdout)?;
        for kind in KINDS {
            let t = kind_name(kind);
            let shm = SharedMemory::legacy_native_key(key, kind);
            let sem = SystemSemaphore::legacy_native_key(key, kind);
            let qt_shm = json_string(&json, &format!("shm_legacy_{t}")).ok_or("no shm key")?;
            let qt_sem = json_string(&json, &format!("sem_legacy_{t}")).ok_or("no sem key")?;
            let qt_str = json_string(&json, &format!("shm_legacy_{t}_str")).ok_or("no string form")?;
            check(
                shm.native() == qt_shm,
                format!("{key:?} {t}: qshm {} vs Qt {qt_shm}", shm.native()),
            )?;
            check(
                sem.native() == qt_sem,
                format!("{key:?} {t} semaphore: qshm {} vs Qt {qt_sem}", sem.native()),
            )?;
            check(
                shm.to_string() == qt_str,
                format!("string form: qshm {shm} vs Qt {qt_str}"),
            )?;
            let parsed: NativeIpcKey = qt_str.parse()?;
            check(
                parsed == shm,
                format!("Qt's string form {qt_str:?} parses to {parsed:?}"),
            )?;
            let safe = SharedMemory::platform_safe_key(key, kind);
            let qt_safe = json_string(&json, &format!("shm_safe_{t}")).ok_or("no safe key")?;
            check(
                safe.native() == qt_safe,
                format!("{key:?} {t} platformSafeKey: {} vs {qt_safe}", safe.native()),
            )?;
        }
    }
    Ok(())
}

/// The string value of `"name": "..."` in flat JSON output (with \uXXXX and \\ escapes).
fn json_string(json: &str, name: &str) -> Option<String> {
    let start = json.find(&format!("\"{name}\""))? + name.len() + 2;
    let rest = json[start..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'u' => {
                    let code: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&code, 16).ok()?)?);
                }
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// `interop/setup.sh` says on stderr, once, before downloading, that it installs PyQt6,
/// and says nothing when the venv is ready. (A fake `python3` first in PATH makes a fake
/// venv whose pip "installs" PyQt6 by touching a file: nothing is downloaded.)
fn setup_announces_the_download_once() -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(unique_key("setup"));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let result = (|| -> Result<(), Failed> {
        let fake_python = r#"#!/bin/sh
venv="$(dirname "$(dirname "$0")")"
case "$1 $2" in
    "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
    "-m pip") touch "$venv/pyqt6-installed" ;;
    "-c import PyQt6.QtCore") test -e "$venv/pyqt6-installed" ;;
    *) exit 3 ;;
esac
"#;
        let python3 = bin.join("python3");
        std::fs::write(&python3, fake_python)?;
        std::fs::set_permissions(&python3, std::fs::Permissions::from_mode(0o755))?;
        let venv = dir.join("venv");
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let run = || {
            Command::new("bash")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/interop/setup.sh"))
                .env("PATH", &path)
                .env("QSHM_QT_VENV", &venv)
                .output()
        };
        let first = run()?;
        let err = String::from_utf8_lossy(&first.stderr).into_owned();
        check(first.status.success(), format!("first set-up failed: {err}"))?;
        let out = String::from_utf8_lossy(&first.stdout).into_owned();
        let py = venv.join("bin/python");
        check(
            out.lines().last() == Some(&*py.to_string_lossy()),
            format!("python: {out}"),
        )?;
        let notice = format!(
            "qshm: installing PyQt6 (real Qt 6 for the Qt interop tests, a download of about \
             300 MB) into {}; QSHM_QT_PEER=/path/to/python uses a Python that has it",
            venv.display()
        );
        check(err == format!("{notice}\n"), format!("the notice, once: {err:?}"))?;
        let second = run()?;
        check(second.status.success(), "second set-up failed")?;
        check(
            second.stderr.is_empty(),
            format!("silent when ready: {:?}", String::from_utf8_lossy(&second.stderr)),
        )
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
