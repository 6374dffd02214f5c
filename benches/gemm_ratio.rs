//! The bf16 gemm's speed as a ratio to the f32 gemm's, measured in
//! interleaved rounds on the same inputs (f32, bf16 operands, f32 operands
//! rounded to bf16 while packed, one after the other in every round), so
//! that a machine shared with other work slows all three alike; the median
//! of each over the rounds, in GFLOP/s, and the ratios of the medians.
//! Square sizes 256..2048 (NN) and the shapes of the 784-256-256-10 MLP's
//! training step at batch 128.
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
        let t = Instant::now();
        for _ in 0..reps {
            f(black_box(&mut c));
        }
        t.elapsed().as_secs_f64() / reps as f64
    };
    let (mut f32s, mut halves, mut rounded) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        f32s.push(time(&mut |c| gemm(m, n, k, &a, at, &b, bt, c, false)));
        halves.push(time(&mut |c| {
            let (a, b) = (HalfOperand::Half(&a16), HalfOperand::Half(&b16));
            gemm_half(m, n, k, a, at, b, bt, c, false)
        }));
        rounded.push(time(&mut |c| {
            let (a, b) = (HalfOperand::<bf16>::F32(&a), HalfOperand::F32(&b));
            gemm_half(m, n, k, a, at, b, bt, c, false)
        }));
    }
    let gflops = |t: Vec<f64>| flop / median(t) / 1e9;
    let (f, h, r) = (gflops(f32s), gflops(halves), gflops(rounded));
    let t = |x: bool| if x { 'T' } else { 'N' };
    println!(
        "| {m}×{n}×{k} {}{} | {f:.0} | {h:.0} | {:.2} | {r:.0} | {:.2} |",
        t(at),
        t(bt),
        h / f,
        r / f
    );
}
