//! `with_spinning_workers`: the other pool threads spin while the body runs
//! and stop when it returns or panics; nested calls and a one-thread pool
//! run the body alone; results are the same bits as without spinning.
//! (One test function: the spinning region is process-wide.)

use std::time::{Duration, Instant};

use advgrad::backend::cpu::gemm::gemm;
use advgrad::backend::cpu::{spinning_enabled, spinning_threads, with_spinning_workers};
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
}
