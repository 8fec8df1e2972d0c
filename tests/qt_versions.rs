//! qshm against three real Qt versions: Qt 5.15 (PyQt5), Qt 6.11 (PyQt6) and Qt 6.12
//! (PySide6), each driven by `interop/qt_versions_peer.py`, for every key type the version
//! has: Qt 5 System V ('Q') only; Qt 6 POSIX, System V ('Q') and System V with `ftok`
//! project id 84 (`QNativeIpcKey::Type('T')`, `systemv-84`).
//!
//! Trials are `<qt version>::<key type>::<cell>`:
//!
//! * `keys`: the native keys (and Qt 6 string forms) Qt derives from legacy keys.
//! * `native_key`: Qt creates under a native key (`QNativeIpcKey(path, type)`, Qt 5
//!   `setNativeKey(path)`), qshm reads it.
//! * `data_qt_to_qshm`, `data_qshm_to_qt`: bytes both ways, under each side's lock.
//! * `exact_sizes`: the size one side creates is the size the other sees (odd sizes).
//! * `lock_counter`: both sides add 1 to a counter under their own lock, concurrently;
//!   the sum is exact.
//! * `killed_qt_holder`: a Qt process killed while holding the lock; qshm then locks,
//!   and so does Qt again.
//! * `qt_detaches_last`, `qshm_detaches_last`: whoever detaches last, nothing is left
//!   once qshm is done with the key (Qt leaks a POSIX segment it detaches last from: the
//!   next qshm `create` reclaims it).
//! * Qt 5 only, `symlinked_tmpdir`: Qt 5 resolves a symbolic link in `$TMPDIR`, Qt 6 and
//!   qshm keep it; both name the same file, so the segment is the same.
//!
//! Each Qt is installed by `interop/setup.sh` into a venv under `target/` (or found
//! through `QSHM_QT5_PEER`, `QSHM_QT_PEER`, `QSHM_QT612_PEER`). One that cannot be
//! installed is reported with a loud SKIP line and its trials ignored, never passed.

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{AccessMode, KeyType, NativeIpcKey, SharedMemory};
use support::qt::find_qt_binding;
use support::*;

type R = Result<(), Failed>;

/// How long anything a cell waits for may take (the machine is shared).
const T: Duration = Duration::from_secs(30);

/// One Qt version under test.
#[derive(Clone)]
struct Qt {
    /// In trial names: `qt5.15`, `qt6.11`, `qt6.12`.
    name: &'static str,
    python: Option<PathBuf>,
    kinds: Vec<KeyType>,
}

fn main() {
    run_child_role(child_main);
    let args = Arguments::from_args();
    let versions = [
        ("qt5.15", "pyqt5", "QSHM_QT5_PEER", vec![KeyType::SystemV]),
        ("qt6.11", "pyqt6", "QSHM_QT_PEER", QT_KINDS.to_vec()),
        ("qt6.12", "pyside6", "QSHM_QT612_PEER", QT_KINDS.to_vec()),
    ];
    let mut trials = Vec::new();
    for (name, flavor, env_var, kinds) in versions {
        let python = match find_qt_binding(flavor, env_var) {
            Ok(py) => Some(py),
            Err(why) => {
                eprintln!("\n*** SKIP: tests/qt_versions.rs {name}: {why} ***\n");
                None
            }
        };
        let qt = Arc::new(Qt { name, python, kinds });
        add_trials(&mut trials, &qt);
    }
    libtest_mimic::run(&args, trials).exit();
}

type Cell = fn(&Path, KeyType) -> R;

fn add_trials(trials: &mut Vec<Trial>, qt: &Arc<Qt>) {
    let cells: [(&str, Cell); 9] = [
        ("keys", keys),
        ("native_key", native_key),
        ("data_qt_to_qshm", data_qt_to_qshm),
        ("data_qshm_to_qt", data_qshm_to_qt),
        ("exact_sizes", exact_sizes),
        ("lock_counter", lock_counter),
        ("killed_qt_holder", killed_qt_holder),
        ("qt_detaches_last", qt_detaches_last),
        ("qshm_detaches_last", qshm_detaches_last),
    ];
    let mut cells: Vec<(&str, Cell, Vec<KeyType>)> = cells
        .into_iter()
        .map(|(name, cell)| (name, cell, qt.kinds.clone()))
        .collect();
    if qt.name == "qt5.15" {
        cells.push(("symlinked_tmpdir", symlinked_tmpdir, vec![KeyType::SystemV]));
    }
    for (cell_name, cell, kinds) in cells {
        for kind in kinds {
            let name = format!("{}::{}::{cell_name}", qt.name, kind_name(kind));
            let python = qt.python.clone();
            let trial = Trial::test(name, move || match python {
                Some(py) => cell(&py, kind),
                None => Ok(()),
            });
            trials.push(trial.with_ignored_flag(qt.python.is_none()));
        }
    }
}

