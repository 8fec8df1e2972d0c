//! Key derivation for arbitrary UTF-8: `SharedMemory::legacy_native_key`,
//! `SystemSemaphore::legacy_native_key` and `platform_safe_key` never panic, and
//!
//! * a legacy native key is `[TMP]/` (System V) or `/` (POSIX), then the prefix
//!   (`qipc_sharedmemory_` or `qipc_systemsem_`), the key's ASCII letters in order and the
//!   40 lowercase hex digits of the SHA-1 of its UTF-8 bytes (an independent oracle here),
//!   and it remembers the legacy key;
//! * a platform-safe key is `/key` (POSIX), `key` (System V, absolute) or ends in `/key`;
//! * every key's string form parses back to an equal key.
//!
//! No OS object is created. Input: byte 0 chooses the key type (bit 0: POSIX, else
//! System V with the other bits as the `ftok` project id, 0 meaning `'Q'`), the rest is
//! the key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qshm::{KeyType, NativeIpcKey, SharedMemory, SystemSemaphore};
use sha1::{Digest, Sha1};

fn round_trips(key: &NativeIpcKey) {
    let text = key.to_string();
    let back: NativeIpcKey = text
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} does not parse back: {e}"));
    assert_eq!(&back, key, "string form {text:?}");
}

fn check_legacy(key: &str, kind: KeyType, prefix: &str, derived: &NativeIpcKey) {
    assert_eq!(derived.kind(), kind);
    if key.is_empty() {
        assert!(derived.is_empty(), "empty key gave {derived:?}");
        round_trips(derived);
        return;
    }
    assert_eq!(derived.legacy_key(), Some(key));
    let native = derived.native();
    let (dir, name) = native.rsplit_once('/').expect("a native key has a '/'");
    if kind.is_system_v() {
        // Qt's temp dir, for every ftok project id: absolute, or empty when unusable
        assert!(dir.is_empty() || dir.starts_with('/'), "{native:?}");
    } else {
        assert_eq!(dir, "", "POSIX name {native:?} must be '/name'");
    }
    let rest = name
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{native:?} lacks {prefix}"));
    assert!(rest.len() >= 40, "{native:?}");
    let (letters, hex) = rest.split_at(rest.len() - 40);
    assert!(letters.bytes().all(|b| b.is_ascii_alphabetic()), "{native:?}");
    assert!(
        hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{native:?}"
    );
    let expected_letters: String = key.chars().filter(char::is_ascii_alphabetic).collect();
    assert_eq!(letters, expected_letters);
    let expected_hex: String = Sha1::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, expected_hex);
    round_trips(derived);
}

fn check_platform_safe(key: &str, kind: KeyType, derived: &NativeIpcKey) {
    assert_eq!(derived.kind(), kind);
    assert_eq!(derived.legacy_key(), None);
    let native = derived.native();
    if key.is_empty() {
        assert!(derived.is_empty());
    } else {
        match kind {
            KeyType::PosixRealtime => assert_eq!(native, format!("/{key}")),
            _ if key.starts_with('/') => assert_eq!(native, key),
            _ => assert!(native.ends_with(&format!("/{key}")), "{native:?}"),
        }
    }
    round_trips(derived);
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // bit 0: POSIX; else System V with the ftok project id in the other bits ('Q' for 0)
    let kind = if flags & 1 == 0 {
        KeyType::system_v(flags >> 1).unwrap_or(KeyType::SystemV)
    } else {
        KeyType::PosixRealtime
    };
    let key = String::from_utf8_lossy(rest);
    let key = key.as_ref();

    let shm = SharedMemory::legacy_native_key(key, kind);
    check_legacy(key, kind, "qipc_sharedmemory_", &shm);
    let sem = SystemSemaphore::legacy_native_key(key, kind);
    check_legacy(key, kind, "qipc_systemsem_", &sem);

    let safe = SharedMemory::platform_safe_key(key, kind);
    check_platform_safe(key, kind, &safe);
    assert_eq!(SystemSemaphore::platform_safe_key(key, kind), safe);
});
