//! Qt's "last error" (`error()`, `errorString()`), kept beside the `Result`s.

use super::SharedMemory;
pub(super) use crate::error::LastError;
use crate::error::{Result, SharedMemoryError};

impl SharedMemory {
    /// The last error of this handle (Qt's `error()`); `NoError` after a success.
    pub fn error(&self) -> SharedMemoryError {
        self.last_error.get().map_or(SharedMemoryError::NoError, |e| e.0)
    }

    /// Text of the last error (Qt's `errorString()`); empty after a success.
    #[doc(alias = "errorString")]
    pub fn error_string(&self) -> String {
        self.last_error.get().map(|e| e.1).unwrap_or_default()
    }

    #[inline]
    pub(crate) fn record<T>(&self, result: Result<T>) -> Result<T> {
        self.last_error.record(&result);
        result
    }
}
