//! Qt's own autotests for `QSystemSemaphore`, ported to qshm: qtbase
//! `tests/auto/corelib/ipc/qsystemsemaphore/tst_qsystemsemaphore.cpp` (Qt 6.x) and its
//! helper `acquirerelease/main.cpp` (here: the child role `acquirerelease` of this
//! binary, with the helper's functions `acquire [count]`, `release`, `acquirerelease`
//! and its exit codes), written anew in Rust against qshm's API.
//!
//! Trials are named `<key type>::<Qt test function>[::<data row>]`. Qt runs every function
//! once per key type (`ipctestcommon.h`): on Linux `posix`, `systemv` ("SystemV-Q") and
//! `systemv-84` ("SystemV-T", `QNativeIpcKey::Type('T')`), in that order, and
//! `nextKeyType` rotates through them. Qt's `init()` makes the "existing" semaphore
//! (`platformSafeKey("existing")`, 1, `Create`) before every case; its `cleanup()`
//! becomes a check that nothing of any key the case used is left (semaphore, key file).
//!
//! # Summary
//!
//! | | Qt functions | Qt runs on Linux (rows × key types) | qshm trials |
//! |---|---|---|---|
//! | exist | 13 | 87 = 29 rows × 3 (POSIX, SystemV-Q, SystemV-T) | 87 |
//! | Qt skips itself | `undo` on POSIX ("only checks a System V behavior") | 1 | 1, reported ignored |
//! | apply | 13 | 86 | 86 |
//! | pass | 13 | 86 | 86 |
//!
//! # Documented differences (the trials assert qshm's behaviour; comments name Qt's)
//!
//! * Keys: Qt's `nativeKey` and `legacyKey` use the row's keys `one`/`two` as they are,
//!   and `nativeKey`'s "change the key type" step unmangled: system-wide names that
//!   parallel trials (this harness runs them in threads) would share. Here every key is
//!   mangled with the case's unique prefix, as Qt's other keys are.
//! * `changeKeyType` asserts nothing in Qt; here every call's `error()` is `NoError` and
//!   the semaphores' values are checked.
//! * Waits: Qt gives a helper 10 s (`HELPERWAITTIME`) to show that it blocks
//!   (`QCOMPARE(acquire.state(), QProcess::Running)`); here 1 s ([`BLOCKS`]), and every
//!   helper that must finish has 30 s. Stricter than Qt: a `release` helper must exit 0.
//! * Results are `Result`s; Qt's `bool` is `is_ok()`. Qt's `QSystemSemaphore(key)` is
//!   `with_native_key(key, 0, Open)`, its `setNativeKey(key)` `set_native_key(key, 0,
//!   Open)`, and Qt's null key string is `None`.
//!
//! # Not ported
//!
//! * Rows of key type "Windows": Windows only.
//! * `QT_CONFIG(process)` skips: Linux has processes.

#[macro_use]
mod support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{KeyType, NativeIpcKey, SemaphoreMode, SharedMemoryError, SystemSemaphore};
use support::*;

type R = Result<(), Failed>;

/// How long a helper that must finish may take (the machine is shared).
const T: Duration = Duration::from_secs(30);
/// How long a helper that must block is watched (Qt: 10 s).
const BLOCKS: Duration = Duration::from_secs(1);

/// The child role of Qt's `acquirerelease` helper.
const HELPER: &str = "acquirerelease";

// ----------------------------------------------------------------------------- fixture

/// One run of a Qt test function: Qt's `init()`, `cleanup()` and key helpers.
struct Case {
    kind: KeyType,
    /// Qt's `tstsyssem_<pid>-<seq>` prefix: unique to this case.
    prefix: String,
    keys: Vec<NativeIpcKey>,
    recorded: Vec<(&'static str, i32, i32)>,
    /// Qt's `existingLock`.
    existing: Option<SystemSemaphore>,
    /// Helpers still running are killed when the case ends, pass or fail.
    helpers: Vec<Child>,
    cleanup: Cleanup,
}

impl Case {
    /// Qt's `init()`: the "existing" semaphore, there for every case.
    fn new(kind: KeyType) -> Result<Case, Failed> {
        let mut case = Case {
            kind,
            prefix: unique_key("tstsyssem"),
            keys: Vec::new(),
            recorded: Vec::new(),
            existing: None,
            helpers: Vec::new(),
            cleanup: Cleanup::default(),
        };
        let key = case.platform_safe_key("existing");
        case.existing = Some(case.create(&key, 1)?);
        Ok(case)
    }

