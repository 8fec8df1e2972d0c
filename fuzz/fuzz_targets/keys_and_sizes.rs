//! Fuzz keys, native-key strings and sizes: every input gives a value or a typed error,
//! never a panic, and nothing is left behind.
//! Run: `cargo +nightly fuzz run keys_and_sizes` (needs cargo-fuzz and a nightly toolchain).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qshm::{AccessMode, KeyType, NativeIpcKey, SharedMemory};

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let size = usize::from_le_bytes(data[..8].try_into().unwrap()) >> (data[8] % 64);
    let kind = if data[8] & 0x80 == 0 {
        KeyType::SystemV
    } else {
        KeyType::PosixRealtime
    };
    let text = String::from_utf8_lossy(&data[9..]);
    // the string form parser on arbitrary text
    if let Ok(key) = text.parse::<NativeIpcKey>() {
        assert_eq!(key.to_string().parse::<NativeIpcKey>().ok(), Some(key));
    }
    // derivation and create/attach with an arbitrary (but namespaced) legacy key and size
    let legacy = format!("qshm-fuzz-{}-{text}", std::process::id());
    let mut shm = SharedMemory::with_key_type(&legacy, kind);
    if shm.create(size, AccessMode::ReadWrite).is_ok() {
        assert!(shm.size() >= size);
        let _ = shm.detach();
    }
    let _ = shm.attach(AccessMode::ReadOnly);
    let _ = SharedMemory::force_remove(shm.native_ipc_key());
});