// ----------------------------------------------------------------------------- the peer

const PEER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/qt_versions_peer.py");

/// The command running the Qt peer's `action` on `key` (legacy, or native) of type `kind`.
fn peer_command(python: &Path, action: &str, key: &KeyArg, kind: KeyType, extra: &[&str]) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(PEER_SCRIPT).arg(action);
    match key {
        KeyArg::Legacy(k) => cmd.args(["--key", k]),
        KeyArg::Native(k) => cmd.args(["--native", k]),
    };
    cmd.args(["--type", kind_name(kind)]).args(extra);
    cmd
}

/// The Qt peer doing `action`, talked to line by line.
fn peer(python: &Path, action: &str, key: &KeyArg, kind: KeyType, extra: &[&str]) -> Peer {
    Peer::spawn_command(&mut peer_command(python, action, key, kind, extra))
}

/// How the peer gets its key.
enum KeyArg {
    Legacy(String),
    Native(String),
}

/// Run the peer to its end; its stdout lines, or why it failed.
fn peer_lines(
    python: &Path,
    action: &str,
    key: &KeyArg,
    kind: KeyType,
    extra: &[&str],
) -> Result<Vec<String>, Failed> {
    run_lines(&mut peer_command(python, action, key, kind, extra))
}

/// Run a command to its end (stdin closed); its stdout lines, or why it failed.
fn run_lines(cmd: &mut Command) -> Result<Vec<String>, Failed> {
    let out = cmd.stdin(std::process::Stdio::null()).output()?;
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    qverify!(
        out.status.success(),
        "{cmd:?}: {:?}, printed {lines:?}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(lines)
}

/// The value of the line starting with `prefix`.
fn field(lines: &[String], prefix: &str) -> Result<String, Failed> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| format!("no {prefix:?} line in {lines:?}").into())
}

/// A test pattern of `len` bytes (deterministic, not periodic in small steps).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The segment's leftovers check, with the System V ids noted while it lived.
struct Watched {
    key: String,
    kind: KeyType,
    recorded: Vec<(&'static str, i32, i32)>,
    _cleanup: Cleanup,
}

impl Watched {
    fn new(tag: &str, kind: KeyType) -> Watched {
        let key = unique_key(tag);
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        Watched {
            key,
            kind,
            recorded: Vec::new(),
            _cleanup: cleanup,
        }
    }

    fn legacy(&self) -> KeyArg {
        KeyArg::Legacy(self.key.clone())
    }

    fn handle(&self) -> SharedMemory {
        SharedMemory::with_key_type(&self.key, self.kind)
    }

    fn record(&mut self) {
        self.recorded.extend(sysv_keys(&self.key, self.kind));
    }

