//! The `qshm` binary, driven across processes: every subcommand.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use qshm::{AccessMode, KeyType, LockMode, SharedMemory};
use support::*;

const T: Duration = Duration::from_secs(20);
const BIN: &str = env!("CARGO_BIN_EXE_qshm");

fn qshm(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run qshm")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn type_flag(kind: KeyType) -> &'static str {
    match kind {
        KeyType::SystemV => "--sysv",
        KeyType::PosixRealtime => "--posix",
    }
}

/// `qshm create KEY SIZE --hold 60` in the background; returns it once it reports.
fn hold(key: &str, kind: KeyType, size: &str, extra: &[&str]) -> (Peer, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["create", key, size, "--hold", "60", type_flag(kind)])
        .args(extra);
    let mut peer = Peer::spawn_command(&mut cmd);
    let line = peer.expect("created", T);
    (peer, line)
}

#[test]
fn key_prints_qt_native_keys() {
    let out = qshm(&["key", "market"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3\n"),
        "{text}"
    );
    let sysv = SharedMemory::legacy_native_key("market", KeyType::SystemV);
    assert!(
        text.contains(&format!("segment:    {}\n", sysv.native())),
        "{text}"
    );
    assert!(
        text.contains("/qipc_systemsem_market5c9f73af73334ffe350c60ec076e5744db0ecda3"),
        "{text}"
    );
    assert!(!qshm(&["key", ""]).status.success());
}

#[test]
fn create_write_cat_stat_across_processes() {
    for kind in KINDS {
        let key = unique_key("cli");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, line) = hold(&key, kind, "100", &["--fill", "46"]);
        assert!(line.contains(&format!("type={}", kind.as_str())), "{line}");
        assert!(line.contains("size=4096"), "{line}");
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
        let out = qshm(&["cat", &key, "--len", "22", type_flag(kind)]);
        assert_eq!(stdout(&out), "....hello from the CLI");
        let out = qshm(&["cat", &key, "--len", "8", "--hex", type_flag(kind)]);
        assert!(
            stdout(&out).starts_with("00000000  2e 2e 2e 2e 68 65 6c 6c"),
            "{}",
            stdout(&out)
        );

        // what the CLI wrote, the library reads
        let mut shm = handle(&key, kind, LockMode::QtCompatible);
        shm.attach(AccessMode::ReadOnly).unwrap();
        assert_eq!(&shm.lock_read().unwrap()[4..22], b"hello from the CLI");
        drop(shm);

        let out = qshm(&["stat", &key, type_flag(kind)]);
        let text = stdout(&out);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(text.contains("size:         4096 bytes"), "{text}");
        assert!(text.contains("permissions:  0600"), "{text}");
        assert!(text.contains("lock:         free"), "{text}");
        if kind == KeyType::SystemV {
            assert!(text.contains("attachments:  2"), "holder + stat itself: {text}");
        }

        // --hold ends at Ctrl-C: send SIGINT as a terminal would; it must detach cleanly
        // SAFETY: kill only signals our own child.
        unsafe { libc::kill(holder.child.id() as i32, libc::SIGINT) };
        assert!(holder.wait(T).success());
        assert!(
            leftovers(&key, kind, &recorded).is_empty(),
            "{:?}",
            leftovers(&key, kind, &recorded)
        );
    }
}

