//! The .wasm's global allocator: power-of-two size classes over `memory.grow`, in place of
//! std's dlmalloc, for size (dlmalloc is ≈ 3 KB of the gzipped .wasm; this is a few hundred
//! bytes). The client's allocations are short-lived buffers, rows and frames, for which
//! size-class free lists are a good fit.
//!
//! - A request is rounded up to a power of two of at least 16 bytes (and at least its
//!   alignment). Classes up to 32 KiB are carved from 64 KiB slabs taken from `memory.grow`,
//!   so every block is aligned to its own size; a freed block goes on its class's free list
//!   and is reused only for that class.
//! - Larger requests take whole 64 KiB pages (rounded to a power of two of pages), again with
//!   a free list per class. Memory is never given back to the host (wasm cannot shrink memory,
//!   and dlmalloc does not either).
//! - Alignments above 64 KiB are refused (null), as no Rust type here asks for one.
//!
//! wasm32-unknown-unknown without the atomics feature is single-threaded: the state needs no lock.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::UnsafeCell;
use core::ptr::null_mut;

const PAGE: usize = 65536;
/// log2 of the smallest block.
const MIN_SHIFT: u32 = 4;
/// log2 of the largest class carved from slabs.
const SLAB_MAX_SHIFT: u32 = 15;
/// Classes 2^4 ..= 2^31 bytes.
const CLASSES: usize = 28;

/// Per class: the head of its free list (each free block stores the next one in its first word).
struct State {
    /// Free lists by class index (log2(size) - MIN_SHIFT).
    free: [*mut u8; CLASSES],
}

/// The allocator (installed with `#[global_allocator]` in lib.rs).
pub struct SizeClasses {
    /// Mutable state behind a shared static (single-threaded target, see the module doc).
    state: UnsafeCell<State>,
}

// SAFETY: wasm32-unknown-unknown without atomics runs one thread; nothing is shared across threads.
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    pub const fn new() -> Self {
        SizeClasses { state: UnsafeCell::new(State { free: [null_mut(); CLASSES] }) }
    }
}

/// The class of a layout: log2 of the block size, or None when it cannot be served.
fn class(layout: &Layout) -> Option<u32> {
    let size = layout.size().max(layout.align()).max(1 << MIN_SHIFT);
    if layout.align() > PAGE || size > 1 << (MIN_SHIFT as usize + CLASSES - 1) {
        return None;
    }
    Some(usize::BITS - (size - 1).leading_zeros())
}

/// `n` fresh pages, or null when the host refuses to grow memory.
fn grow(pages: usize) -> *mut u8 {
    let old = wasm32::memory_grow(0, pages);
    if old == usize::MAX {
        null_mut()
    } else {
        (old * PAGE) as *mut u8
    }
}

unsafe impl GlobalAlloc for SizeClasses {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(shift) = class(&layout) else { return null_mut() };
        // SAFETY: single-threaded (see the module doc); no other reference to the state is live.
        let state = unsafe { &mut *self.state.get() };
        let head = &mut state.free[(shift - MIN_SHIFT) as usize];
        if !head.is_null() {
            let block = *head;
            // SAFETY: a block on a free list is ours, at least 16 bytes, aligned for a pointer.
            *head = unsafe { *(block as *mut *mut u8) };
            return block;
        }
        let size = 1usize << shift;
        if shift > SLAB_MAX_SHIFT {
            return grow(size.div_ceil(PAGE));
        }
        // A fresh slab: the first block is returned, the others go on the free list.
        let slab = grow(1);
        if slab.is_null() {
            return null_mut();
        }
        let mut offset = PAGE;
        while offset > size {
            offset -= size;
            // SAFETY: within the fresh slab; each block is aligned to its size (≥ 16).
            unsafe {
                let block = slab.add(offset);
                *(block as *mut *mut u8) = *head;
                *head = block;
            }
        }
        slab
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(shift) = class(&layout) else { return };
        // SAFETY: as in alloc; `ptr` came from alloc with this layout, hence this class.
        unsafe {
            let state = &mut *self.state.get();
            let head = &mut state.free[(shift - MIN_SHIFT) as usize];
            *(ptr as *mut *mut u8) = *head;
            *head = ptr;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `layout.align()` with `new_size` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if class(&layout) == class(&new_layout) {
            return ptr; // the block already has room
        }
        // SAFETY: as GlobalAlloc::realloc's default: copy the smaller size, free the old block.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
