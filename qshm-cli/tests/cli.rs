//! The `qshm` binary, driven across processes: every subcommand, run as its own process
//! next to `qshm create --hold` holders and library handles.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use qshm::{AccessMode, KeyType, LockMode, NativeIpcKey, SharedMemory, SystemSemaphore};
use support::*;

const T: Duration = Duration::from_secs(20);
const BIN: &str = env!("CARGO_BIN_EXE_qshm");

/// `qshm rm --stale` works machine-wide: tests that make stale objects or remove them
/// take turns, so one does not clean up what another is still looking at.
static STALE: Mutex<()> = Mutex::new(());

fn stale_turn() -> MutexGuard<'static, ()> {
    STALE.lock().unwrap_or_else(|e| e.into_inner())
}

fn qshm(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run qshm")
}

fn qshm_with_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run qshm");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("feed stdin");
    child.wait_with_output().expect("qshm output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code `code` with exactly one `qshm: …` line on stderr.
fn assert_fails(out: &Output, code: i32) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(
        err.starts_with("qshm: ") && err.lines().count() == 1,
        "one error line: {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn type_flag(kind: KeyType) -> &'static str {
    if kind.is_system_v() { "--sysv" } else { "--posix" }
}

/// `qshm create KEY SIZE --hold 60 <type> <extra>` in the background, once it reports.
fn hold(key: &str, kind: KeyType, size: &str, extra: &[&str]) -> (Peer, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["create", key, size, "--hold", "60", type_flag(kind)])
        .args(extra);
    let mut peer = Peer::spawn_command(&mut cmd);
    let line = peer.expect("created ", T);
    assert_eq!(peer.expect("holding", T), "for 1m (Ctrl-C to release)");
    (peer, line)
}

/// Ctrl-C, as a terminal sends it: the holder must detach and exit 0.
fn interrupt(peer: &mut Peer) {
    // SAFETY: kill only sends a signal to our own child's pid.
    unsafe { libc::kill(peer.child.id() as i32, libc::SIGINT) };
    assert!(peer.wait(T).success(), "a Ctrl-C'd qshm exits cleanly");
}

/// Removes a segment given by native key when the test ends (pass or fail).
struct RemoveNative(NativeIpcKey);

impl Drop for RemoveNative {
    fn drop(&mut self) {
        let _ = SharedMemory::force_remove(&self.0);
    }
}