    /// Qt's `mangleKey`: an empty key stays empty.
    fn mangle(&self, key: &str) -> String {
        if key.is_empty() {
            String::new()
        } else {
            format!("{}_{key}", self.prefix)
        }
    }

    /// Qt's `platformSafeKey` helper, remembered for the leftover check.
    fn platform_safe_key(&mut self, key: &str) -> NativeIpcKey {
        let native = SystemSemaphore::platform_safe_key(&self.mangle(key), self.kind);
        self.remember(&native);
        native
    }

    fn remember(&mut self, native: &NativeIpcKey) {
        if !native.is_empty() && !self.keys.contains(native) {
            self.keys.push(native.clone());
            self.cleanup.native_key(native);
        }
    }

    /// `QSystemSemaphore(key, initial, Create)`, its System V objects noted.
    fn create(&mut self, key: &NativeIpcKey, initial: u32) -> Result<SystemSemaphore, Failed> {
        let sem = SystemSemaphore::with_native_key(key.clone(), initial, SemaphoreMode::Create)?;
        self.record(key);
        Ok(sem)
    }

    fn record(&mut self, key: &NativeIpcKey) {
        self.recorded.extend(sysv_keys_of(key));
    }

    /// Start Qt's helper: `acquirerelease_helper <function> <key string> [args]`.
    fn helper(&mut self, args: &[&str]) -> usize {
        let exe = std::env::current_exe().expect("test binary path");
        let child = Command::new(exe)
            .env(CHILD_ENV, HELPER)
            .args(args)
            .spawn()
            .expect("start the helper");
        self.helpers.push(child);
        self.helpers.len() - 1
    }

