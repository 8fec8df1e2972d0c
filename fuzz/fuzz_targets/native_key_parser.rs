//! The native-key string parser (`str::parse::<NativeIpcKey>`, Qt's
//! `QNativeIpcKey::fromString`) on arbitrary text: it never panics, rejects with a
//! `KeyError`, and whatever it accepts prints (`to_string`, Qt's `toString`) to text that
//! parses back to an equal key, and prints the same again. The same input, used as a raw
//! native key (`NativeIpcKey::new`), must round-trip through its string form too, and
//! the key-type parser (`str::parse::<KeyType>`) on it never panics and round-trips.
//!
//! It found one bug (fuzz/regressions/native_key_parser/empty-legacy-key: an empty
//! `legacyKey` did not round-trip), fixed in `src/key.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qshm::{KeyType, NativeIpcKey, SharedMemoryError};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match text.parse::<NativeIpcKey>() {
        Ok(key) => {
            let printed = key.to_string();
            let back: NativeIpcKey = printed
                .parse()
                .unwrap_or_else(|e| panic!("{text:?} parsed, but its form {printed:?} does not: {e}"));
            assert_eq!(back, key, "{text:?} -> {printed:?}");
            assert_eq!(back.to_string(), printed);
        }
        Err(e) => {
            assert_eq!(e.kind(), SharedMemoryError::KeyError, "{text:?}: {e}");
            let _ = e.to_string();
        }
    }
    match text.parse::<KeyType>() {
        Ok(kind) => {
            assert_eq!(kind.to_string(), kind.as_str());
            assert_eq!(kind.as_str().parse::<KeyType>().ok(), Some(kind));
        }
        Err(e) => assert_eq!(e.kind(), SharedMemoryError::KeyError, "{text:?}: {e}"),
    }
    let other_id = KeyType::system_v(data.first().copied().unwrap_or(b'T')).unwrap_or(KeyType::SystemV);
    for kind in [KeyType::SystemV, KeyType::PosixRealtime, other_id] {
        let key = NativeIpcKey::new(text.as_ref(), kind);
        let printed = key.to_string();
        let back: NativeIpcKey = printed
            .parse()
            .unwrap_or_else(|e| panic!("native {text:?} printed as {printed:?} does not parse: {e}"));
        assert_eq!(back, key, "native {text:?} -> {printed:?}");
    }
});
