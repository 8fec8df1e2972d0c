//! Qt's own autotests for `QNativeIpcKey`, ported to qshm's `NativeIpcKey` and `KeyType`:
//! qtbase `tests/auto/corelib/ipc/qnativeipckey/tst_qnativeipckey.cpp` (Qt 6.x), every
//! function and data row, written anew in Rust. Trials are named
//! `<Qt test function>[::<data row>]`.
//!
//! # Summary
//!
//! | | Qt functions | Qt rows | qshm trials |
//! |---|---|---|---|
//! | exist | 14 | 241 | 241 |
//! | not applicable: Windows-only | | 28 (`toString` and `fromString` of the 14 `windows-*` key rows) | reported ignored |
//! | not applicable: invalid key | | 1 (`toString::invalid`: a key of the invalid type) | reported ignored |
//! | apply | 14 | 212 | 212 |
//! | pass | 14 | 212 | 212 |
//!
//! # Documented differences (the trials assert qshm's behaviour; comments name Qt's)
//!
//! * qshm has no invalid key type: where Qt's `fromString` returns an invalid key,
//!   parsing a `NativeIpcKey` is a `KeyError` (that is what those rows check), and where
//!   Qt sets the invalid type (`construct`, `equality`) or Windows (`getSetCheck`,
//!   `swap`) only as some other type, SystemV-T stands in (`QNativeIpcKey::Type('T')`).
//!   `construct`'s first block, a key of the invalid type, has nothing to construct.
//! * Qt's `windows:` keys parse in Qt; qshm refuses them (no Windows objects on Linux):
//!   the `fromString::windows-*` rows are the Windows-only ones above, while the rows
//!   where Qt finds no key (`windows-nocolon`, `windows-junk`, `junk-windows-colon`) apply.
//! * Qt's copy and move constructors and assignments are Rust's `clone` and moves;
//!   `compareCompiles` is `NativeIpcKey: Eq + Hash` at compile time; `qHash(key, seed)` is
//!   a `Hasher` with a seed written first; `setNativeKey` is `set_native`, `setType`
//!   `set_kind`.
//! * `legacyKeys` checks that the string form carries the legacy key the way Qt's
//!   `QUrl::setQuery` encodes it; the encodings Qt 6.11 computes for the rows are pinned
//!   in [`ENCODED_LEGACY_KEYS`].

use std::hash::{Hash, Hasher};

use libtest_mimic::{Arguments, Failed, Trial};
use qshm::{KeyType, NativeIpcKey, SharedMemory, SharedMemoryError};

#[macro_use]
mod support;

type R = Result<(), Failed>;

/// Qt's `QNativeIpcKey::Type('T')`, standing in for Qt's invalid and Windows types.
fn other_type() -> KeyType {
    KeyType::system_v(b'T').expect("'T' is a System V project id")
}

/// Qt's `makeLegacyKey`: `QSharedMemory::legacyNativeKey`.
fn make_legacy_key(key: &str, kind: KeyType) -> NativeIpcKey {
    SharedMemory::legacy_native_key(key, kind)
}

// ----------------------------------------------------------------------------- rows

/// Qt's `toString_data` key rows: name, native key, its encoding in the string form.
const KEY_ROWS: [(&str, &str, &str); 14] = [
    ("empty", "", ""),
    ("text", "foobar", "foobar"),
    ("pathlike", "/sometext", "/sometext"),
    ("objectlike", "Global\\sometext", "Global\\sometext"),
    ("colon-slash", ":/", ":/"),
    ("slash-colon", "/:", "/:"),
    ("percent", "%", "%25"),
    ("question-hash", "?#", "%3F%23"),
    ("hash-question", "#?", "%23%3F"),
    ("double-slash", "//", "/%2F"),
    ("triple-slash", "///", "/%2F/"),
    ("non-ascii", "\u{e9}", "\u{e9}"),
    // Qt's "\xa0\xff"_L1: Latin-1, so the characters U+00A0 and U+00FF
    ("non-utf8", "\u{a0}\u{ff}", "\u{a0}\u{ff}"),
    (
        "non-latin1",
        "\u{100}.\u{2000}.\u{10000}",
        "\u{100}.\u{2000}.\u{10000}",
    ),
];