fn ls_json() -> serde_json::Value {
    let out = qshm(&["ls", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("ls --json prints JSON")
}

fn find_segment(json: &serde_json::Value, kind: KeyType, native: &str) -> Option<serde_json::Value> {
    json["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .find(|s| s["type"] == kind.as_str() && s["native_key"] == native)
        .cloned()
}

/// The orphans `ls --json` lists, as (what `rm --stale` calls them, path).
fn orphan_paths(json: &serde_json::Value) -> Vec<(String, String)> {
    json["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .map(|o| {
            let what = match o["kind"].as_str().unwrap_or("") {
                "lock_state" => "lock state",
                "key_file" => "key file",
                "posix_semaphore" | "systemv_semaphore" | "unfinished_semaphore" => "semaphore",
                "maybe_semaphore" => "semaphore*",
                other => panic!("orphan kind {other:?} is not in the schema"),
            };
            (what.to_owned(), o["path"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

/// The `new` flag of the orphan at `path` in `ls --json`, if it is listed.
fn orphan_is_new(json: &serde_json::Value, path: &str) -> Option<bool> {
    json["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .find(|o| o["path"] == path)
        .map(|o| o["new"].as_bool().expect("new is a boolean"))
}

#[test]
fn key_prints_the_native_keys_qt_derives() {
    let out = qshm(&["key", "market"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // pinned: what Qt 6 derives for "market"
    assert!(
        text.contains("segment:    /qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3\n"),
        "{text}"
    );
    for kind in KINDS {
        let shm = SharedMemory::legacy_native_key("market", kind);
        let sem = SystemSemaphore::legacy_native_key("market", kind);
        assert!(
            text.contains(&format!("segment:    {}\n", shm.native())),
            "{text}"
        );
        assert!(
            text.contains(&format!("semaphore:  {}\n", sem.native())),
            "{text}"
        );
        assert!(text.contains(&format!("string:     {shm}\n")), "{text}");
        let safe = SharedMemory::platform_safe_key("market", kind);
        assert!(text.contains(&safe.to_string()), "{text}");
    }
    assert_fails(&qshm(&["key", ""]), 1);
}

#[test]
fn create_write_cat_stat_across_processes() {
    for kind in KINDS {
        let key = unique_key("cli");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, line) = hold(&key, kind, "100", &["--fill", "46", "--mode", "0640"]);
        // created KEY native=STRING size=N type=T
        let native = SharedMemory::legacy_native_key(&key, kind);
        assert_eq!(
            line,
            format!("{key} native={native} size=100 type={}", kind.as_str())
        );
        let recorded = sysv_keys(&key, kind);

        let out = qshm(&[
            "write",
            &key,
            "--text",
            "hello from the CLI",
            "--offset",
            "4",
            type_flag(kind),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), "wrote 18 bytes at offset 4\n");
        let out = qshm(&["cat", &key, "--len", "22", type_flag(kind)]);
        assert_eq!(stdout(&out), "....hello from the CLI");
        let out = qshm(&["cat", &key, "--len", "8", "--hex", type_flag(kind)]);
        assert_eq!(
            stdout(&out),
            "00000000  2e 2e 2e 2e 68 65 6c 6c                           |....hell|\n00000008\n"
        );

        // what the CLI wrote, the library reads, under the same lock
        let mut shm = handle(&key, kind, LockMode::QtCompatible);
        shm.attach(AccessMode::ReadOnly).unwrap();
        assert_eq!(&shm.lock_read().unwrap()[..23], b"....hello from the CLI.");
        drop(shm);

        let out = qshm(&["stat", &key, type_flag(kind)]);
        let text = stdout(&out);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(text.contains(&format!("native key:   {native}\n")), "{text}");
        assert!(text.contains("size:         100 bytes\n"), "{text}");
        assert!(text.contains("permissions:  0640\n"), "{text}");
        assert!(text.contains("lock:         free (Qt-compatible mode"), "{text}");
        match kind {
            KeyType::PosixRealtime => assert!(
                text.contains("attachments:  2 processes map it, 2 qshm attachments"),
                "holder + stat itself: {text}"
            ),
            _ => assert!(
                text.contains("attachments:  2 (this stat included)"),
                "holder + stat itself: {text}"
            ),
        }

        interrupt(&mut holder);
        assert_eq!(holder.line(T), "detached");
        let left = leftovers(&key, kind, &recorded);
        assert!(left.is_empty(), "Ctrl-C left {left:?}");
    }
}

#[test]
fn large_files_and_stdin_round_trip() {
    for kind in KINDS {
        let key = unique_key("clifile");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let dir = std::env::temp_dir().join(format!("{key}-files"));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.bin");
        let data: Vec<u8> = (0..3u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        std::fs::write(&input, &data).unwrap();
        let len = data.len().to_string();
        // SIZE defaults to the file's size (rounded up to pages)
        let (mut holder, line) = hold_from(&key, kind, input.to_str().unwrap());
        assert!(line.contains(&format!("size={}", 3 << 20)), "{line}");
        let recorded = sysv_keys(&key, kind);
        let out = qshm(&["cat", &key, type_flag(kind)]);
        assert!(out.stdout == data, "cat returns what create copied in");

        let out = qshm(&[
            "write",
            &key,
            "--from",
            input.to_str().unwrap(),
            "--offset",
            "1",
            type_flag(kind),
        ]);
        let err = assert_fails(&out, 1);
        assert!(err.contains("do not fit in the segment"), "{err}");

        let half = &data[..1 << 20];
        let out = qshm_with_stdin(
            &["write", &key, "--from", "-", "--offset", "2M", type_flag(kind)],
            half,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let out = qshm(&["cat", &key, "--offset", "2M", "--len", "1M", type_flag(kind)]);
        assert!(out.stdout == half, "stdin went to offset 2 MiB");
        let out = qshm(&["cat", &key, "--len", &len, type_flag(kind)]);
        assert!(out.stdout[..2 << 20] == data[..2 << 20], "the rest is untouched");

        interrupt(&mut holder);
        assert!(leftovers(&key, kind, &recorded).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn hold_from(key: &str, kind: KeyType, file: &str) -> (Peer, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["create", key, "--from", file, "--hold", "60", type_flag(kind)]);
    let mut peer = Peer::spawn_command(&mut cmd);
    let line = peer.expect("created ", T);
    (peer, line)
}

#[test]
fn system_v_keys_with_a_project_id_work_in_every_command() {
    // QSharedMemory::legacyNativeKey(key, QNativeIpcKey::Type(84)).toString()
    let key = unique_key("cliftokid");
    let t = KeyType::system_v(84).unwrap();
    let native = SharedMemory::legacy_native_key(&key, t);
    let _remove = RemoveNative(native.clone());
    let string = native.to_string();
    assert!(string.starts_with("systemv-84:/"), "{string}");
    // without --native: it reads as a native key, so it is one (not a legacy key)
    let mut holder = Peer::spawn_command(Command::new(BIN).args(["create", &string, "100", "--hold", "60"]));
    let line = holder.expect("created ", T);
    assert!(line.ends_with("size=100 type=systemv-84"), "{line}");
    let out = qshm(&["write", &string, "--text", "id 84"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&qshm(&["cat", &string, "--len", "5"])), "id 84");
    // not the segment of Qt's default id on the same key file
    let same_path = format!("systemv:{}", native.native());
    assert_fails(&qshm(&["cat", &same_path]), 3);
    let stat = stdout(&qshm(&["stat", &string]));
    assert!(stat.contains("backend:      System V (ftok id 84)\n"), "{stat}");
    // ls names its type and key file (Qt-named, so ls knows it)
    let listed = find_segment(&ls_json(), t, native.native()).expect("ls lists the segment");
    assert_eq!(listed["size"], 100);
    let out = qshm(&["rm", &string]);
    assert!(out.status.success(), "{}", stderr(&out));
    interrupt(&mut holder);
    assert!(!std::path::Path::new(native.native()).exists(), "key file left");
    // starts like a native key but is none: refused, with the way to a legacy key
    let err = assert_fails(&qshm(&["create", "systemv-0:/x", "10"]), 1);
    assert!(err.contains("--legacy"), "{err}");
}

#[test]
fn native_keys_name_segments_as_qt_prints_them() {
    let name = format!("/{}", unique_key("clinative"));
    let native = NativeIpcKey::new(name.clone(), KeyType::PosixRealtime);
    let _remove = RemoveNative(native.clone());
    let string = native.to_string(); // posix:/qshm-test-…
    let mut holder =
        Peer::spawn_command(Command::new(BIN).args(["create", "--native", &string, "8K", "--hold", "60"]));
    let line = holder.expect("created ", T);
    assert_eq!(line, format!("{string} native={string} size=8192 type=posix"));

    // the string form as KEY, --native with the bare name, and the library: one segment
    let out = qshm(&["write", &string, "--text", "native!"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = qshm(&["cat", "--native", &name, "--posix", "--len", "7"]);
    assert_eq!(stdout(&out), "native!");
    let mut shm = SharedMemory::with_native_key(native.clone());
    shm.attach(AccessMode::ReadOnly).unwrap();
    assert_eq!(&shm.lock_read().unwrap()[..7], b"native!");
    drop(shm);
    let out = qshm(&["stat", &string]);
    assert!(
        stdout(&out).contains("key:          (native key)\n"),
        "{}",
        stdout(&out)
    );

    // the type of a native key is its own
    let err = assert_fails(&qshm(&["cat", &string, "--sysv"]), 1);
    assert!(err.contains("drop --sysv"), "{err}");
    let err = assert_fails(&qshm(&["cat", "--native", "bogus:/x"]), 1);
    assert!(err.contains("not a native key string"), "{err}");

    interrupt(&mut holder);
    assert!(!SharedMemory::force_remove(&native).unwrap(), "gone after Ctrl-C");
}

#[test]
fn fast_mode_belongs_to_the_segment() {
    for kind in KINDS {
        let key = unique_key("clifast");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        // `create --fast` makes a Fast-mode segment; every other command adopts its mode
        let (mut holder, _) = hold(&key, kind, "64", &["--fast", "--fill", "7"]);
        let out = qshm(&["stat", &key, type_flag(kind)]);
        assert!(
            stdout(&out).contains("lock:         free (Fast mode"),
            "{}",
            stdout(&out)
        );
        let out = qshm(&["cat", &key, "--len", "1", type_flag(kind)]);
        assert_eq!(out.stdout, [7], "a plain cat adopts Fast mode: {}", stderr(&out));
        let out = qshm(&["write", &key, "--text", "x", type_flag(kind)]);
        assert!(
            out.status.success(),
            "a plain write adopts Fast mode: {}",
            stderr(&out)
        );
        let out = qshm(&["cat", &key, "--len", "2", "--fast", type_flag(kind)]);
        assert_eq!(out.stdout, [b'x', 7]);

        let mut locker = Peer::spawn_command(Command::new(BIN).args([
            "lock",
            &key,
            "--fast",
            "--hold",
            "60",
            type_flag(kind),
        ]));
        locker.expect("locked", T);
        let mut shm = handle(&key, kind, LockMode::Fast);
        shm.attach(AccessMode::ReadWrite).unwrap();
        assert!(shm.try_lock().unwrap().is_none(), "held by `qshm lock --fast`");
        let out = qshm(&["stat", &key, type_flag(kind)]);
        assert!(
            stdout(&out).contains("lock:         held (Fast mode"),
            "{}",
            stdout(&out)
        );
        interrupt(&mut locker);
        assert!(shm.lock_timeout(T).unwrap().is_some(), "released at Ctrl-C");
        drop(shm);
        interrupt(&mut holder);

        // asking for Fast on a Qt-compatible segment is refused, with a hint
        let qt_key = unique_key("cliqtmode");
        cleanup.key(&qt_key, kind);
        let (mut qt_holder, _) = hold(&qt_key, kind, "64", &[]);
        // the flag contradicts the segment: bad input
        let err = assert_fails(&qshm(&["cat", &qt_key, "--fast", type_flag(kind)]), 1);
        assert!(
            err.contains("LockMode::QtCompatible")
                && err.ends_with("drop --fast: without it the segment's own lock mode is used\n"),
            "{err}"
        );
        interrupt(&mut qt_holder);
    }
}

#[test]
fn lock_holds_the_lock_for_other_processes() {
    for kind in KINDS {
        let key = unique_key("clilock");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let mut shm = handle(&key, kind, LockMode::QtCompatible);
        shm.create(64, AccessMode::ReadWrite).unwrap();
        let mut locker =
            Peer::spawn_command(Command::new(BIN).args(["lock", &key, "--hold", "1.5", type_flag(kind)]));
        assert_eq!(locker.line(T), format!("locked {key}"));
        assert_eq!(locker.line(T), "holding for 1s 500ms (Ctrl-C to release)");
        assert!(shm.try_lock().unwrap().is_none(), "held by `qshm lock`");
        let out = qshm(&["stat", &key, type_flag(kind)]);
        assert!(
            stdout(&out).contains("lock:         held (Qt-compatible mode"),
            "{}",
            stdout(&out)
        );
        assert_eq!(locker.line(T), "unlocked");
        assert!(locker.wait(T).success());
        let mut guard = shm
            .lock_timeout(T)
            .unwrap()
            .expect("free after `qshm lock` released it");

        // a writer waits for the lock; Ctrl-C ends the wait (exit 130), nothing written
        let mut writer = Command::new(BIN)
            .args(["write", &key, "--text", "late", type_flag(kind)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err_lines = BufReader::new(writer.stderr.take().unwrap()).lines();
        let first = err_lines.next().expect("a line on stderr").unwrap();
        assert_eq!(
            first,
            format!("qshm: waiting for the lock of {key:?}: another process holds it (Ctrl-C to give up)")
        );
        // SAFETY: kill only sends a signal to our own child's pid.
        unsafe { libc::kill(writer.id() as i32, libc::SIGINT) };
        let last = err_lines.next().expect("a second line").unwrap();
        assert_eq!(
            last,
            format!("qshm: interrupted while waiting for the lock of {key:?}")
        );
        assert!(err_lines.next().is_none(), "nothing more");
        assert_eq!(writer.wait().unwrap().code(), Some(130));
        assert_eq!(&guard[..4], [0, 0, 0, 0]);
        guard[0] = b'!';
        drop(guard);
        drop(shm);
    }
}

#[test]
fn ls_marks_and_rm_stale_removes_dead_segments() {
    let _turn = stale_turn();
    for kind in KINDS {
        let key = unique_key("clils");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, _) = hold(&key, kind, "64", &[]);
        let recorded = sysv_keys(&key, kind);
        let native = SharedMemory::legacy_native_key(&key, kind).native().to_owned();

        let mine = find_segment(&ls_json(), kind, &native).expect("ls lists our segment");
        assert_eq!(mine["state"], "live");
        assert_eq!(mine["stale"], false);
        assert_eq!(mine["size"], 64);
        assert_eq!(mine["attachments"], 1);
        assert_eq!(mine["permissions"], "0600");
        assert_eq!(mine["qt_style"], true);
        assert_eq!(mine["key_hint"], hint_of(&key).as_str());
        // SAFETY: geteuid has no preconditions.
        assert_eq!(mine["uid"], unsafe { libc::geteuid() });
        let table = stdout(&qshm(&["ls", "--wide"]));
        let row = table.lines().find(|l| l.ends_with(&native)).expect("a table row");
        assert!(row.contains(" live "), "{row}");

        holder.kill9(); // every user dead: stale
        let mine = find_segment(&ls_json(), kind, &native).expect("still listed");
        assert_eq!(mine["state"], "stale");
        assert_eq!(mine["stale"], true);
        let table = stdout(&qshm(&["ls", "--wide"]));
        let row = table.lines().find(|l| l.ends_with(&native)).expect("a table row");
        assert!(row.contains(" STALE "), "{row}");

        let out = qshm(&["rm", "--stale"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let removed = stdout(&out);
        assert!(
            removed
                .lines()
                .any(|l| l.starts_with("removed stale segment") && l.contains(&native)),
            "{removed}"
        );
        assert!(find_segment(&ls_json(), kind, &native).is_none());
        let left = leftovers(&key, kind, &recorded);
        assert!(left.is_empty(), "{left:?}");
    }
}

/// Remove System V segment `key` behind everyone's back (what `ipcrm` does).
fn ipcrm(native: &NativeIpcKey) {
    let k = SharedMemory::system_v_key(native).expect("key file");
    // SAFETY: shmget and shmctl(IPC_RMID) take plain values and a null buffer.
    unsafe {
        let id = libc::shmget(k, 0, 0);
        assert!(id >= 0, "segment exists");
        assert_eq!(libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()), 0);
    }
}

#[test]
fn rm_stale_removes_orphans_and_never_a_live_segment() {
    let _turn = stale_turn();
    for kind in KINDS {
        let key = unique_key("cliorphan");
        let live = unique_key("clilive");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        cleanup.key(&live, kind);
        let (mut alive, _) = hold(&live, kind, "64", &["--fill", "1"]);
        // a segment whose holder dies after locking: lock state and semaphore remain
        let (mut holder, _) = hold(&key, kind, "64", &["--fill", "1"]);
        let native = SharedMemory::legacy_native_key(&key, kind);
        let sem = SystemSemaphore::legacy_native_key(&key, kind);
        let recorded = sysv_keys(&key, kind);
        let lock_states = match kind {
            KeyType::PosixRealtime => shm_dir_names_starting(&posix_lock_state_prefix(&native)),
            _ => {
                let (_, k, id) = recorded
                    .iter()
                    .find(|r| r.0.ends_with("shm"))
                    .expect("segment recorded");
                let name = sysv_lock_state_name(*k, *id);
                let made = std::path::Path::new(&format!("/dev/shm/{name}")).exists();
                made.then_some(name).into_iter().collect()
            }
        };
        assert_eq!(lock_states.len(), 1, "one lock state: {lock_states:?}");
        holder.kill9();
        // then the segment itself goes, behind qshm's back (ipcrm, or Qt's unlink)
        let mut expected = vec![("lock state".to_owned(), format!("/dev/shm/{}", lock_states[0]))];
        if kind.is_system_v() {
            ipcrm(&native);
            expected.push(("semaphore".to_owned(), sem.native().to_owned()));
            expected.push(("key file".to_owned(), native.native().to_owned()));
        } else {
            std::fs::remove_file(format!("/dev/shm{}", native.native())).unwrap();
            expected.push((
                "semaphore".to_owned(),
                format!("/dev/shm/sem.{}", &sem.native()[1..]),
            ));
        }
        // orphans younger than 2 s may be a creator's work in progress
        std::thread::sleep(Duration::from_millis(2200));
        let orphans = orphan_paths(&ls_json());
        // Any System V create sweeps our orphaned System V lock states, with the semaphore
        // set qshm made (its key file stays, an orphan of its own): another test's create
        // (they run in parallel) may have been quicker than `qshm rm --stale`.
        let swept_set =
            kind == KeyType::SystemV && !orphans.contains(&("semaphore".to_owned(), sem.native().to_owned()));
        if swept_set {
            for item in expected.iter_mut().filter(|(what, _)| what == "semaphore") {
                item.0 = "key file".to_owned();
            }
        }
        let swept = |(what, path): &(String, String)| {
            kind == KeyType::SystemV && what == "lock state" && !std::path::Path::new(path).exists()
        };
        expected.retain(|item| !swept(item));
        for item in &expected {
            assert!(orphans.contains(item), "{item:?} not in {orphans:?}");
        }

        let out = qshm(&["rm", "--stale"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let removed = stdout(&out);
        for (what, path) in &expected {
            assert!(
                removed
                    .lines()
                    .any(|l| l.starts_with(&format!("removed {what} {path}")))
                    || swept(&(what.clone(), path.clone())),
                "{what} {path} not in {removed}"
            );
        }
        let left = leftovers(&key, kind, &recorded);
        assert!(left.is_empty(), "{left:?}");

        // the live one is untouched and still works
        let out = qshm(&["cat", &live, "--len", "1", type_flag(kind)]);
        assert_eq!(out.stdout, [1]);
        assert!(!removed.contains(&SharedMemory::legacy_native_key(&live, kind).native().to_owned()));
        interrupt(&mut alive);
    }
}

#[test]
fn rm_removes_a_segment_and_its_semaphore() {
    for kind in KINDS {
        let key = unique_key("clirm");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, _) = hold(&key, kind, "64", &["--fill", "1"]);
        let recorded = sysv_keys(&key, kind);
        let native = SharedMemory::legacy_native_key(&key, kind);
        let out = qshm(&["rm", &key, type_flag(kind)]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!("removed {native} (1 attached process keeps the memory until it detaches)\n")
        );
        let left = leftovers(&key, kind, &recorded);
        assert!(left.is_empty(), "{left:?}");
        let err = assert_fails(&qshm(&["rm", &key, type_flag(kind)]), 3);
        assert!(err.contains("no segment for key"), "{err}");
        // The holder keeps its memory until it goes. (Killed, not Ctrl-C'd: a System V
        // holder's clean detach after a forced removal re-creates Qt's semaphore, a
        // library issue outside the CLI.)
        holder.kill9();
        let left = leftovers(&key, kind, &recorded);
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn errors_have_exit_codes_and_hints() {
    for (kind, other) in [
        (KeyType::SystemV, KeyType::PosixRealtime),
        (KeyType::PosixRealtime, KeyType::SystemV),
    ] {
        let key = unique_key("clierr");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, _) = hold(&key, kind, "64", &[]);
        let err = assert_fails(&qshm(&["cat", &key, type_flag(other)]), 3);
        assert!(
            err.ends_with(&format!("did you mean {}?\n", type_flag(kind))),
            "{err}"
        );
        let err = assert_fails(&qshm(&["stat", &key, type_flag(other)]), 3);
        assert!(err.contains("did you mean"), "{err}");
        let err = assert_fails(&qshm(&["rm", &key, type_flag(other)]), 3);
        assert!(err.contains("did you mean"), "{err}");
        let err = assert_fails(&qshm(&["create", &key, "64", type_flag(kind)]), 4);
        assert!(err.contains("already exists") && err.contains("qshm rm"), "{err}");
        let err = assert_fails(&qshm(&["cat", &key, "--offset", "65", type_flag(kind)]), 1);
        assert!(err.contains("past the end of the segment (64 bytes)"), "{err}");
        interrupt(&mut holder);
    }
    let missing = unique_key("climissing");
    let err = assert_fails(&qshm(&["stat", &missing]), 3);
    assert_eq!(
        err,
        format!(
            "qshm: no segment for key \"{missing}\" (System V): create it with `qshm create {missing} SIZE`, \
             or see `qshm ls`\n"
        )
    );
    assert_fails(&qshm(&["write", "", "--text", "x"]), 1);
    // a bad value is bad input (exit 1, one line)
    for args in [
        &["create", "x", "10", "--hold", "inf"][..],
        &["create", "x", "10", "--hold", "1e300"],
        &["create", "x", "10", "--mode", "0800"],
        &["demo", "--messages", "10001"],
    ] {
        assert_fails(&qshm(args), 1);
    }
    // usage errors are clap's (exit 2), never a panic
    for args in [
        &["cat", "x", "--posix", "--sysv"][..],
        &["rm"],
        &["create"],
        &["frobnicate"],
    ] {
        let out = qshm(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{args:?}");
    }
}

#[test]
fn demo_exchanges_messages_and_leaves_nothing() {
    for extra in [&[][..], &["--posix", "--fast"]] {
        let out = qshm(&[&["demo", "--messages", "3"][..], extra].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let first = text.lines().next().unwrap_or("");
        let key = first
            .split('"')
            .nth(1)
            .expect("[producer] created segment \"KEY\"")
            .to_owned();
        let kind = if extra.is_empty() {
            KeyType::SystemV
        } else {
            KeyType::PosixRealtime
        };
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let lines: Vec<&str> = text.lines().collect();
        for n in 1..=3 {
            let wrote = lines
                .iter()
                .position(|l| l.starts_with(&format!("[producer] wrote message #{n}: ")));
            let read = lines
                .iter()
                .position(|l| l.starts_with(&format!("[consumer] read  message #{n}: ")));
            assert!(wrote.is_some() && read.is_some() && wrote < read, "{text}");
        }
        assert!(text.contains("[consumer] detached, bye"), "{text}");
        assert!(
            text.ends_with("the segment is destroyed (attach says NotFound)\n"),
            "{text}"
        );
        let left = leftovers(&key, kind, &[]);
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn sizes_offsets_and_lengths_share_one_parser_and_exit_code_1() {
    let key = unique_key("clisize");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::SystemV);
    let examples = "give a number of bytes like 4096, 64K or 1.5M";
    // --hold 0: an old build that accepted a bad size must not hold it forever
    let create = |size: &str| qshm(&["create", &key, size, "--hold", "0"]);
    let cases = [
        (
            create("0"),
            "SIZE \"0\" is too small: a segment needs at least 1 byte".to_owned(),
        ),
        (create("-5"), format!("SIZE \"-5\" is negative: {examples}")),
        (
            create("1.1K"),
            format!("SIZE \"1.1K\" is not a whole number of bytes: {examples}"),
        ),
        (
            create("99999999999999999999"),
            "SIZE \"99999999999999999999\" is too large: at most 9223372036854775807 bytes".to_owned(),
        ),
        (
            create("10MB"),
            "SIZE \"10MB\" is ambiguous: write 10M or 10MiB for 10485760 bytes (K, M, G, T are powers \
             of 1024), or 10000000 for 10 x 1000^2"
                .to_owned(),
        ),
        (create("ten"), format!("SIZE \"ten\" is not a size: {examples}")),
        (
            qshm(&["cat", &key, "--offset", "-5"]),
            format!("--offset \"-5\" is negative: {examples}"),
        ),
        (
            qshm(&["cat", &key, "--len", "99999999999999999999"]),
            "--len \"99999999999999999999\" is too large: at most 9223372036854775807 bytes".to_owned(),
        ),
        (
            qshm(&["write", &key, "--text", "x", "--offset", "1.5kb"]),
            "--offset \"1.5kb\" is ambiguous: write 1.5K or 1.5KiB for 1536 bytes (K, M, G, T are \
             powers of 1024), or 1500 for 1.5 x 1000^1"
                .to_owned(),
        ),
        // other values are bad input too, with the same one-line form
        (
            qshm(&["lock", &key, "--hold", "-1"]),
            "--hold \"-1\" is not a duration: give seconds like 5 or 0.5, or 500ms, 2m, 1h".to_owned(),
        ),
        (
            qshm(&["create", &key, "10", "--fill", "256"]),
            "--fill \"256\" is not a byte value (0-255 or 0x00-0xff)".to_owned(),
        ),
    ];
    for (out, message) in cases {
        let err = assert_fails(&out, 1);
        assert_eq!(err, format!("qshm: {message}\n"));
    }
    // a fraction that is whole bytes is exact: 1.5 MiB
    let (mut holder, line) = hold(&key, KeyType::SystemV, "1.5M", &[]);
    assert!(line.ends_with(" size=1572864 type=systemv"), "{line}");
    let out = qshm(&["cat", &key, "--offset", "1M", "--len", "0.5K"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, [0; 512]);
    interrupt(&mut holder);
}

#[test]
fn key_type_and_lock_flags_only_where_they_mean_something() {
    let help = |args: &[&str]| {
        let out = qshm(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    // KEY's type: the commands that take a KEY; --fast: those that lock or create
    for (sub, key_flags, fast) in [
        ("create", true, true),
        ("write", true, true),
        ("cat", true, true),
        ("lock", true, true),
        ("watch", true, true),
        ("stat", true, false),
        ("rm", true, false),
        ("demo", false, true),
        ("ls", false, false),
        ("key", true, false),
    ] {
        let text = help(&[sub, "--help"]);
        let has = |flag: &str| text.lines().any(|l| l.trim_start().starts_with(flag));
        for flag in ["--sysv", "--native"] {
            assert_eq!(has(flag), key_flags, "{sub} {flag}: {text}");
        }
        assert_eq!(has("--posix"), key_flags || sub == "demo", "{sub}: {text}");
        assert_eq!(has("--fast"), fast, "{sub}: {text}");
    }
    let top = help(&["--help"]);
    for flag in ["--posix", "--sysv", "--native", "--fast"] {
        assert!(
            !top.lines().any(|l| l.trim_start().starts_with(flag)),
            "no global {flag}: {top}"
        );
    }
    for args in [
        &["ls", "--posix"][..],
        &["ls", "--fast"],
        &["stat", "x", "--fast"],
        &["rm", "x", "--fast"],
        &["rm", "--stale", "--posix"],
        &["demo", "--native"],
    ] {
        let out = qshm(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("error: "), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn usage_errors_show_usages_that_work() {
    // bare `qshm` is a usage error that prints the whole --help
    let bare = qshm(&[]);
    assert_eq!(bare.status.code(), Some(2));
    let help = qshm(&["--help"]);
    assert!(help.status.success());
    assert_eq!(stderr(&bare), stdout(&help));
    assert!(bare.stdout.is_empty());

    // `write` names both ways to give the data
    for args in [&["write"][..], &["write", "k"]] {
        let out = qshm(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("--text") && err.contains("--from"),
            "{args:?}: {err}"
        );
    }

    // `rm --all` shows the two real forms of rm, never `--all <KEY>` (which is refused)
    let out = qshm(&["rm", "--all"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("qshm rm --stale [--all]"), "{err}");
    assert!(err.contains("qshm rm [--posix|--sysv] [--native] <KEY>"), "{err}");
    assert!(
        !err.contains("--all <KEY>") && !err.contains("--stale <KEY>"),
        "{err}"
    );
    for args in [&["rm", "k", "--stale"][..], &["rm", "k", "--all"], &["rm"]] {
        let out = qshm(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("qshm rm --stale [--all]"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn cat_reads_what_exists_and_ranges_never_overflow() {
    let key = unique_key("clirange");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::SystemV);
    let (mut holder, _) = hold(&key, KeyType::SystemV, "4096", &[]);
    let out = qshm(&["write", &key, "--text", "abcdef", "--offset", "4090"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let max = isize::MAX.to_string();
    // like `head -c`: a length past the end reads what exists
    for (args, expected) in [
        (&["--offset", "4090", "--len", "100"][..], &b"abcdef"[..]),
        (&["--offset", "4094", "--len", &max], b"ef"),
        (&["--offset", "4096"], b""),
        (&["--offset", "4096", "--len", "5"], b""),
        (&["--offset", "4093", "--len", "0"], b""),
    ] {
        let out = qshm(&[&["cat", &key][..], args].concat());
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_eq!(out.stdout, expected, "{args:?}");
    }
    let out = qshm(&["cat", &key, "--offset", "4000", "--len", "200", "--hex"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("|..........abcdef|"), "{}", stdout(&out));
    // an offset past the end is an error; no sum ever wraps around
    for offset in ["4097", max.as_str()] {
        for len in [&[][..], &["--len", &max]] {
            let err = assert_fails(&qshm(&[&["cat", &key, "--offset", offset][..], len].concat()), 1);
            assert_eq!(
                err,
                format!("qshm: offset {offset} is past the end of the segment (4096 bytes)\n")
            );
        }
    }
    let err = assert_fails(&qshm(&["write", &key, "--text", "xy", "--offset", &max]), 1);
    assert_eq!(
        err,
        format!("qshm: 2 bytes at offset {max} do not fit in the segment (4096 bytes)\n")
    );
    let err = assert_fails(&qshm(&["write", &key, "--text", "xy", "--offset", "4095"]), 1);
    assert_eq!(
        err,
        "qshm: 2 bytes at offset 4095 do not fit in the segment (4096 bytes)\n"
    );
    interrupt(&mut holder);
}

/// `hexdump -C -s OFFSET [-n LEN] FILE`, or None (after a loud SKIP line) without hexdump.
fn real_hexdump(file: &std::path::Path, offset: usize, len: Option<usize>) -> Option<String> {
    let mut cmd = Command::new("hexdump");
    cmd.args(["-C", "-s", &offset.to_string()]);
    if let Some(len) = len {
        cmd.args(["-n", &len.to_string()]);
    }
    match cmd.arg(file).output() {
        Ok(out) if out.status.success() => Some(stdout(&out)),
        _ => {
            eprintln!("*** SKIP: `hexdump -C` comparison: hexdump is not installed ***");
            None
        }
    }
}

#[test]
fn hex_is_hexdump_c_with_repeated_lines_collapsed() {
    let key = unique_key("clihex");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::SystemV);
    let (mut holder, _) = hold(&key, KeyType::SystemV, "4096", &[]);
    for (offset, text) in [("100", "hello"), ("2000", &"A".repeat(48)), ("4090", "tail!!")] {
        let out = qshm(&["write", &key, "--text", text, "--offset", offset]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let hex = |offset: usize, len: Option<usize>| {
        let mut args = vec!["cat".to_owned(), key.clone(), "--hex".to_owned()];
        args.extend(["--offset".to_owned(), offset.to_string()]);
        if let Some(len) = len {
            args.extend(["--len".to_owned(), len.to_string()]);
        }
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    // pinned: zeros collapse to `*`, the dump ends with the end offset
    assert_eq!(
        hex(1984, Some(100)),
        "000007c0  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
         000007d0  41 41 41 41 41 41 41 41  41 41 41 41 41 41 41 41  |AAAAAAAAAAAAAAAA|\n\
         *\n\
         00000800  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
         *\n\
         00000820  00 00 00 00                                       |....|\n\
         00000824\n"
    );
    assert_eq!(
        hex(0, Some(0)),
        "",
        "nothing asked, nothing printed (hexdump -n 0)"
    );

    let raw = qshm(&["cat", &key]).stdout;
    assert_eq!(raw.len(), 4096);
    let file = std::env::temp_dir().join(format!("{key}.bin"));
    std::fs::write(&file, &raw).unwrap();
    let cases = [
        (0, None),
        (0, Some(4096)),
        (16, Some(40)),
        (3, Some(200)),
        (100, Some(5)),
        (1990, Some(100)),
        (2000, Some(48)),
        (4090, None),
        (4096, None),
        (4096, Some(5)),
    ];
    let mut compared = 0;
    for (offset, len) in cases {
        if let Some(expected) = real_hexdump(&file, offset, len) {
            assert_eq!(hex(offset, len), expected, "--offset {offset} --len {len:?}");
            compared += 1;
        }
    }
    let _ = std::fs::remove_file(&file);
    interrupt(&mut holder);
    assert!(compared == 0 || compared == cases.len());
}

/// What `ls` shows as KEY HINT: Qt's letters of the key, `#`, the start of its SHA-1.
fn hint_of(key: &str) -> String {
    let native = SharedMemory::legacy_native_key(key, KeyType::PosixRealtime);
    let hash = &native.native()[native.native().len() - 40..];
    let letters: String = key.chars().filter(char::is_ascii_alphabetic).collect();
    format!("{letters}#{}", &hash[..6])
}

#[test]
fn ls_key_hints_tell_keys_apart_that_differ_in_digits() {
    let base = unique_key("clihint");
    for kind in KINDS {
        let (fm2, fm3) = (format!("{base}fm2"), format!("{base}fm3"));
        let mut cleanup = Cleanup::default();
        cleanup.key(&fm2, kind);
        cleanup.key(&fm3, kind);
        let (mut a, _) = hold(&fm2, kind, "64", &[]);
        let (mut b, _) = hold(&fm3, kind, "64", &[]);
        let json = ls_json();
        let table = stdout(&qshm(&["ls", "--wide"]));
        let mut hints = Vec::new();
        for key in [&fm2, &fm3] {
            let native = SharedMemory::legacy_native_key(key, kind).native().to_owned();
            let hint = hint_of(key);
            let letters: String = key.chars().filter(char::is_ascii_alphabetic).collect();
            assert!(hint.starts_with(&format!("{letters}#")) && hint.len() == letters.len() + 7);
            let entry = find_segment(&json, kind, &native).expect("listed");
            assert_eq!(entry["key_hint"], hint.as_str());
            let row = table.lines().find(|l| l.ends_with(&native)).expect("a table row");
            assert_eq!(row.split_whitespace().rev().nth(1), Some(hint.as_str()), "{row}");
            // `qshm key` says how ls shows the key
            let keys = stdout(&qshm(&["key", key]));
            assert!(keys.contains(&format!("`qshm ls` key hint: {hint}\n")), "{keys}");
            hints.push(hint);
        }
        assert_ne!(hints[0], hints[1], "fm2 and fm3 look different");
        interrupt(&mut a);
        interrupt(&mut b);
    }
}

/// Send `signal` to `child` and return its exit code and how long it took to exit
/// (None: still running after `limit`, then killed).
fn signal_and_time(child: &mut std::process::Child, signal: i32, limit: Duration) -> (Option<i32>, Duration) {
    let start = std::time::Instant::now();
    // SAFETY: kill only sends a signal to our own child's pid.
    unsafe { libc::kill(child.id() as i32, signal) };
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    (None, start.elapsed())
}

fn spawn_quiet(args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn sigterm_ends_a_lock_wait_with_130() {
    for kind in KINDS {
        let key = unique_key("cliterm");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, _) = hold(&key, kind, "64", &[]);
        let mut locker =
            Peer::spawn_command(Command::new(BIN).args(["lock", &key, "--hold", "60", type_flag(kind)]));
        assert_eq!(locker.line(T), format!("locked {key}"));
        let mut waiter = spawn_quiet(&["lock", &key, type_flag(kind)]);
        let mut err = BufReader::new(waiter.stderr.take().unwrap()).lines();
        let first = err.next().expect("a line").unwrap();
        assert!(first.starts_with("qshm: waiting for the lock"), "{first}");
        let (code, took) = signal_and_time(&mut waiter, libc::SIGTERM, Duration::from_secs(2));
        assert_eq!(code, Some(130), "SIGTERM'd waiter: {took:?}");
        let rest: Vec<String> = err.map_while(Result::ok).collect();
        assert_eq!(
            rest,
            [format!("qshm: interrupted while waiting for the lock of {key:?}")]
        );
        interrupt(&mut locker);
        interrupt(&mut holder);
    }
}

/// Hold the exclusive flock of a System V key file, as qshm's create/attach/detach do.
fn lock_key_file(path: &str) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    file
}

#[test]
fn signals_end_a_wait_inside_the_library() {
    let key = unique_key("cliwait");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::SystemV);
    let (mut holder, _) = hold(&key, KeyType::SystemV, "64", &[]);
    let key_file = native(&key, KeyType::SystemV).native().to_owned();
    for (signals, what) in [
        (&[libc::SIGTERM][..], "one SIGTERM"),
        (&[libc::SIGINT], "one Ctrl-C"),
        (&[libc::SIGINT, libc::SIGTERM], "a second signal"),
    ] {
        // attach waits for the key file's lock, inside the library
        let lock = lock_key_file(&key_file);
        let mut cat = spawn_quiet(&["cat", &key, "--len", "1"]);
        std::thread::sleep(Duration::from_millis(300));
        assert!(cat.try_wait().unwrap().is_none(), "cat waits for the key file");
        let (mut code, mut took) = (None, Duration::ZERO);
        for (i, &signal) in signals.iter().enumerate() {
            if i > 0 {
                // later than the echo window (interrupt.rs): a person's second signal
                std::thread::sleep(Duration::from_millis(400));
            }
            (code, took) = signal_and_time(&mut cat, signal, Duration::from_secs(2));
            if code.is_some() {
                break;
            }
        }
        drop(lock);
        assert_eq!(code, Some(130), "{what}: exit code after {took:?}");
        let mut err = String::new();
        use std::io::Read;
        cat.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(
            err.starts_with("qshm: interrupted by SIG") && err.lines().count() == 1,
            "{what}: {err}"
        );
    }
    interrupt(&mut holder);
}

/// `qshm key` reads KEY as every other command does: `posix:/x` (or `--native`) is a native
/// key, not a legacy key whose letters are `posixx`.
#[test]
fn key_reads_native_keys_like_every_command() {
    let out = qshm(&["key", "posix:/x"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("POSIX native key"), "{text}");
    assert!(text.contains("segment:    /dev/shm/x\n"), "{text}");
    assert!(!text.contains("qipc_"), "not derived as a legacy key: {text}");
    let out = qshm(&["key", "--native", "--sysv", "/tmp/qshm-cli-native-key"]);
    assert!(
        stdout(&out).contains("key file:   /tmp/qshm-cli-native-key\n"),
        "{}",
        stdout(&out)
    );
    let out = qshm(&["key", "market"]);
    assert!(stdout(&out).contains("qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3"));
}

// ------------------------------------------------------------ dead holders of a POSIX lock

/// Set for [`semaphore_holder_child`]: the native key string of the semaphore to take.
const HOLDER_ENV: &str = "QSHM_CLI_TEST_TAKE_SEMAPHORE";

/// The child role of [`dead_holder`]: when started by it, take the semaphore Qt's lock
/// takes, the way a Qt program holding `QSharedMemory::lock()` does, say so and wait to be
/// killed. Run as a normal test, it does nothing.
#[test]
fn semaphore_holder_child() {
    let Ok(key) = std::env::var(HOLDER_ENV) else {
        return;
    };
    let key: NativeIpcKey = key.parse().expect("a native key string");
    let sem =
        SystemSemaphore::with_native_key(key, 1, qshm::SemaphoreMode::Open).expect("open the semaphore");
    sem.acquire().expect("take the semaphore");
    // on a line of its own: libtest has printed "test semaphore_holder_child ... "
    println!("\ntook the semaphore");
    std::thread::sleep(Duration::from_secs(600));
}

/// A process that takes `shm`'s lock semaphore and is killed with SIGKILL holding it (a
/// killed Qt holder: the kernel does not give a POSIX semaphore's unit back). Then `shm`
/// detaches, and the segment lives on in a plain mapping of this process (a program that
/// is not qshm), so that nobody has the semaphore open any more: the waiter's proof that
/// its holder is gone. (While other processes have it open, qshm takes such a unit over
/// only if `/proc` shows that none of them could hold it, which it cannot show where
/// processes it may not inspect exist, as PID 1 here.)
fn dead_holder(mut shm: SharedMemory) -> RawMapping {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Peer::spawn_command(
        Command::new(exe)
            .args([
                "--exact",
                "semaphore_holder_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLDER_ENV, shm.semaphore_key().to_string()),
    );
    child.expect("took the semaphore", T);
    child.kill9();
    assert!(
        shm.try_lock().unwrap().is_none(),
        "the dead holder's unit is missing"
    );
    let mapping = RawMapping::of(shm.native_key());
    shm.detach().unwrap();
    mapping
}

/// A plain `mmap` of a POSIX segment file (as a program that is not qshm maps it).
struct RawMapping(*mut libc::c_void);

impl RawMapping {
    fn of(native: &str) -> RawMapping {
        let path = std::ffi::CString::new(format!("/dev/shm{native}")).unwrap();
        // SAFETY: path is NUL-terminated.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        assert!(fd >= 0, "open {path:?}");
        // SAFETY: a fresh shared read-only mapping of one page; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        // SAFETY: fd is ours; the mapping keeps the file.
        unsafe { libc::close(fd) };
        assert_ne!(ptr, libc::MAP_FAILED);
        RawMapping(ptr)
    }
}

impl Drop for RawMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in of(), unmapped once.
        unsafe { libc::munmap(self.0, 4096) };
    }
}

/// Wait for `child` to exit within `limit`; kill it if it does not.
fn wait_output(child: std::process::Child, limit: Duration) -> Option<Output> {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.ok(),
        Err(_) => {
            // SAFETY: kill only sends a signal to our own child's pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            None
        }
    }
}

#[test]
fn lock_takes_over_from_a_dead_holder_and_says_so() {
    let kind = KeyType::PosixRealtime;
    let key = unique_key("clideadlock");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    shm.create(64, AccessMode::ReadWrite).unwrap();
    let _mapping = dead_holder(shm);
    let locker = Command::new(BIN)
        .args(["lock", &key, "--hold", "0", "--posix"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(locker, T).expect("`qshm lock` gets a dead holder's lock");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("locked {key} (its previous holder had died)\nunlocked\n")
    );
    let err = stderr(&out);
    assert!(!err.contains("another process holds it"), "{err}");
    let mut again = handle(&key, kind, LockMode::QtCompatible);
    again.attach(AccessMode::ReadWrite).unwrap();
    assert!(again.try_lock().unwrap().is_some(), "free again");
}

#[test]
fn ls_shows_a_dead_holders_lock_and_rm_stale_leaves_it_to_the_next_locker() {
    let _turn = stale_turn();
    let kind = KeyType::PosixRealtime;
    let key = unique_key("clideadls");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, LockMode::QtCompatible);
    shm.create(64, AccessMode::ReadWrite).unwrap();
    let native = shm.native_key().to_owned();
    let mine = find_segment(&ls_json(), kind, &native).expect("listed");
    assert_eq!(
        (mine["lock"].as_str(), mine["made_by"].as_str()),
        (Some("free"), Some("qshm")),
        "before the first lock (the lock state and the semaphore come with the segment)"
    );
    drop(shm.lock().unwrap());
    let _mapping = dead_holder(shm);

    let mine = find_segment(&ls_json(), kind, &native).expect("listed");
    assert_eq!(mine["lock"], "dead_holder", "{mine}");
    assert_eq!(mine["state"], "live", "this test is attached");
    let table = stdout(&qshm(&["ls", "--wide"]));
    let row = table.lines().find(|l| l.ends_with(&native)).expect("a table row");
    assert!(row.contains(" live    DEAD-HOLDER "), "{row}");
    assert!(table.contains("1 lock held by a dead process"), "{table}");
    let out = qshm(&["stat", &key, "--posix"]);
    assert!(
        stdout(&out).contains("lock:         held by a process that died"),
        "{}",
        stdout(&out)
    );

    // a clean-up never takes a lock (whose words another user may write): it says so
    let out = qshm(&["rm", "--stale"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l
            == format!("the lock of {native} is held by a process that died: its next locker takes it over")),
        "{text}"
    );
    assert!(
        !text.contains(&format!("removed stale segment /dev/shm{native}")),
        "live: {text}"
    );
    let mut next = handle(&key, kind, LockMode::QtCompatible);
    next.attach(AccessMode::ReadWrite).unwrap();
    let guard = next
        .lock_timeout(T)
        .unwrap()
        .expect("the next locker takes it over");
    assert!(guard.previous_owner_died(), "and is told");
    drop(guard);
    let mine = find_segment(&ls_json(), kind, &native).expect("still there");
    assert_eq!(mine["lock"], "free");
}

/// A file in /dev/shm made for a test, removed when the test ends.
struct ShmFileGuard(std::path::PathBuf);

impl Drop for ShmFileGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What glibc's `sem_open` leaves when killed between creating its temporary file
/// (`sem.` and 6 random letters and digits) and linking it: a 32-byte file. The name is
/// new (`create_new`), so no real file is ever touched.
fn glibc_temporary() -> (ShmFileGuard, std::fs::File) {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()) << 32;
    loop {
        let name: String = (0..6)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ALPHABET[(seed >> 33) as usize % ALPHABET.len()] as char
            })
            .collect();
        let path = std::path::PathBuf::from(format!("/dev/shm/sem.{name}"));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => {
                let guard = ShmFileGuard(path);
                file.set_len(32).unwrap();
                return (guard, file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}

/// `rm --stale --all` removes a lone file named like glibc's temporary (it may be another
/// program's semaphore, so only when asked). In a private `/dev/shm`, IPC namespace and
/// `TMPDIR`, since `--all` acts on the whole machine: in an IPC namespace of its own it
/// would take every Qt key file of the shared `TMPDIR` for an orphan (their segments live
/// in the other namespace).
#[test]
fn rm_stale_all_removes_a_lone_glibc_temporary() {
    if !is_root() {
        eprintln!("*** SKIP rm_stale_all_removes_a_lone_glibc_temporary: needs root for unshare ***");
        return;
    }
    let tmp = PrivateDir::new("rm-stale-all").expect("a private TMPDIR");
    let script = "mount -t tmpfs qshm-test /dev/shm && mount -t tmpfs qshm-test-tmp \"$TMPDIR\" \
                  && head -c 32 /dev/zero > /dev/shm/sem.aB3xYz \
                  && sleep 2.2 && \"$QSHM_EXE\" rm --stale && \"$QSHM_EXE\" rm --stale --all && ls -A /dev/shm";
    let out = private_namespaces_sh(BIN.as_ref(), script, true)
        .env("TMPDIR", &tmp.0)
        .output()
        .expect("run unshare");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let path = "/dev/shm/sem.aB3xYz";
    assert!(
        text.contains(&format!("kept 1 semaphore that may be other programs' ({path})")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == format!("removed semaphore* {path}")),
        "{text}"
    );
    assert!(text.ends_with("1 removed\n"), "nothing left: {text}");
}

/// Give the glibc temporary `file` the semaphore name it was made for (`link`), as glibc's
/// `sem_open` does before it unlinks the temporary; removed when the test ends.
fn link_real_name(file: &ShmFileGuard, tag: &str) -> ShmFileGuard {
    let real = std::path::PathBuf::from(format!("/dev/shm/sem.{}", unique_key(tag)));
    std::fs::hard_link(&file.0, &real).unwrap();
    ShmFileGuard(real)
}

#[test]
fn rm_stale_removes_unfinished_semaphore_files_nobody_uses() {
    let _turn = stale_turn();
    // killed between link and unlink: the semaphore lives on under its real name
    let (left, file) = glibc_temporary();
    drop(file);
    let left_real = link_real_name(&left, "glibclink");
    let path = left.0.to_str().unwrap().to_owned();
    // a semaphore somebody named with six letters and digits (`sem_open("/aB3xYz")`),
    // unused for now: the same name shape, one name, and never an orphan
    let (lone, file) = glibc_temporary();
    drop(file);
    let lone_path = lone.0.to_str().unwrap().to_owned();
    // one a process still has mapped is in use (glibc maps it before linking it)
    let (busy, busy_file) = glibc_temporary();
    let _busy_real = link_real_name(&busy, "glibcbusy");
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh shared mapping of 32 bytes of our own file, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            32,
            libc::PROT_READ,
            libc::MAP_SHARED,
            busy_file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let busy_path = busy.0.to_str().unwrap().to_owned();
    let is_listed = |paths: &[(String, String)], p: &str| paths.iter().any(|(_, q)| q == p);

    // younger than 2 s: listed, marked new (maybe being made), and left by rm --stale
    let json = ls_json();
    assert_eq!(orphan_is_new(&json, &path), Some(true), "{json}");
    let table = stdout(&qshm(&["ls"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("semaphore ") && l.contains(&format!(" new    {path} "))),
        "{table}"
    );
    assert!(table.contains(" new); "), "the summary counts it: {table}");
    let out = qshm(&["rm", "--stale"]);
    assert!(!stdout(&out).contains(&path), "{}", stdout(&out));
    std::thread::sleep(Duration::from_millis(2200));
    let json = ls_json();
    assert_eq!(orphan_is_new(&json, &path), Some(false), "{json}");
    let orphans = orphan_paths(&json);
    assert!(
        orphans.contains(&("semaphore".to_owned(), path.clone())),
        "{orphans:?}"
    );
    assert!(!is_listed(&orphans, &busy_path), "mapped: in use");
    assert!(
        orphans.contains(&("semaphore*".to_owned(), lone_path.clone())),
        "listed, as maybe another program's: {orphans:?}"
    );
    let table = stdout(&qshm(&["ls"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("semaphore ")
                && l.ends_with(&format!(" STALE  {path} (unfinished sem_open)"))),
        "{table}"
    );

    let out = qshm(&["rm", "--stale"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("removed semaphore {path} "))),
        "{text}"
    );
    assert!(!std::path::Path::new(&path).exists());
    assert!(left_real.0.exists(), "the semaphore's real name stays: {text}");
    assert!(
        std::path::Path::new(&lone_path).exists(),
        "never a semaphore that may be real: {text}"
    );
    assert!(
        text.contains(&format!(
            "kept 1 semaphore that may be other programs' ({lone_path})"
        )),
        "{text}"
    );
    assert!(
        std::path::Path::new(&busy_path).exists(),
        "never one in use: {text}"
    );
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(map, 32) };
}

#[test]
fn watch_prints_every_change_another_process_writes() {
    for kind in KINDS {
        let key = unique_key("cliwatch");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, _) = hold(&key, kind, "32", &[]);
        let mut watch =
            Peer::spawn_command(Command::new(BIN).args(["watch", &key, "--len", "5", type_flag(kind)]));
        let mut hex = Peer::spawn_command(Command::new(BIN).args([
            "watch",
            &key,
            "--hex",
            "--len",
            "16",
            type_flag(kind),
        ]));
        assert_eq!(watch.line(T), "\0\0\0\0\0", "the bytes as they are at the start");
        assert_eq!(hex.line(T), "# generation 0");
        assert!(hex.expect("00000010", T).is_empty(), "the start as a hex dump");
        for text in ["hello", "world"] {
            let out = qshm(&["write", &key, "--text", text, type_flag(kind)]);
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(watch.line(T), text, "watch printed the write of another process");
            let dump = hex.expect("00000000", T);
            assert!(dump.contains(&format!("|{text}")), "{dump}");
        }
        interrupt(&mut watch);
        interrupt(&mut hex);
        interrupt(&mut holder);
        let left = leftovers(&key, kind, &[]);
        assert!(left.is_empty(), "{left:?}");
    }
}

/// `timeout -s INT 1 qshm lock KEY` signals qshm and then its whole process group: the
/// copy that comes a moment later is the same interruption, not a second one, so qshm
/// must still unlock cleanly (exit 0), and the next locker must not be told that the
/// previous holder died. (Failed before: the copy made qshm exit 130 holding the lock.)
#[test]
fn a_signal_delivered_twice_still_unlocks_cleanly() {
    for kind in KINDS {
        let key = unique_key("clitwice");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, _) = hold(&key, kind, "64", &[]);
        for round in 0..5 {
            let mut locker = Peer::spawn_command(Command::new(BIN).args(["lock", &key, type_flag(kind)]));
            assert_eq!(locker.line(T), format!("locked {key}"));
            assert_eq!(locker.line(T), "holding until Ctrl-C");
            let pid = locker.child.id() as i32;
            // SAFETY: kill only sends signals to our own child.
            unsafe { libc::kill(pid, libc::SIGINT) };
            // the copy comes a moment later, while qshm releases the lock
            std::thread::sleep(Duration::from_millis(2));
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGINT) };
            let status = locker.wait(T);
            assert_eq!(status.code(), Some(0), "round {round}: {status:?}");
            assert_eq!(locker.line(T), "unlocked");
            let out = qshm(&["lock", &key, "--hold", "0", type_flag(kind)]);
            assert_eq!(
                stdout(&out),
                format!("locked {key}\nunlocked\n"),
                "round {round}: the next locker is not told of a dead holder; {}",
                stderr(&out)
            );
        }
        // and through timeout(1) itself, which signals the process group too
        let out = Command::new("timeout")
            .args([
                "--preserve-status",
                "-s",
                "INT",
                "0.5",
                BIN,
                "lock",
                &key,
                type_flag(kind),
            ])
            .output();
        if let Ok(out) = out {
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            assert!(stdout(&out).ends_with("unlocked\n"), "{}", stdout(&out));
            let next = qshm(&["lock", &key, "--hold", "0", type_flag(kind)]);
            assert_eq!(stdout(&next), format!("locked {key}\nunlocked\n"));
        }
        interrupt(&mut holder);
    }
}

/// `watch` prints only when the watched bytes changed, and stops with exit code 3 and a
/// message when its segment is removed.
#[test]
fn watch_skips_unchanged_bytes_and_stops_when_the_segment_goes() {
    for kind in KINDS {
        let key = unique_key("cliwatchrm");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, _) = hold(&key, kind, "32", &[]);
        let mut watch = Command::new(BIN)
            .args(["watch", &key, "--len", "4", type_flag(kind)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "\0\0\0\0");
        // notified twice without a change of the watched bytes: a write outside them,
        // and one of the bytes they already hold; then a change (a pause after each
        // write, so that watch wakes for each rather than once for all)
        for (data, offset) in [(&b"zz"[..], "8"), (b"\0", "0"), (b"ab", "0")] {
            let out = qshm_with_stdin(
                &["write", &key, "--from", "-", "--offset", offset, type_flag(kind)],
                data,
            );
            assert!(out.status.success(), "{}", stderr(&out));
            std::thread::sleep(Duration::from_millis(300));
        }
        assert_eq!(
            lines.next().unwrap().unwrap(),
            "ab\0\0",
            "the unchanged bytes were not printed again"
        );
        let out = qshm(&["rm", &key, type_flag(kind)]);
        assert!(out.status.success(), "{}", stderr(&out));
        let deadline = std::time::Instant::now() + T;
        let status = loop {
            if let Some(status) = watch.try_wait().unwrap() {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "watch kept running");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(3));
        assert!(lines.next().is_none(), "nothing more printed");
        let mut err = String::new();
        use std::io::Read;
        watch.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(
            err.ends_with(&format!(
                "qshm: the segment of {key:?} was removed (`qshm rm`, `ipcrm`, `rm` of its file, or \
                 systemd-logind's RemoveIPC=yes at its owner's logout); stopped watching\n"
            )),
            "{err}"
        );
        interrupt(&mut holder);
    }
}

/// Remove the segment of `key` behind its users' back as an administrator (or systemd's
/// RemoveIPC=yes) would: `ipcrm -m` (System V, which leaves the key file, as logind does)
/// or `rm` of the file in /dev/shm (POSIX).
fn remove_behind_the_back(key: &str, kind: KeyType) {
    let native = SharedMemory::legacy_native_key(key, kind);
    if kind.is_system_v() {
        let mut shm = SharedMemory::with_native_key(native);
        shm.attach(AccessMode::ReadOnly).expect("attach");
        let os_id = shm.info().expect("info").os_id; // "shmid N key 0x..."
        drop(shm);
        let shmid = os_id.split_whitespace().nth(1).expect("shmid").to_owned();
        let status = Command::new("ipcrm")
            .args(["-m", &shmid])
            .status()
            .expect("ipcrm");
        assert!(status.success(), "ipcrm -m {shmid}");
    } else {
        std::fs::remove_file(format!("/dev/shm{}", native.native())).expect("rm");
    }
}

/// `watch` tells a segment removed and made again (its key names another segment now)
/// from one removed: the watcher is stopped (SIGSTOP) while it happens, so that it wakes
/// to the new segment already there, whatever the timing.
#[test]
fn watch_says_when_the_key_names_a_new_segment() {
    for kind in KINDS {
        let key = unique_key("cliwatchnew");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, _) = hold(&key, kind, "32", &[]);
        let mut watch = Command::new(BIN)
            .args(["watch", &key, "--len", "4", type_flag(kind)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "\0\0\0\0");
        let pid = watch.id() as i32;
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let out = qshm(&["rm", &key, type_flag(kind)]);
        assert!(out.status.success(), "{}", stderr(&out));
        let (mut newer, _) = hold(&key, kind, "32", &[]);
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let status = watch.wait().unwrap();
        assert_eq!(status.code(), Some(3));
        let mut err = String::new();
        use std::io::Read;
        watch.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(
            err.ends_with(&format!(
                "qshm: the segment of {key:?} was removed, and the key names a new segment now \
                 (watch again to follow that one); stopped watching\n"
            )),
            "{err}"
        );
        interrupt(&mut holder);
        interrupt(&mut newer);
        let left = leftovers(&key, kind, &[]);
        assert!(left.is_empty(), "{left:?}");
    }
}

/// `stat` of a key whose segment was removed while a process still maps it (`ipcrm`, `rm`
/// of its file, or systemd's RemoveIPC=yes) says so and names that process: when the key
/// names nothing now (exit 3), and beside the key's new segment.
#[test]
fn stat_reports_a_removed_segment_still_in_use() {
    for kind in KINDS {
        let key = unique_key("clistatrm");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, _) = hold(&key, kind, "4096", &[]);
        let pid = holder.child.id();
        remove_behind_the_back(&key, kind);
        let err = assert_fails(&qshm(&["stat", &key, type_flag(kind)]), 3);
        assert!(
            err.starts_with(&format!("qshm: no segment for key {key:?}")),
            "{err}"
        );
        assert!(
            err.contains("1 segment of this key, removed while in use, is still mapped: ")
                && err.contains(&format!("mapped by process {pid} ("))
                && err.contains("RemoveIPC=yes"),
            "{err}"
        );
        // the key's new segment, and the old one still in use beside it
        let (mut newer, _) = hold(&key, kind, "64", &[]);
        let out = qshm(&["stat", &key, type_flag(kind)]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("size:         64 bytes\n"), "{text}");
        let removed = text
            .lines()
            .find(|l| l.starts_with("removed:      1 segment of this key"))
            .unwrap_or_else(|| panic!("no removed line: {text}"));
        assert!(
            removed.contains(&format!("mapped by process {pid} (")),
            "{removed}"
        );
        if kind.is_system_v() {
            assert!(removed.contains(", 4096 bytes, mapped by"), "{removed}");
        }
        interrupt(&mut holder);
        // gone once its last process let go
        let text = stdout(&qshm(&["stat", &key, type_flag(kind)]));
        assert!(!text.contains("removed:"), "{text}");
        interrupt(&mut newer);
        let left = leftovers(&key, kind, &[]);
        assert!(left.is_empty(), "{left:?}");
    }
}

/// Counts, ages and durations read like English and like what `--hold` takes.
#[test]
fn messages_say_counts_ages_and_durations_plainly() {
    let key = unique_key("cliwords");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::SystemV);
    let out = qshm(&["create", &key, "8", "--hold", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("holding"), "--hold 0 holds nothing: {text}");
    assert!(text.ends_with("\ndetached\n"), "{text}");

    let mut holder = Peer::spawn_command(Command::new(BIN).args(["create", &key, "8", "--hold", "2m"]));
    holder.expect("created ", T);
    assert_eq!(holder.line(T), "holding for 2m (Ctrl-C to release)");
    let out = qshm(&["write", &key, "--text", "x"]);
    assert_eq!(stdout(&out), "wrote 1 byte at offset 0\n");
    let out = qshm(&["stat", &key]);
    let created = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("created:      ").map(str::to_owned))
        .expect("a created line");
    assert!(
        created.ends_with("s ago") && created[..created.len() - 5].parse::<u64>().is_ok(),
        "an age as ls prints it: {created:?}"
    );
    let started = std::time::Instant::now();
    let out = qshm(&["lock", &key, "--hold", "300ms"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        stdout(&out),
        format!("locked {key}\nholding for 300ms (Ctrl-C to release)\nunlocked\n")
    );
    interrupt(&mut holder);
    // a SIZE the machine cannot hold is bad input, with what to do
    let err = assert_fails(&qshm(&["create", &key, "1000T", "--hold", "0"]), 1);
    assert!(err.contains("give a smaller SIZE"), "{err}");
}

/// `qshm key KEY --posix` (or `--sysv`) prints that key type only.
#[test]
fn key_prints_only_the_type_asked_for() {
    let posix = stdout(&qshm(&["key", "market", "--posix"]));
    assert!(posix.starts_with("POSIX (QSharedMemory(\"market\")"), "{posix}");
    assert!(!posix.contains("System V"), "{posix}");
    assert!(posix.contains("  POSIX:      posix:/market\n"), "{posix}");
    let sysv = stdout(&qshm(&["key", "market", "--sysv"]));
    assert!(sysv.starts_with("System V (QSharedMemory(\"market\")"), "{sysv}");
    assert!(!sysv.contains("POSIX"), "{sysv}");
    let both = stdout(&qshm(&["key", "market"]));
    assert!(both.contains("System V (") && both.contains("POSIX ("), "{both}");
}

/// The default `ls` table fits 100 columns for segments Qt names (their KEY is the key
/// hint); `--wide` adds the native key.
#[test]
fn ls_fits_100_columns_and_wide_adds_native_keys() {
    let _turn = stale_turn();
    for kind in KINDS {
        let key = unique_key("cliwidth");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, _) = hold(&key, kind, "4K", &[]);
        let native = SharedMemory::legacy_native_key(&key, kind).native().to_owned();
        let hint = hint_of(&key);
        let table = stdout(&qshm(&["ls"]));
        let row = table
            .lines()
            .find(|l| l.ends_with(&format!(" {hint}")))
            .expect("a row ending with the key hint");
        assert!(
            row.chars().count() <= 100,
            "{} columns: {row}",
            row.chars().count()
        );
        assert!(!table.contains(&native), "{table}");
        assert!(table.lines().next().unwrap().ends_with(" KEY"), "{table}");
        let wide = stdout(&qshm(&["ls", "-w"]));
        let row = wide.lines().find(|l| l.ends_with(&native)).expect("a wide row");
        assert!(row.contains(&format!(" {hint} ")), "{row}");
        interrupt(&mut holder);
    }
}

/// Every `ls --json` field, with its type and values, is the schema README.md documents
/// ("JSON output of `qshm ls --json`"): nothing undocumented, nothing missing.
#[test]
fn ls_json_follows_the_documented_schema() {
    let _turn = stale_turn();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let schema = documented_schema(&readme);
    let mut cleanup = Cleanup::default();
    let mut holders = Vec::new();
    for kind in KINDS {
        let key = unique_key("clischema");
        cleanup.key(&key, kind);
        holders.push(hold(&key, kind, "64", &[]).0);
    }
    // an orphan: a lock state whose segment went behind qshm's back
    let key = unique_key("clischemaorphan");
    cleanup.key(&key, KeyType::PosixRealtime);
    let (mut gone, _) = hold(&key, KeyType::PosixRealtime, "64", &["--fill", "1"]);
    gone.kill9();
    std::fs::remove_file(format!(
        "/dev/shm{}",
        native(&key, KeyType::PosixRealtime).native()
    ))
    .unwrap();

    let json = ls_json();
    let check = |object: &serde_json::Value, table: &str| {
        let fields = &schema[table];
        let map = object.as_object().expect("an object");
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        let mut documented: Vec<&String> = fields.iter().map(|f| &f.name).collect();
        documented.sort();
        assert_eq!(keys, documented, "{table}: fields of {object}");
        for field in fields {
            let value = &map[&field.name];
            let type_ok = match value {
                serde_json::Value::Null => field.nullable,
                serde_json::Value::String(_) => field.kind == "string",
                serde_json::Value::Number(n) => field.kind == "integer" && (n.is_u64() || n.is_i64()),
                serde_json::Value::Bool(_) => field.kind == "boolean",
                serde_json::Value::Array(_) => field.kind.starts_with("array"),
                serde_json::Value::Object(_) => field.kind == "object",
            };
            assert!(type_ok, "{table}.{}: {value} is not {:?}", field.name, field);
            if let (Some(values), Some(text)) = (&field.one_of, value.as_str()) {
                assert!(
                    values.iter().any(|v| v == text),
                    "{table}.{}: {text:?} not in {values:?}",
                    field.name
                );
            }
        }
    };
    check(&json, "document");
    assert_eq!(json["schema"], 1);
    let segments = json["segments"].as_array().unwrap();
    assert!(segments.len() >= 2, "{json}");
    for kind in KINDS {
        assert!(segments.iter().any(|s| s["type"] == kind.as_str()), "{json}");
    }
    segments.iter().for_each(|s| check(s, "segment"));
    let orphans = json["orphans"].as_array().unwrap();
    assert!(!orphans.is_empty(), "{json}");
    orphans.iter().for_each(|o| check(o, "orphan"));
    for mut holder in holders {
        interrupt(&mut holder);
    }
    // the orphan goes too
    std::thread::sleep(Duration::from_millis(2100));
    let _ = qshm(&["rm", "--stale"]);
}

/// One documented field of a JSON object.
#[derive(Debug)]
struct Field {
    name: String,
    kind: String,
    nullable: bool,
    one_of: Option<Vec<String>>,
}

/// The tables of README.md's "JSON output" section, by the object they describe (the
/// `####` heading: document, segment, orphan): every row `| \`name\` | type | meaning |`,
/// where type is `string`, `integer`, `boolean` or `array of ...`, `or null` when it may
/// be null, and a meaning that says "one of `a`, `b`" lists every value.
fn documented_schema(readme: &str) -> std::collections::HashMap<String, Vec<Field>> {
    let start = readme
        .find("## JSON output")
        .expect("README has a JSON output section");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    let mut tables = std::collections::HashMap::new();
    let mut current: Option<String> = None;
    for line in section[..end].lines() {
        if let Some(head) = line.strip_prefix("#### ") {
            let name = head.split_whitespace().next().unwrap_or("").to_lowercase();
            current = Some(name);
            continue;
        }
        let Some(table) = &current else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`').to_owned();
        let nullable = cells[2].ends_with(" or null");
        let kind = cells[2].trim_end_matches(" or null").to_owned();
        let one_of = cells[3].split_once("one of ").map(|(_, rest)| {
            rest.split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, v)| v.to_owned())
                .collect()
        });
        tables.entry(table.clone()).or_insert_with(Vec::new).push(Field {
            name,
            kind,
            nullable,
            one_of,
        });
    }
    for table in ["document", "segment", "orphan"] {
        assert!(tables.contains_key(table), "README documents the {table} object");
    }
    tables
}

/// The code block of `lang` in README.md's section "From Python and C".
fn readme_snippet(lang: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let start = readme.find("## From Python and C").expect("the section");
    let section = &readme[start..];
    let open = format!("\n```{lang}\n");
    let from = section.find(&open).expect("a code block") + open.len();
    let len = section[from..].find("\n```").expect("its end");
    section[from..from + len].to_owned()
}

/// README's Python reader reads a live POSIX segment, and the segment is still there
/// after it exits (unlike `multiprocessing.shared_memory`, whose resource tracker
/// unlinks it). README's C reader reads it under Qt's lock.
#[test]
fn readme_python_and_c_readers_read_a_live_segment_and_leave_it() {
    let key = unique_key("clireadme");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::PosixRealtime);
    let (mut holder, _) = hold(&key, KeyType::PosixRealtime, "4K", &[]);
    let out = qshm(&["write", &key, "--posix", "--text", "EURUSD 1.0842"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = stdout(&qshm(&["key", &key, "--posix"]));
    let name_of = |label: &str| {
        keys.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(|n| n.trim().to_owned()))
            .expect("qshm key prints it")
    };
    let (segment, semaphore) = (name_of("segment:"), name_of("semaphore:"));
    let still_there = || {
        let out = qshm(&["cat", &key, "--posix", "--len", "13"]);
        assert_eq!(stdout(&out), "EURUSD 1.0842", "{}", stderr(&out));
    };

    match Command::new("python3")
        .args(["-c", &readme_snippet("python"), &segment])
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(stdout(&out), "EURUSD 1.0842\n");
            std::thread::sleep(Duration::from_millis(500));
            still_there();
        }
        Err(e) => eprintln!("*** SKIP the README's Python reader: no python3 ({e}) ***"),
    }

    let dir = PrivateDir::new("clireadmec").unwrap();
    let source = dir.0.join("read_qshm.c");
    let program = dir.0.join("read_qshm");
    std::fs::write(&source, readme_snippet("c")).unwrap();
    match Command::new("cc").arg("-o").arg(&program).arg(&source).output() {
        Ok(out) => {
            assert!(out.status.success(), "the README's C compiles: {}", stderr(&out));
            // taken by qshm first: the C reader waits for the lock as a Qt process would
            let mut locker =
                Peer::spawn_command(Command::new(BIN).args(["lock", &key, "--posix", "--hold", "300ms"]));
            assert_eq!(locker.line(T), format!("locked {key}"));
            let started = std::time::Instant::now();
            let out = Command::new(&program)
                .args([&segment, &semaphore])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(stdout(&out), "EURUSD 1.0842\n");
            assert!(locker.wait(T).success());
            assert!(
                started.elapsed() >= Duration::from_millis(150),
                "it waited for the lock"
            );
            still_there();
            let out = qshm(&["lock", &key, "--posix", "--hold", "0"]);
            assert_eq!(
                stdout(&out),
                format!("locked {key}\nunlocked\n"),
                "{}",
                stderr(&out)
            );
        }
        Err(e) => eprintln!("*** SKIP the README's C reader: no cc ({e}) ***"),
    }
    interrupt(&mut holder);
}

/// The whole CLI suite again, as a throw-away unprivileged user in a private IPC and mount
/// namespace (as root only; `tests/support/again.rs`): the tool as most people run it.
#[test]
fn every_cli_test_again_as_an_unprivileged_user() {
    let this = "every_cli_test_again_as_an_unprivileged_user";
    assert!(
        support::again::whole_binary_as_user(&["--skip", this, "--test-threads", "2"]),
        "the unprivileged pass failed (its output is above)"
    );
}
