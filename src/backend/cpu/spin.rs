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

use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
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
                    if rayon::yield_now() != Some(Yield::Executed) && !run_idle_work() {
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

/// The work [`with_idle_work`] has offered and no thread has taken yet.
static IDLE_WORK: AtomicPtr<IdleWork> = AtomicPtr::new(std::ptr::null_mut());

/// The type-erased head of an offered piece of work ([`Offer`]).
struct IdleWork {
    /// Runs the offer this head belongs to, then sets `done`.
    run: unsafe fn(*const IdleWork),
    /// Set (last of all) once the work and its result are through.
    done: AtomicBool,
}

/// A piece of work offered to the spinning threads, on the offering
/// thread's stack, which waits for it before it returns.
#[repr(C)]
struct Offer<W, B> {
    head: IdleWork,
    work: UnsafeCell<Option<W>>,
    result: UnsafeCell<Option<std::thread::Result<B>>>,
}

/// Runs the offer `head` belongs to (`head` is the first field of an
/// `Offer<W, B>`).
///
/// # Safety
///
/// `head` must point to a live `Offer<W, B>` that only this thread touches
/// until `done` is set.
unsafe fn run_offer<W: FnOnce() -> B, B>(head: *const IdleWork) {
    // SAFETY: the caller's contract; `head` is the first field of a
    // `repr(C)` `Offer<W, B>`.
    let offer = unsafe { &*head.cast::<Offer<W, B>>() };
    // SAFETY: this thread alone touches the cells until `done` is set.
    let work = unsafe { (*offer.work.get()).take() };
    if let Some(work) = work {
        let result = panic::catch_unwind(AssertUnwindSafe(work));
        // SAFETY: as above.
        unsafe { *offer.result.get() = Some(result) };
    }
    offer.head.done.store(true, Ordering::Release);
}

/// Takes the offered work, if any, and runs it on this thread; whether
/// there was some.
fn run_idle_work() -> bool {
    // A plain load first: spinning threads look here constantly, and a
    // read keeps the line shared instead of bouncing it between them.
    if IDLE_WORK.load(Ordering::Relaxed).is_null() {
        return false;
    }
    let head = IDLE_WORK.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if head.is_null() {
        return false;
    }
    // SAFETY: taking the pointer out of `IDLE_WORK` gives this thread the
    // offer: its owner waits for `done` before it lets go of it.
    unsafe { ((*head).run)(head) };
    true
}

/// Runs `f` on this thread and offers `work` to the threads that spin for
/// a [`with_spinning_workers`] body, which take it only when they find no
/// task of `f`'s to run; returns both results. Where no thread spins, or
/// another offer is pending, or no thread took it by the time `f` returns,
/// `work` runs here after `f`. The training loop gathers the next batch
/// this way, in time the other threads would spend spinning.
///
/// A panic in either closure is resumed here, after both have finished
/// with what they borrow.
pub fn with_idle_work<A, B, F, W>(f: F, work: W) -> (A, B)
where
    F: FnOnce() -> A,
    W: FnOnce() -> B + Send,
    B: Send,
{
    let offer = Offer {
        head: IdleWork {
            run: run_offer::<W, B>,
            done: AtomicBool::new(false),
        },
        work: UnsafeCell::new(Some(work)),
        result: UnsafeCell::new(None),
    };
    let head = std::ptr::from_ref(&offer.head).cast_mut();
    // Offered only where a thread spins and no other offer is pending.
    let offered = spinning_threads() > 0
        && IDLE_WORK
            .compare_exchange(
                std::ptr::null_mut(),
                head,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
    /// Takes the offer back, or waits until the thread that took it is
    /// through, also while a panic of `f` unwinds.
    struct Withdraw(*mut IdleWork);
    impl Drop for Withdraw {
        fn drop(&mut self) {
            let taken = IDLE_WORK
                .compare_exchange(
                    self.0,
                    std::ptr::null_mut(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err();
            if taken {
                // SAFETY: the offer outlives this guard (declared before it).
                while !unsafe { &(*self.0).done }.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            }
        }
    }
    // Not `then_some`: an unused guard would run its drop, and wait.
    let withdraw = if offered { Some(Withdraw(head)) } else { None };
    let a = f();
    drop(withdraw);
    // SAFETY: the offer is withdrawn, done or was never made: no other
    // thread touches it.
    let (work, result) = unsafe { ((*offer.work.get()).take(), (*offer.result.get()).take()) };
    let b = match (work, result) {
        (Some(work), _) => work(),
        (None, Some(Ok(b))) => b,
        (None, Some(Err(payload))) => panic::resume_unwind(payload),
        (None, None) => unreachable!("a taken offer leaves its result"),
    };
    (a, b)
}
