//! Shared test support: unique keys, cleanup that also runs when a test fails, child
//! processes (the test binary re-executed in a "child role"), and leak checks.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

/// The tool facts of a handle (`force_remove`, `semaphore_key`, `info`, ...), in scope
/// for every test file that uses `support::*`.
pub(crate) use qshm::admin::SharedMemoryExt;
use qshm::{KeyType, LockMode, NativeIpcKey, SharedMemory};

pub(crate) mod actor;
pub(crate) mod again;
#[allow(unused_imports)] // only the multi-process suites run passes
pub(crate) use again::{Passes, run_suite};
pub(crate) mod qt;
#[macro_use]
pub(crate) mod qtest;

/// Environment variable that turns the test binary into a child process.
pub(crate) const CHILD_ENV: &str = "QSHM_TEST_CHILD";

/// When this process was started as a child role (the test binary re-executed with
/// [`CHILD_ENV`] set), run `roles(role, args)` and exit with what it returns; else return.
/// Every multi-process test file calls this first in `main`.
pub(crate) fn run_child_role(roles: fn(&str, &[String]) -> i32) {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        std::process::exit(roles(&role, &args));
    }
    share_tmpdir_with_other_users();
}

/// The name of the directory [`share_tmpdir_with_other_users`] makes in `TMPDIR`.
const SHARED_TMP: &str = "qshm-tests-shared";

/// As root, tests make throw-away users ([`TempUser`]) who make System V key files next
/// to ours, in Qt's temporary directory (`TMPDIR`). A `TMPDIR` that others cannot write
/// (one root made with `mkdir`: 0755) would fail those tests for a reason that has
/// nothing to do with qshm, so this process (and its children) use a subdirectory of it
/// that is like `/tmp` (1777), made once and kept. Called at the start of `main`.
fn share_tmpdir_with_other_users() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !is_root() {
        return;
    }
    let dir = std::env::temp_dir();
    let Ok(meta) = std::fs::metadata(&dir) else {
        return;
    };
    if meta.mode() & 0o1003 == 0o1003 || !reachable_by_others(&dir) {
        return; // like /tmp already, or no use (TempUser says why it skips)
    }
    let shared = dir.join(SHARED_TMP);
    let _ = std::fs::create_dir(&shared);
    let ours = std::fs::symlink_metadata(&shared).is_ok_and(|m| m.is_dir() && m.uid() == 0);
    if !ours || std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).is_err() {
        return;
    }
    // SAFETY: called first thing in `main`, before this test binary starts any thread,
    // so nothing reads the environment concurrently.
    unsafe { std::env::set_var("TMPDIR", &shared) };
}

/// Every directory on the way to `path` lets other users through (o+x), and so does
/// `path` itself: what a [`TempUser`] needs to run the test binary or use `TMPDIR`.
fn reachable_by_others(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.ancestors()
        .all(|p| p.as_os_str().is_empty() || std::fs::metadata(p).is_ok_and(|m| m.mode() & 0o001 != 0))
}

/// A segment made for one test: a key nobody else uses, the handle that created it, the
/// System V ids recorded while its key files exist, and the clean-up that runs also when
/// the test fails.
pub(crate) struct Fixture {
    pub(crate) key: String,
    pub(crate) kind: KeyType,
    pub(crate) mode: LockMode,
    pub(crate) shm: SharedMemory,
    pub(crate) recorded: Vec<(&'static str, i32, i32)>,
    // dropped last: removes whatever the test left, after the checks
    pub(crate) cleanup: Cleanup,
}

/// Create a `size`-byte read-write segment under a fresh key tagged `tag`.
pub(crate) fn setup(tag: &str, kind: KeyType, mode: LockMode, size: usize) -> Result<Fixture, qshm::Error> {
    let key = unique_key(tag);
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let mut shm = handle(&key, kind, mode);
    shm.create(size, qshm::AccessMode::ReadWrite)?;
    let recorded = sysv_keys(&key, kind);
    Ok(Fixture {
        key,
        kind,
        mode,
        shm,
        recorded,
        cleanup,
    })
}

impl Fixture {
    /// Arguments for a child role: key, key type, lock mode, then `extra`.
    pub(crate) fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![self.key.as_str(), kind_name(self.kind), mode_name(self.mode)];
        v.extend_from_slice(extra);
        v
    }