#[test]
fn write_and_cat_large_files_round_trip() {
    let key = unique_key("clifile");
    let kind = KeyType::PosixRealtime;
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, kind);
    let dir = std::env::temp_dir().join(format!("{key}-files"));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.bin");
    let data: Vec<u8> = (0..3 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&input, &data).unwrap();
    let (mut holder, _) = hold(
        &key,
        kind,
        &(4 << 20).to_string(),
        &["--from", input.to_str().unwrap()],
    );
    let out = qshm(&["cat", &key, "--len", &data.len().to_string(), "--posix"]);
    assert!(out.stdout == data, "cat returns the file create copied in");
    let out = qshm(&[
        "write",
        &key,
        "--from",
        input.to_str().unwrap(),
        "--offset",
        "1048576",
        "--posix",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = qshm(&[
        "cat",
        &key,
        "--offset",
        "1048576",
        "--len",
        &data.len().to_string(),
        "--posix",
    ]);
    assert!(out.stdout == data);
    let out = qshm(&[
        "write",
        &key,
        "--from",
        input.to_str().unwrap(),
        "--offset",
        "2097152",
        "--posix",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "past the end is refused: {}",
        stderr(&out)
    );
    holder.kill9();
    let _ = std::fs::remove_dir_all(&dir);
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
        locker.expect("locked", T);
        assert!(shm.try_lock().unwrap().is_none(), "held by `qshm lock`");
        let out = qshm(&["stat", &key, type_flag(kind)]);
        assert!(
            stdout(&out).contains("lock:         held by another process"),
            "{}",
            stdout(&out)
        );
        locker.expect("unlocked", T);
        assert!(locker.wait(T).success());
        assert!(
            shm.lock_timeout(T).unwrap().is_some(),
            "free after the CLI released it"
        );
    }
}

#[test]
fn ls_lists_and_rm_stale_removes_dead_segments() {
    for kind in KINDS {
        let key = unique_key("clils");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, _) = hold(&key, kind, "64", &[]);
        let recorded = sysv_keys(&key, kind);
        let native = SharedMemory::legacy_native_key(&key, kind).native().to_owned();
        let entry = |json: &serde_json::Value| {
            json["segments"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["native_key"] == native.as_str())
                .cloned()
        };
        let json: serde_json::Value = serde_json::from_slice(&qshm(&["ls", "--json"]).stdout).unwrap();
        let mine = entry(&json).expect("ls lists our segment");
        assert_eq!(mine["stale"], false);
        assert_eq!(mine["type"], kind.as_str());
        assert_eq!(mine["size"], 4096);
        assert_eq!(
            mine["key_hint"].as_str().unwrap(),
            key.replace(|c: char| !c.is_ascii_alphabetic(), "")
        );
        let table = stdout(&qshm(&["ls"]));
        assert!(table.contains(&native), "{table}");

        holder.kill9(); // every user dead: stale
        let json: serde_json::Value = serde_json::from_slice(&qshm(&["ls", "--json"]).stdout).unwrap();
        assert_eq!(entry(&json).expect("still listed")["stale"], true);
        let out = qshm(&["rm", "--stale"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("stale segment"), "{}", stdout(&out));
        let left = leftovers(&key, kind, &recorded);
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn rm_removes_a_segment_and_its_semaphore() {
    for kind in KINDS {
        let key = unique_key("clirm");
        let mut cleanup = Cleanup::default();
        cleanup.key(&key, kind);
        let (mut holder, _) = hold(&key, kind, "64", &[]);
        let recorded = sysv_keys(&key, kind);
        let out = qshm(&["rm", &key, type_flag(kind)]);
        assert!(out.status.success(), "{}", stderr(&out));
        holder.kill9();
        assert!(leftovers(&key, kind, &recorded).is_empty());
        let out = qshm(&["rm", &key, type_flag(kind)]);
        assert_eq!(out.status.code(), Some(3), "nothing left to remove");
    }
}

#[test]
fn errors_have_exit_codes_and_hints() {
    let key = unique_key("clierr");
    let mut cleanup = Cleanup::default();
    cleanup.key(&key, KeyType::SystemV);
    let (mut holder, _) = hold(&key, KeyType::SystemV, "64", &[]);
    let out = qshm(&["cat", &key, "--posix"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("did you mean --sysv?"), "{}", stderr(&out));
    let out = qshm(&["create", &key, "64", "--hold", "0"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = qshm(&["create", &unique_key("clizero"), "0", "--hold", "0"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(
        stderr(&out).contains("size must be at least 1 byte"),
        "{}",
        stderr(&out)
    );
    let missing = unique_key("climissing");
    let out = qshm(&["stat", &missing]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).starts_with(&format!("qshm: no segment for key \"{missing}\"")),
        "{}",
        stderr(&out)
    );
    holder.kill9();
}

#[test]
fn demo_exchanges_messages_and_leaves_nothing() {
    let out = qshm(&["demo", "--messages", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for n in 1..=3 {
        assert!(
            text.contains(&format!("[consumer] read  message #{n}:")),
            "{text}"
        );
    }
    assert!(text.contains("the segment is destroyed"), "{text}");
}
