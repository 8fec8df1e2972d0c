//! Copies to and from bytes that another process may be writing at the same moment: the
//! frames of a [`FrameWriter`](crate::FrameWriter) and the messages of a
//! [`Producer`](crate::Producer), whose readers find out afterwards (a sequence number
//! that moved) whether what they copied was torn, and then throw it away.
//!
//! Such a copy races with the other side's writes, so it must not be a plain `memcpy`
//! (Rust's memory model makes a racing non-atomic access undefined behaviour, whatever
//! is done with the bytes later). It is what C++'s proposal P1478 calls a byte-wise
//! atomic memcpy: every byte is read (or written) atomically, with relaxed ordering; the
//! caller puts fences around it. On x86-64 it is one `rep movsb` in inline assembly:
//! the instruction reads and writes bytes, each of which x86 accesses indivisibly, so
//! it does exactly what a loop of relaxed `AtomicU8` accesses does, at `memcpy` speed
//! (fast-string microcode; 4 MiB at 35-39 GB/s on the development machine, like glibc's
//! `memcpy`, where a loop of relaxed `AtomicU64` loads reaches 20). Elsewhere it is such a
//! loop: `AtomicU64` for the aligned middle, `AtomicU8` at the ends.
//!
//! Hand-written rather than a crate: `atomic-memcpy` (the crate for P1478) copies one
//! value of a type known at compile time, not a run-time number of bytes.
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
    unsafe { copy(dst, src, len, Side::Load) }
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
    unsafe { copy(dst, src, len, Side::Store) }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Load,
    Store,
}

#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn copy(dst: *mut u8, src: *const u8, len: usize, _side: Side) {
    // SAFETY: the caller guarantees both ranges; `rep movsb` reads src..src+len and
    // writes dst..dst+len, forwards (the direction flag is clear at every Rust function
    // boundary, as the ABI requires), and touches no other memory and no stack. Without
    // `nomem`, the compiler treats the block as reading and writing any memory: it is a
    // compiler barrier, so the caller's fences order it.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
unsafe fn copy(dst: *mut u8, src: *const u8, len: usize, side: Side) {
    use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
    let shared = match side {
        Side::Load => src,
        Side::Store => dst.cast_const(),
    };
    // bytes up to the first 8-aligned address of the shared side, 8-byte words while
    // both sides allow, then the rest
    let head = shared.align_offset(8).min(len);
    let words_ok = (dst as usize).wrapping_add(head) % 8 == (src as usize).wrapping_add(head) % 8;
    let words = if words_ok { (len - head) / 8 } else { 0 };
    let mut i = 0;
    // SAFETY (all three loops): i + width <= len, inside both ranges the caller
    // guarantees; the shared side is accessed only through atomics; word accesses are at
    // 8-aligned addresses of both sides (checked above).
    unsafe {
        while i < head {
            byte(dst.add(i), src.add(i), side);
            i += 1;
        }
        for _ in 0..words {
            match side {
                Side::Load => {
                    let w = (*src.add(i).cast::<AtomicU64>()).load(Relaxed);
                    dst.add(i).cast::<u64>().write(w);
                }
                Side::Store => {
                    let w = src.add(i).cast::<u64>().read();
                    (*dst.add(i).cast::<AtomicU64>()).store(w, Relaxed);
                }
            }
            i += 8;
        }
        while i < len {
            byte(dst.add(i), src.add(i), side);
            i += 1;
        }
    }

    /// # Safety
    /// Both bytes valid; the shared one accessed atomically by everyone.
    unsafe fn byte(dst: *mut u8, src: *const u8, side: Side) {
        // SAFETY: the caller's contract.
        unsafe {
            match side {
                Side::Load => dst.write((*src.cast::<AtomicU8>()).load(Relaxed)),
                Side::Store => (*dst.cast::<AtomicU8>()).store(src.read(), Relaxed),
            }
        }
    }
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