    /// Detach the creator's handle and check that nothing of the key is left.
    pub(crate) fn finish(mut self) -> Result<(), String> {
        self.shm.detach().map_err(|e| e.to_string())?;
        let left = leftovers(&self.key, self.kind, &self.recorded);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("left behind: {left:?}"))
        }
    }
}

/// Whether `strace` runs here (the tests that place a delay or a kill at one system call
/// need it); if not, says that `test` is skipped.
pub(crate) fn strace_available(test: &str) -> bool {
    let ok = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("*** SKIP {test}: needs strace ***");
    }
    ok
}

/// A key no other test (in this or a parallel run) uses.
pub(crate) fn unique_key(tag: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("qshm-test-{tag}-{}-{n}-{nanos}", std::process::id())
}

/// A System V key file of its own, made now in the test's temporary directory, whose numeric
/// key no other such file of this process holds and no System V segment or semaphore set
/// has yet. `ftok` keeps only the low 16 bits of the inode, so on a disk filesystem (which
/// reuses inode numbers) two live key files can share one numeric key, and then their
/// segments and semaphores are one, in Qt and in qshm alike. CI once met it:
/// `qt5.15::systemv::native_key` found another test's live semaphore set at its key.
/// For tests whose key file may exist before the first create (not for tests about who
/// makes or removes key files).
pub(crate) fn sysv_key_file(tag: &str, kind: KeyType) -> String {
    static TAKEN: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());
    // Refused files stay until one is found: removed at once, their inode (so their
    // numeric key) would come straight back.
    let mut refused = Vec::new();
    let found = loop {
        let path = format!("{}/{}", std::env::temp_dir().display(), unique_key(tag));
        std::fs::write(&path, b"").expect("make the key file");
        let numeric = SharedMemory::system_v_key(&NativeIpcKey::new(path.as_str(), kind))
            .expect("the numeric key of a key file that exists");
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        let in_use = ["/proc/sysvipc/shm", "/proc/sysvipc/sem"]
            .iter()
            .any(|table| !sysv_ids(table, numeric).is_empty());
        if !in_use && !taken.contains(&numeric) {
            taken.push(numeric);
            break path;
        }
        eprintln!("(key file {path}: numeric key {numeric:#x} is taken; another one)");
        refused.push(path);
    };
    for path in refused {
        let _ = std::fs::remove_file(path);
    }
    found
}

pub(crate) fn kind_name(kind: KeyType) -> &'static str {
    kind.as_str()
}

pub(crate) fn parse_kind(s: &str) -> KeyType {
    s.parse().expect("key type")
}

pub(crate) fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::QtCompatible => "qt",
        LockMode::Fast => "fast",
    }
}

pub(crate) fn parse_mode(s: &str) -> LockMode {
    match s {
        "qt" => LockMode::QtCompatible,
        "fast" => LockMode::Fast,
        other => panic!("lock mode {other:?}"),
    }
}

/// Everything a test made, removed when the test ends, pass or fail.
#[derive(Default)]
pub(crate) struct Cleanup {
    keys: Vec<(String, KeyType)>,
    natives: Vec<NativeIpcKey>,
    children: Vec<Child>,
}

impl Cleanup {
    pub(crate) fn key(&mut self, key: &str, kind: KeyType) {
        self.keys.push((key.to_owned(), kind));
    }

    /// A native key used as is (e.g. from `SharedMemory::platform_safe_key`).
    pub(crate) fn native_key(&mut self, key: &NativeIpcKey) {
        self.natives.push(key.clone());
    }