    fn nothing_left(&self) -> R {
        let left = leftovers(&self.key, self.kind, &self.recorded);
        qverify!(left.is_empty(), "left behind: {left:?}");
        Ok(())
    }
}

// ----------------------------------------------------------------------------- cells

/// `keys`: Qt's derivations of legacy keys, compared with qshm's.
fn keys(python: &Path, kind: KeyType) -> R {
    for key in ["market", "a/b c:é%", "UPPER_lower-123"] {
        let printed =
            run_lines(
                Command::new(python)
                    .arg(PEER_SCRIPT)
                    .args(["keys", key, "--types", kind_name(kind)]),
            )?;
        let json: serde_json::Value = serde_json::from_str(&printed.join("\n"))?;
        let ours = SharedMemory::legacy_native_key(key, kind);
        let theirs = &json[kind_name(kind)];
        qcompare!(theirs["native"].as_str(), Some(ours.native()));
        if let Some(string) = theirs["string"].as_str() {
            qcompare!(string, ours.to_string());
            qcompare!(string.parse::<NativeIpcKey>()?, ours);
        }
    }
    Ok(())
}

/// `native_key`: Qt creates under a native key, qshm reads it.
fn native_key(python: &Path, kind: KeyType) -> R {
    // (System V: a key file made now, whose numeric key no other live key shares)
    let native = if kind.is_system_v() {
        sysv_key_file("native", kind)
    } else {
        format!("/{}", unique_key("native"))
    };
    let key = NativeIpcKey::new(native.as_str(), kind);
    let mut cleanup = Cleanup::default();
    cleanup.native_key(&key);
    let data = pattern(777, 7);
    let mut qt = peer(
        python,
        "create",
        &KeyArg::Native(native.clone()),
        kind,
        &["--size", "777", "--hex", &hex(&data)],
    );
    qcompare!(qt.expect("READY", T), "size=777");
    let mut shm = SharedMemory::with_native_key(key.clone());
    shm.attach(AccessMode::ReadOnly)?;
    qcompare!(shm.size(), 777);
    qcompare!(shm.lock_read()?.to_vec(), data);
    drop(shm);
    let recorded = sysv_keys_of(&key);
    qt.send("done");
    qcompare!(qt.expect("DETACHED", T), "");
    qverify!(qt.finish().success());
    // Qt detached last: qshm's next create and detach of the key leave nothing but the
    // key file (the test made it and removes it). Before: Qt 5.15 makes no semaphore for a
    // native key; qshm's attach made one, which nothing ever removed.
    let mut again = SharedMemory::with_native_key(key.clone());
    again.create(16, AccessMode::ReadWrite)?;
    let recorded = [recorded, sysv_keys_of(&key)].concat();
    drop(again);
    let left: Vec<String> = leftovers_of(&key, &recorded)
        .into_iter()
        .filter(|l| !l.starts_with("key file"))
        .collect();
    if kind.is_system_v() {
        let _ = std::fs::remove_file(&native);
    }
    qverify!(left.is_empty(), "left behind: {left:?}");
    let numeric = SharedMemory::system_v_key(&key).unwrap_or(0);
    if kind.is_system_v() {
        let sets = sysv_ids("/proc/sysvipc/sem", numeric);
        qverify!(
            sets.is_empty(),
            "semaphore sets left at the native key's numeric key: {sets:?}"
        );
    }
    Ok(())
}

/// `data_qt_to_qshm`: Qt creates and writes, qshm reads under its lock.
fn data_qt_to_qshm(python: &Path, kind: KeyType) -> R {
    let mut w = Watched::new("qt2qshm", kind);
    let data = pattern(4099, 1);
    let mut qt = peer(
        python,
        "create",
        &w.legacy(),
        kind,
        &["--size", "4099", "--hex", &hex(&data)],
    );
    qcompare!(qt.expect("READY", T), "size=4099");
    w.record();
    let mut shm = w.handle();
    shm.attach(AccessMode::ReadOnly)?;
    qcompare!(shm.size(), 4099);
    qcompare!(shm.lock_read()?.to_vec(), data);
    drop(shm);
    qt.send("done");
    qcompare!(qt.expect("DETACHED", T), "");
    qverify!(qt.finish().success());
    w.nothing_left_after_qshm()
}

impl Watched {
    /// After Qt detached last, qshm's next create and detach of the key leave nothing
    /// (a POSIX segment Qt leaked is stale and reclaimed; an orphaned lock state of a
    /// System V segment Qt removed is swept).
    fn nothing_left_after_qshm(&mut self) -> R {
        let mut again = self.handle();
        again.create(16, AccessMode::ReadWrite)?;
        self.record();
        drop(again);
        self.nothing_left()
    }
}

/// `data_qshm_to_qt`: qshm creates and writes, Qt reads; Qt writes, qshm reads.
fn data_qshm_to_qt(python: &Path, kind: KeyType) -> R {
    let mut w = Watched::new("qshm2qt", kind);
    let data = pattern(10_007, 2);
    let mut shm = w.handle();
    shm.create(data.len(), AccessMode::ReadWrite)?;
    w.record();
    shm.lock()?.copy_from_slice(&data);
    let read = peer_lines(python, "read", &w.legacy(), kind, &[])?;
    qcompare!(field(&read, "SIZE")?, "10007");
    qcompare!(field(&read, "DATA")?, hex(&data));
    let answer = pattern(64, 3);
    let wrote = peer_lines(python, "write", &w.legacy(), kind, &["--hex", &hex(&answer)])?;
    qcompare!(field(&wrote, "WROTE")?, "64");
    qcompare!(shm.lock_read()?[..64].to_vec(), answer);
    drop(shm);
    w.nothing_left()
}

/// `exact_sizes`: odd sizes, made by either side.
fn exact_sizes(python: &Path, kind: KeyType) -> R {
    for size in [1usize, 4095, 4097, (1 << 20) + 3] {
        // qshm creates, Qt sees the size
        let mut w = Watched::new("size", kind);
        let mut shm = w.handle();
        shm.create(size, AccessMode::ReadWrite)?;
        w.record();
        let out = peer_lines(python, "size", &w.legacy(), kind, &[])?;
        qcompare!(field(&out, "SIZE")?, size.to_string());
        drop(shm);
        w.nothing_left()?;
        // Qt creates, qshm sees the size
        let mut w = Watched::new("size", kind);
        let size_arg = size.to_string();
        let mut qt = peer(python, "create", &w.legacy(), kind, &["--size", &size_arg]);
        qcompare!(qt.expect("READY", T), format!("size={size}"));
        w.record();
        let mut shm = w.handle();
        shm.attach(AccessMode::ReadOnly)?;
        qcompare!(shm.size(), size);
        drop(shm);
        qt.send("done");
        qverify!(qt.finish().success());
        w.nothing_left_after_qshm()?;
    }
    Ok(())
}

/// How many times each side adds 1 in `lock_counter`.
const COUNTS: u64 = 2000;

/// `lock_counter`: Qt and qshm add to one counter under their own locks at once.
fn lock_counter(python: &Path, kind: KeyType) -> R {
    let mut w = Watched::new("counter", kind);
    let mut shm = w.handle();
    shm.create(8, AccessMode::ReadWrite)?;
    w.record();
    let iterations = COUNTS.to_string();
    let mut qt = peer(python, "count", &w.legacy(), kind, &["--iterations", &iterations]);
    qcompare!(qt.expect("ATTACHED", T), "");
    qt.send("go");
    for _ in 0..COUNTS {
        let mut data = shm.lock()?;
        let value = u64::from_le_bytes(data[..8].try_into()?);
        data[..8].copy_from_slice(&(value + 1).to_le_bytes());
    }
    qcompare!(qt.expect("COUNTED", T), "");
    qverify!(qt.finish().success());
    let total = u64::from_le_bytes(shm.lock_read()?[..8].try_into()?);
    qcompare!(total, 2 * COUNTS);
    drop(shm);
    w.nothing_left()
}

/// `killed_qt_holder`: a Qt process dies holding the lock; qshm locks, then Qt again.
fn killed_qt_holder(python: &Path, kind: KeyType) -> R {
    let mut w = Watched::new("killedqt", kind);
    let mut shm = w.handle();
    shm.create(64, AccessMode::ReadWrite)?;
    w.record();
    let mut holder = peer(python, "hold-lock", &w.legacy(), kind, &[]);
    qcompare!(holder.expect("LOCKED", T), "");
    qverify!(shm.try_lock()?.is_none(), "Qt's lock did not exclude qshm");
    holder.kill9();
    let start = Instant::now();
    let guard = shm.lock_timeout(Duration::from_secs(10))?;
    qverify!(guard.is_some(), "qshm could not lock after the Qt holder died");
    drop(guard);
    let again = peer_lines(python, "lock-once", &w.legacy(), kind, &[])?;
    qverify!(field(&again, "LOCKED_AFTER_MS").is_ok());
    qverify!(start.elapsed() < T);
    drop(shm);
    w.nothing_left()
}

/// `qt_detaches_last`: qshm creates, Qt attaches, qshm detaches, then Qt.
fn qt_detaches_last(python: &Path, kind: KeyType) -> R {
    let mut w = Watched::new("qtlast", kind);
    let data = pattern(100, 4);
    let mut shm = w.handle();
    shm.create(100, AccessMode::ReadWrite)?;
    w.record();
    shm.lock()?.copy_from_slice(&data);
    let mut qt = peer(python, "hold-attached", &w.legacy(), kind, &[]);
    qcompare!(qt.expect("ATTACHED", T), "size=100");
    drop(shm); // Qt is still attached: the segment stays
    let out = peer_lines(python, "read", &w.legacy(), kind, &[])?;
    qcompare!(field(&out, "DATA")?, hex(&data));
    qt.send("done");
    qcompare!(qt.expect("DETACHED", T), "");
    qverify!(qt.finish().success());
    w.nothing_left_after_qshm()
}

/// `qshm_detaches_last`: Qt creates, qshm attaches, Qt detaches, then qshm: qshm destroys.
fn qshm_detaches_last(python: &Path, kind: KeyType) -> R {
    let mut w = Watched::new("qshmlast", kind);
    let data = pattern(300, 5);
    let mut qt = peer(
        python,
        "create",
        &w.legacy(),
        kind,
        &["--size", "300", "--hex", &hex(&data)],
    );
    qcompare!(qt.expect("READY", T), "size=300");
    w.record();
    let mut shm = w.handle();
    shm.attach(AccessMode::ReadWrite)?;
    qt.send("done");
    qcompare!(qt.expect("DETACHED", T), "");
    qverify!(qt.finish().success());
    qcompare!(shm.lock_read()?.to_vec(), data);
    drop(shm); // the last user: the segment goes, with Qt's semaphore and key files
    w.nothing_left()
}

/// `symlinked_tmpdir` (Qt 5): `$TMPDIR` is a symbolic link; Qt 5 names the real
/// directory, qshm (as Qt 6) the link; both mean one key file, so one segment.
fn symlinked_tmpdir(python: &Path, kind: KeyType) -> R {
    let base = std::env::temp_dir().join(unique_key("tmpdirlink"));
    let (real, link) = (base.join("real"), base.join("link"));
    std::fs::create_dir_all(&real)?;
    std::os::unix::fs::symlink(&real, &link)?;
    let _remove = RemoveDir(base.clone());
    let key = unique_key("linked");
    // qshm in a child whose TMPDIR is the link creates and writes
    let data = pattern(50, 6);
    let mut child = Peer::spawn_command(
        Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, "create-and-hold")
            .env("TMPDIR", &link)
            .args([&key, &hex(&data)]),
    );
    let native = child.expect("READY", T);
    qverify!(native.starts_with(&format!("{}/", link.display())), "{native}");
    // Qt 5 with the same TMPDIR derives the real directory, and reads qshm's bytes
    let printed = run_lines(
        Command::new(python)
            .arg(PEER_SCRIPT)
            .args(["keys", &key])
            .env("TMPDIR", &link),
    )?;
    let json: serde_json::Value = serde_json::from_str(&printed.join("\n"))?;
    let qt_native = json[kind_name(kind)]["native"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    qverify!(
        qt_native.starts_with(&format!("{}/", real.display())),
        "{qt_native}"
    );
    let mut read = peer_command(python, "read", &KeyArg::Legacy(key.clone()), kind, &[]);
    let lines = run_lines(read.env("TMPDIR", &link))?;
    qcompare!(field(&lines, "DATA")?, hex(&data));
    child.send("done");
    qverify!(child.finish().success());
    qverify!(!Path::new(&native).exists(), "key file left: {native}");
    Ok(())
}

/// Removes a directory tree when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ----------------------------------------------------------------------------- children

fn child_main(role: &str, args: &[String]) -> i32 {
    match role {
        // create legacy key args[0] (System V), write hex args[1], hold until a line
        "create-and-hold" => {
            let data: Vec<u8> = (0..args[1].len() / 2)
                .map(|i| u8::from_str_radix(&args[1][2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect();
            let mut shm = SharedMemory::new(&args[0]);
            if let Err(e) = shm.create(data.len(), AccessMode::ReadWrite) {
                eprintln!("create: {e}");
                return 1;
            }
            match shm.lock() {
                Ok(mut guard) => guard.copy_from_slice(&data),
                Err(e) => {
                    eprintln!("lock: {e}");
                    return 1;
                }
            }
            say(format!("READY {}", shm.native_key()));
            wait_for_stdin_line();
            0
        }
        other => {
            eprintln!("unknown role {other}");
            2
        }
    }
}