/// The prefixes of `toString_data`'s `addRow` calls, with the type (`None`: Windows).
fn prefixes() -> [(&'static str, Option<KeyType>); 6] {
    [
        ("systemv", Some(KeyType::SystemV)),
        ("posix", Some(KeyType::PosixRealtime)),
        ("windows", None),
        ("systemv-1", KeyType::system_v(1)),
        ("systemv-84", KeyType::system_v(b'T')),
        ("systemv-255", KeyType::system_v(0xff)),
    ]
}

/// `legacyKeys_data`'s legacy keys and how Qt 6.11's `QUrl` encodes `legacyKey=<key>` in a
/// query (`setQuery(..., DecodedMode)`, `toString(RemoveScheme | RemoveAuthority |
/// DecodeReserved)`), printed by PyQt6 6.11.
const ENCODED_LEGACY_KEYS: [(&str, &str, &str); 14] = [
    ("empty", "", ""),
    ("text", "foobar", "?legacyKey=foobar"),
    ("pathlike", "/sometext", "?legacyKey=/sometext"),
    ("objectlike", "Global\\sometext", "?legacyKey=Global\\sometext"),
    ("colon-slash", ":/", "?legacyKey=:/"),
    ("slash-colon", "/:", "?legacyKey=/:"),
    ("percent", "%", "?legacyKey=%25"),
    ("question-hash", "?#", "?legacyKey=?%23"),
    ("hash-question", "#?", "?legacyKey=%23?"),
    ("double-slash", "//", "?legacyKey=//"),
    ("triple-slash", "///", "?legacyKey=///"),
    ("non-ascii", "\u{e9}", "?legacyKey=\u{e9}"),
    ("non-utf8", "\u{a0}\u{ff}", "?legacyKey=\u{a0}\u{ff}"),
    (
        "non-latin1",
        ":\u{100}.\u{2000}.\u{10000}",
        "?legacyKey=:\u{100}.\u{2000}.\u{10000}",
    ),
];

/// What a `fromString` row expects: a key, or Qt's invalid key (`None`).
type Expected = Option<NativeIpcKey>;

/// `fromString_data` beyond the `toString_data` rows.
fn extra_from_string_rows() -> Vec<(String, String, Expected)> {
    let valid = Some(NativeIpcKey::new("/foo", KeyType::PosixRealtime));
    let mut rows: Vec<(String, String, Expected)> = vec![
        (
            "systemv-alias".into(),
            "systemv-81:".into(),
            Some(NativeIpcKey::new("", KeyType::SystemV)),
        ),
        (
            "systemv-zeropadded".into(),
            "systemv-009:".into(),
            Some(NativeIpcKey::new("", KeyType::system_v(9).expect("id 9"))),
        ),
        ("percent-encoded".into(), "posix:%2f%66o%6f".into(), valid.clone()),
        (
            "percent-utf8".into(),
            "posix:%C4%80.%E2%80%80.%F0%90%80%80".into(),
            Some(NativeIpcKey::new(
                "\u{100}.\u{2000}.\u{10000}",
                KeyType::PosixRealtime,
            )),
        ),
        // fragments are ignored
        ("with-fragment".into(), "posix:/foo#bar".into(), valid.clone()),
        ("with-fragmentquery".into(), "posix:/foo#bar?baz".into(), valid),
        // but unknown query items are not
        ("with-query".into(), "posix:/foo?bar".into(), None),
        ("with-queryfragment".into(), "posix:/foo?bar#baz".into(), None),
    ];
    // add some ones that won't parse well
    for (name, text) in [
        ("positive-number", "81"),
        ("negative-number", "-81"),
        ("invalidprefix", "invalidprefix:"),
        ("systemv-nodash", "systemv255"),
        ("systemv-doubledash", "systemv--255:"),
        ("systemv-plus", "systemv+255"),
        ("systemv-hex", "systemv-0x01:"),
        ("systemv-too-low", "systemv-0:"),
        ("systemv-too-high", "systemv-256"),
        ("systemv-overflow-15bit", "systemv-32769:"),
        ("systemv-overflow-16bit", "systemv-65537:"),
        ("systemv-overflow-31bit", "systemv-2147483649:"),
        ("systemv-overflow-32bit", "systemv-4294967297:"),
    ] {
        rows.push((name.into(), text.into(), None));
    }
    for name in ["systemv", "posix", "windows", "systemv-1", "systemv-255"] {
        rows.push((format!("{name}-nocolon"), name.into(), None));
        rows.push((format!("{name}-junk"), format!("{name}junk"), None));
        rows.push((format!("junk-{name}-colon"), format!("junk:{name}:"), None));
    }
    rows
}

// ----------------------------------------------------------------------------- trials

fn main() {
    let mut trials = vec![
        Trial::test("compareCompiles", compare_compiles),
        Trial::test("defaultTypes", default_types),
        Trial::test("construct", construct),
        Trial::test("getSetCheck", get_set_check),
        Trial::test("equality", equality),
        Trial::test("hash", hash),
        Trial::test("swap", swap),
    ];
    // Qt: QTest::newRow("invalid") << QString() << QNativeIpcKey(QNativeIpcKey::Type(0))
    trials.push(Trial::test("toString::invalid", || Ok(())).with_ignored_flag(true));
    // fromString of the same row: QString() is no key
    trials.push(Trial::test("fromString::invalid", || from_string("", None)));
    for (prefix, kind) in prefixes() {
        for (name, native, encoded) in KEY_ROWS {
            let row = format!("{prefix}-{name}");
            let string = format!("{prefix}:{encoded}");
            match kind {
                Some(kind) => {
                    let key = NativeIpcKey::new(native, kind);
                    let (s, k) = (string.clone(), key.clone());
                    trials.push(Trial::test(format!("toString::{row}"), move || to_string(&s, &k)));
                    trials.push(Trial::test(format!("fromString::{row}"), move || {
                        from_string(&string, Some(key))
                    }));
                }
                None => {
                    // Windows only: qshm refuses windows: keys (module docs)
                    for f in ["toString", "fromString"] {
                        trials.push(Trial::test(format!("{f}::{row}"), || Ok(())).with_ignored_flag(true));
                    }
                }
            }
        }
    }
    for (row, string, expected) in extra_from_string_rows() {
        trials.push(Trial::test(format!("fromString::{row}"), move || {
            from_string(&string, expected)
        }));
    }
    // legacyKeys_data: DefaultTypeForOs, then legacyDefaultTypeForOs() (it differs on Linux)
    for (label, kind) in [
        ("posix", KeyType::default_for_os()),
        ("systemv", KeyType::legacy_default()),
    ] {
        for (name, legacy, encoded) in ENCODED_LEGACY_KEYS {
            trials.push(Trial::test(format!("legacyKeys::{label}-{name}"), move || {
                legacy_keys(kind, legacy, encoded)
            }));
        }
    }
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}

/// `compareCompiles`: the equality operators exist (and a hash, as Qt's `qHash`).
fn compare_compiles() -> R {
    fn comparable<T: Eq + Hash>() {}
    comparable::<NativeIpcKey>();
    comparable::<KeyType>();
    let key = NativeIpcKey::default();
    qverify!(key == key.clone());
    qverify!(!(key != key.clone()));
    Ok(())
}

/// `defaultTypes`.
fn default_types() -> R {
    // because the letter Q looked nice in Håvard's Emacs font back in the 1990s
    qcompare!(KeyType::SystemV.qt_value(), u16::from(b'Q'));
    let (default, legacy) = (KeyType::default_for_os(), KeyType::legacy_default());
    // isKnown: a type Qt names (SystemV, PosixRealtime, Windows)
    for kind in [default, legacy] {
        qverify!(
            matches!(kind, KeyType::SystemV | KeyType::PosixRealtime),
            "{kind:?}"
        );
    }
    qcompare!(default, KeyType::PosixRealtime);
    qcompare!(legacy, KeyType::SystemV);
    Ok(())
}

/// Qt's checks of an empty key of `DefaultTypeForOs`.
fn check_empty_default(key: &NativeIpcKey) -> R {
    qverify!(key.native().is_empty());
    qverify!(key.is_empty());
    qverify!(key.is_valid());
    qcompare!(key.kind(), KeyType::default_for_os());
    Ok(())
}

/// Qt's checks of the key "dummy" of `DefaultTypeForOs`.
fn check_dummy(key: &NativeIpcKey) -> R {
    qcompare!(key.native(), "dummy");
    qverify!(!key.is_empty());
    qverify!(key.is_valid());
    qcompare!(key.kind(), KeyType::default_for_os());
    Ok(())
}

/// `construct`: default and native-key construction, copies, moves, assignments.
fn construct() -> R {
    // Qt's first block, QNativeIpcKey(QNativeIpcKey::Type{}) is not valid: qshm has no
    // invalid type (module docs)
    {
        let mut key = NativeIpcKey::default();
        check_empty_default(&key)?;
        let mut copy = key.clone();
        check_empty_default(&copy)?;
        let moved = copy.clone(); // Qt: QNativeIpcKey moved(std::move(copy))
        check_empty_default(&moved)?;
        key.set_kind(other_type()); // Qt: setType({})
        key.set_native("something else");
        key = moved;
        check_empty_default(&key)?;
        copy.set_kind(other_type());
        copy.set_native("something else");
        copy = key.clone();
        check_empty_default(&copy)?;
    }
    {
        // Qt: QNativeIpcKey key("dummy"): DefaultTypeForOs
        let mut key = NativeIpcKey::new("dummy", KeyType::default_for_os());
        check_dummy(&key)?;
        let mut copy = key.clone();
        check_dummy(&key)?;
        check_dummy(&copy)?;
        let moved = copy.clone();
        check_dummy(&key)?;
        check_dummy(&moved)?;
        key.set_kind(other_type());
        key.set_native("something else");
        key = moved;
        check_dummy(&key)?;
        copy.set_kind(other_type());
        copy.set_native("something else");
        copy = key.clone();
        check_dummy(&key)?;
        check_dummy(&copy)?;
    }
    Ok(())
}

/// `getSetCheck` (Qt starts from Windows; SystemV-T here).
fn get_set_check() -> R {
    let mut key = NativeIpcKey::new("key1", other_type());
    qverify!(key.is_valid());
    qverify!(!key.is_empty());
    qcompare!(key.native(), "key1");
    qcompare!(key.kind(), other_type());

    key.set_kind(KeyType::SystemV);
    qverify!(key.is_valid());
    qverify!(!key.is_empty());
    qcompare!(key.kind(), KeyType::SystemV);

    key.set_native("key2");
    qcompare!(key.native(), "key2");
    Ok(())
}

/// Qt's `QT_TEST_EQUALITY_OPS(a, b, equal)`.
fn equality_ops(a: &NativeIpcKey, b: &NativeIpcKey, equal: bool) -> R {
    qcompare!(a == b, equal);
    qcompare!(b == a, equal);
    qcompare!(a != b, !equal);
    qcompare!(b != a, !equal);
    Ok(())
}

/// `equality`.
fn equality() -> R {
    let (mut key1, mut key2) = (NativeIpcKey::default(), NativeIpcKey::default());
    qcompare!(key1, key2);
    equality_ops(&key1, &key2, true)?;

    key1.set_native("key1");
    qverify!(key1 != key2);
    equality_ops(&key1, &key2, false)?;

    key2.set_kind(other_type()); // Qt: setType({})
    equality_ops(&key1, &key2, false)?;

    key2.set_native(key1.native());
    equality_ops(&key1, &key2, false)?;

    key2.set_kind(KeyType::default_for_os());
    qcompare!(key1, key2);
    equality_ops(&key1, &key2, true)?;

    key1 = make_legacy_key("key1", KeyType::default_for_os());
    equality_ops(&key1, &key2, false)?;

    key2 = key1.clone();
    qcompare!(key1, key2);
    equality_ops(&key1, &key2, true)?;

    // just setting the native key won't make them equal again!
    key2.set_native(key1.native().to_owned());
    equality_ops(&key1, &key2, false)?;
    Ok(())
}

/// Qt's `qHash(key, seed)`: the key hashed after the seed.
fn q_hash(key: &NativeIpcKey, seed: u64) -> u64 {
    // SipHash with fixed keys: the same for equal keys, in every run
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut hasher);
    key.hash(&mut hasher);
    hasher.finish()
}