    pub(crate) fn child(&mut self, child: Child) -> usize {
        self.children.push(child);
        self.children.len() - 1
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (key, kind) in &self.keys {
            let native = SharedMemory::legacy_native_key(key, *kind);
            let _ = SharedMemory::force_remove(&native);
        }
        for native in &self.natives {
            let _ = SharedMemory::force_remove(native);
        }
    }
}

/// A child process speaking a line protocol on stdin/stdout.
pub(crate) struct Peer {
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Peer {
    /// Re-execute this test binary in child `role` with `args`.
    pub(crate) fn spawn(role: &str, args: &[&str]) -> Peer {
        let exe = std::env::current_exe().expect("test binary path");
        Self::spawn_command(Command::new(exe).env(CHILD_ENV, role).args(args))
    }

    /// Run an arbitrary command (e.g. the qshm CLI) as a peer.
    pub(crate) fn spawn_command(cmd: &mut Command) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            child,
            stdin,
            lines: rx,
        }
    }

    /// The next line the child prints, within `timeout`.
    pub(crate) fn line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("child printed nothing within {timeout:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait();
                panic!("child ended without output: {status:?}")
            }
        }
    }

    /// The next line the child prints within `timeout`, or `None` (timed out, or the
    /// child ended).
    pub(crate) fn try_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Read lines until one starts with `prefix`; return the rest of it.
    pub(crate) fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.line(left.max(Duration::from_millis(1)));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    /// Send a line to the child.
    pub(crate) fn send(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    /// Close stdin (children waiting for a line then finish).
    pub(crate) fn finish(&mut self) -> std::process::ExitStatus {
        self.stdin = None;
        self.wait(Duration::from_secs(30))
    }

    /// Wait for the child to exit, killing it after `timeout`.
    pub(crate) fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("child did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait for the child to exit within `timeout`; kill it if it does not (`None`).
    pub(crate) fn wait_or_kill(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                self.kill9();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(crate) fn kill9(&mut self) {
        // SAFETY: kill only sends a signal to our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Block until a line arrives on stdin (or it closes).
pub(crate) fn wait_for_stdin_line() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// Print a protocol line and flush.
/// A POSIX named semaphore made or opened as glibc's `sem_open` (and so Qt) does it:
/// `O_CREAT`, with `O_EXCL` if `exclusive`, `mode`, value 1 (`sem_close` it when done).
pub(crate) fn sem_open_create(name: &str, exclusive: bool, mode: u32) -> std::io::Result<*mut libc::sem_t> {
    let name = std::ffi::CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = libc::O_CREAT | if exclusive { libc::O_EXCL } else { 0 };
    // SAFETY: name is NUL-terminated; mode and value are passed as the C ABI expects.
    let sem = unsafe { libc::sem_open(name.as_ptr(), flags, mode as libc::c_uint, 1u32) };
    if sem == libc::SEM_FAILED {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(sem)
    }
}

pub(crate) fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The System V objects (table, numeric key, id) of legacy key `key`, taken while its key
/// files exist, so [`leftovers`] can look for exactly them after the files are gone.
/// (The id matters: `ftok` uses only 16 bits of the inode, so once a key file is
/// deleted, another test's new key file can reuse the numeric key.)
pub(crate) fn sysv_keys(key: &str, kind: KeyType) -> Vec<(&'static str, i32, i32)> {
    sysv_keys_of(&native(key, kind))
}

/// [`sysv_keys`] of a native key (its semaphore's key as the segment's lock uses it).
pub(crate) fn sysv_keys_of(native: &NativeIpcKey) -> Vec<(&'static str, i32, i32)> {
    let mut keys = Vec::new();
    if native.kind().is_system_v() {
        let sem = SharedMemory::with_native_key(native.clone()).semaphore_key();
        for (table, native) in [("/proc/sysvipc/shm", native.clone()), ("/proc/sysvipc/sem", sem)] {
            if let Some(k) = SharedMemory::system_v_key(&native) {
                for id in sysv_ids(table, k) {
                    keys.push((table, k, id));
                }
            }
        }
    }
    keys
}

/// Everything of legacy key `key` that is still on the system: segment, key files,
/// lock state, semaphore (plus the numeric System V keys recorded earlier).
pub(crate) fn leftovers(key: &str, kind: KeyType, recorded: &[(&'static str, i32, i32)]) -> Vec<String> {
    leftovers_of(&native(key, kind), recorded)
}

/// [`leftovers`] of a native key: its segment, key files, lock state and the semaphore
/// its lock uses (for a key derived from a legacy key, Qt's semaphore key of that key;
/// for any other, the native key itself, as in Qt).
pub(crate) fn leftovers_of(native: &NativeIpcKey, recorded: &[(&'static str, i32, i32)]) -> Vec<String> {
    let mut found = Vec::new();
    let kind = native.kind();
    let native = native.clone();
    let sem = SharedMemory::with_native_key(native.clone()).semaphore_key();
    let mut lock_state_prefixes = Vec::new();
    match kind {
        KeyType::PosixRealtime => {
            let seg = format!("/dev/shm/{}", native.native().trim_start_matches('/'));
            if std::path::Path::new(&seg).exists() {
                found.push(format!("segment {seg}"));
            }
            lock_state_prefixes.push(posix_lock_state_prefix(&native));
            let sem_file = format!("/dev/shm/sem.{}", sem.native().trim_start_matches('/'));
            if std::path::Path::new(&sem_file).exists() {
                found.push(format!("semaphore {sem_file}{}", posix_file_users(&sem_file)));
            }
        }
        // every System V type (any ftok project id)
        _ => {
            let mut keys = recorded.to_vec();
            keys.extend(sysv_keys_of(&native));
            let own_id = SharedMemory::system_v_key(&native).map(|k| k as u32 >> 24);
            for path in [native.native(), sem.native()] {
                if !std::path::Path::new(path).exists() {
                    continue;
                }
                match kept_for_another_files_object(path, own_id, &keys) {
                    Some(why) => eprintln!("key file {path} kept, as qshm must: {why}"),
                    None => found.push(format!("key file {path}{}", key_file_users(path))),
                }
            }
            // by key and id: ftok keeps 16 bits of the key file's inode, so another test's
            // key file can have the same numeric key (and a lock state of its own)
            for &(table, k, id) in &keys {
                if table.ends_with("shm") {
                    let name = sysv_lock_state_name(k, id);
                    if std::path::Path::new(&format!("/dev/shm/{name}")).exists() {
                        found.push(format!("lock state /dev/shm/{name}"));
                    }
                }
            }
            for (table, k, id) in keys {
                if sysv_ids(table, k).contains(&id) {
                    found.push(format!("{table} key {k:#x} id {id}"));
                }
            }
        }
    }
    for prefix in lock_state_prefixes {
        for name in shm_dir_names_starting(&prefix) {
            found.push(format!("lock state /dev/shm/{name}"));
        }
    }
    found.sort();
    found.dedup();
    found
}

/// `program` in a PID namespace of its own, where it is PID 1 and sees no other process
/// (a container sharing IPC and `/dev/shm` with the test): `unshare -pf --mount-proc`;
/// `--kill-child`, so that killing the returned command's process kills `program` too.
pub(crate) fn in_own_pid_namespace(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["-pf", "--kill-child", "--mount-proc"]).arg(program);
    cmd
}

/// Whether `/proc` lists every process of the machine (this test runs in the initial PID
/// namespace, with its `/proc`), as qshm asks before it takes the absence of a user there
/// for evidence; not in the suites' PID-namespace pass.
pub(crate) fn sees_every_process() -> bool {
    let initial = std::fs::read_link("/proc/self/ns/pid").is_ok_and(|l| l.as_os_str() == "pid:[4026531836]");
    let ours = std::fs::read_link("/proc/self")
        .is_ok_and(|l| l.to_str().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id()));
    initial && ours
}

/// The lock-state file name of System V segment `shmid` at numeric key `key` (in
/// `/dev/shm`): `qshm-lock.s.<key, 8 hex digits>.<shmid>`.
pub(crate) fn sysv_lock_state_name(key: i32, shmid: i32) -> String {
    format!("qshm-lock.s.{:08x}.{shmid}", key as u32)
}

/// The start of the lock-state file names of a POSIX segment: `qshm-lock.p.<tag>.`, the
/// tag being the first 8 bytes of the SHA-1 of the segment's file name (pinned here).
pub(crate) fn posix_lock_state_prefix(native: &NativeIpcKey) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(native.native().trim_start_matches('/').as_bytes());
    let tag: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("qshm-lock.p.{tag}.")
}

/// Names of the files in `/dev/shm` that start with `prefix`.
pub(crate) fn shm_dir_names_starting(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Ids of the entries with numeric key `key` in a `/proc/sysvipc` table.
/// What else uses a left key file's numeric key (`ftok` keeps 16 bits of the inode, so a
/// key file of another test can share it): the rows of both System V tables, for the
/// failure message.
/// Why the empty key file `path` is kept rather than left behind: a segment or semaphore
/// of another `ftok` project id than the key's own (`own_id`) sits at one of the file's
/// numeric keys, and it is none of the key's own (`ours`). qshm cannot tell it from one that
/// uses this very file (`ftok` keeps 16 bits of the inode, so another key file can give the
/// same numeric key), and removing a file in use would split that object's key, so qshm
/// keeps the file. In tests, with unique keys, such an object is another key file's.
fn kept_for_another_files_object(
    path: &str,
    own_id: Option<u32>,
    ours: &[(&'static str, i32, i32)],
) -> Option<String> {
    if !std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return None;
    }
    let file_key =
        SharedMemory::system_v_key(&NativeIpcKey::new(path, KeyType::SystemV))? as u32 & 0x00ff_ffff;
    let others: Vec<String> = ["/proc/sysvipc/shm", "/proc/sysvipc/sem"]
        .into_iter()
        .flat_map(|table| {
            sysv_rows(table)
                .into_iter()
                .filter(|&(k, id)| {
                    k != 0
                        && k as u32 & 0x00ff_ffff == file_key
                        && Some(k as u32 >> 24) != own_id
                        && !ours.iter().any(|&(t, _, o)| t == table && o == id)
                })
                .map(|(k, id)| format!("{table} key {k:#x} id {id}"))
                .collect::<Vec<_>>()
        })
        .collect();
    (!others.is_empty()).then(|| format!("another file's numeric key: {others:?}"))
}

fn key_file_users(path: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let native = NativeIpcKey::new(path, KeyType::SystemV);
    let (Some(k), Ok(meta)) = (SharedMemory::system_v_key(&native), std::fs::metadata(path)) else {
        return String::new();
    };
    let shm = sysv_ids("/proc/sysvipc/shm", k);
    let sem = sysv_ids("/proc/sysvipc/sem", k);
    format!(
        " (inode {}, {} bytes, key {k:#x}: shm ids {shm:?}, sem ids {sem:?})",
        meta.ino(),
        meta.len()
    )
}

/// Who a left POSIX file belongs to: its inode, times and the processes that map or
/// hold it open now, to tell a leak from a file in use or one made anew.
fn posix_file_users(path: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return String::new();
    };
    let ino = meta.ino();
    let mut users = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let mapped = maps
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some(&ino.to_string()));
        let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| m.ino() == ino && m.dev() == meta.dev()));
        if mapped || open {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            users.push(format!(
                "{pid} {} ({})",
                comm.trim(),
                if mapped { "maps it" } else { "has it open" }
            ));
        }
    }
    format!(
        " (inode {ino}, modified {} s / changed {} s after the epoch; used by {users:?}; this is pid {})",
        meta.mtime(),
        meta.ctime(),
        std::process::id()
    )
}

/// Ids of the entries with numeric key `key` in a `/proc/sysvipc` table.
pub(crate) fn sysv_ids(table: &str, key: i32) -> Vec<i32> {
    sysv_rows(table)
        .into_iter()
        .filter_map(|(k, id)| (k == key).then_some(id))
        .collect()
}

/// The (numeric key, id) of every entry in a `/proc/sysvipc` table.
fn sysv_rows(table: &str) -> Vec<(i32, i32)> {
    let text = std::fs::read_to_string(table).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

/// Both key types, for tests that run once per backend.
pub(crate) const KINDS: [KeyType; 2] = [KeyType::SystemV, KeyType::PosixRealtime];

/// Qt's "SystemV-T" key type: System V with `ftok` project id `'T'`
/// (`QNativeIpcKey::Type('T')`), the second System V type Qt's IPC autotests run.
pub(crate) const SYSTEM_V_T: KeyType = match KeyType::system_v(b'T') {
    Some(kind) => kind,
    None => panic!("'T' is a System V project id"),
};

/// The key types Qt's IPC autotests run on Linux, in the order `ipctestcommon.h` adds
/// them ("POSIX", "SystemV-Q", "SystemV-T"); Qt's `nextKeyType` rotates through them.
pub(crate) const QT_KINDS: [KeyType; 3] = [KeyType::PosixRealtime, KeyType::SystemV, SYSTEM_V_T];

/// Build a handle for a legacy key with a key type and lock mode.
pub(crate) fn handle(key: &str, kind: KeyType, mode: LockMode) -> SharedMemory {
    SharedMemory::with_key_type(key, kind).with_lock_mode(mode)
}

pub(crate) fn native(key: &str, kind: KeyType) -> NativeIpcKey {
    SharedMemory::legacy_native_key(key, kind)
}

// ------------------------------------------------------------------ other users, namespaces

/// True when this process runs as root (needed for `useradd`, `unshare -m`, `mount`).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A throw-away Unix user with a name of its own, removed again when dropped.
pub(crate) struct TempUser {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `useradd` and `userdel` lock /etc/passwd and fail while another one holds it: one at a
/// time in this process, and a few tries against other processes.
fn user_tool(args: &[&str]) -> Result<(), String> {
    static USER_TOOLS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = USER_TOOLS.lock().unwrap_or_else(|e| e.into_inner());
    let mut last = String::new();
    for attempt in 0..20 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        match Command::new(args[0]).args(&args[1..]).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => last = String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => return Err(format!("{}: {e}", args[0])),
        }
    }
    Err(format!("{} failed: {last}", args.join(" ")))
}

impl TempUser {
    /// `None` (after printing a loud SKIP line naming `test`) when not root. As root, a user
    /// that cannot be made fails the test (a panic), rather than skipping it quietly.
    pub(crate) fn create(test: &str) -> Option<TempUser> {
        if !is_root() {
            eprintln!("*** SKIP {test}: making a user needs root ***");
            return None;
        }
        let exe = std::env::current_exe().unwrap_or_default();
        for (what, path) in [("the test binary", exe), ("TMPDIR", std::env::temp_dir())] {
            if !reachable_by_others(&path) {
                eprintln!(
                    "*** SKIP {test}: another user cannot reach {what} ({}: a directory on the way is closed to others) ***",
                    path.display()
                );
                return None;
            }
        }
        match TempUser::try_create() {
            Ok(user) => Some(user),
            Err(why) => panic!("{test}: cannot make a temporary user: {why}"),
        }
    }

    /// A new user, or why there is none.
    pub(crate) fn try_create() -> Result<TempUser, String> {
        if !is_root() {
            return Err("making a user needs root".to_owned());
        }
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        static RUN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // unique per process and per call (user names have at most 32 characters); users
        // are machine-wide, pids are not: every PID-namespace pass runs as pid 4, so the
        // pid alone named two suites' users alike. A random number per process does not.
        let run = *RUN.get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.finish() as u32
        });
        let name = format!("qshmt{run:08x}u{n}");
        user_tool(&["useradd", "-M", "-N", "-s", "/bin/false", &name])?;
        // from here on, Drop removes the user whatever happens
        let mut user = TempUser { name, uid: 0, gid: 0 };
        let id = |flag: &str| -> Result<u32, String> {
            let out = Command::new("id")
                .args([flag, &user.name])
                .output()
                .map_err(|e| e.to_string())?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|e| format!("id {flag}: {e}"))
        };
        (user.uid, user.gid) = (id("-u")?, id("-g")?);
        Ok(user)
    }

    /// Run this test binary in child `role` as this user; returns what it printed.
    pub(crate) fn run(&self, role: &str, args: &[&str]) -> std::process::Output {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().expect("test binary path");
        Command::new(exe)
            .env(CHILD_ENV, role)
            .args(args)
            .uid(self.uid)
            .gid(self.gid)
            .output()
            .expect("run child as another user")
    }

    /// Start this test binary in child `role` as this user, as a line-protocol peer.
    pub(crate) fn spawn(&self, role: &str, args: &[&str]) -> Peer {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().expect("test binary path");
        Peer::spawn_command(
            Command::new(exe)
                .env(CHILD_ENV, role)
                .args(args)
                .uid(self.uid)
                .gid(self.gid),
        )
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .arg(&self.name)
            .stderr(Stdio::null())
            .status();
    }
}

