//! Keeping the pool's other threads awake through a loop of short kernels.
//!
//! A training step launches a dozen parallel kernels with serial work
//! between them (the tape, the small ops). Between two of them rayon's
//! idle threads go to sleep after a few dozen yields, and the next kernel
//! waits while they are woken: on a virtual machine, tens of microseconds
//! per kernel, a large share of a step that takes a millisecond.
//! [`with_spinning_workers`] keeps every other thread of the pool looking
//! for work while a loop runs, as OpenMP runtimes do by default (their
//! spin-wait policy), so a kernel's tasks are picked up as soon as they are
//! pushed. The price is that those threads keep their cores busy for the
//! whole loop, also while the step does serial work; `ADVGRAD_SPIN=0` turns
//! it off.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use rayon::Yield;

use super::on_worker;

/// Whether a [`with_spinning_workers`] body is running anywhere in the
/// process: one spinning region at a time, so nested and concurrent calls
/// run their bodies without spinners of their own.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Threads spinning right now (for tests and diagnostics).
static SPINNERS: AtomicUsize = AtomicUsize::new(0);

/// Whether spinning is on: `ADVGRAD_SPIN` unset, or set to anything but `0`.
pub fn spinning_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("ADVGRAD_SPIN").map_or(true, |v| v.trim() != "0"))
}

/// How many pool threads are spinning for a [`with_spinning_workers`] body
/// at this moment.
pub fn spinning_threads() -> usize {
    SPINNERS.load(Ordering::Relaxed)
}

/// Clears a flag when dropped, also when unwinding.
struct Clear<'a>(&'a AtomicBool);

impl Drop for Clear<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Runs `f` on a pool thread (as [`on_worker`]) while every other thread
/// of the pool spins, running any task it finds, until `f` returns or
/// unwinds (see the module docs). With one thread, with `ADVGRAD_SPIN=0`,
/// or while another call's body runs, `f` runs alone. The results are the
/// same bits either way: only how the other threads wait changes.
pub fn with_spinning_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    on_worker(|| {
        let alone = rayon::current_num_threads() < 2
            || !spinning_enabled()
            || ACTIVE
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err();
        if alone {
            return f();
        }
        let _active = Clear(&ACTIVE);
        let me = rayon::current_thread_index();
        let running = AtomicBool::new(true);
        rayon::in_place_scope(|scope| {
            // One task per thread. This thread's returns at once: it would
            // run while this thread waits inside `f`, and spin on top of
            // the very body it waits for.
            scope.spawn_broadcast(|_, ctx| {
                if Some(ctx.index()) == me {
                    return;
                }
                SPINNERS.fetch_add(1, Ordering::Relaxed);
                while running.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
                SPINNERS.fetch_sub(1, Ordering::Relaxed);
            });
            let _stop = Clear(&running);
            f()
        })
    })
}
