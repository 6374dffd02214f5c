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

impl_packed!(f32, BUFFERS_F32);
impl_packed!(f64, BUFFERS_F64);
impl_packed!(u32, BUFFERS_PAIRS);
