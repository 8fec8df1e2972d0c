//! The string form against real Qt: every odd string here was read by Qt 6.11's
//! `QNativeIpcKey::fromString` (PyQt6 6.11) and Qt 6.12's (PySide6 6.12), which agree on
//! all of them; the results are pinned, and checked again against the installed Qt by
//! [`odd_strings_parse_like_the_installed_qt`].
use super::tests::qt_python;
use super::*;

/// What Qt reads in a string: `None` for an invalid key, else the `QNativeIpcKey::Type`
/// value, `nativeKey()` and `toString()` (which carries the legacy key).
type QtRead = Option<(u16, &'static str, &'static str)>;

/// `(text, what Qt reads)`.
const QT_READS: &[(&str, QtRead)] = &[
    ("posix:/a%zz", Some((0x100, "/a%zz", "posix:/a%25zz"))),
    ("posix:/a%2", Some((0x100, "/a%2", "posix:/a%252"))),
    ("posix:/%FF", Some((0x100, "/\u{fffd}", "posix:/\u{fffd}"))),
    ("posix:/x?&legacyKey=y", None),
    (
        "posix:/x?legacyKey=y&",
        Some((0x100, "/x", "posix:/x?legacyKey=y")),
    ),
    ("posix:/x?legacyKey=y&&", None),
    ("posix:/x?&&", None),
    ("posix:/x?&", None),
    ("posix:/x?", Some((0x100, "/x", "posix:/x"))),
    ("posix:/x?legacyKey", Some((0x100, "/x", "posix:/x"))),
    ("posix:/x?legacyKey=", Some((0x100, "/x", "posix:/x"))),
    ("posix:/x?a", None),
    (
        "posix:/x?legacy%4Bey=z",
        Some((0x100, "/x", "posix:/x?legacyKey=z")),
    ),
    ("posix:/x?LegacyKey=a", None),
    (
        "posix:/x?legacyKey=a%26b",
        Some((0x100, "/x", "posix:/x?legacyKey=a%26b")),
    ),
    (
        "posix:/x?legacyKey=a=b",
        Some((0x100, "/x", "posix:/x?legacyKey=a%3Db")),
    ),
    (
        "posix:/x?legacyKey==b",
        Some((0x100, "/x", "posix:/x?legacyKey=%3Db")),
    ),
    (
        "posix:/x?legacyKey=1&legacyKey=2",
        Some((0x100, "/x", "posix:/x?legacyKey=2")),
    ),
    ("posix:/x?legacyKey=a&legacyKey=", Some((0x100, "/x", "posix:/x"))),
    (
        "posix:/x?legacyKey=a%zz",
        Some((0x100, "/x", "posix:/x?legacyKey=a%25zz")),
    ),
    (
        "posix:/x?legacyKey=a%FF",
        Some((0x100, "/x", "posix:/x?legacyKey=a\u{fffd}")),
    ),
    (
        "posix:/x?legacyKey=%C3",
        Some((0x100, "/x", "posix:/x?legacyKey=\u{fffd}")),
    ),
    (
        "posix:/x?legacyKey=%",
        Some((0x100, "/x", "posix:/x?legacyKey=%25")),
    ),
    (
        "posix:/x?legacyKey=a+b",
        Some((0x100, "/x", "posix:/x?legacyKey=a+b")),
    ),
    (
        "posix:/x?legacyKey=a%2Bb",
        Some((0x100, "/x", "posix:/x?legacyKey=a+b")),
    ),
    (
        "posix:/x?legacyKey=a b",
        Some((0x100, "/x", "posix:/x?legacyKey=a b")),
    ),
    (
        "posix:/x?legacyKey=%C3%A9",
        Some((0x100, "/x", "posix:/x?legacyKey=\u{e9}")),
    ),
    (
        "posix:/x?legacyKey=/?",
        Some((0x100, "/x", "posix:/x?legacyKey=/?")),
    ),
    (
        "posix:/x?legacyKey=a#b",
        Some((0x100, "/x", "posix:/x?legacyKey=a")),
    ),
    ("posix://@/x", Some((0x100, "/x", "posix:/x"))),
    ("posix://:/x", Some((0x100, "/x", "posix:/x"))),
    ("posix://@:/x", Some((0x100, "/x", "posix:/x"))),
    ("posix://:80/x", None),
    ("posix://host/x", None),
    ("posix://user@/x", None),
    ("posix://", Some((0x100, "", "posix:"))),
    ("posix:///x", Some((0x100, "/x", "posix:/x"))),
    ("posix://x", None),
    (
        "posix:/%E2%80",
        Some((0x100, "/\u{fffd}\u{fffd}", "posix:/\u{fffd}\u{fffd}")),
    ),
    (
        "posix:/%E2%80x",
        Some((0x100, "/\u{fffd}\u{fffd}x", "posix:/\u{fffd}\u{fffd}x")),
    ),
    (
        "posix:/%F0%90%80",
        Some((
            0x100,
            "/\u{fffd}\u{fffd}\u{fffd}",
            "posix:/\u{fffd}\u{fffd}\u{fffd}",
        )),
    ),
    (
        "posix:/%C0%80",
        Some((0x100, "/\u{fffd}\u{fffd}", "posix:/\u{fffd}\u{fffd}")),
    ),
    (
        "posix:/%ED%A0%80",
        Some((
            0x100,
            "/\u{fffd}\u{fffd}\u{fffd}",
            "posix:/\u{fffd}\u{fffd}\u{fffd}",
        )),
    ),
    (
        "posix:/%FF%FE",
        Some((0x100, "/\u{fffd}\u{fffd}", "posix:/\u{fffd}\u{fffd}")),
    ),
    (
        "posix:/%F4%90%80%80",
        Some((
            0x100,
            "/\u{fffd}\u{fffd}\u{fffd}\u{fffd}",
            "posix:/\u{fffd}\u{fffd}\u{fffd}\u{fffd}",
        )),
    ),
    ("posix:/%E2%82%AC", Some((0x100, "/\u{20ac}", "posix:/\u{20ac}"))),
    (
        "posix:/%E2%82%41",
        Some((0x100, "/\u{fffd}\u{fffd}A", "posix:/\u{fffd}\u{fffd}A")),
    ),
    ("posix:/%", Some((0x100, "/%", "posix:/%25"))),
    ("posix:/%%", Some((0x100, "/%%", "posix:/%25%25"))),
    ("posix:/%g0", Some((0x100, "/%g0", "posix:/%25g0"))),
    ("posix:/%2F%2f", Some((0x100, "///", "posix:/%2F/"))),
    ("posix:/a%00b", Some((0x100, "/a\u{0}b", "posix:/a%00b"))),
    ("posix:/x%3Fy", Some((0x100, "/x?y", "posix:/x%3Fy"))),
    ("posix:/x%23y", Some((0x100, "/x#y", "posix:/x%23y"))),
    ("posix:/a b", Some((0x100, "/a b", "posix:/a b"))),
    ("posix:/a%20b", Some((0x100, "/a b", "posix:/a b"))),
    ("posix:/\u{e9}", Some((0x100, "/\u{e9}", "posix:/\u{e9}"))),
    ("posix:/%C3%A9", Some((0x100, "/\u{e9}", "posix:/\u{e9}"))),
    ("posix:/a[b]", Some((0x100, "/a[b]", "posix:/a[b]"))),
    ("posix:x", Some((0x100, "x", "posix:x"))),
    ("posix:", Some((0x100, "", "posix:"))),
    ("posix:x:y", Some((0x100, "x:y", "posix:x:y"))),
    ("posix:/foo#bar", Some((0x100, "/foo", "posix:/foo"))),
    ("posix:/foo#bar?baz", Some((0x100, "/foo", "posix:/foo"))),
    ("posix:/foo?bar#baz", None),
    ("posix:%2f%66o%6f", Some((0x100, "/foo", "posix:/foo"))),
    (
        "posix:%C4%80.%E2%80%80.%F0%90%80%80",
        Some((
            0x100,
            "\u{100}.\u{2000}.\u{10000}",
            "posix:\u{100}.\u{2000}.\u{10000}",
        )),
    ),
    ("Posix:/x", Some((0x100, "/x", "posix:/x"))),
    ("POSIX:/x", Some((0x100, "/x", "posix:/x"))),
    ("systemv:/tmp/x", Some((0x51, "/tmp/x", "systemv:/tmp/x"))),
    ("SYSTEMV:/tmp/x", Some((0x51, "/tmp/x", "systemv:/tmp/x"))),
    ("systemv-0042:/x", Some((0x2a, "/x", "systemv-42:/x"))),
    ("systemv-81:/x", Some((0x51, "/x", "systemv:/x"))),
    ("systemv-081:/x", Some((0x51, "/x", "systemv:/x"))),
    ("systemv-1:/x", Some((0x1, "/x", "systemv-1:/x"))),
    ("systemv-84:/x", Some((0x54, "/x", "systemv-84:/x"))),
    ("systemv-255:", Some((0xff, "", "systemv-255:"))),
    ("systemv-256:", None),
    ("systemv-0:", None),
    ("systemv-009:", Some((0x9, "", "systemv-9:"))),
    ("systemv-:/x", None),
    ("systemv-+42:/x", None),
    ("systemv--5:/x", None),
    ("systemv+5:/x", None),
    ("systemv-8a:/x", None),
    ("systemv-0x01:", None),
    ("systemv-32769:", None),
    ("systemv-65537:", None),
    ("systemv-2147483649:", None),
    ("systemv-4294967297:", None),
    ("systemv-99999999999:/x", None),
    ("systemvx:/x", None),
    ("systemv", None),
    ("systemv255", None),
    ("windows:x", Some((0x101, "x", "windows:x"))),
    ("windows", None),
    (":x", None),
    ("81", None),
    ("-81", None),
    ("invalidprefix:", None),
    ("junk:systemv:", None),
];

