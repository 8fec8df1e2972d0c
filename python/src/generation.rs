//! `Generation`: the change counter of `notify_all`/`wait_for_change`, kept as the
//! library's own value (it has no public constructor from a number, and needs none).

use pyo3::prelude::*;

/// How many times a segment's data was announced as changed (``notify_all()``), as seen
/// at some moment; pass it to ``SharedMemory.wait_for_change`` to sleep until the next
/// change. ``value`` is the 32-bit counter (it wraps around).
#[pyclass(frozen, module = "qshm")]
pub(crate) struct Generation(pub(crate) qshm::Generation);

impl From<qshm::Generation> for Generation {
    fn from(generation: qshm::Generation) -> Generation {
        Generation(generation)
    }
}

#[pymethods]
impl Generation {
    /// The counter's value.
    #[getter]
    fn value(&self) -> u32 {
        self.0.value()
    }

    fn __int__(&self) -> u32 {
        self.0.value()
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<Generation>().is_ok_and(|o| o.get().0 == self.0)
    }

    fn __hash__(&self) -> u64 {
        u64::from(self.0.value())
    }

    fn __repr__(&self) -> String {
        format!("qshm.Generation({})", self.0.value())
    }
}