/// A command that runs the shell commands `script` inside private mount namespaces
/// (`ipc`: and a private IPC namespace), where `"$QSHM_EXE"` runs `exe` and `"$@"` are the
/// arguments the caller adds. The binary is opened (descriptor 9) before `script` runs
/// and executed through that descriptor, so a mount that hides the checkout (a tmpfs over
/// `/dev/shm`, or over a directory that holds `target/`) cannot hide the binary: no test
/// depends on where the checkout lives. Needs root.
pub(crate) fn private_namespaces_sh(exe: &std::path::Path, script: &str, ipc: bool) -> Command {
    let script = format!("exec 9<\"$0\" && QSHM_EXE=/proc/self/fd/9 && {script}");
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private"]);
    if ipc {
        cmd.arg("-i");
    }
    cmd.args(["sh", "-c", &script]).arg(exe);
    cmd
}

/// [`private_namespaces_sh`] that runs `exe` with the caller's arguments once `setup`
/// (e.g. mounts) succeeded there.
pub(crate) fn in_private_namespaces(exe: &std::path::Path, setup: &str, ipc: bool) -> Command {
    private_namespaces_sh(exe, &format!("{setup} && exec \"$QSHM_EXE\" \"$@\""), ipc)
}

/// A fresh empty directory under `std::env::temp_dir()` (made 0700), removed with what is
/// in it when dropped: a place to mount over that hides nothing else.
pub(crate) struct PrivateDir(pub(crate) std::path::PathBuf);

