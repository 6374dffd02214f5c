//! The bf16 gemm's speed as a ratio to the f32 gemm's, measured in
//! interleaved rounds on the same inputs (f32, bf16 operands, f32 operands
//! rounded to bf16 while packed, one after the other in every round), so
//! that a machine shared with other work slows all three alike; the median
//! of each over the rounds, in GFLOP/s, and the ratios of the medians.
//! Square sizes 256..2048 (NN) and the shapes of the 784-256-256-10 MLP's
//! training step at batch 128. Each figure is given per second of wall
//! time and, in brackets, per second of the process's CPU time (all
//! threads, rayon's spinning included): on a machine whose cores other
//! work takes turns on, the second is the steadier.
//!
//! `RAYON_NUM_THREADS=2 cargo bench --bench gemm_ratio` (optional argument:
//! the number of rounds, default 11).

use std::hint::black_box;
use std::time::Instant;

use advgrad::backend::cpu::gemm::{describe, gemm, gemm_half, HalfOperand};
use half::bf16;

/// Deterministic inputs in [-1, 1).
fn fill(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (f64::from(s) / f64::from(u32::MAX) * 2.0 - 1.0) as f32
        })
        .collect()
}

/// CPU time of the whole process so far, in seconds.
fn cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One shape: `m × n × k`, transposes of A and B.
type Shape = (usize, usize, usize, bool, bool);

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(11);
    println!(
        "{}, {} threads, {rounds} rounds",
        describe(),
        rayon::current_num_threads()
    );
    println!("GFLOP/s per wall second [per CPU second]");
    println!("| shape | f32 | bf16 | bf16 / f32 | bf16 from f32 | ratio |");
    println!("|---|---|---|---|---|---|");
    let squares = [256, 512, 1024, 2048].map(|n| (n, n, n, false, false));
    let mlp = [
        (128, 256, 784, false, true),
        (128, 784, 256, false, false),
        (256, 784, 128, true, false),
        (128, 256, 256, false, true),
        (128, 10, 256, false, true),
    ];
    for (m, n, k, at, bt) in squares.into_iter().chain(mlp) {
        row((m, n, k, at, bt), rounds);
    }
}

/// Times one shape and prints its table row.
fn row((m, n, k, at, bt): Shape, rounds: usize) {
    let (a, b) = (fill(m * k, 1), fill(k * n, 2));
    let a16: Vec<bf16> = a.iter().map(|&v| bf16::from_f32(v)).collect();
    let b16: Vec<bf16> = b.iter().map(|&v| bf16::from_f32(v)).collect();
    let mut c = vec![0.0f32; m * n];
    let flop = 2.0 * (m * n * k) as f64;
    // About 0.2 s of f32 work per round and operand form.
    let reps = (4e10 / flop).clamp(3.0, 5000.0) as usize;
    let mut time = |f: &mut dyn FnMut(&mut [f32])| {
        let (t, cpu) = (Instant::now(), cpu_seconds());
        for _ in 0..reps {
            f(black_box(&mut c));
        }
        let per = |s: f64| s / reps as f64;
        (per(t.elapsed().as_secs_f64()), per(cpu_seconds() - cpu))
    };
    let mut runs: [Vec<(f64, f64)>; 3] = Default::default();
    for _ in 0..rounds {
        runs[0].push(time(&mut |c| gemm(m, n, k, &a, at, &b, bt, c, false)));
        runs[1].push(time(&mut |c| {
            let (a, b) = (HalfOperand::Half(&a16), HalfOperand::Half(&b16));
            gemm_half(m, n, k, a, at, b, bt, c, false)
        }));
        runs[2].push(time(&mut |c| {
            let (a, b) = (HalfOperand::<bf16>::F32(&a), HalfOperand::F32(&b));
            gemm_half(m, n, k, a, at, b, bt, c, false)
        }));
    }
    // GFLOP/s per wall second and per CPU second, from the medians.
    let [f, h, r] = runs.map(|v| {
        let wall = median(v.iter().map(|t| t.0).collect());
        let cpu = median(v.iter().map(|t| t.1).collect());
        (flop / wall / 1e9, flop / cpu / 1e9)
    });
    let t = |x: bool| if x { 'T' } else { 'N' };
    println!(
        "| {m}×{n}×{k} {}{} | {:.0} [{:.0}] | {:.0} [{:.0}] | {:.2} [{:.2}] | {:.0} [{:.0}] | {:.2} [{:.2}] |",
        t(at),
        t(bt),
        f.0,
        f.1,
        h.0,
        h.1,
        h.0 / f.0,
        h.1 / f.1,
        r.0,
        r.1,
        r.0 / f.0,
        r.1 / f.1,
    );
}
