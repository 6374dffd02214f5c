//! The packing buffers, and the tile buffer of a swapped product, kept per
//! thread and per packed element type, so that a steady state of calls
//! allocates nothing.

use std::cell::RefCell;

/// An element type of packed panels: f32 and f64, and `u32` for pairs of
/// bf16 along `k`.
///
/// The trait is sealed: it holds the per-thread buffers.
pub(super) trait PackedElem:
    Copy + Default + Send + Sync + 'static + sealed::Sealed
{
    /// Calls `f` with this thread's packing buffers (`B` block, `A` panel).
    fn with_buffers<R>(f: impl FnOnce(&mut Vec<Self>, &mut Vec<Self>) -> R) -> R;

    /// Calls `f` with this thread's buffer for a tile of `Cᵀ` (see
    /// `driver::run_swapped`).
    fn with_tile<R>(f: impl FnOnce(&mut Vec<Self>) -> R) -> R;
}

mod sealed {
    pub trait Sealed {}
}

/// The buffers of one thread.
struct Buffers<T> {
    b: RefCell<Vec<T>>,
    a: RefCell<Vec<T>>,
    tile: RefCell<Vec<T>>,
}

impl<T> Buffers<T> {
    const fn new() -> Self {
        Buffers {
            b: RefCell::new(Vec::new()),
            a: RefCell::new(Vec::new()),
            tile: RefCell::new(Vec::new()),
        }
    }

    /// Lends both buffers to `f`; if they are already lent on this thread
    /// (a nested call while a task waits), `f` gets fresh ones instead.
    fn with<R>(&self, f: impl FnOnce(&mut Vec<T>, &mut Vec<T>) -> R) -> R {
        match (self.b.try_borrow_mut(), self.a.try_borrow_mut()) {
            (Ok(mut b), Ok(mut a)) => f(&mut b, &mut a),
            _ => f(&mut Vec::new(), &mut Vec::new()),
        }
    }

    /// Lends the tile buffer to `f`, or a fresh one if it is already lent.
    fn with_tile<R>(&self, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
        match self.tile.try_borrow_mut() {
            Ok(mut tile) => f(&mut tile),
            Err(_) => f(&mut Vec::new()),
        }
    }
}

macro_rules! impl_packed {
    ($t:ty, $tls:ident) => {
        thread_local! {
            static $tls: Buffers<$t> = const { Buffers::new() };
        }

        impl sealed::Sealed for $t {}

        impl PackedElem for $t {
            fn with_buffers<R>(f: impl FnOnce(&mut Vec<$t>, &mut Vec<$t>) -> R) -> R {
                $tls.with(|bufs| bufs.with(f))
            }

            fn with_tile<R>(f: impl FnOnce(&mut Vec<$t>) -> R) -> R {
                $tls.with(|bufs| bufs.with_tile(f))
            }
        }
    };
}

/// The alignment of every packing and tile buffer: a cache line.
///
/// Vectors and tile rows of 64 bytes read from a packed panel then never
/// straddle two lines. glibc's large blocks start 16 bytes past a
/// page boundary, and reading packed operands at that offset halved the
/// AMX kernel's rate (`benches/RESULTS.md`).
pub(super) const ALIGN: usize = 64;

/// `len` elements of `v` that start on an [`ALIGN`]-byte boundary.
///
/// Where `v` is too short for them, it first grows to `grow_to` elements
/// (at least `len`) plus a line of slack, so that a thread can size its
/// buffer for the largest call once.
pub(super) fn aligned<T: Copy + Default>(v: &mut Vec<T>, len: usize, grow_to: usize) -> &mut [T] {
    let slack = ALIGN / std::mem::size_of::<T>();
    if v.len() < len + slack {
        v.resize(grow_to.max(len) + slack, T::default());
    }
    let offset = v.as_ptr().align_offset(ALIGN).min(slack);
    &mut v[offset..offset + len]
}

impl_packed!(f32, BUFFERS_F32);
impl_packed!(f64, BUFFERS_F64);
impl_packed!(u32, BUFFERS_PAIRS);

#[cfg(test)]
mod tests {
    use super::{aligned, ALIGN};

    /// Every slice starts on a cache line and has the asked length, and a
    /// buffer long enough for a call is kept as it is.
    fn check<T: Copy + Default>(mut v: Vec<T>) {
        for len in [1, 17, 1000, 4096, 300, 4096] {
            let s = aligned(&mut v, len, 4096);
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr() as usize % ALIGN, 0, "{len} values");
        }
        let kept = v.as_ptr();
        for len in [2048, 4096, 1] {
            assert_eq!(aligned(&mut v, len, 4096).as_ptr() as usize % ALIGN, 0);
            assert_eq!(v.as_ptr(), kept, "a buffer large enough is kept");
        }
    }

    #[test]
    fn packing_buffers_start_on_a_cache_line() {
        check::<f32>(Vec::new());
        check::<f64>(Vec::new());
        check::<u32>(Vec::new());
        // A large block from the system allocator: glibc's start 16 bytes
        // past a page boundary.
        check::<f32>(vec![0.0; 1 << 18]);
    }

    #[test]
    fn an_empty_buffer_grows_once_to_the_largest_size_asked() {
        let mut v: Vec<u32> = Vec::new();
        aligned(&mut v, 10, 5000);
        assert_eq!(v.len(), 5000 + ALIGN / 4);
        aligned(&mut v, 7000, 5000);
        assert_eq!(
            v.len(),
            7000 + ALIGN / 4,
            "a call larger than grow_to gets its length"
        );
    }
}