impl PrivateDir {
    pub(crate) fn new(tag: &str) -> std::io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(unique_key(tag));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir(path))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run this test binary in child `role` inside a private mount namespace whose `/dev/shm` is
/// a fresh tmpfs of `size` (e.g. `"1m"`). `None` (after a SKIP line) when not root.
pub(crate) fn run_in_small_dev_shm(
    test: &str,
    size: &str,
    role: &str,
    args: &[&str],
) -> Option<std::process::Output> {
    if !is_root() {
        eprintln!("*** SKIP {test}: needs root for unshare -m and mount ***");
        return None;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let setup = format!("mount -t tmpfs -o size={size} qshm-test /dev/shm");
    let out = in_private_namespaces(&exe, &setup, false)
        .args(args)
        .env(CHILD_ENV, role)
        .output();
    match out {
        Ok(out) => Some(out),
        Err(e) => {
            eprintln!("*** SKIP {test}: cannot run unshare: {e} ***");
            None
        }
    }
}

/// The `/dev/shm` path of a POSIX native key.
pub(crate) fn shm_path(native: &NativeIpcKey) -> String {
    format!("/dev/shm/{}", native.native().trim_start_matches('/'))
}

/// The `/dev/shm` file of a POSIX semaphore key.
pub(crate) fn sem_path(native: &NativeIpcKey) -> String {
    format!("/dev/shm/sem.{}", native.native().trim_start_matches('/'))
}
