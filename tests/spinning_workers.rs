//! `with_spinning_workers`: the other pool threads spin while the body runs
//! and stop when it returns or panics; nested calls and a one-thread pool
//! run the body alone; results are the same bits as without spinning;
//! `with_idle_work` hands its work to a spinning thread and returns both
//! results and both panics.
//! (One test function: the spinning region is process-wide.)

use std::time::{Duration, Instant};

use advgrad::backend::cpu::gemm::gemm;
use advgrad::backend::cpu::{
    spinning_enabled, spinning_threads, with_idle_work, with_spinning_workers,
};
use rayon::prelude::*;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
}

/// Waits up to ten seconds for `n` spinning threads.
fn wait_for_spinners(n: usize) -> usize {
    let start = Instant::now();
    while spinning_threads() != n && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    spinning_threads()
}

/// A product big enough to be split across threads.
fn product() -> Vec<f32> {
    let (m, n, k) = (200, 300, 250);
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i * 104729) % 997) as f32 / 498.5 - 1.0)
        .collect();
    let mut c = vec![0.0; m * n];
    gemm(m, n, k, &a, false, &b, true, &mut c, false);
    c
}

#[test]
fn other_threads_spin_for_the_body_and_stop_after_it() {
    if !spinning_enabled() {
        eprintln!("SKIPPED: ADVGRAD_SPIN=0 is set, so nothing spins");
        return;
    }
    let three = pool(3);
    let plain = three.install(product);
    let sum_plain: u64 = three.install(|| (0..100_000u64).into_par_iter().sum());

    let (spun, sum_spun, nested) = three.install(|| {
        with_spinning_workers(|| {
            assert_eq!(wait_for_spinners(2), 2, "the two other threads spin");
            let spun = product();
            let sum: u64 = (0..100_000u64).into_par_iter().sum();
            // A nested call runs its body alone, inside the outer region.
            let nested = with_spinning_workers(|| {
                assert_eq!(spinning_threads(), 2);
                product()
            });
            (spun, sum, nested)
        })
    });
    assert_eq!(spinning_threads(), 0, "the spinners stop with the body");
    assert_eq!(sum_spun, sum_plain);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&spun), bits(&plain), "the same bits with spinners");
    assert_eq!(bits(&nested), bits(&plain));

    // A panicking body stops the spinners, and the next call spins again.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        three.install(|| {
            with_spinning_workers(|| {
                wait_for_spinners(2);
                panic!("the body fails")
            })
        })
    }));
    assert!(caught.is_err(), "the panic reaches the caller");
    assert_eq!(spinning_threads(), 0);
    let again = three.install(|| with_spinning_workers(|| wait_for_spinners(2)));
    assert_eq!(again, 2, "a later call spins again");
    assert_eq!(spinning_threads(), 0);

    // One thread: nothing to spin.
    let one = pool(1);
    let alone = one.install(|| with_spinning_workers(spinning_threads));
    assert_eq!(alone, 0);

    idle_work_runs_on_a_spinning_thread_and_returns(&three);
}

/// `with_idle_work`: a spinning thread takes the work while the body waits
/// (here, for the work itself), both results come back, and a panic in
/// either closure reaches the caller after both are through; without
/// spinners the work runs on the caller after `f`.
fn idle_work_runs_on_a_spinning_thread_and_returns(three: &rayon::ThreadPool) {
    use std::sync::atomic::{AtomicBool, Ordering};
    // Outside a spinning region: in order, on this thread.
    let here = std::thread::current().id();
    let order = std::cell::RefCell::new(Vec::new());
    let (a, b) = with_idle_work(
        || {
            order.borrow_mut().push("f");
            1
        },
        || std::thread::current().id(),
    );
    order.borrow_mut().push("work");
    assert_eq!((a, b), (1, here));
    assert_eq!(*order.borrow(), ["f", "work"]);

    three.install(|| {
        with_spinning_workers(|| {
            wait_for_spinners(2);
            let body = std::thread::current().id();
            // `f` returns only once another thread has started the work, so
            // the work cannot fall back to this thread.
            let started = AtomicBool::new(false);
            let borrowed = vec![3u64; 1000];
            let (a, (b, thread)) = with_idle_work(
                || {
                    let start = Instant::now();
                    while !started.load(Ordering::Acquire) {
                        assert!(
                            start.elapsed() < Duration::from_secs(10),
                            "no thread took the work"
                        );
                        std::hint::spin_loop();
                    }
                    product()
                },
                || {
                    started.store(true, Ordering::Release);
                    (borrowed.iter().sum::<u64>(), std::thread::current().id())
                },
            );
            assert_ne!(thread, body, "a spinning thread ran the work");
            assert_eq!(b, 3000);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&product()), "f's tasks still ran");

            // A panic in the work is resumed here.
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_idle_work(|| 0, || -> u8 { panic!("the work fails") })
            }));
            assert!(caught.is_err());
            // A panic in f, once a spinning thread has taken the work,
            // waits for the work to finish before it reaches the caller.
            let (started, finished) = (AtomicBool::new(false), AtomicBool::new(false));
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_idle_work(
                    || -> u8 {
                        while !started.load(Ordering::Acquire) {
                            std::hint::spin_loop();
                        }
                        panic!("f fails")
                    },
                    || {
                        started.store(true, Ordering::Release);
                        std::thread::sleep(Duration::from_millis(20));
                        finished.store(true, Ordering::Release);
                    },
                )
            }));
            assert!(caught.is_err());
            assert!(finished.load(Ordering::Acquire), "the work finished first");
            let (_, again) = with_idle_work(|| (), || 5);
            assert_eq!(again, 5, "offers work again after the panics");
        })
    });
}
