//! Arguments of `SharedMemory`: segment sizes from Python ints (any int is taken, and one
//! no segment can have is the library's `InvalidSize`, never an `OverflowError` or a
//! wrap-around), and the constructors' options.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyInt;
use qshm::SharedMemoryError;

use crate::{errors, keys};

/// A segment size: an `int` from 1 to what a segment can have; `InvalidSize` otherwise.
pub(crate) fn size_arg(size: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    let Ok(int) = size.cast::<PyInt>() else {
        return Err(PyTypeError::new_err(format!(
            "size must be an int (a number of bytes), not {}",
            size.get_type().name()?
        )));
    };
    match int.extract::<i128>() {
        Ok(n) if n < 0 => Err(errors::own(
            SharedMemoryError::InvalidSize,
            "create",
            name,
            &format!("size {n} is negative: a segment has at least 1 byte"),
        )),
        Ok(n) => usize::try_from(n).map_err(|_| too_big(name, &n.to_string())),
        Err(_) => Err(too_big(name, &int.to_string())),
    }
}

fn too_big(name: &str, size: &str) -> PyErr {
    errors::own(
        SharedMemoryError::InvalidSize,
        "create",
        name,
        &format!("{size} bytes is more than any segment can have"),
    )
}

/// Apply the keyword options of the constructors.
pub(crate) fn configured(
    mut shm: qshm::SharedMemory,
    lock_mode: Option<&Bound<'_, PyAny>>,
    permissions: Option<u32>,
) -> PyResult<qshm::SharedMemory> {
    if let Some(mode) = lock_mode {
        shm = shm.with_lock_mode(keys::lock_mode_arg(mode)?);
    }
    if let Some(perms) = permissions {
        if perms > 0o777 {
            return Err(PyValueError::new_err(format!(
                "permissions must be a file mode such as 0o600 (at most 0o777), not {perms:#o}"
            )));
        }
        shm = shm.with_permissions(perms);
    }
    Ok(shm)
}
