//! Copies to and from bytes that another process may be writing at the same moment: the
//! frames of a [`FrameWriter`](crate::FrameWriter) and the messages of a
//! [`Producer`](crate::Producer), whose readers find out afterwards (a sequence number
//! that moved) whether what they copied was torn, and then throw it away.
//!
//! Such a copy races with the other side's writes, so it must not be the compiler's own
//! `memcpy` built-in (Rust's memory model makes a racing non-atomic access undefined
//! behaviour, whatever is done with the bytes later, and the optimiser may assume nobody
//! else writes them). It is what C++'s proposal P1478 calls a byte-wise atomic memcpy:
//! every byte read (or written) atomically, relaxed; the caller puts fences around it.
//!
//! It is the C library's `memcpy`, called through a function pointer passed through
//! `std::hint::black_box`, so that the compiler sees a call to foreign code it knows
//! nothing about — as it sees inline assembly — not its `memcpy` built-in. What that code
//! does is loads and stores of bytes, each of which the hardware performs indivisibly:
//! exactly what a loop of relaxed `AtomicU8` accesses does, which is how the Rust model
//! may account for it. glibc ends its non-temporal store loops with `sfence`, so the
//! caller's release store after the copy orders it. (`black_box` is documented as best
//! effort; a compiler that saw through it would make this an ordinary `memcpy` racing
//! with another process, which is what C seqlocks do.)
//!
//! Why not the alternatives: a loop of relaxed `AtomicU64` loads copies 4 MiB at about
//! 20 GB/s where glibc reaches 35 (the development machine, cache-hot); `rep movsb` in
//! inline assembly matches glibc on cache-hot data but not on frames written to a
//! channel's three 4 MiB buffers in turn (store 15-19 GB/s against glibc's 18-25, which
//! switches to non-temporal stores); and the `atomic-memcpy` crate (P1478's reference
//! implementation for Rust) copies one value of a type known at compile time, not a
//! run-time number of bytes.
//!
//! Neither function reads or writes outside the two ranges it is given, whatever the
//! bytes are: lengths come from the caller, who checked them against its own mapping.

/// Copy `len` bytes from `src` (shared memory another process may write meanwhile) to
/// `dst`, each byte read atomically (relaxed). Follow it with `fence(Acquire)` before
/// looking at a sequence number that says whether the copy is whole.
///
/// # Safety
/// `src..src+len` must be readable (it may be a read-only mapping) and `dst..dst+len`
/// writable for the whole call, and the two must not overlap. Nobody may hold a Rust
/// reference to `dst..dst+len` meanwhile.
#[inline]
pub(crate) unsafe fn load_bytes(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller's contract, passed on.
    unsafe { copy(dst, src, len) }
}

/// Copy `len` bytes from `src` to `dst` (shared memory other processes may read
/// meanwhile), each byte written atomically (relaxed). Precede it with
/// `fence(Release)` after marking the destination busy.
///
/// # Safety
/// `src..src+len` must be readable and `dst..dst+len` writable (a writable mapping) for
/// the whole call, and the two must not overlap.
#[inline]
pub(crate) unsafe fn store_bytes(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller's contract, passed on.
    unsafe { copy(dst, src, len) }
}

/// The C library's `memcpy`, through a pointer the optimiser cannot see through.
#[inline]
unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
    type Memcpy = unsafe extern "C" fn(*mut libc::c_void, *const libc::c_void, usize) -> *mut libc::c_void;
    let memcpy: Memcpy = std::hint::black_box(libc::memcpy as Memcpy);
    // SAFETY: the caller guarantees both ranges (valid for `len` bytes, not overlapping);
    // memcpy reads src..src+len and writes dst..dst+len and nothing else.
    unsafe { memcpy(dst.cast(), src.cast(), len) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_length_and_offset_exactly() {
        let src: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for offset in 0..9 {
            for len in [0, 1, 7, 8, 9, 63, 64, 65, 200] {
                let mut dst = vec![0xAAu8; 300];
                // SAFETY: both ranges lie inside the two vectors, which do not overlap.
                unsafe { load_bytes(dst.as_mut_ptr().add(offset), src.as_ptr().add(1), len) };
                assert_eq!(&dst[offset..offset + len], &src[1..1 + len]);
                assert!(dst[..offset].iter().all(|&b| b == 0xAA), "nothing before");
                assert!(dst[offset + len..].iter().all(|&b| b == 0xAA), "nothing after");
                let mut back = vec![0x55u8; 300];
                // SAFETY: as above.
                unsafe { store_bytes(back.as_mut_ptr().add(2), dst.as_ptr().add(offset), len) };
                assert_eq!(&back[2..2 + len], &src[1..1 + len]);
                assert!(back[2 + len..].iter().all(|&b| b == 0x55));
            }
        }
    }
}
