//! Qt's "last error" (`error()`, `errorString()`), kept beside the `Result`s.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::SharedMemory;
use crate::error::{Error, Result, SharedMemoryError};

/// Qt-style "last error" of a handle. The success path (every lock) only reads one
/// atomic flag; the mutex is touched when an error is recorded or cleared.
#[derive(Default)]
pub(super) struct LastError {
    set: AtomicBool,
    error: Mutex<Option<(SharedMemoryError, String)>>,
}

impl SharedMemory {
    /// The last error of this handle (Qt's `error()`); `NoError` after a success.
    pub fn error(&self) -> SharedMemoryError {
        self.last_error_entry()
            .map_or(SharedMemoryError::NoError, |e| e.0)
    }

    /// Text of the last error (Qt's `errorString()`); empty after a success.
    #[doc(alias = "errorString")]
    pub fn error_string(&self) -> String {
        self.last_error_entry().map(|e| e.1).unwrap_or_default()
    }

    fn last_error_entry(&self) -> Option<(SharedMemoryError, String)> {
        if !self.last_error.set.load(Ordering::Relaxed) {
            return None;
        }
        self.last_error.error.lock().ok().and_then(|e| e.clone())
    }

    #[inline]
    pub(crate) fn record<T>(&self, result: Result<T>) -> Result<T> {
        // The success path (every lock and unlock) costs one relaxed load.
        if result.is_err() || self.last_error.set.load(Ordering::Relaxed) {
            self.record_slow(result.as_ref().err());
        }
        result
    }

    #[cold]
    fn record_slow(&self, error: Option<&Error>) {
        if let Ok(mut last) = self.last_error.error.lock() {
            let entry = error.map(|e| (e.kind(), e.to_string()));
            self.last_error.set.store(entry.is_some(), Ordering::Relaxed);
            *last = entry;
        }
    }
}
