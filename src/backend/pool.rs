//! Recycled host buffers.
//!
//! A training step or an attack step makes the same tensors, of the same
//! sizes, over and over. When the last tensor holding a buffer is dropped,
//! its host vector comes here instead of going back to the allocator (and
//! its cell goes back beside [`Storage`](super::Storage)), and the next
//! tensor of a fitting size takes them. In steady state a step then makes no
//! heap allocation at all (`tests/alloc_free.rs` counts them). The CPU
//! kernels take their outputs and scratch space from here too.
//!
//! A request takes the smallest free vector of its element type whose
//! capacity is at least the length asked for and at most
//! [`FIT_SLACK`] times it, so a scalar never pins a large buffer. The pool
//! keeps at most [`MAX_BYTES`] of free host memory; past that the oldest
//! free buffers are released. [`release_free`] hands everything back.

use std::any::Any;
use std::mem;
use std::sync::{Mutex, MutexGuard};

use half::{bf16, f16};

/// Free host memory the pool keeps, at most.
pub const MAX_BYTES: usize = 256 << 20;
/// Free buffers of one element type the pool keeps, at most.
const MAX_BUFFERS: usize = 256;
/// A free buffer serves a request of `len` elements if its capacity is at
/// most `FIT_SLACK·len` (plus a little, for tiny requests).
pub const FIT_SLACK: usize = 2;

/// Free buffers of one element type, oldest first.
struct Shelf<T>(Vec<Vec<T>>);

impl<T> Shelf<T> {
    const fn new() -> Self {
        Shelf(Vec::new())
    }

    fn take(&mut self, len: usize) -> Option<Vec<T>> {
        let most = len.saturating_mul(FIT_SLACK).saturating_add(64);
        let best = self
            .0
            .iter()
            .enumerate()
            .filter(|(_, v)| (len..=most).contains(&v.capacity()))
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)?;
        Some(self.0.remove(best))
    }
}

struct Pool {
    f32: Shelf<f32>,
    f64: Shelf<f64>,
    u32: Shelf<u32>,
    bf16: Shelf<bf16>,
    f16: Shelf<f16>,
    free_bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    f32: Shelf::new(),
    f64: Shelf::new(),
    u32: Shelf::new(),
    bf16: Shelf::new(),
    f16: Shelf::new(),
    free_bytes: 0,
});

fn pool() -> MutexGuard<'static, Pool> {
    // A panic while the lock was held cannot leave the shelves inconsistent
    // (every mutation is a single push or remove), so a poisoned lock is
    // still usable.
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shelf for elements of type `T`, if the pool keeps such buffers.
fn shelf<T: 'static>(pool: &mut Pool) -> Option<&mut Shelf<T>> {
    let shelves: [&mut dyn Any; 5] = [
        &mut pool.f32,
        &mut pool.f64,
        &mut pool.u32,
        &mut pool.bf16,
        &mut pool.f16,
    ];
    shelves.into_iter().find_map(|s| s.downcast_mut())
}

/// An empty vector with room for at least `len` elements: a recycled one
/// when a fitting buffer is free, a new allocation otherwise.
pub(crate) fn take<T: 'static>(len: usize) -> Vec<T> {
    let mut pool = pool();
    match shelf::<T>(&mut pool).and_then(|s| s.take(len)) {
        Some(mut v) => {
            pool.free_bytes -= v.capacity() * mem::size_of::<T>();
            v.clear();
            v
        }
        None => {
            drop(pool);
            Vec::with_capacity(len)
        }
    }
}

/// Keeps the allocation of `v` for a later [`take`]; when the pool is full,
/// the oldest free buffers of the same type are released to make room.
pub(crate) fn give<T: 'static>(v: Vec<T>) {
    let bytes = v.capacity() * mem::size_of::<T>();
    if bytes == 0 || bytes > MAX_BYTES {
        return;
    }
    let mut pool = pool();
    let free_bytes = pool.free_bytes + bytes;
    let Some(shelf) = shelf::<T>(&mut pool) else {
        return;
    };
    shelf.0.push(v);
    let mut freed = 0;
    while shelf.0.len() > 1 && (shelf.0.len() > MAX_BUFFERS || free_bytes - freed > MAX_BYTES) {
        freed += shelf.0.remove(0).capacity() * mem::size_of::<T>();
    }
    pool.free_bytes = free_bytes - freed;
}

/// A vector of `len` copies of `value`, in a recycled buffer when one fits.
pub(crate) fn filled<T: Copy + 'static>(len: usize, value: T) -> Vec<T> {
    let mut v = take(len);
    v.resize(len, value);
    v
}

/// Releases every free buffer to the allocator.
pub fn release_free() {
    let mut pool = pool();
    let pool = &mut *pool;
    pool.f32.0.clear();
    pool.f64.0.clear();
    pool.u32.0.clear();
    pool.bf16.0.clear();
    pool.f16.0.clear();
    pool.free_bytes = 0;
}

/// Free host memory held by the pool, in bytes.
pub fn free_bytes() -> usize {
    pool().free_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_back_for_a_fitting_size_only() {
        // A size no other test asks for, as the pool is shared.
        let v: Vec<f64> = Vec::with_capacity(777_777);
        let ptr = v.as_ptr();
        give(v);
        let small: Vec<f64> = take(10);
        assert_ne!(
            small.as_ptr(),
            ptr,
            "a tiny request must not pin a big buffer"
        );
        let fit: Vec<f64> = take(777_000);
        assert_eq!(fit.as_ptr(), ptr);
        assert!(fit.is_empty() && fit.capacity() >= 777_000);
    }

    /// Whether a buffer of 654,321 `T`s given to the pool is taken back for
    /// a request of 654,000 (sizes no other test asks for).
    fn taken_back<T: 'static>() -> bool {
        let v: Vec<T> = Vec::with_capacity(654_321);
        let ptr = v.as_ptr();
        give(v);
        let again: Vec<T> = take(654_000);
        again.as_ptr() == ptr
    }

    #[test]
    fn half_buffers_are_recycled_too() {
        assert!(taken_back::<bf16>());
        assert!(taken_back::<f16>());
    }
}