/// `hash`.
fn hash() -> R {
    let key1 = NativeIpcKey::new("key1", KeyType::default_for_os());
    let key2 = key1.clone();
    qcompare!(q_hash(&key1, 0), q_hash(&key2, 0));
    qcompare!(q_hash(&key1, 123), q_hash(&key2, 123));
    Ok(())
}

/// `swap` (Qt's second key is of Windows type; SystemV-T here).
fn swap() -> R {
    let mut key1 = NativeIpcKey::new("key1", KeyType::PosixRealtime);
    let mut key2 = NativeIpcKey::new("key2", other_type());

    // self-swaps: nothing to do in Rust (two &mut of one value cannot exist)
    qcompare!(key1.native(), "key1");
    qcompare!(key1.kind(), KeyType::PosixRealtime);
    qcompare!(key2.native(), "key2");
    qcompare!(key2.kind(), other_type());

    std::mem::swap(&mut key1, &mut key2);
    qcompare!(key2.native(), "key1");
    qcompare!(key2.kind(), KeyType::PosixRealtime);
    qcompare!(key1.native(), "key2");
    qcompare!(key1.kind(), other_type());

    std::mem::swap(&mut key1, &mut key2);
    qcompare!(key1.native(), "key1");
    qcompare!(key1.kind(), KeyType::PosixRealtime);
    qcompare!(key2.native(), "key2");
    qcompare!(key2.kind(), other_type());

    key1 = make_legacy_key("key1", KeyType::default_for_os());
    qcompare!(key1.kind(), KeyType::default_for_os());
    std::mem::swap(&mut key1, &mut key2);
    qcompare!(key1.kind(), other_type());
    qcompare!(key2.kind(), KeyType::default_for_os());
    Ok(())
}

/// `toString`.
fn to_string(string: &str, key: &NativeIpcKey) -> R {
    qcompare!(key.to_string(), string);
    Ok(())
}

/// `fromString`: Qt's invalid key is qshm's `KeyError`.
fn from_string(string: &str, expected: Expected) -> R {
    match (string.parse::<NativeIpcKey>(), expected) {
        (Ok(key), Some(expected)) => qcompare!(key, expected),
        (Err(e), None) => qcompare!(e.kind(), SharedMemoryError::KeyError),
        (got, expected) => {
            return Err(format!("fromString({string:?}): got {got:?}, Qt gives {expected:?}").into());
        }
    }
    Ok(())
}

/// `legacyKeys`: a legacy key's string form parses back to it and carries the legacy key.
fn legacy_keys(kind: KeyType, legacy_key: &str, encoded: &str) -> R {
    let key = make_legacy_key(legacy_key, kind);
    qcompare!(key.kind(), kind);

    let string = key.to_string();
    let key2: NativeIpcKey = string.parse()?;
    qcompare!(key2, key);
    equality_ops(&key, &key2, true)?;

    if !legacy_key.is_empty() {
        // confirm it shows up in the encoded form
        qverify!(string.contains(encoded), "{string}");
    }
    Ok(())
}