/// Qt's `windows:` keys are valid for Qt but do not exist on Linux: refused here.
fn is_windows(qt_type: u16) -> bool {
    qt_type == 0x101
}

#[test]
fn odd_strings_parse_as_qt_reads_them() {
    for &(text, qt) in QT_READS {
        let ours = text.parse::<NativeIpcKey>();
        match qt {
            Some((qt_type, _, _)) if is_windows(qt_type) => {
                let err = ours.expect_err(text);
                assert!(err.to_string().contains("\"windows\" keys"), "{text}: {err}");
            }
            Some((qt_type, native, printed)) => {
                let key = ours.unwrap_or_else(|e| panic!("{text:?}: Qt reads it, qshm refuses: {e}"));
                assert_eq!(key.kind().qt_value(), qt_type, "{text:?}");
                assert_eq!(key.native(), native, "{text:?}");
                assert_eq!(key.to_string(), printed, "{text:?}");
                // and what Qt prints reads back to the same key
                assert_eq!(printed.parse::<NativeIpcKey>().unwrap(), key, "{text:?}");
            }
            None => {
                let err = ours.expect_err(text);
                assert_eq!(err.kind(), SharedMemoryError::KeyError, "{text:?}");
            }
        }
    }
}

#[test]
fn the_issues_odd_strings_read_as_in_qt() {
    // accepted by Qt, refused by qshm before
    for (text, native) in [
        ("posix:/a%zz", "/a%zz"),
        ("posix:/a%2", "/a%2"),
        ("posix:/%FF", "/\u{fffd}"),
    ] {
        assert_eq!(text.parse::<NativeIpcKey>().unwrap().native(), native, "{text}");
    }
    // refused by Qt (an empty query item is an unknown one), accepted by qshm before
    assert!("posix:/x?&legacyKey=y".parse::<NativeIpcKey>().is_err());
}