    /// Qt's `waitForFinished(ms)`: the helper's exit code, or `None` if still running.
    fn wait(&mut self, helper: usize, within: Duration) -> Result<Option<i32>, Failed> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.helpers[helper].try_wait()? {
                return Ok(Some(status.code().unwrap_or(-1)));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn kill(&mut self, helper: usize) {
        let _ = self.helpers[helper].kill();
        let _ = self.helpers[helper].wait();
    }

    /// Qt's `cleanup()`: the "existing" semaphore goes; nothing of any key may be left.
    fn finish(mut self) -> R {
        for helper in 0..self.helpers.len() {
            self.kill(helper);
        }
        drop(self.existing.take());
        let mut left: Vec<String> = self
            .keys
            .iter()
            .flat_map(|k| leftovers_of(k, &self.recorded))
            .collect();
        left.sort();
        left.dedup();
        qverify!(left.is_empty(), "left behind: {left:?}");
        Ok(())
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        for helper in &mut self.helpers {
            let _ = helper.kill();
            let _ = helper.wait();
        }
    }
}

/// Qt's `IpcTestCommon::nextKeyType`.
fn next_key_type(kind: KeyType) -> KeyType {
    let at = QT_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
    QT_KINDS[(at + 1) % QT_KINDS.len()]
}

/// Qt's `QSystemSemaphore(key)`: initial value 0, `Open`.
fn open(key: &NativeIpcKey) -> Result<SystemSemaphore, Failed> {
    Ok(SystemSemaphore::with_native_key(
        key.clone(),
        0,
        SemaphoreMode::Open,
    )?)
}

// ----------------------------------------------------------------------------- trials

/// Qt's `nativeKey_data` (also `legacyKey_data`): constructor key, `setKey`; "" is null.
const KEY_ROWS: [(&str, &str, &str); 3] = [
    ("null_null", "", ""),
    ("null_one", "", "one"),
    ("one_two", "one", "two"),
];

fn main() {
    run_child_role(child_main);
    let mut trials = Vec::new();
    for kind in QT_KINDS {
        let k = kind_name(kind);
        let mut add = |name: String, f: Box<dyn FnOnce() -> R + Send>| {
            trials.push(Trial::test(format!("{k}::{name}"), f));
        };
        for row in KEY_ROWS {
            add(
                format!("nativeKey::{}", row.0),
                Box::new(move || native_key(kind, row)),
            );
            add(
                format!("legacyKey::{}", row.0),
                Box::new(move || legacy_key(kind, row)),
            );
        }
        add("changeKeyType".into(), Box::new(move || change_key_type(kind)));
        add("basicacquire".into(), Box::new(move || basic_acquire(kind)));
        add("complexacquire".into(), Box::new(move || complex_acquire(kind)));
        add("release".into(), Box::new(move || release(kind)));
        add("twoSemaphores".into(), Box::new(move || two_semaphores(kind)));
        add("basicProcesses".into(), Box::new(move || basic_processes(kind)));
        // Qt's processes_data: "1 process (i)", "3 process (i)", "10 process (i)", i < 5
        for i in 0..5 {
            for n in [1, 3, 10] {
                add(
                    format!("processes::{n}_process_{i}"),
                    Box::new(move || processes(kind, n)),
                );
            }
        }
        add("initialValue".into(), Box::new(move || initial_value(kind)));
    }
    for kind in QT_KINDS {
        // Qt: QSKIP("This test only checks a System V behavior.") for POSIX
        let name = format!("{}::undo", kind_name(kind));
        trials.push(Trial::test(name, move || undo(kind)).with_ignored_flag(!kind.is_system_v()));
    }
    run_suite(&Arguments::from_args(), trials, Passes::AsUser);
}

/// `nativeKey`: a native key through the constructor and `setNativeKey`, then a key of
/// the next type.
fn native_key(kind: KeyType, (_, constructor_key, set_key): (&str, &str, &str)) -> R {
    let mut case = Case::new(kind)?;
    let constructor_ipc_key = case.platform_safe_key(constructor_key);
    let set_ipc_key = case.platform_safe_key(set_key);

    let mut sem = open(&constructor_ipc_key)?;
    case.record(&constructor_ipc_key);
    qcompare!(*sem.native_ipc_key(), constructor_ipc_key);
    qcompare!(sem.error(), SharedMemoryError::NoError);
    qcompare!(sem.error_string(), "");

    sem.set_native_key(set_ipc_key.clone(), 0, SemaphoreMode::Open)?;
    case.record(&set_ipc_key);
    qcompare!(*sem.native_ipc_key(), set_ipc_key);
    qcompare!(sem.error(), SharedMemoryError::NoError);
    qcompare!(sem.error_string(), "");

    // change the key type (DIFFERENCE: mangled, see the module docs)
    let next = next_key_type(set_ipc_key.kind());
    if next != set_ipc_key.kind() {
        let set_ipc_key2 = SystemSemaphore::platform_safe_key(&case.mangle(set_key), next);
        case.remember(&set_ipc_key2);
        sem.set_native_key(set_ipc_key2.clone(), 0, SemaphoreMode::Open)?;
        case.record(&set_ipc_key2);
        qcompare!(*sem.native_ipc_key(), set_ipc_key2);
    }
    drop(sem);
    case.finish()
}

/// `legacyKey`: legacy keys through the constructor and `setKey` (legacy keys are of
/// `legacyDefaultTypeForOs()`, System V, in every row, as in Qt).
fn legacy_key(kind: KeyType, (_, constructor_key, set_key): (&str, &str, &str)) -> R {
    let mut case = Case::new(kind)?;
    // DIFFERENCE: mangled, see the module docs
    let (constructor_key, set_key) = (case.mangle(constructor_key), case.mangle(set_key));
    for key in [&constructor_key, &set_key] {
        case.remember(&SystemSemaphore::legacy_native_key(
            key,
            KeyType::legacy_default(),
        ));
    }
    let mut sem = SystemSemaphore::new(&constructor_key, 0, SemaphoreMode::Open)?;
    qcompare!(sem.key().unwrap_or(""), constructor_key);
    qcompare!(sem.error(), SharedMemoryError::NoError);
    qcompare!(sem.error_string(), "");

    sem.set_key(&set_key, 0, SemaphoreMode::Open)?;
    qcompare!(sem.key().unwrap_or(""), set_key);
    qcompare!(sem.error(), SharedMemoryError::NoError);
    qcompare!(sem.error_string(), "");
    drop(sem);
    case.finish()
}

/// `changeKeyType`: two handles swap keys of two types.
fn change_key_type(kind: KeyType) -> R {
    let mut case = Case::new(kind)?;
    let key = case.platform_safe_key("changeKeyType");
    let other_key = SystemSemaphore::platform_safe_key(&case.mangle("changeKeyType"), next_key_type(kind));
    case.remember(&other_key);
    qverify!(key != other_key, "the system supports one key type only");

    let mut sem1 = case.create(&key, 1)?;
    let mut sem2 = open(&other_key)?;
    case.record(&other_key);
    sem1.set_native_key(other_key.clone(), 0, SemaphoreMode::Open)?;
    sem2.set_native_key(key.clone(), 0, SemaphoreMode::Open)?;
    // Qt asserts nothing here; the calls succeed and each handle has the other's key
    qcompare!(sem1.error(), SharedMemoryError::NoError);
    qcompare!(sem2.error(), SharedMemoryError::NoError);
    qcompare!(*sem1.native_ipc_key(), other_key);
    qcompare!(*sem2.native_ipc_key(), key);
    // sem1 made `key` and removed it when it changed keys: sem2 made it anew, at 0
    qcompare!(sem2.value()?, 0);
    drop((sem1, sem2));
    case.finish()
}

/// `basicacquire`.
fn basic_acquire(kind: KeyType) -> R {
    let mut case = Case::new(kind)?;
    let key = case.platform_safe_key("basicacquire");
    let sem = case.create(&key, 1)?;
    qverify!(sem.acquire().is_ok());
    qcompare!(sem.error(), SharedMemoryError::NoError);
    qverify!(sem.release(1).is_ok());
    qcompare!(sem.error(), SharedMemoryError::NoError);
    qcompare!(sem.error_string(), "");
    drop(sem);
    case.finish()
}

/// `complexacquire`.
fn complex_acquire(kind: KeyType) -> R {
    let mut case = Case::new(kind)?;
    let key = case.platform_safe_key("complexacquire");
    let sem = case.create(&key, 2)?;
    for op in ["a", "r", "a", "r", "a", "a", "r", "r"] {
        if op == "a" {
            qverify!(sem.acquire().is_ok());
        } else {
            qverify!(sem.release(1).is_ok());
        }
        qcompare!(sem.error(), SharedMemoryError::NoError);
    }
    qcompare!(sem.error_string(), "");
    drop(sem);
    case.finish()
}

/// `release`.
fn release(kind: KeyType) -> R {
    let mut case = Case::new(kind)?;
    let key = case.platform_safe_key("release");
    let sem = case.create(&key, 0)?;
    for op in ["r", "r", "a", "a", "r", "r"] {
        if op == "a" {
            qverify!(sem.acquire().is_ok());
        } else {
            qverify!(sem.release(1).is_ok());
        }
        qcompare!(sem.error(), SharedMemoryError::NoError);
    }
    qcompare!(sem.error_string(), "");
    drop(sem);
    case.finish()
}

/// `twoSemaphores`: two handles of one semaphore.
fn two_semaphores(kind: KeyType) -> R {
    let mut case = Case::new(kind)?;
    let key = case.platform_safe_key("twoSemaphores");
    let sem1 = case.create(&key, 1)?;
    let sem2 = open(&key)?;
    qverify!(sem1.acquire().is_ok());
    qverify!(sem2.release(1).is_ok());
    qverify!(sem1.acquire().is_ok());
    qverify!(sem2.release(1).is_ok());
    drop((sem2, sem1));
    case.finish()
}

/// `basicProcesses`: a helper blocks in `acquire`, is killed, a helper releases.
fn basic_processes(kind: KeyType) -> R {
    let mut case = Case::new(kind)?;
    let key = case.platform_safe_key("store");
    let sem = case.create(&key, 0)?;
    let key_string = key.to_string();
    let acquire = case.helper(&["acquire", &key_string]);
    qcompare!(case.wait(acquire, BLOCKS)?, None); // still running
    case.kill(acquire);
    let release = case.helper(&["release", &key_string]);
    qcompare!(case.wait(release, T)?, Some(0));
    qverify!(case.wait(acquire, T)?.is_some()); // NotRunning
    drop(sem);
    case.finish()
}

/// `processes`: `n` helpers each acquire and release.
fn processes(kind: KeyType, n: usize) -> R {
    let mut case = Case::new(kind)?;
    let key = case.platform_safe_key("store");
    let sem = case.create(&key, 1)?;
    let key_string = key.to_string();
    let helpers: Vec<usize> = (0..n)
        .map(|_| case.helper(&["acquirerelease", &key_string]))
        .collect();
    for helper in helpers {
        // NormalExit and exit code 0
        qcompare!(case.wait(helper, T)?, Some(0));
    }
    drop(sem);
    case.finish()
}

/// `undo` (System V only): a helper that acquired and exited gave its unit back.
fn undo(kind: KeyType) -> R {
    let mut case = Case::new(kind)?;
    let key = case.platform_safe_key("store");
    let sem = case.create(&key, 1)?;
    let key_string = key.to_string();
    let first = case.helper(&["acquire", &key_string]);
    qcompare!(case.wait(first, T)?, Some(0));
    // At process exit the kernel should auto undo
    let second = case.helper(&["acquire", &key_string]);
    qcompare!(case.wait(second, T)?, Some(0));
    drop(sem);
    case.finish()
}

/// `initialValue`: one unit: a helper takes it; one that wants two blocks until released.
fn initial_value(kind: KeyType) -> R {
    let mut case = Case::new(kind)?;
    let key = case.platform_safe_key("store");
    let sem = case.create(&key, 1)?;
    let key_string = key.to_string();
    let acquire = case.helper(&["acquire", &key_string]);
    qcompare!(case.wait(acquire, T)?, Some(0));
    let acquire2 = case.helper(&["acquire", &key_string, "2"]);
    qcompare!(case.wait(acquire2, BLOCKS)?, None); // still running
    case.kill(acquire2);
    let release = case.helper(&["release", &key_string]);
    qcompare!(case.wait(release, T)?, Some(0));
    qverify!(case.wait(acquire2, T)?.is_some());
    drop(sem);
    case.finish()
}

// ----------------------------------------------------------------------------- helper

/// Qt's `acquirerelease` helper: `<acquire|release|acquirerelease> <key> [count]`; exits
/// 0 on success, 1 when an operation fails (Qt's `EXIT_FAILURE`).
fn child_main(role: &str, args: &[String]) -> i32 {
    if role != HELPER || args.len() < 2 {
        eprintln!("Usage: {HELPER} <acquire|release|acquirerelease> <key> [other args...]");
        return 1;
    }
    // Qt: QNativeIpcKey::fromString (an invalid key fails at the first operation)
    let key: NativeIpcKey = args[1].parse().unwrap_or_default();
    let Ok(sem) = SystemSemaphore::with_native_key(key, 0, SemaphoreMode::Open) else {
        eprintln!("Could not open {}", args[1]);
        return 1;
    };
    let ok = match args[0].as_str() {
        "acquire" => {
            // Qt: a count that is not a number is 1
            let count = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(1);
            (0..count).all(|_| sem.acquire().is_ok())
        }
        "release" => sem.release(1).is_ok(),
        "acquirerelease" => sem.acquire().is_ok() && sem.release(1).is_ok(),
        other => {
            eprintln!("Unknown function {other}");
            true
        }
    };
    if !ok {
        eprintln!(
            "Could not acquire or release {:?}: {}",
            sem.native_key(),
            sem.error_string()
        );
    }
    i32::from(!ok)
}
