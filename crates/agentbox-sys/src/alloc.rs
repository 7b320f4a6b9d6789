//! The process's allocator: the C library's, with mid-sized blocks starting on a cache line.
//!
//! Why: glibc copies 2,112 bytes and more with `rep movsb` on processors with fast short
//! `rep movsb` (the threshold measured with glibc 2.36 here), and on AMD Zen 4 that
//! instruction runs about thirty times slower (3 GB/s instead of 80) when the destination sits
//! a few bytes past the source modulo 4 KiB. The TLS library behind the egress proxy copies every
//! record it decrypts, from 5 bytes into one heap block (after the record header) to the start
//! of a new one, and glibc's 16-byte-aligned blocks put those two 11 bytes apart modulo 4 KiB in
//! some intercepted downloads: about a quarter of the proxy's time went to that one copy. With
//! both blocks on a 64-byte boundary the distance is 59 bytes or more, out of the slow band.
//! The opposite copy, into an outgoing record 5 bytes into a new block, still meets it when the
//! two blocks sit at the same offset in their pages; only the placement of blocks decides that,
//! and no alignment rules it out.
//!
//! Only blocks from 4 KiB up to 1 MiB are moved to a cache line: smaller ones are many, and the
//! copies that matter are of whole TLS records (16 KiB); larger ones stay with glibc's own
//! mapping, which `realloc` can grow without a copy.

use std::alloc::{GlobalAlloc, Layout};

/// The alignment mid-sized blocks get: one cache line.
const LINE: usize = 64;
/// The sizes that get it.
const MID: std::ops::Range<usize> = 4096..(1 << 20);

/// The C library's allocator with blocks of 4 KiB to 1 MiB aligned to 64 bytes. Install it with
/// `#[global_allocator] static A: agentbox_sys::LineAligned = agentbox_sys::LineAligned;`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LineAligned;

/// `layout`, with its alignment raised to a cache line when its size is mid-sized.
fn lined(layout: Layout) -> Layout {
    if MID.contains(&layout.size()) && layout.align() < LINE {
        // A power of two no smaller than the one given, and the size is unchanged (far below
        // isize::MAX), so this cannot fail; the given layout is the fallback all the same.
        Layout::from_size_align(layout.size(), LINE).unwrap_or(layout)
    } else {
        layout
    }
}

/// What `malloc` guarantees on every Linux target this builds for (glibc and musl, 64-bit).
const MALLOC_ALIGN: usize = 16;

/// A block of `layout` from the C library: `malloc` where its own alignment is enough, else
/// `posix_memalign`. Null when out of memory.
///
/// # Safety
/// `layout` has a non-zero size.
unsafe fn c_alloc(layout: Layout) -> *mut u8 {
    if layout.align() <= MALLOC_ALIGN && layout.align() <= layout.size() {
        // SAFETY: a non-zero size; `malloc` returns null or a block of that size.
        return unsafe { libc::malloc(layout.size()) }.cast();
    }
    let mut out: *mut libc::c_void = std::ptr::null_mut();
    // posix_memalign wants a power of two that is a multiple of the pointer size.
    let align = layout.align().max(size_of::<usize>());
    // SAFETY: `out` is a valid place for the result; `align` is a power of two (from a `Layout`)
    // and a multiple of the pointer size.
    match unsafe { libc::posix_memalign(&mut out, align, layout.size()) } {
        0 => out.cast(),
        _ => std::ptr::null_mut(),
    }
}

