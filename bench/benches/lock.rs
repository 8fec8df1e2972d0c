//! Criterion: uncontended lock+unlock, qshm's two modes and raw_sync's mutex.

use criterion::{Criterion, criterion_group, criterion_main};
use qshm::{AccessMode, KeyType, LockMode, SharedMemory};
use raw_sync::locks::{LockInit, Mutex};
use shared_memory::ShmemConf;

fn lock_unlock(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock_unlock");
    for (name, kind, mode) in [
        ("qshm_fast", KeyType::PosixRealtime, LockMode::Fast),
        ("qshm_qt_posix", KeyType::PosixRealtime, LockMode::QtCompatible),
        ("qshm_qt_sysv", KeyType::SystemV, LockMode::QtCompatible),
    ] {
        let key = format!("qshm-criterion-{name}-{}", std::process::id());
        let mut shm = SharedMemory::with_key_type(&key, kind).with_lock_mode(mode);
        shm.create(4096, AccessMode::ReadWrite).expect("create");
        group.bench_function(name, |b| b.iter(|| drop(shm.lock().expect("lock"))));
    }
    let shmem = ShmemConf::new().size(4096).create().expect("create");
    // SAFETY: a fresh 4096-byte segment: mutex at 0, data at 128.
    let (mutex, _) = unsafe { Mutex::new(shmem.as_ptr(), shmem.as_ptr().add(128)) }.expect("raw_sync");
    group.bench_function("raw_sync_mutex", |b| b.iter(|| drop(mutex.lock().expect("lock"))));
    group.finish();
}

criterion_group!(benches, lock_unlock);
criterion_main!(benches);