#[test]
fn system_v_types_with_a_project_id_read_and_print_as_in_qt() {
    let t = KeyType::system_v(b'T').unwrap();
    let key: NativeIpcKey = "systemv-84:/tmp/x".parse().unwrap();
    assert_eq!(key, NativeIpcKey::new("/tmp/x", t));
    assert_eq!(key.to_string(), "systemv-84:/tmp/x");
    assert_eq!(key.kind().ftok_project_id(), Some(84));
    // 'Q' spelled out is plain System V, printed as Qt prints it
    let q: NativeIpcKey = "systemv-81:/tmp/x".parse().unwrap();
    assert_eq!(q.kind(), KeyType::SystemV);
    assert_eq!(q.to_string(), "systemv:/tmp/x");
    for id in 1..=255u8 {
        let kind = KeyType::system_v(id).unwrap();
        assert_eq!(kind.qt_value(), u16::from(id));
        assert_eq!(KeyType::from_qt_value(u16::from(id)), Some(kind));
        assert_eq!(kind.as_str().parse::<KeyType>().unwrap(), kind);
        let expected = if id == b'Q' {
            "systemv".to_owned()
        } else {
            format!("systemv-{id}")
        };
        assert_eq!(kind.as_str(), expected);
        let key = NativeIpcKey::new("/k", kind);
        assert_eq!(key.to_string().parse::<NativeIpcKey>().unwrap(), key);
    }
    assert_eq!(KeyType::system_v(0), None);
    assert_eq!(KeyType::from_qt_value(0), None);
    assert_eq!(KeyType::from_qt_value(0x101), None); // Windows
    assert_eq!(KeyType::from_qt_value(0x100), Some(KeyType::PosixRealtime));
    assert_eq!(SystemVId::new(b'Q'), None);
    assert_eq!(SystemVId::new(0), None);
    assert_eq!(SystemVId::new(b'T').map(SystemVId::get), Some(84));
}