// SAFETY: every block comes from the C library (`malloc`, `calloc`, `posix_memalign`,
// `realloc`) with the caller's size and at least the caller's alignment, so it meets the
// caller's layout; the C library's `free` and `realloc` take a block from any of those
// functions, so a block is freed or resized the same way whatever layout it was made with.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `lined` keeps the size, which the caller guarantees is non-zero.
        unsafe { c_alloc(lined(layout)) }
    }

    /// Not moved to a line: `calloc` leaves fresh pages of a large block untouched (the kernel
    /// zeroes them), where an aligned block would be zeroed by hand and every page of it made
    /// resident. Zeroed blocks are mostly buffers read into, not the copies above.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN && layout.align() <= layout.size() {
            // SAFETY: a non-zero size (the caller's guarantee).
            return unsafe { libc::calloc(layout.size(), 1) }.cast();
        }
        // SAFETY: as for `alloc`.
        let p = unsafe { c_alloc(layout) };
        if !p.is_null() {
            // SAFETY: `p` is a block of `layout.size()` bytes.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from the C library; see the `unsafe impl`.
        unsafe { libc::free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` is non-zero and, with `layout.align()`, a
        // valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let growing_onto_a_line = new_size > layout.size() && lined(new).align() > new.align();
        if new.align() <= MALLOC_ALIGN && new.align() <= new_size && !growing_onto_a_line {
            // `realloc` keeps `malloc`'s alignment, all the caller needs, and may resize in
            // place (a shrinking block on a line stays on it). A growing block that should be on
            // a line is moved by hand instead: one copy either way.
            // SAFETY: `ptr` came from the C library (see the `unsafe impl`); a non-zero size.
            return unsafe { libc::realloc(ptr.cast(), new_size) }.cast();
        }
        // SAFETY: the caller's block is live and valid for its size; `new` is non-zero and at
        // least as large as what is copied.
        unsafe { self.moved(ptr, layout.size().min(new_size), new) }
    }
}

impl LineAligned {
    /// `len` bytes of `ptr` copied into a new block for `new`, then `ptr` freed; null (and
    /// `ptr` left as it was) when out of memory.
    ///
    /// # Safety
    /// `ptr` is a live block from the C library valid for `len` bytes; `new` has a non-zero
    /// size of at least `len`.
    unsafe fn moved(&self, ptr: *mut u8, len: usize, new: Layout) -> *mut u8 {
        // SAFETY: `new` has a non-zero size.
        let moved = unsafe { self.alloc(new) };
        if !moved.is_null() {
            // SAFETY: both blocks are valid for `len` bytes, and distinct; `ptr` is freed once.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, moved, len);
                libc::free(ptr.cast());
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(a: &LineAligned, size: usize) -> *mut u8 {
        let layout = Layout::from_size_align(size, 1).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: `p` is valid for `size` bytes.
        unsafe { std::slice::from_raw_parts_mut(p, size) }
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8);
        p
    }

    fn holds_pattern(p: *const u8, size: usize) -> bool {
        // SAFETY: the callers pass a live block of at least `size` bytes.
        unsafe { std::slice::from_raw_parts(p, size) }.iter().enumerate().all(|(i, b)| *b == i as u8)
    }

    #[test]
    fn mid_sized_blocks_start_on_a_cache_line_and_others_keep_their_alignment() {
        let a = LineAligned;
        for size in [4096, 16_384, 16_709, 400_000, (1 << 20) - 1] {
            let mut ps = Vec::new();
            // Several at once, so a lucky address does not pass for an aligned one.
            for _ in 0..8 {
                let p = filled(&a, size);
                assert_eq!(p as usize % LINE, 0, "a block of {size} bytes");
                ps.push(p);
            }
            for p in ps {
                // SAFETY: allocated above with this layout.
                unsafe { a.dealloc(p, Layout::from_size_align(size, 1).unwrap()) };
            }
        }
        let small = Layout::from_size_align(100, 8).unwrap();
        assert_eq!(lined(small), small);
        let huge = Layout::from_size_align(1 << 20, 1).unwrap();
        assert_eq!(lined(huge), huge);
        let page = Layout::from_size_align(8192, 4096).unwrap();
        assert_eq!(lined(page), page, "a larger alignment than a line is kept");
    }

    #[test]
    fn realloc_keeps_the_contents_across_every_size_class() {
        let a = LineAligned;
        // Small -> mid -> huge -> mid -> small, each step checked (a block that shrinks keeps
        // only `malloc`'s alignment, which is all its caller asked for).
        let steps = [100, 5000, 300_000, 3 << 20, 70_000, 4095, 10];
        let mut size = steps[0];
        let mut p = filled(&a, size);
        for &next in &steps[1..] {
            let old = Layout::from_size_align(size, 1).unwrap();
            // SAFETY: `p` is live with `old`; `next` is non-zero.
            p = unsafe { a.realloc(p, old, next) };
            assert!(!p.is_null());
            assert!(holds_pattern(p, size.min(next)), "{size} -> {next}");
            if MID.contains(&next) && next > size {
                assert_eq!(p as usize % LINE, 0, "{size} -> {next} lands on a line");
            }
            // Refill the whole block, so the next step checks all of it.
            // SAFETY: `p` is valid for `next` bytes.
            unsafe { std::slice::from_raw_parts_mut(p, next) }
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = i as u8);
            size = next;
        }
        // SAFETY: live with this layout.
        unsafe { a.dealloc(p, Layout::from_size_align(size, 1).unwrap()) };
    }

    #[test]
    fn zeroed_blocks_are_zero_and_grow_onto_a_line() {
        let a = LineAligned;
        let layout = Layout::from_size_align(20_000, 1).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { a.alloc_zeroed(layout) };
        // SAFETY: valid for the layout's size.
        assert!(unsafe { std::slice::from_raw_parts(p, layout.size()) }.iter().all(|b| *b == 0));
        // SAFETY: live with this layout; a non-zero new size.
        let p = unsafe { a.realloc(p, layout, 40_000) };
        assert_eq!(p as usize % LINE, 0);
        // SAFETY: the first 20,000 bytes were kept.
        assert!(unsafe { std::slice::from_raw_parts(p, layout.size()) }.iter().all(|b| *b == 0));
        // SAFETY: live with this layout.
        unsafe { a.dealloc(p, Layout::from_size_align(40_000, 1).unwrap()) };
    }
}