#[test]
fn derivations_keep_the_project_id_and_use_the_system_v_paths() {
    // Qt 6.11 (PyQt6): QSharedMemory::legacyNativeKey("market", QNativeIpcKey::Type(84))
    // and platformSafeKey("/abs/path", Type(84))
    let t = KeyType::system_v(b'T').unwrap();
    let k = legacy_key_in("market", IpcType::SharedMemory, t, || "/tmp".to_owned());
    assert_eq!(k.kind(), t);
    assert_eq!(
        k.to_string(),
        "systemv-84:/tmp/qipc_sharedmemory_market5c9f73af73334ffe350c60ec076e5744db0ecda3?legacyKey=market"
    );
    let sem = legacy_key_in("market", IpcType::SystemSemaphore, t, || "/tmp".to_owned());
    assert_eq!(
        sem.to_string(),
        "systemv-84:/tmp/qipc_systemsem_market5c9f73af73334ffe350c60ec076e5744db0ecda3?legacyKey=market"
    );
    // the lock's semaphore of a legacy key has the segment's type
    assert_eq!(semaphore_key(&k).kind(), t);
    let abs = platform_safe_key_in("/abs/path", t, || Err("unused".to_owned()));
    assert_eq!(abs.to_string(), "systemv-84:/abs/path");
    let rel = platform_safe_key_in("market", t, || Ok("/tmp/runtime-root".to_owned()));
    assert_eq!(rel.to_string(), "systemv-84:/tmp/runtime-root/market");
    assert_eq!(
        legacy_key_in("", IpcType::SharedMemory, t, || "/tmp".to_owned()).to_string(),
        "systemv-84:"
    );
}

#[test]
fn native_ipc_key_has_qts_default_setters_and_validity() {
    // QNativeIpcKey(): empty, DefaultTypeForOs, valid
    let key = NativeIpcKey::default();
    assert!(key.is_empty() && key.is_valid());
    assert_eq!(key.kind(), KeyType::default_for_os());
    // setNativeKey drops the legacy key; setType keeps both keys
    let mut legacy = legacy_key_in(
        "key1",
        IpcType::SharedMemory,
        KeyType::PosixRealtime,
        || unreachable!(),
    );
    let native = legacy.native().to_owned();
    let mut copy = legacy.clone();
    copy.set_kind(KeyType::SystemV);
    assert_eq!(
        (copy.native(), copy.legacy_key()),
        (native.as_str(), Some("key1"))
    );
    legacy.set_native(native.clone());
    assert_eq!(legacy.legacy_key(), None);
    assert_ne!(
        legacy,
        legacy_key_in(
            "key1",
            IpcType::SharedMemory,
            KeyType::PosixRealtime,
            || unreachable!()
        )
    );
}

#[test]
fn a_semaphore_name_too_long_for_sem_open_is_a_key_error() {
    // Qt 6.11 refuses create of POSIX legacy keys of 197 letters or more: "unable to set
    // key on lock (QSystemSemaphore::handle: key too long)"; 196 letters work.
    let fits = legacy_key_in(
        &"a".repeat(196),
        IpcType::SharedMemory,
        KeyType::PosixRealtime,
        || unreachable!(),
    );
    assert!(fits.check_usable().is_ok());
    let long = legacy_key_in(
        &"a".repeat(197),
        IpcType::SharedMemory,
        KeyType::PosixRealtime,
        || unreachable!(),
    );
    let why = long.check_usable().unwrap_err();
    assert_eq!(why.kind, SharedMemoryError::KeyError);
    assert!(
        why.detail.as_deref().unwrap_or_default().contains("252 bytes"),
        "{why:?}"
    );
    // digits and punctuation are dropped from the name: they do not count
    let digits = format!("{}{}", "a".repeat(196), "1".repeat(50));
    assert!(
        legacy_key_in(
            &digits,
            IpcType::SharedMemory,
            KeyType::PosixRealtime,
            || unreachable!()
        )
        .check_usable()
        .is_ok()
    );
    // a native POSIX key is its own semaphore's name
    assert!(
        NativeIpcKey::new(format!("/{}", "n".repeat(251)), KeyType::PosixRealtime)
            .check_usable()
            .is_ok()
    );
    assert!(
        NativeIpcKey::new(format!("/{}", "n".repeat(252)), KeyType::PosixRealtime)
            .check_usable()
            .is_err()
    );
}

#[test]
fn odd_strings_parse_like_the_installed_qt() {
    let Some(python) = qt_python("odd_strings_parse_like_the_installed_qt") else {
        return;
    };
    const SCRIPT: &str = r#"
import json, sys
from PyQt6.QtCore import QNativeIpcKey
out = []
for text in json.load(sys.stdin):
    k = QNativeIpcKey.fromString(text)
    out.append([k.type().value, k.nativeKey(), k.toString()] if k.isValid() else None)
print(json.dumps(out))
"#;
    use std::io::Write;
    let texts: Vec<&str> = QT_READS.iter().map(|(t, _)| *t).collect();
    let mut child = std::process::Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(&texts).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let live: Vec<Option<(u16, String, String)>> = serde_json::from_slice(&out.stdout).unwrap();
    for ((text, pinned), live) in QT_READS.iter().zip(live) {
        let pinned = pinned.map(|(t, n, s)| (t, n.to_owned(), s.to_owned()));
        assert_eq!(
            pinned, live,
            "{text:?}: the pinned result is not what this Qt reads"
        );
    }
}
